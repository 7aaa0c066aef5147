#!/usr/bin/env python3
"""The "Variables" table of each role's README, generated from its defaults/main.yml.

  python3 scripts/role_docs.py           rewrite the tables between the markers
  python3 scripts/role_docs.py --check   exit 1 when a README's table is not what the defaults say

A role's defaults/main.yml is the one home of its variables and their
comments; the README shows them between ``<!-- variables -->`` and
``<!-- /variables -->``, so the two cannot drift (the lint tests run --check).
Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- variables -->", "<!-- /variables -->"


def variables(defaults: Path) -> list[tuple[str, str, str]]:
    """(name, default, description): a comment block describes the variables under it."""
    rows, comment, desc, after_var = [], [], "", False
    for line in defaults.read_text().splitlines():
        if line.startswith("#"):
            if after_var:
                comment, after_var = [], False
            comment.append(line.lstrip("#").strip())
            continue
        m = re.match(r"^([a-z][a-z0-9_]*):\s*(.*)$", line)
        if m:
            if comment:
                desc, comment = " ".join(comment), []
            name, value = m.groups()
            value = value.strip() or "(see defaults/main.yml)"
            if len(value) > 60:
                value = value[:57] + "..."
            rows.append((name, value, desc))
            after_var = True
    return rows


def table(defaults: Path) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [START, "", "Generated from `defaults/main.yml` by `scripts/role_docs.py`; override them in the "
             "inventory (`inventory/group_vars/all.yml`) or with `-e`.", "",
             "| variable | default | what it is |", "|---|---|---|"]
    lines += [f"| `{n}` | `{cell(v)}` | {cell(d)} |" for n, v, d in variables(defaults)]
    return "\n".join(lines + ["", END])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    stale = []
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "defaults" / "main.yml").is_file()):
        readme = role / "README.md"
        if not readme.is_file():
            stale.append(f"{readme.relative_to(ROOT)} is missing")
            continue
        text = readme.read_text()
        if START not in text or END not in text:
            stale.append(f"{readme.relative_to(ROOT)} has no {START} ... {END} block")
            continue
        new = text[:text.index(START)] + table(role / "defaults" / "main.yml") + text[text.index(END) + len(END):]
        if new != text:
            if args.check:
                stale.append(f"{readme.relative_to(ROOT)}: the variables table is out of date")
            else:
                readme.write_text(new)
                print(f"updated {readme.relative_to(ROOT)}")
    if stale:
        print("\n".join(stale) + "\nrun: python3 scripts/role_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
