"""`python -m optasia_datagen`: see optasia_datagen's docstring."""

import sys

from optasia_datagen import main

sys.exit(main())
