"""Entry point for ``spark-submit spark_jobs/main.py <command> ...``."""

import os
import sys

if __package__ in (None, ""):
    # Run as a file by spark-submit: make the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spark_jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
