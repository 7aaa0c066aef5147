"""make bench-up: how long provisioning takes and what the stack costs at idle.

1. cold:  no bundle home, no download cache, none of the bundle's images -> make up
2. warm:  download cache kept, stacks and images removed               -> make up
3. no-change re-run                                                    -> make up
4. idle memory: RSS of every container after the stack settled (docker stats)

Destructive on purpose: it destroys the stack and the cache first. Prints a
table and writes it to results/bench-up.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = os.environ.get("OPTASIA_HOME", "/opt/optasia")
CACHE = os.environ.get("OPTASIA_CACHE", f"{HOME}/cache")
UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 1e3, "mb": 1e6, "gb": 1e9}


def sh(*cmd, check=True):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def timed_up(label: str) -> tuple[float, int]:
    print(f"{label}: make up ...", flush=True)
    t0 = time.monotonic()
    out = sh("make", "up", "ANSIBLE_ARGS=-e ansible_nocolor=true")
    seconds = time.monotonic() - t0
    changed = sum(int(x) for x in re.findall(r"\schanged=(\d+)", out))
    print(f"{label}: {seconds:.0f}s, changed={changed}", flush=True)
    return seconds, changed


def remove_images():
    images = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}").split()
    ours = [i for i in images if i.startswith("optasia/") or i == "debian:bookworm-slim"]
    if ours:
        sh("docker", "rmi", "-f", *ours)
    sh("docker", "builder", "prune", "-af", check=False)


def destroy():
    sh("make", "destroy", "FORCE=1", check=False)


def idle_memory(settle: int) -> list[tuple[str, float]]:
    print(f"letting the stack settle for {settle}s ...", flush=True)
    time.sleep(settle)
    out = sh("docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}")
    rows = []
    for line in out.splitlines():
        name, usage = line.split(" ", 1)
        m = re.match(r"([\d.]+)\s*([KMG]i?B|B)", usage.split("/")[0].strip(), re.I)
        if m and name.startswith("optasia"):
            rows.append((name, float(m.group(1)) * UNITS[m.group(2).lower()] / 2**20))
    return sorted(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results/bench-up.md")
    ap.add_argument("--settle", type=int, default=60, help="seconds before measuring idle memory")
    args = ap.parse_args(argv)

    destroy()
    remove_images()
    shutil.rmtree(CACHE, ignore_errors=True)
    cold = timed_up("cold (empty cache and image store)")
    destroy()
    remove_images()
    warm = timed_up("warm (download cache kept, images rebuilt)")
    again = timed_up("no-change re-run")
    memory = idle_memory(args.settle)

    lines = [f"# make bench-up ({os.uname().nodename}, {os.cpu_count()} CPUs, "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             "| run | seconds | changed tasks |", "|---|---|---|",
             f"| cold: empty download cache and image store | {cold[0]:.0f} | {cold[1]} |",
             f"| warm: cache kept, images and stacks removed | {warm[0]:.0f} | {warm[1]} |",
             f"| no-change re-run | {again[0]:.0f} | {again[1]} |", "",
             "| container (idle) | RSS MiB |", "|---|---|"]
    lines += [f"| {name} | {mib:.0f} |" for name, mib in memory]
    lines.append(f"| **sum** | **{sum(m for _, m in memory):.0f}** |")
    lines += ["", "The Python virtualenv (.venv) is not part of the cold run: `make deps` made it before."]
    text = "\n".join(lines)
    print("\n" + text)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text + "\n")
    print(f"\nwritten to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
