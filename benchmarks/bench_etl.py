"""make bench-etl: the Spark job against the DuckDB measuring stick.

For each size (default 1M and 5M transactions, one subscriber per five
transactions, 5% dirty rows) it generates one batch on local disk, runs the
Spark job in local mode (with a real PostgreSQL store, started here) and the
DuckDB reference on the same files, and prints wall time, input rows/s, peak
RSS of each process tree, and the Spark/DuckDB time ratio. It fails when the
two disagree on published or rejected counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH = "2024-03-01_a"
COMPARED = ("published", "transactions_rejected", "subscribers_rejected", "transactions_duplicate",
            "subscribers_duplicate", "subscribers_inserted", "pending_out")


class PeakRss:
    """Samples the summed RSS of a process and all its children."""

    def __init__(self, pid: int, every: float = 0.2):
        self.peak = 0
        self._pid, self._every = pid, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            proc = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for p in [proc] + proc.children(recursive=True):
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(self._every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def measured(cmd: list[str], env: dict, label: str) -> tuple[float, int, str]:
    """Run cmd; return (seconds, peak tree RSS bytes, stdout). Progress every 15 s."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    sampler = PeakRss(proc.pid)
    out_chunks, err_chunks = [], []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((proc.stdout, out_chunks), (proc.stderr, err_chunks))]
    for r in readers:
        r.start()
    while proc.poll() is None:
        time.sleep(0.5)
        if int(time.monotonic() - t0) % 15 == 0:
            print(f"  {label}: {time.monotonic() - t0:.0f}s, peak RSS so far {sampler.peak / 2**20:.0f} MiB",
                  flush=True)
            time.sleep(0.5)
    for r in readers:
        r.join()
    seconds = time.monotonic() - t0
    peak = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{''.join(err_chunks)[-4000:]}")
    return seconds, peak, "".join(out_chunks)


def generate(work: Path, n: int) -> Path:
    landing = work / f"landing-{n}"
    stamp = landing / f".complete-{BATCH}"
    if stamp.exists():
        print(f"using generated batch in {landing}")
        return landing
    print(f"generating {n:,} transactions and {n // 5:,} subscribers into {landing} ...", flush=True)
    subprocess.run([sys.executable, "-m", "spark_jobs.datagen", "--landing", str(landing), "--batch-id", BATCH,
                    "--subscribers", str(n // 5), "--transactions", str(n), "--dirty-share", "0.05",
                    "--seed", "42"], check=True, cwd=ROOT)
    stamp.touch()
    return landing


def compare(spark_m: dict, duck_m: dict) -> list[str]:
    return [f"{k}: spark {spark_m[k]} != duckdb {duck_m[k]}" for k in COMPARED if spark_m[k] != duck_m[k]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,5000000", help="transactions per run, comma separated")
    ap.add_argument("--work-dir", default=os.path.join(os.environ.get("OPTASIA_CACHE", "/opt/optasia/cache"), "bench"))
    ap.add_argument("--results", default="results/bench-etl.md")
    ap.add_argument("--driver-memory", default="6g")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    from spark_jobs.config import database_from
    from spark_jobs.migrations import migrate
    from tests.services import postgres_jdbc_jar
    from tests.services.postgres import PostgresServer

    rows, failures = [], []
    with PostgresServer() as pg:
        for n in sizes:
            landing = generate(work, n)
            input_rows = sum(1 for name in ("subscribers.csv", "transactions.csv")
                             for line in open(landing / BATCH / name, "rb") if line not in (b"\n", b"\r\n"))
            dbname = f"bench_{n}_{int(time.time())}"
            pg.create_database(dbname, owner=pg.user)
            env = dict(os.environ, OPTASIA_DB_USER=pg.user, OPTASIA_DB_PASSWORD=pg.password,
                       PYTHONPATH=str(ROOT))
            jdbc = f"jdbc:postgresql://127.0.0.1:{pg.port}/{dbname}"
            migrate(database_from(jdbc, environ=env))
            warehouse = work / f"warehouse-{n}-{int(time.time())}"
            print(f"[{n:,}] Spark job (local[*], driver {args.driver_memory}) ...", flush=True)
            s_sec, s_rss, s_out = measured(
                [sys.executable, "-m", "spark_jobs", "run", "--batch-id", BATCH, "--input-uri",
                 f"file://{landing}", "--warehouse-uri", f"file://{warehouse}", "--jdbc-url", jdbc,
                 "--master", "local[*]", "--driver-memory", args.driver_memory,
                 "--jdbc-jar", postgres_jdbc_jar()], env, "spark")
            spark_m = json.loads(s_out)["metrics"]
            print(f"[{n:,}] DuckDB reference ...", flush=True)
            d_sec, d_rss, d_out = measured(
                [sys.executable, "benchmarks/duckdb_reference.py", str(landing), BATCH], env, "duckdb")
            duck_m = json.loads(d_out)
            diff = compare(spark_m, duck_m)
            if diff:
                failures.append(f"{n:,} transactions: " + "; ".join(diff))
            rows.append(dict(n=n, input_rows=input_rows, published=spark_m["published"],
                             rejected=sum(spark_m["transactions_rejected"].values())
                             + sum(spark_m["subscribers_rejected"].values()),
                             spark_s=s_sec, duck_s=d_sec, spark_rss=s_rss, duck_rss=d_rss,
                             agree="yes" if not diff else "NO"))

    header = ("| transactions | input rows | published | rejected | Spark s | Spark rows/s | Spark peak RSS MiB "
              "| DuckDB s | DuckDB rows/s | DuckDB peak RSS MiB | Spark/DuckDB time | counts agree |")
    lines = [header, "|" + "|".join(["---"] * 12) + "|"]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['input_rows']:,} | {r['published']:,} | {r['rejected']:,} | {r['spark_s']:.1f} "
            f"| {r['input_rows'] / r['spark_s']:,.0f} | {r['spark_rss'] / 2**20:,.0f} | {r['duck_s']:.1f} "
            f"| {r['input_rows'] / r['duck_s']:,.0f} | {r['duck_rss'] / 2**20:,.0f} "
            f"| {r['spark_s'] / r['duck_s']:.1f}x | {r['agree']} |")
    machine = (f"{platform.node()}: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
               f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    text = "\n".join([f"# make bench-etl ({machine})", "",
                      "Rows/s count input rows (subscribers + transactions, empty lines excluded); peak RSS is the "
                      "whole process tree (Python + JVM for Spark), sampled every 0.2 s. Spark runs local[*] with "
                      "a real PostgreSQL store; times include JVM start-up and the store load.", ""] + lines)
    print("\n" + text)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text + "\n")
    print(f"\nwritten to {args.results}")
    if failures:
        print("Spark and DuckDB DISAGREE:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
