"""``main()``: the command line of ``python -m optasia_datagen``."""

from __future__ import annotations

import json
import sys

from .batch import generate
from .config import Config, UsageError, build_parser


def main(argv=None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)          # exits 2 on bad syntax / values
    try:
        cfg = Config(ns)
        summary = generate(cfg)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:                  # e.g. disk full while writing
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    if not cfg.quiet:
        s, t = summary["subscribers"], summary["transactions"]
        rows = s["rows"] + t["rows"]
        secs = max(summary["seconds"], 1e-3)
        hostile = summary["hostile"]
        print(f"datagen: wrote {summary['batch_dir']}: subscribers.csv {s['rows']:,} rows "
              f"({s['dirty_total']:,} dirty, {s['bytes']:,} B), transactions.csv {t['rows']:,} rows "
              f"({t['dirty_total']:,} dirty, {t.get('late', 0):,} late, "
              f"{t.get('orphan_expired', 0) + t.get('orphan_pending', 0):,} orphan, "
              f"{t['bytes']:,} B) in {summary['seconds']:.2f} s ({rows / secs:,.0f} rows/s)"
              + (f", {len(hostile):,} hostile lines ({sum(h['bytes'] for h in hostile) / 1e6:,.1f} MB)"
                 if hostile else "")
              + (", replaced the existing files" if summary["replaced_existing"] else ""),
              file=sys.stderr)
    if cfg.summary:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0
