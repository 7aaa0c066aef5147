"""make bench-demo: `make demo` on the deployed stack, timed from trigger to published.

Needs a provisioned, healthy stack (`make up`). Each run lands a generated
batch for the current half-day (``--transactions``, default 100k, as `make
demo`), triggers optasia_etl_pipeline through the REST API and follows it. A
second run is a rerun of the same batch with fresh files (the job undoes the
first run's changes), so it shows the same work with a warm host.

It prints, per run: seconds from the trigger to the end of ``hdfs_storage``
(the stage that records the publish) and to the end of the run, each stage's
seconds, the Spark job's own step split (``timings`` in ``_metrics.json``),
the share of ``spark_processing`` in the run; and writes the table to
``results/bench-demo.md``. A benchmark, not a test: nothing fails on time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from spark_jobs.contract import partition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PUBLISHED_BY = "hdfs_storage"


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def one_run(drive, af, batch: str, transactions: int, seed: int, timeout: float) -> dict:
    drive.land(batch, transactions, seed)
    t0 = dt.datetime.now(dt.timezone.utc)
    run_id = drive.start_or_follow(af, batch)
    state = drive.follow(af, run_id, timeout)
    if state != "success":
        drive.report(af, run_id, batch, state)
        raise SystemExit(f"run {run_id} ended {state}; no figures")
    tis = af.tasks(run_id)
    stages = {}
    for task_id, ti in tis.items():
        start, end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
        if start and end:
            stages[task_id] = (start, end)
    run = af.run(run_id)
    published = stages[PUBLISHED_BY][1]
    s = drive.settings()
    doc = json.loads(drive.hdfs_cat(partition(s["warehouse_dir"], "transactions", batch) + "/_metrics.json"))
    return {
        "run_id": run_id,
        "to_published": (published - t0).total_seconds(),
        "to_end": (_ts(run["end_date"]) - t0).total_seconds(),
        "stages": {k: (e - b).total_seconds() for k, (b, e) in sorted(stages.items(), key=lambda kv: kv[1][0])},
        "timings": doc.get("timings") or {},
        "published": doc["metrics"]["published"],
        "transactions_input": doc["metrics"]["transactions_input"],
    }


def table(runs: list[dict], transactions: int, target: float) -> str:
    stages = list(dict.fromkeys(k for r in runs for k in r["stages"]))
    lines = [f"| run | transactions | published | trigger -> published s | trigger -> run end s | "
             f"{' | '.join(stages)} |", "|---" * (5 + len(stages)) + "|"]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['transactions_input']:,} | {r['published']:,} | {r['to_published']:.1f} | "
                     f"{r['to_end']:.1f} | " + " | ".join(f"{r['stages'].get(k, 0):.1f}" for k in stages) + " |")
    keys = list(dict.fromkeys(k for r in runs for k in r["timings"] if k != "total"))
    lines += ["", "The Spark job's own split (seconds, from _metrics.json):", "",
              f"| run | {' | '.join(keys)} | total |", "|---" * (len(keys) + 2) + "|"]
    for i, r in enumerate(runs, 1):
        t = r["timings"]
        lines.append(f"| {i} | " + " | ".join(f"{t.get(k, 0):.1f}" for k in keys) + f" | {t.get('total', 0):.1f} |")
    lines.append("")
    for i, r in enumerate(runs, 1):
        spark = r["stages"].get("spark_processing", 0)
        lines.append(f"run {i}: trigger to published {r['to_published']:.1f} s (target <= {target:.0f} s for "
                     f"{transactions:,} transactions); spark_processing {spark:.1f} s = "
                     f"{100 * spark / max(r['to_published'], 1e-9):.0f}% of it, the job's own steps "
                     f"{r['timings'].get('total', 0):.1f} s of that")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transactions", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=2, help="runs of the same batch, each with fresh files")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to follow one run")
    ap.add_argument("--target", type=float, default=40.0, help="seconds from trigger to published to compare with")
    ap.add_argument("--results", default="results/bench-demo.md")
    args = ap.parse_args(argv)

    if subprocess.run([sys.executable, str(ROOT / "scripts" / "health.py")], capture_output=True).returncode:
        print("ERROR: the stack is not up and healthy (`make health`); run `make up` first", file=sys.stderr)
        return 1
    from tests.services import pipeline_cli

    drive = pipeline_cli()
    af = drive.Airflow()
    batch = drive.current_batch()
    runs = []
    for i in range(args.runs):
        print(f"--- run {i + 1}/{args.runs} of batch {batch} ({args.transactions:,} transactions)", flush=True)
        runs.append(one_run(drive, af, batch, args.transactions, args.seed + i, args.timeout))
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    text = "\n".join([f"# make bench-demo ({machine})", "",
                      "The deployed stack; each run lands fresh files for the same batch and triggers the DAG "
                      "through the REST API. Stage seconds are Airflow's task start to end (a stage waiting "
                      "in the queue is not counted in it, the trigger-to columns count everything).", "",
                      table(runs, args.transactions, args.target)])
    print("\n" + text)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text + "\n")
    print(f"\nwritten to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
