"""make bench-etl: the Spark job against the floor Spark sets and the DuckDB stick.

For each size (default 1M and 5M transactions, one subscriber per five
transactions, 5% dirty rows; ``--sizes`` / ``make bench-etl SIZES=...``) it
generates one batch on local disk and runs, on the same files, in this order:

- ``job``: ``python -m spark_jobs run`` in local mode, a real PostgreSQL
  store (started here), a ``file://`` warehouse;
- ``naive``: benchmarks/naive_spark.py, a plain PySpark job (same CSV, the
  transaction rules, dedupe, join, one Parquet write; no store, no rejects):
  the floor Spark sets on this machine;
- ``duckdb-equal``: the DuckDB stick doing the job's work: metrics, published
  and rejects Parquet, subscribers and pending rows COPYed into PostgreSQL;
- ``duckdb``: the DuckDB stick, contract metrics only;
- ``job-2nd`` (``--steady``, on by default): a second batch of the same size
  on top of the store the first one left (its subscribers and pending rows),
  to show that the job reads only what the batch needs from the store;
- ``job-hostile`` (at ``--hostile-size``, 1M by default): the same batch with
  the generator's hostile lines mixed in (``--hostile all``: 1 MB and 8 MB
  values in every field, a 50 MB line, a million commas, a 20 MB last line
  without a newline, unclosed quotes; ~300 MB more), run into a store of its
  own, and checked against the DuckDB stick like the others: the hostile
  lines must cost seconds, not minutes.

It prints seconds, input rows/s and peak RSS (whole process tree) of each,
the job's own split per step (``timings`` of its ``_metrics.json``), the
ratios job/naive and job/duckdb-equal, and fails when the job and DuckDB
disagree on any count. ``--small`` adds a 2,000-transaction batch and the
JVM + Spark session start alone.

The job's driver runs as in the spark-job image: with a class archive
(spark_jobs/warmup.py) recorded first into the work folder and passed by
``OPTASIA_CLASS_ARCHIVE``. ``--small`` also runs the 2,000-row batch and the
session start without it, to show what the archive saves. The naive baseline
is a plain PySpark script and runs without one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH, NEXT_BATCH = "2024-03-01_a", "2024-03-01_b"
SMALL = 2_000


def _vm_hwm(pid: int) -> int:
    """The kernel's high-water mark of a process's RSS (bytes), 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _name(p) -> str:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return ""


class PeakRss:
    """Samples the summed RSS of a process and all its children (not the
    JVM's own short-lived children), and the
    driver JVM's own peak (its VmHWM: exact, not sampled, up to the last
    sample before it exits)."""

    def __init__(self, pid: int, every: float = 0.2):
        self.peak = 0
        self.jvm = 0
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
                tree = [proc] + proc.children(recursive=True)
                jvms = {p.pid for p in tree if _name(p) == "java"}
                for p in tree:
                    try:
                        # A short-lived child the JVM forks (Hadoop's shell calls) shares its
                        # pages until exec, and would count the JVM's RSS twice.
                        if p.ppid() in jvms:
                            continue
                        total += p.memory_info().rss
                        if p.name() == "java":
                            self.jvm = max(self.jvm, _vm_hwm(p.pid))
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


def measured(cmd: list[str], env: dict, label: str) -> tuple[float, dict, str]:
    """Run cmd; return (seconds, {"rss": peak tree RSS, "jvm": the JVM's peak RSS} in bytes, stdout).
    Progress every 15 s."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    sampler = PeakRss(proc.pid)
    out_chunks, err_chunks = [], []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((proc.stdout, out_chunks), (proc.stderr, err_chunks))]
    for r in readers:
        r.start()
    next_note = 15
    while proc.poll() is None:
        time.sleep(0.2)
        if time.monotonic() - t0 >= next_note:
            print(f"  {label}: {next_note}s, peak RSS so far {sampler.peak / 2**20:.0f} MiB", flush=True)
            next_note += 15
    for r in readers:
        r.join()
    seconds = time.monotonic() - t0
    peak = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{''.join(err_chunks)[-4000:]}")
    return seconds, {"rss": peak, "jvm": sampler.jvm}, "".join(out_chunks)


def generate(work: Path, n: int, batch: str, first_subscriber: int = 0, seed: int = 42,
             hostile: bool = False) -> Path:
    landing = work / f"landing-{n}{'-hostile' if hostile else ''}"
    stamp = landing / f".complete-{batch}"
    if stamp.exists():
        print(f"using generated batch {batch} in {landing}")
        return landing
    print(f"generating {batch}: {n:,} transactions and {n // 5:,} subscribers"
          f"{' with the hostile lines' if hostile else ''} into {landing} ...", flush=True)
    cmd = [sys.executable, "-m", "optasia_datagen", "--landing", str(landing), "--batch-id", batch,
           "--subscribers", str(max(1, n // 5)), "--transactions", str(n), "--dirty-share", "0.05",
           "--seed", str(seed), "--quiet"] + (["--hostile", "all"] if hostile else [])
    if first_subscriber:
        # the next batch: new subscribers after the first batch's, and resends of earlier ones
        cmd += ["--first-subscriber", str(first_subscriber), "--resend-share", "0.05"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    stamp.touch()
    return landing


@functools.lru_cache(maxsize=None)
def input_rows(landing: Path, batch: str) -> int:
    """Non-empty lines of the batch's two files (counted once per batch)."""
    return sum(1 for name in ("subscribers.csv", "transactions.csv")
               for line in open(landing / batch / name, "rb") if line not in (b"\n", b"\r\n"))


def compare(job: dict, duck: dict) -> list[str]:
    return [f"{k}: job {job[k]} != duckdb {duck[k]}" for k in job if job[k] != duck.get(k)]


class Bench:
    def __init__(self, args, pg):
        self.args, self.pg = args, pg
        self.work = Path(args.work_dir)
        self.env = dict(os.environ, OPTASIA_DB_USER=pg.user, OPTASIA_DB_PASSWORD=pg.password,
                        PGPASSWORD=pg.password, PYTHONPATH=str(ROOT))
        self.rows: list[dict] = []
        self.splits: list[tuple[str, dict]] = []
        self.phases: dict[int, list[tuple[str, dict]]] = {}
        self.failures: list[str] = []
        self.archive = self.work / "spark-job-classes.jsa"

    def record_class_archive(self):
        from spark_jobs.session import CLASS_ARCHIVE_ENV
        from tests.services import postgres_jdbc_jar

        print("recording the driver's class archive (as the spark-job image does) ...", flush=True)
        self.env.pop(CLASS_ARCHIVE_ENV, None)
        subprocess.run([sys.executable, "-m", "spark_jobs", "class-archive", str(self.archive),
                        "--jdbc-jar", postgres_jdbc_jar()], env=self.env, check=True)
        self.env[CLASS_ARCHIVE_ENV] = str(self.archive)

    def without_archive(self) -> dict:
        from spark_jobs.session import CLASS_ARCHIVE_ENV

        return {k: v for k, v in self.env.items() if k != CLASS_ARCHIVE_ENV}

    def database(self, name: str) -> str:
        from spark_jobs.config import database_from
        from spark_jobs.migrations import migrate

        dbname = f"{name}_{int(time.time() * 1000) % 10**9}"
        self.pg.create_database(dbname, owner=self.pg.user)
        jdbc = f"jdbc:postgresql://127.0.0.1:{self.pg.port}/{dbname}"
        migrate(database_from(jdbc, environ=self.env))
        return dbname

    def row(self, label: str, n: int, rows: int, seconds: float, mem: dict, **extra):
        self.rows.append(dict(label=label, n=n, rows=rows, seconds=seconds, rss=mem["rss"], jvm=mem["jvm"], **extra))
        jvm = f", JVM peak {mem['jvm'] / 2**20:,.0f} MiB" if mem["jvm"] else ""
        print(f"[{n:,}] {label}: {seconds:.1f} s, {rows / seconds:,.0f} rows/s, peak RSS {mem['rss'] / 2**20:,.0f} MiB"
              f"{jvm}", flush=True)

    def logged(self, env: dict, label: str, n: int) -> tuple[dict, Path]:
        """env with Spark's event log on, into a folder of its own."""
        from benchmarks.stage_split import with_event_log

        # no space in the folder: it goes into PYSPARK_SUBMIT_ARGS
        folder = self.work / "eventlogs" / f"{label.replace(' ', '-')}-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        return with_event_log(env, folder), folder

    def phase_split(self, label: str, n: int, folder: Path):
        from benchmarks.stage_split import latest_log, split

        self.phases.setdefault(n, []).append((label, split(latest_log(folder))))

    def job(self, n: int, landing: Path, dbname: str, warehouse: Path, batch: str, label: str,
            env: dict | None = None) -> dict:
        from tests.services import postgres_jdbc_jar

        print(f"[{n:,}] {label}: Spark job (local[*], driver {self.args.driver_memory}) ...", flush=True)
        env, events = self.logged(env or self.env, label, n)
        sec, mem, out = measured(
            [sys.executable, "-m", "spark_jobs", "run", "--batch-id", batch, "--input-uri", f"file://{landing}",
             "--warehouse-uri", f"file://{warehouse}",
             "--jdbc-url", f"jdbc:postgresql://127.0.0.1:{self.pg.port}/{dbname}",
             "--master", "local[*]", "--driver-memory", self.args.driver_memory,
             "--jdbc-jar", postgres_jdbc_jar()], env, label)
        self.phase_split(label, n, events)
        result = json.loads(out)
        self.row(label, n, input_rows(landing, batch), sec, mem, metrics=result["metrics"])
        self.splits.append((f"{label} {n:,}", result["timings"]))
        return result

    def naive(self, n: int, landing: Path):
        out_dir = self.work / f"naive-{n}"
        shutil.rmtree(out_dir, ignore_errors=True)
        print(f"[{n:,}] naive Spark baseline ...", flush=True)
        env, events = self.logged(self.without_archive(), "naive", n)
        sec, mem, _ = measured([sys.executable, "benchmarks/naive_spark.py", str(landing), BATCH, str(out_dir),
                                "--driver-memory", self.args.driver_memory], env, "naive")
        self.phase_split("naive", n, events)
        self.row("naive", n, input_rows(landing, BATCH), sec, mem)

    def duckdb(self, n: int, landing: Path, equal_work: bool, label: str = "") -> dict:
        cmd = [sys.executable, "benchmarks/duckdb_reference.py", str(landing), BATCH]
        label = label or ("duckdb-equal" if equal_work else "duckdb")
        if equal_work:
            out_dir = self.work / f"duck-{n}"
            shutil.rmtree(out_dir, ignore_errors=True)
            dbname = self.database("duck")
            cmd += ["--output", str(out_dir), "--store-dsn",
                    f"host=127.0.0.1 port={self.pg.port} user={self.pg.user} dbname={dbname}"]
        print(f"[{n:,}] DuckDB stick{' (equal work)' if equal_work else ''} ...", flush=True)
        sec, mem, out = measured(cmd, self.env, label)
        metrics = json.loads(out)
        self.row(label, n, input_rows(landing, BATCH), sec, mem)
        return metrics

    def size(self, n: int):
        landing = generate(self.work, n, BATCH)
        dbname = self.database(f"job{n}")
        warehouse = self.work / f"warehouse-{n}"
        shutil.rmtree(warehouse, ignore_errors=True)
        first = self.job(n, landing, dbname, warehouse, BATCH, "job")
        self.naive(n, landing)
        for equal in (True, False):
            diff = compare(first["metrics"], self.duckdb(n, landing, equal))
            if diff:
                self.failures.append(f"{n:,} transactions ({'equal work' if equal else 'contract'}): "
                                     + "; ".join(diff))
        if self.args.steady:
            generate(self.work, n, NEXT_BATCH, first_subscriber=n // 5 + 1, seed=43)
            self.job(n, landing, dbname, warehouse, NEXT_BATCH, "job-2nd")
        if n == self.args.hostile_size:
            self.hostile(n)

    def hostile(self, n: int):
        landing = generate(self.work, n, BATCH, hostile=True)
        warehouse = self.work / f"warehouse-{n}-hostile"
        shutil.rmtree(warehouse, ignore_errors=True)
        job = self.job(n, landing, self.database(f"hostile{n}"), warehouse, BATCH, "job-hostile")
        diff = compare(job["metrics"], self.duckdb(n, landing, False, "duckdb-hostile"))
        if diff:
            self.failures.append(f"{n:,} transactions with the hostile lines: " + "; ".join(diff))

    def small(self):
        from tests.services import postgres_jdbc_jar

        landing = generate(self.work, SMALL, BATCH)
        code = ("import sys, time; t0 = time.monotonic(); from spark_jobs.session import build_session; "
                f"s = build_session(master='local[*]', jdbc_jar={postgres_jdbc_jar()!r}); "
                "print(time.monotonic() - t0); s.stop()")
        for label, env in (("", self.env), (" no-archive", self.without_archive())):
            print(f"JVM + Spark session start alone{label} ...", flush=True)
            sec, mem, _ = measured([sys.executable, "-c", code], env, "session")
            self.row(f"session-only{label}", 0, 1, sec, mem)
            dbname = self.database("small")
            warehouse = self.work / f"warehouse-{SMALL}"
            shutil.rmtree(warehouse, ignore_errors=True)
            self.job(SMALL, landing, dbname, warehouse, BATCH, f"job{label}", env)

    def table(self) -> str:
        by = {(r["label"], r["n"]): r for r in self.rows}
        lines = ["| transactions | run | input rows | seconds | rows/s | peak RSS MiB | JVM peak RSS MiB | vs naive "
                 "| vs DuckDB equal work |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            naive, duck = by.get(("naive", r["n"])), by.get(("duckdb-equal", r["n"]))
            vs_naive = f"{r['seconds'] / naive['seconds']:.2f}x" if naive and r["label"].startswith("job") else ""
            vs_duck = f"{r['seconds'] / duck['seconds']:.1f}x" if duck and r["label"].startswith("job") else ""
            n = f"{r['n']:,}" if r["n"] else "-"
            jvm = f"{r['jvm'] / 2**20:,.0f}" if r["jvm"] else "-"
            lines.append(f"| {n} | {r['label']} | {r['rows']:,} | {r['seconds']:.1f} | "
                         f"{r['rows'] / r['seconds']:,.0f} | {r['rss'] / 2**20:,.0f} | {jvm} | "
                         f"{vs_naive} | {vs_duck} |")
        second = [(r, by.get(("job", r["n"]))) for r in self.rows if r["label"] == "job-2nd"]
        for r, first in second:
            if first:
                lines.append(f"\nsteady state at {r['n']:,}: the second batch took "
                             f"{r['seconds'] / first['seconds']:.2f}x the first")
        for label in ("", " no-archive"):
            small, session = by.get((f"job{label}", SMALL)), by.get((f"session-only{label}", 0))
            if small and session:
                lines.append(f"\nsmall batch ({SMALL:,} transactions{', without the class archive' if label else ''}):"
                             f" {small['seconds']:.1f} s = {small['seconds'] / session['seconds']:.2f}x the JVM "
                             f"+ session start alone ({session['seconds']:.1f} s)")
        keys = []
        for _, t in self.splits:
            keys += [k for k in t if k not in keys and k != "total"]
        split = ["| job run | " + " | ".join(keys) + " | total |", "|---" * (len(keys) + 2) + "|"]
        for name, t in self.splits:
            split.append(f"| {name} | " + " | ".join(f"{t.get(k, 0):.1f}" for k in keys) + f" | {t['total']:.1f} |")
        phases = []
        for n, runs in self.phases.items():
            if len(runs) > 1:
                from benchmarks.stage_split import table

                phases += ["", f"Phases at {n:,} transactions, from Spark's event logs (benchmarks/stage_split.py: "
                               "wall seconds, and task seconds over the 2 cores):", "", table(runs)]
        return "\n".join(lines + ["", "The job's own split (seconds per step, from its _metrics.json):", ""] + split
                         + phases)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,5000000", help="transactions per run, comma separated")
    ap.add_argument("--work-dir", default=os.path.join(os.environ.get("OPTASIA_CACHE", "/opt/optasia/cache"), "bench"))
    ap.add_argument("--results", default="results/bench-etl.md")
    ap.add_argument("--driver-memory", default=None,
                    help="Spark driver heap of the job and the baseline (default: the deployed job's, "
                         "airflow_pipeline_spark_memory of the airflow role)")
    ap.add_argument("--no-steady", dest="steady", action="store_false",
                    help="skip the second batch on top of the first one's store")
    ap.add_argument("--small", action="store_true", help=f"add a {SMALL:,}-transaction batch and the session start")
    ap.add_argument("--hostile-size", type=int, default=1_000_000,
                    help="at this size also run the batch with the hostile lines mixed in (0: never)")
    args = ap.parse_args(argv)
    if args.driver_memory is None:
        from tests.services import airflow_role_defaults

        args.driver_memory = str(airflow_role_defaults()["airflow_pipeline_spark_memory"])
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)

    from tests.services.postgres import PostgresServer

    with PostgresServer() as pg:
        bench = Bench(args, pg)
        bench.record_class_archive()
        if args.small:
            bench.small()
        for n in sizes:
            bench.size(n)
    machine = (f"{platform.node()}: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
               f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    text = "\n".join([
        f"# make bench-etl ({machine})", "",
        "Same files, same run. Rows/s count input rows (subscribers + transactions, empty lines excluded); "
        "peak RSS is the whole process tree (Python + JVM for Spark), sampled every 0.2 s. Spark runs "
        f"local[*] with a {args.driver_memory} driver; times include JVM start-up. The job's driver maps "
        "the class archive the spark-job image ships (recorded first, as the image build does); "
        "'no-archive' rows run without it, the naive baseline never has one. job-2nd is the next "
        "batch on top of the store the first one left.", "", bench.table()])
    print("\n" + text)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text + "\n")
    print(f"\nwritten to {args.results}")
    if bench.failures:
        print("the job and DuckDB DISAGREE:\n  " + "\n  ".join(bench.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
