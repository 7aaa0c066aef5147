#!/usr/bin/env python3
"""Drive optasia_etl_pipeline on the deployed stack from the host.

  scripts/pipeline.py demo [--transactions N]   land a generated batch, run the DAG, show the result
  scripts/pipeline.py run --batch BATCH         run the DAG for a batch already in <landing>/BATCH/
  scripts/pipeline.py abandon --batch BATCH     undo a failed batch's store changes (keeps its files)

Talks to Airflow's REST API as the provisioned admin (password from the bundle
home's secrets), reads HDFS through the NameNode container, and shows each
stage's state while the run goes. Exit code 0 only when the run succeeded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from spark_jobs.contract import METRIC_KEYS, batch_date, batch_id_for, partition

HOME = Path(os.environ.get("OPTASIA_HOME", "/opt/optasia"))
ROOT = Path(__file__).resolve().parents[1]
DAG = "optasia_etl_pipeline"
STATE_STAGES = ("spark_processing", "quality_checks", "hdfs_storage")   # depends_on_past
AIRFLOW_UID = 50000   # the worker's user: it archives the landing folder after a publish


def die(msg: str, code: int = 1):
    print(f"ERROR: {msg}", file=sys.stderr)
    sys.exit(code)


def say(msg: str):
    print(msg, flush=True)


class Airflow:
    def __init__(self):
        try:
            self.base = json.loads((HOME / "endpoints-airflow.json").read_text())["airflow_api"]
            password = (HOME / "secrets" / "airflow_admin_password").read_text().strip()
        except OSError as exc:
            die(f"the stack is not provisioned here ({exc}); run `make up` first")
        self.token = self.call("/auth/token", "POST", {"username": "admin", "password": password},
                               auth=False)["access_token"]

    def call(self, path: str, method: str = "GET", body=None, auth: bool = True, raw: bool = False):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    data = resp.read()
                    return data.decode(errors="replace") if raw else json.loads(data or b"null")
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:500]
                if exc.code >= 500 and attempt < 4:
                    time.sleep(3)
                    continue
                die(f"Airflow API {method} {path}: HTTP {exc.code} {detail}")
            except (urllib.error.URLError, OSError) as exc:
                if attempt < 4:
                    time.sleep(3)
                    continue
                die(f"Airflow API at {self.base} is unreachable: {exc}; check `make health`")
        return None

    def runs(self, *states: str) -> list[dict]:
        q = "&".join(f"state={s}" for s in states)
        return self.call(f"/api/v2/dags/{DAG}/dagRuns?{q}&order_by=-logical_date&limit=20")["dag_runs"]

    def trigger(self, batch: str) -> str:
        run_id = f"manual__{batch}__{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        self.call(f"/api/v2/dags/{DAG}/dagRuns", "POST",
                  {"dag_run_id": run_id, "logical_date": now, "conf": {"batch_id": batch}})
        return run_id

    def tasks(self, run_id: str) -> dict:
        q = urllib.parse.quote(run_id, safe="")
        tis = self.call(f"/api/v2/dags/{DAG}/dagRuns/{q}/taskInstances?limit=100")["task_instances"]
        return {t["task_id"]: t for t in tis}

    def run(self, run_id: str) -> dict:
        return self.call(f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def log(self, run_id: str, task_id: str, try_number: int) -> str:
        q = urllib.parse.quote(run_id, safe="")
        out = self.call(f"/api/v2/dags/{DAG}/dagRuns/{q}/taskInstances/{task_id}/logs/{try_number}"
                        "?full_content=true", raw=True)
        try:
            content = json.loads(out).get("content", out)
        except ValueError:
            return out
        if isinstance(content, list):
            return "\n".join(_log_line(c) for c in content)
        return str(content)


def _log_line(entry) -> str:
    """One structured log entry as text; a task's exception is in its error_detail."""
    if not isinstance(entry, dict):
        return str(entry)
    text = str(entry.get("event", ""))
    details = entry.get("error_detail") or []
    if isinstance(details, list) and details:
        text += " " + "; ".join(f"{d.get('exc_type')}: {d.get('exc_value')}" for d in details if isinstance(d, dict))
    return text


def batch_of_run(r: dict) -> str | None:
    conf = r.get("conf") or {}
    if conf.get("batch_id"):
        return conf["batch_id"]
    when = r.get("logical_date") or r.get("run_after")
    if not when:
        return None
    return batch_id_for(dt.datetime.fromisoformat(when.replace("Z", "+00:00")))


def current_batch() -> str:
    return batch_id_for(dt.datetime.now(dt.timezone.utc))


def spec() -> dict:
    # The Variable and Connections the DAG reads, as the playbook rendered them for Airflow.
    try:
        return json.loads((HOME / "airflow" / "secrets" / "settings.json").read_text())
    except OSError as exc:
        die(f"the stack is not provisioned here ({exc}); run `make up` first")


def settings() -> dict:
    return spec()["variables"]["optasia_pipeline"]


def land(batch: str, transactions: int, seed: int) -> dict:
    landing = Path(settings()["host_landing_dir"])
    say(f"generating batch {batch}: {transactions:,} transactions (dirty rows included) into {landing}/{batch}/")
    out = subprocess.run([sys.executable, "-m", "optasia_datagen", "--landing", str(landing),
                          "--batch-id", batch, "--subscribers", str(max(100, transactions // 5)),
                          "--transactions", str(transactions), "--dirty-share", "0.05", "--seed", str(seed),
                          "--summary", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        die(f"the generator failed: {out.stderr.strip()}")
    folder = landing / batch
    for p in [folder, *folder.iterdir()]:
        os.chown(p, AIRFLOW_UID, 0)
        os.chmod(p, 0o775 if p.is_dir() else 0o664)
    return json.loads(out.stdout)


def follow(af: Airflow, run_id: str, timeout: float) -> str:
    say(f"following run {run_id} (UI: {af.base}/dags/{DAG}/runs/{urllib.parse.quote(run_id, safe='')})")
    t0, seen, state = time.monotonic(), {}, None
    while time.monotonic() - t0 < timeout:
        for task_id, ti in sorted(af.tasks(run_id).items(), key=lambda kv: kv[1].get("start_date") or "~"):
            key = (ti.get("state"), ti.get("try_number"))
            if ti.get("state") and seen.get(task_id) != key:
                seen[task_id] = key
                retry = f" (try {ti['try_number']})" if (ti.get("try_number") or 1) > 1 else ""
                say(f"  [{time.monotonic() - t0:6.0f}s] {task_id:<22} {ti['state']}{retry}")
        state = af.run(run_id)["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(5)
    die(f"run {run_id} still {state} after {timeout:.0f}s; watch it in the UI")
    return state


def hdfs_cat(path: str) -> str:
    infra = json.loads((HOME / "endpoints.json").read_text())["infrastructure_project"]
    p = subprocess.run(["docker", "compose", "-p", infra, "exec", "-T", "namenode", "hdfs", "dfs", "-cat", path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        die(f"cannot read {path} from HDFS: {p.stderr.strip()[-500:]}")
    return p.stdout


def report(af: Airflow, run_id: str, batch: str, state: str) -> int:
    s = settings()
    if state != "success":
        note = (af.run(run_id).get("note") or "").strip()
        if note:   # the run's own account (dags/optasia_pipeline/outcome.py): stage, reason, next step
            say(f"\nrun {run_id} " + note.replace("**", "").replace("`", "").split("\n\n[")[0])
        for task_id, ti in af.tasks(run_id).items():
            if ti.get("state") == "failed":
                if not note:
                    lines = [ln for ln in af.log(run_id, task_id, ti["try_number"]).splitlines() if ln.strip()]
                    reason = next((ln for ln in reversed(lines) if "Exception" in ln or "ERROR" in ln), "")
                    say(f"\nrun {run_id} FAILED at {task_id}: {reason.strip()[:800]}")
                say(f"log: {af.base}/dags/{DAG}/runs/{urllib.parse.quote(run_id, safe='')}/tasks/{task_id}")
        if not note:
            say(f"fix the cause, then rerun with `make run BATCH={batch}` (or clear the run in the UI); "
                f"to drop the batch instead: `make abandon BATCH={batch}`")
        return 1
    part = partition(s["warehouse_dir"], "transactions", batch)
    doc = json.loads(hdfs_cat(f"{part}/_metrics.json"))
    m = doc["metrics"]
    say(f"\nbatch {batch} published (run {doc['run_id']}) at {s['hdfs_uri'].rstrip('/')}{part}")
    say(f"  rejects:   {s['hdfs_uri'].rstrip('/')}{partition(s['warehouse_dir'], 'rejects', batch)}")
    say("counts from _metrics.json:")
    for key in METRIC_KEYS:
        if not isinstance(m[key], dict):
            say(f"  {key:<44} {m[key]:>10,}")
    for group in ("subscribers_rejected", "transactions_rejected"):
        for reason, n in sorted(m[group].items()):
            if n:
                say(f"  {group + '.' + reason:<44} {n:>10,}")
    timings = doc.get("timings") or {}
    if timings:
        say("the Spark job's steps (seconds, from _metrics.json): " + ", ".join(
            f"{k} {v:.1f}" for k, v in timings.items() if k != "total") + f"; total {timings.get('total', 0):.1f}")
    run = af.run(run_id)
    try:
        took = (dt.datetime.fromisoformat(run["end_date"]) - dt.datetime.fromisoformat(run["start_date"]))
        say(f"the run took {took.total_seconds():.0f}s from its start to the end of cleanup")
    except (KeyError, TypeError, ValueError):
        pass
    say(f"\nAirflow UI:   {af.base}/dags/{DAG}  (user admin, password: `make admin-password`)")
    say(f"NameNode UI:  http://localhost:9870/explorer.html#{part}")
    return 0


def look_now(af: Airflow, run_id: str):
    """A run waiting for the files between two looks of wait_for_landing
    (up_for_reschedule) looks again now: its task instance is cleared, so the
    scheduler runs the sensor at once instead of at its next poke. The sensor
    still decides; a batch that is not complete yet waits as before."""
    ti = af.tasks(run_id).get("wait_for_landing") or {}
    if ti.get("state") != "up_for_reschedule":
        return
    af.call(f"/api/v2/dags/{DAG}/clearTaskInstances", "POST", {
        "dry_run": False, "dag_run_id": run_id, "task_ids": ["wait_for_landing"], "only_failed": False,
        "only_running": False, "reset_dag_runs": False, "include_downstream": False, "include_upstream": False})
    say("  its wait_for_landing was between two looks for the files; asked it to look now")


def start_or_follow(af: Airflow, batch: str, rerun_failed: bool = False) -> str:
    for r in af.runs("queued", "running"):
        if batch_of_run(r) == batch:
            say(f"run {r['dag_run_id']} is already working on batch {batch}; following it")
            look_now(af, r["dag_run_id"])
            return r["dag_run_id"]
    last = next((r for r in af.call(f"/api/v2/dags/{DAG}/dagRuns?order_by=-run_after&limit=100")["dag_runs"]
                 if batch_of_run(r) == batch), None)
    if rerun_failed and last and last["state"] == "failed":
        # The batch's own failed run goes again (as clearing it in the UI does): a new run would
        # wait for that one's unfinished stages (depends_on_past) and never start them.
        run_id = last["dag_run_id"]
        af.call(f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}/clear", "POST",
                {"dry_run": False})
        deadline = time.monotonic() + 60
        while af.run(run_id)["state"] == "failed" and time.monotonic() < deadline:
            time.sleep(1)
        say(f"cleared run {run_id}, the batch's last run (failed), to run it again")
        return run_id
    busy = af.runs("queued", "running")
    if busy:
        say(f"{len(busy)} run(s) ahead in the queue (one run at a time): "
            + ", ".join(f"{r['dag_run_id']} ({batch_of_run(r)})" for r in busy))
    run_id = af.trigger(batch)
    say(f"triggered run {run_id} for batch {batch}")
    return run_id


def refuse_behind_a_stuck_run(af: Airflow, batch: str):
    """Runs go one at a time: a run for another batch that is waiting for its
    files holds the queue, and a new run would wait behind it for hours
    (`landing_timeout_minutes`). Say so and change nothing."""
    landing = settings()["host_landing_dir"]
    for r in af.runs("queued", "running"):
        other = batch_of_run(r)
        if other == batch:
            continue
        ti = af.tasks(r["dag_run_id"]).get("wait_for_landing") or {}
        if ti.get("state") in ("up_for_reschedule", "running"):
            url = f"{af.base}/dags/{DAG}/runs/{urllib.parse.quote(r['dag_run_id'], safe='')}"
            die(f"run {r['dag_run_id']} is waiting for batch {other}'s files in {landing}/{other}/ "
                f"(since {ti.get('start_date') or r.get('start_date')}), and runs go one at a time: batch {batch} "
                f"would wait behind it. Land that batch (subscribers.csv, transactions.csv, then _READY), or give "
                f"it up: mark the run failed ({url}) and `make abandon BATCH={other}`. Nothing was changed.")


def abandon(batch: str) -> int:
    s = settings()
    store = spec()["connections"][s["store_conn_id"]]
    hdfs = s["hdfs_uri"].rstrip("/")
    # `-e NAME` without a value: docker takes it from our environment, so it is not on a command line.
    env = {**os.environ, "OPTASIA_DB_PASSWORD": store["password"]}
    hdfs_owner = spec()["connections"][s["hdfs_conn_id"]]["login"]
    cmd = ["docker", "run", "--rm", "--network", s["docker_network"], "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges:true", "-e", f"OPTASIA_DB_USER={store['login']}",
           "-e", f"HADOOP_USER_NAME={hdfs_owner}",
           "-e", "OPTASIA_DB_PASSWORD",
           s["spark_image"], "abandon", "--batch-id", batch, "--warehouse-uri", hdfs + s["warehouse_dir"],
           "--staging-uri", hdfs + s["staging_dir"],
           "--jdbc-url", f"jdbc:postgresql://{store['host']}:{store['port']}/{store['schema']}"]
    say(f"abandoning batch {batch}: its store changes are undone, partitions moved aside, landing files kept")
    job = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(job.stderr)
    # Exit 5 is the order rule: the batch is not the latest (refused), or the
    # store never saw it (it failed before staging: only Airflow's runs to settle).
    unknown = job.returncode == 5 and "is unknown to the store" in job.stderr
    if job.returncode != 0 and not unknown:
        say(f"batch {batch} was not abandoned; nothing was changed")
        return job.returncode
    # Later runs wait for this batch's state-changing stages (depends_on_past): mark
    # what did not finish in its failed runs as skipped, the honest state now.
    af = Airflow()
    failed = [r for r in af.call(f"/api/v2/dags/{DAG}/dagRuns?state=failed&limit=100")["dag_runs"]
              if batch_of_run(r) == batch]
    if unknown and not failed:
        die(f"batch {batch} is unknown: the store never saw it and Airflow has no failed run of it; "
            "nothing was changed (`make status` lists the batches)", 5)
    for r in failed:
        q = urllib.parse.quote(r["dag_run_id"], safe="")
        for task_id, ti in af.tasks(r["dag_run_id"]).items():
            if task_id in STATE_STAGES and ti.get("state") not in ("success", "skipped"):
                af.call(f"/api/v2/dags/{DAG}/dagRuns/{q}/taskInstances/{task_id}", "PATCH",
                        {"new_state": "skipped"})
                say(f"  run {r['dag_run_id']}: {task_id} marked skipped (was {ti.get('state')})")
    say(f"batch {batch} abandoned; later batches can run")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="land a generated batch for the current half-day and run it")
    demo.add_argument("--transactions", type=int, default=100_000)
    demo.add_argument("--seed", type=int, default=42)
    for name in ("run", "abandon"):
        p = sub.add_parser(name)
        p.add_argument("--batch", required=True, help="YYYY-MM-DD_a or YYYY-MM-DD_b")
    for p in (demo, sub.choices["run"]):
        p.add_argument("--timeout", type=float, default=3600, help="seconds to follow the run")
    args = ap.parse_args(argv)

    if args.command in ("run", "abandon"):
        try:
            batch_date(args.batch)
        except ValueError as exc:
            die(f"BATCH={args.batch!r}: {exc}; nothing was changed", 2)
    if args.command == "abandon":
        return abandon(args.batch)
    af = Airflow()
    if args.command == "demo":
        batch = current_batch()
        refuse_behind_a_stuck_run(af, batch)
        summary = land(batch, args.transactions, args.seed)
        exp = summary["expected"]["transactions"]
        say(f"landed: {summary['expected']['subscribers']['input']:,} subscriber rows, {exp['input']:,} "
            f"transaction rows; the generator expects {exp['published']:,} published from this file")
    else:
        batch = args.batch
        landing = Path(settings()["host_landing_dir"])
        if not any((d / batch / "transactions.csv").is_file() for d in (landing, landing / "_archive")):
            die(f"batch {batch} has no files in {landing}/{batch}/ (subscribers.csv, transactions.csv)")
        refuse_behind_a_stuck_run(af, batch)
    run_id = start_or_follow(af, batch, rerun_failed=args.command == "run")
    return report(af, run_id, batch, follow(af, run_id, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
