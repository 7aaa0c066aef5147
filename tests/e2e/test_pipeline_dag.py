"""optasia_etl_pipeline in the deployed stack: the DAG file, then real runs.

The runs go in order on one store (the e2e inventory turns the cron schedule
off, so every run is one of these tests'):

  B0 clean batch -> published, Parquet read back from HDFS = _metrics.json = the contract
  B1 next batch  -> resolves B0's pending rows; then rerun (cleared) -> identical
  B2 binary garbage -> fails at quality_checks, nothing published, alert e-mail;
                    `make status`, the Batches page and the run's note say why and what next;
                    clean files landed and `make run` -> the failed run again -> published
  B3 DataNode stopped during spark_processing -> the task retries, the run succeeds
  faults, one batch each: PostgreSQL restarted (during the job, during the
  publish), scheduler and api-server restarted, the Celery worker SIGKILLed
  and restarted, the NameNode restarted after ingest_raw, the job killed for
  memory -> each published once with the contract's rows, the store applied once
  operator mistakes: a bad batch id (make run, a trigger's param), a batch the
  worker cannot read, `make demo` behind a run stuck waiting for files -> a
  clear error naming what to do, nothing changed
  a file still being written -> taken only once complete
  B4 too dirty, `make abandon` -> store changes undone, the DAG unblocked; an
  older or unknown batch refused, nothing changed
  `make demo` -> today's half-day batch (~100k transactions), published, result printed
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import AIRFLOW, ROOT, api, hardening_problems, run

pytestmark = pytest.mark.e2e
DAG = "optasia_etl_pipeline"
STAGES = ["check_infrastructure", "batch_id", "wait_for_landing", "db_init", "ingest_raw", "spark_processing",
          "quality_checks", "hdfs_storage", "cleanup"]
# Four consecutive half-days in the past: `make demo` (today's batch, last) comes after them.
_D = dt.date.today() - dt.timedelta(days=400)
B0, B1, B2, B3 = f"{_D}_a", f"{_D}_b", f"{_D + dt.timedelta(days=1)}_a", f"{_D + dt.timedelta(days=1)}_b"
ALLOWED = {"SMS", "USSD", "APP", "WEB"}


class Pipeline:
    def __init__(self, stack, token):
        self.stack, self.token = stack, token
        self.landing = Path(stack.home, "landing")
        self.summaries: dict[str, dict] = {}
        self.runs: dict[str, str] = {}
        self.next_first = 0

    # --- landing -------------------------------------------------------------
    def land(self, batch: str, seed: int, dirty: float = 0.1, first: int | None = None) -> dict:
        first = self.next_first if first is None else first
        out = subprocess.run(
            [sys.executable, "-m", "optasia_datagen", "--landing", str(self.landing), "--batch-id", batch,
             "--subscribers", "300", "--transactions", "2000", "--dirty-share", str(dirty), "--seed", str(seed),
             "--first-subscriber", str(first), "--late-share", "0.05", "--orphan-share", "0.02",
             "--resend-share", "0.05" if first else "0", "--summary", "--quiet"],
            cwd=ROOT, capture_output=True, text=True, check=True)
        folder = self.landing / batch
        for p in [folder, *folder.iterdir()]:
            os.chown(p, 50000, 0)
        summary = json.loads(out.stdout)
        self.summaries[batch] = summary
        self.next_first = summary["next_first_subscriber"]
        return summary

    # --- Airflow -------------------------------------------------------------
    def api(self, path, method="GET", body=None, patience: float = 120):
        """A call that must succeed. A read answered 5xx or not at all is
        asked again for up to ``patience`` seconds: the fault tests restart
        the PostgreSQL that holds Airflow's own database, and the api-server."""
        deadline = time.monotonic() + patience
        while True:
            try:
                status, data = api(self.stack, path, method, body, token=self.token)
            except OSError as exc:          # connection refused or reset while a service restarts
                status, data = 0, str(exc)
            if method == "GET" and (status >= 500 or status == 0) and time.monotonic() < deadline:
                time.sleep(3)
                continue
            assert 200 <= status < 300, (path, status, data)
            return data

    def trigger(self, batch: str) -> str:
        run_id = f"e2e_{batch}_{uuid.uuid4().hex[:6]}"
        self.api(f"/api/v2/dags/{DAG}/dagRuns", "POST",
                 {"dag_run_id": run_id, "logical_date": dt.datetime.now(dt.timezone.utc).isoformat(),
                  "conf": {"batch_id": batch}})
        self.runs[batch] = run_id
        return run_id

    def state(self, run_id: str) -> str:
        return self.api(f"/api/v2/dags/{DAG}/dagRuns/{run_id}")["state"]

    def wait(self, run_id: str, timeout: float = 900) -> str:
        deadline, state = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            state = self.state(run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(4)
        raise AssertionError(f"run {run_id} still {state} after {timeout}s: {self.tis(run_id)}")

    def tis(self, run_id: str) -> dict:
        tis = self.api(f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        return {t["task_id"]: t for t in tis}

    def log(self, run_id: str, task_id: str, try_number: int) -> str:
        status, body = api(self.stack, f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                           f"{try_number}?full_content=true", token=self.token)
        return json.dumps(body) if not isinstance(body, str) else body

    def clear(self, run_id: str):
        """Clear every task of a finished run; returns once the run is queued again."""
        self.api(f"/api/v2/dags/{DAG}/dagRuns/{run_id}/clear", "POST", {"dry_run": False})
        deadline = time.monotonic() + 60
        while (state := self.state(run_id)) in ("success", "failed"):
            assert time.monotonic() < deadline, f"run {run_id} still {state} 60 s after its clear"
            time.sleep(1)

    def run_batch(self, batch: str, timeout: float = 900) -> str:
        run_id = self.trigger(batch)
        state = self.wait(run_id, timeout)
        return state

    def explain(self, run_id: str) -> str:
        """Failed tasks and their log tails, for assertion messages."""
        out = []
        for task_id, ti in self.tis(run_id).items():
            if ti["state"] not in ("success", None):
                out.append(f"{task_id}: {ti['state']} (try {ti['try_number']})\n"
                           + self.log(run_id, task_id, max(1, ti["try_number"]))[-3000:])
        return "\n".join(out)

    # --- HDFS and the store --------------------------------------------------
    def hdfs(self, *args, check=True):
        return self.stack.compose("exec", "-T", "namenode", "hdfs", "dfs", *args, check=check)

    def metrics_doc(self, batch: str) -> dict:
        return json.loads(self.hdfs("-cat", f"/optasia/warehouse/transactions/batch_id={batch}/_metrics.json").stdout)

    def download(self, dataset: str, batch: str, dest: Path) -> Path:
        inside = f"/tmp/e2e-{uuid.uuid4().hex[:8]}"
        self.hdfs("-get", f"/optasia/warehouse/{dataset}/batch_id={batch}", inside)
        (dest / dataset).mkdir(parents=True)
        # a tar stream, not `docker cp`: the NameNode's /tmp is a tmpfs (read-only root)
        packed = subprocess.run(["docker", "compose", "-p", "optasia-infrastructure", "exec", "-T", "namenode",
                                 "tar", "-C", inside, "-cf", "-", "."], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-C", str(dest / dataset), "-xf", "-"], input=packed, check=True)
        self.stack.compose("exec", "-T", "namenode", "rm", "-rf", inside)
        return dest / dataset

    def rows(self, dataset: str, batch: str, dest: Path, order: str) -> list[tuple]:
        import duckdb

        folder = self.download(dataset, batch, dest)
        return duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet') ORDER BY {order}").fetchall()

    def sql(self, query: str, *params):
        ep = self.stack.endpoints()
        with psycopg.connect(host="127.0.0.1", port=int(ep["postgres_port"]), dbname="optasia", user="optasia",
                             password=self.stack.secret("postgres_store_password")) as conn:
            return conn.execute(query, params).fetchall()

    def store_state(self):
        subs = self.sql("SELECT sub_id, activation_date, row_key, batch_id FROM subscribers ORDER BY sub_id")
        pending = self.sql("SELECT ts, sub_id, amount, channel, record::text, added_batch_id, removed_batch_id "
                           "FROM pending_transactions ORDER BY ts, sub_id, amount, channel, record::text")
        return subs, pending


@pytest.fixture(scope="module")
def pipeline(stack, token):
    return Pipeline(stack, token)


# ----------------------------------------------------------------------------
# the DAG file, in the Airflow image
# ----------------------------------------------------------------------------

INSPECT = r'''
import datetime as dt, json, sys, time
sys.path.insert(0, "/opt/airflow/dags")   # as Airflow's own processes do (DAGS_FOLDER on sys.path)
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="/opt/airflow/dags")
total = time.perf_counter() - t0
stats = {s.file.rsplit("/", 1)[-1]: s.duration.total_seconds() if hasattr(s.duration, "total_seconds")
         else float(s.duration) for s in bag.dagbag_stats}
dag = bag.dags.get("optasia_etl_pipeline")
out = {"import_errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()}, "stats": stats,
       "total": total, "dags": sorted(bag.dags)}
if dag is not None:
    order = [t.task_id for t in dag.topological_sort()] if hasattr(dag, "topological_sort") else []
    out["dag"] = {
        "schedule": str(dag.schedule), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags), "owner": dag.owner, "doc": bool(dag.doc_md and "quality_checks" in dag.doc_md),
        "tasks": {t.task_id: {
            "upstream": sorted(t.upstream_task_ids), "downstream": sorted(t.downstream_task_ids),
            "retries": t.retries, "backoff": t.retry_exponential_backoff,
            "retry_delay": t.retry_delay.total_seconds(),
            "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
            "depends_on_past": t.depends_on_past, "classes": [c.__name__ for c in type(t).__mro__],
            "inlets": [getattr(a, "uri", str(a)) for a in t.inlets],
            "outlets": [getattr(a, "uri", str(a)) for a in t.outlets],
            "callback": bool(t.on_failure_callback), "is_setup": t.is_setup, "is_teardown": t.is_teardown,
            "mount_tmp_dir": getattr(t, "mount_tmp_dir", None)} for t in dag.tasks}}
    # the batch id rule
    from optasia_pipeline import checks, contract, operators, stages
    from airflow.sdk.exceptions import AirflowFailException
    class Run:
        conf = {}
        run_after = None
    def bid(when=None, conf=None):
        r = Run(); r.conf = conf or {}; r.run_after = when
        try:
            return stages.batch_id(logical_date=when, dag_run=r, params={})
        except AirflowFailException as exc:
            return "refused: " + str(exc)
    utc = dt.timezone.utc
    out["batch_ids"] = [bid(dt.datetime(2024, 3, 1, 0, 0, tzinfo=utc)),
                        bid(dt.datetime(2024, 3, 1, 11, 59, 59, tzinfo=utc)),
                        bid(dt.datetime(2024, 3, 1, 12, 0, tzinfo=utc)),
                        bid(dt.datetime(2024, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))),
                        bid(dt.datetime(2024, 3, 1, 5, 0, tzinfo=utc), {"batch_id": "2023-12-31_b"}),
                        bid(dt.datetime(2024, 3, 1, 5, 0, tzinfo=utc), {"batch_id": "2023-02-30_a"})]
    out["batch_pattern"] = dag.params.get_param("batch_id").schema.get("pattern") == contract.BATCH_PATTERN
    m = {"subscribers_input": 10, "subscribers_rejected": {"malformed_row": 2}, "subscribers_duplicate": 1,
         "subscribers_inserted": 5, "subscribers_updated": 1, "subscribers_unchanged": 1,
         "transactions_input": 100, "pending_in": 10, "transactions_rejected": {"invalid_amount": 30},
         "transactions_duplicate": 5, "published": 60, "pending_out": 15}
    broken = dict(m, published=59)
    out["gate"] = {"ok": contract.conservation_errors(m), "broken": contract.conservation_errors(broken),
                   "ratio": list(checks.reject_ratio(m))}
    out["reasons"] = [operators._last_error(["INFO x", "ERROR: reject this", "done"]),
                      operators._last_error([b"py4j.protocol.Py4JJavaError: o856.collectToPython",
                                         b"Caused by: org.apache.hadoop.hdfs.BlockMissingException: no block",
                                         b"\tat org.x(Y.java:1)", b"\t... 49 more"])]
print("INSPECT" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def dag_file(stack):
    image = run(["docker", "compose", "-p", "optasia-airflow", "images", "-q", "airflow-worker"]).stdout.split()[0]
    # The DAGs as deployed (the role adds the contract module to the package);
    # --network none: the DAG file must parse with no network at all.
    dags = Path(stack.home, "airflow", "dags")
    p = run(["docker", "run", "--rm", "-i", "--network", "none", "-v", f"{dags}:/opt/airflow/dags:ro",
             "-e", "AIRFLOW__CORE__LOAD_EXAMPLES=false", "-e", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite://",
             image, "python", "-"], input=INSPECT)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("INSPECT")][-1]
    return json.loads(line[len("INSPECT"):])


def test_the_dag_reads_the_job_s_own_contract_module(stack):
    import yaml

    modules = yaml.safe_load((ROOT / "roles" / "airflow" / "vars" / "main.yml").read_text())["airflow_dag_job_modules"]
    assert {"contract.py", "publish.py", "webhdfs.py"} <= set(modules)
    for name in modules:
        shipped = Path(stack.home, "airflow", "dags", "optasia_pipeline", name)
        assert shipped.read_bytes() == (ROOT / "spark_jobs" / name).read_bytes(), name


def test_the_dag_file_imports_with_no_errors_and_parses_fast(dag_file):
    assert dag_file["import_errors"] == {}
    assert "optasia_etl_pipeline" in dag_file["dags"]
    print(f"\nparse time of optasia_etl_pipeline.py: {dag_file['stats']['optasia_etl_pipeline.py']:.3f}s "
          f"(whole DagBag incl. Airflow import {dag_file['total']:.1f}s)")
    assert dag_file["stats"]["optasia_etl_pipeline.py"] < 1.0


def test_the_dag_has_the_stages_in_order_with_their_policies(dag_file):
    d = dag_file["dag"]
    assert "0 */12 * * *" in d["schedule"] and d["catchup"] is False and d["max_active_runs"] == 1
    assert d["owner"] == "optasia" and "optasia" in d["tags"] and d["doc"]
    t = d["tasks"]
    assert sorted(t) == sorted(STAGES)
    for up, down in zip(STAGES[1:-1], STAGES[2:-1], strict=False):
        assert t[up]["downstream"] == [down] and t[down]["upstream"] == [up]
    assert t["check_infrastructure"]["downstream"] == ["batch_id", "cleanup"]
    assert t["cleanup"]["upstream"] == ["check_infrastructure", "hdfs_storage"]
    # cleanup is a teardown: it runs after failures, and a failed stage still fails the run
    assert t["cleanup"]["is_teardown"] and t["check_infrastructure"]["is_setup"]
    assert [x for x in t if t[x]["is_teardown"]] == ["cleanup"]
    # transient failures retry with exponential back-off; the gate and the id do not
    for task in ("check_infrastructure", "db_init", "ingest_raw", "spark_processing", "hdfs_storage"):
        assert t[task]["retries"] >= 2 and t[task]["backoff"] and t[task]["retry_delay"] > 0, task
    assert t["batch_id"]["retries"] == 0 and t["wait_for_landing"]["retries"] == 0
    assert t["cleanup"]["trigger_rule"] == "all_done_setup_success"
    assert all(t[x]["trigger_rule"] == "all_success" for x in STAGES[:-1])
    assert {x for x in t if t[x]["depends_on_past"]} == {"spark_processing", "hdfs_storage"}
    assert all(t[x]["callback"] for x in t)
    assert "DockerOperator" in t["spark_processing"]["classes"] and t["spark_processing"]["mount_tmp_dir"] is False
    assert "DockerOperator" in t["db_init"]["classes"]
    assert "BashOperator" in t["ingest_raw"]["classes"] and "PythonOperator" in t["hdfs_storage"]["classes"]
    assert "BaseSensorOperator" in t["wait_for_landing"]["classes"]
    raw = "hdfs://namenode:8020/optasia/raw"
    assert t["ingest_raw"]["outlets"] == [raw] and raw in t["spark_processing"]["inlets"]
    assert "hdfs://namenode:8020/optasia/warehouse/transactions" in t["hdfs_storage"]["outlets"]


def test_the_gate_arithmetic(dag_file):
    g = dag_file["gate"]
    assert g["ok"] == []
    assert g["broken"] == ["transactions_input + pending_in (110) != rejected + duplicate + published + "
                           "pending_out (109)"]
    assert g["ratio"] == [32 / 120, 32, 120]


def test_a_failed_container_is_explained_by_its_own_words(dag_file):
    assert dag_file["reasons"] == ["reject this",
                                   "Caused by: org.apache.hadoop.hdfs.BlockMissingException: no block"]


def test_the_batch_id_follows_the_contract(dag_file):
    a, a_late, b, zoned, named, invalid = dag_file["batch_ids"]
    assert (a, a_late, b) == ("2024-03-01_a", "2024-03-01_a", "2024-03-01_b")
    assert zoned == "2024-03-01_b"          # 23:30+03:00 is 20:30 UTC
    assert named == "2023-12-31_b"
    assert invalid.startswith("refused:") and "2023-02-30_a" in invalid
    # the trigger's Param refuses what the task would (tests/unit/test_contract.py: only real dates pass)
    assert dag_file["batch_pattern"] is True


# ----------------------------------------------------------------------------
# runs in the deployed stack
# ----------------------------------------------------------------------------

def check_partition(p: Pipeline, batch: str, tmp: Path) -> dict:
    """The published Parquet read back from HDFS against _metrics.json and the contract."""
    doc = p.metrics_doc(batch)
    m = doc["metrics"]
    assert doc["batch_id"] == batch
    import duckdb

    folder = p.download("transactions", batch, tmp)
    rel = f"read_parquet('{folder}/*.parquet')"
    schema = {r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM {rel}").fetchall()}
    assert schema == {"timestamp": "TIMESTAMP WITH TIME ZONE", "sub_row_key": "VARCHAR", "sub_id": "VARCHAR",
                      "amount": "DECIMAL(18,4)", "channel": "VARCHAR", "activation_date": "DATE"} or \
        schema == {"timestamp": "TIMESTAMP", "sub_row_key": "VARCHAR", "sub_id": "VARCHAR",
                   "amount": "DECIMAL(18,4)", "channel": "VARCHAR", "activation_date": "DATE"}, schema
    n, bad_channel, bad_amount, bad_key, before, dups = duckdb.sql(f"""
        SELECT count(*),
               count(*) FILTER (WHERE channel NOT IN ('SMS','USSD','APP','WEB')),
               count(*) FILTER (WHERE amount <= 0),
               count(*) FILTER (WHERE sub_row_key <> sub_id || '_' || strftime(activation_date, '%Y%m%d')),
               count(*) FILTER (WHERE CAST(timestamp AS DATE) < activation_date),
               count(*) - (SELECT count(*) FROM (SELECT DISTINCT timestamp, sub_id, amount, channel FROM {rel}))
        FROM {rel}""").fetchall()[0]
    assert n == m["published"] and n > 0
    assert (bad_channel, bad_amount, bad_key, before, dups) == (0, 0, 0, 0, 0)
    rejects = p.download("rejects", batch, tmp / "r")
    n_rej = duckdb.sql(f"SELECT count(*) FROM read_parquet('{rejects}/*.parquet')").fetchall()[0][0]
    assert n_rej == sum(m["subscribers_rejected"].values()) + sum(m["transactions_rejected"].values())
    # the published numbers hold the conservation laws
    from spark_jobs.contract import conservation_errors

    assert conservation_errors(m) == []
    # and agree with the generator's own reading of the contract
    s = p.summaries[batch]["expected"]
    assert m["subscribers_input"] == s["subscribers"]["input"]
    assert m["subscribers_rejected"] == s["subscribers"]["rejected"]
    assert m["transactions_input"] == s["transactions"]["input"]
    for reason in ("malformed_row", "invalid_timestamp", "invalid_sub_id", "invalid_amount", "invalid_channel"):
        assert m["transactions_rejected"][reason] == s["transactions"]["rejected"][reason], reason
    assert m["published"] - m["pending_resolved"] == s["transactions"]["published"]
    assert p.sql("SELECT status, published_run_id FROM etl_batches WHERE batch_id = %s", batch) == [
        ("published", doc["run_id"])]
    _success = p.hdfs("-test", "-e", f"/optasia/warehouse/transactions/batch_id={batch}/_SUCCESS", check=False)
    assert _success.returncode == 0
    return doc


def test_a_clean_batch_is_published(pipeline, mailbox, tmp_path):
    p = pipeline
    p.land(B0, seed=21)
    run_id = p.trigger(B0)
    assert p.wait(run_id) == "success", p.explain(run_id)
    tis = p.tis(run_id)
    assert {t: tis[t]["state"] for t in STAGES} == {t: "success" for t in STAGES}
    doc = check_partition(p, B0, tmp_path)
    assert doc["metrics"]["pending_out"] > 0          # B0 leaves rows for the late subscribers of B1
    # raw holds the landing files byte for byte; landing archived; staging gone
    for f in ("subscribers.csv", "transactions.csv"):
        size = int(p.hdfs("-stat", "%b", f"/optasia/raw/{B0}/{f}").stdout.strip())
        assert size == (p.landing / "_archive" / B0 / f).stat().st_size
    assert not (p.landing / B0).exists()
    assert p.hdfs("-test", "-e", f"/optasia/staging/{B0}", check=False).returncode != 0


def test_the_next_batch_resolves_the_pending_rows(pipeline, tmp_path):
    p = pipeline
    before = p.metrics_doc(B0)["metrics"]
    p.land(B1, seed=22)
    run_id = p.trigger(B1)
    assert p.wait(run_id) == "success", p.explain(run_id)
    m = check_partition(p, B1, tmp_path)["metrics"]
    assert m["pending_in"] == before["pending_out"]
    assert m["pending_resolved"] > 0


def test_rerunning_the_latest_batch_leaves_identical_rows_and_state(pipeline, tmp_path):
    p = pipeline
    run_id = p.runs[B1]
    first_doc = p.metrics_doc(B1)
    rows = p.rows("transactions", B1, tmp_path / "1", "timestamp, sub_id, amount, channel")
    rejects = p.rows("rejects", B1, tmp_path / "1r", "source, reason, record")
    store = p.store_state()
    p.clear(run_id)
    assert p.wait(run_id) == "success", p.explain(run_id)
    doc = p.metrics_doc(B1)
    assert doc["run_id"] > first_doc["run_id"]              # really run again
    assert doc["metrics"] == first_doc["metrics"]
    assert p.rows("transactions", B1, tmp_path / "2", "timestamp, sub_id, amount, channel") == rows
    assert p.rows("rejects", B1, tmp_path / "2r", "source, reason, record") == rejects
    assert p.store_state() == store


def garble(path: Path, keep_every: int = 10, seed: int = 7):
    """Replace all but every ``keep_every``-th data line of a CSV file with random bytes (a
    producer that wrote binary garbage), keeping the header, owner and mode."""
    import random

    rnd = random.Random(seed)
    header, *lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    out = [header] + [line if i % keep_every == 0 else bytes(rnd.randrange(256) for _ in range(60)).replace(b"\n", b" ")
                      for i, line in enumerate(lines)]
    path.write_bytes(b"\n".join(out) + b"\n")


def test_a_batch_of_binary_garbage_fails_at_the_gate_says_why_everywhere_and_alerts(pipeline, mailbox, stack,
                                                                                   token, tmp_path):
    """A transactions file that is 90% binary garbage: the gate refuses it and
    nothing is published. `make status` (from a new user's shell), the Batches
    page and the DAG run's note show the batch as failed with the gate's check
    and figure in one line and what to do next; the alert goes out. Fixed
    files landed and `make run` (what they advise) publish it."""
    from tests.e2e.test_pipeline_ops import new_user_make

    p = pipeline
    first = p.next_first
    p.land(B2, seed=23, dirty=0.05)
    garble(p.landing / B2 / "transactions.csv")
    run_id = p.trigger(B2)
    assert p.wait(run_id) == "failed"
    tis = p.tis(run_id)
    states = {t: tis[t]["state"] for t in STAGES}
    assert states["spark_processing"] == "success" and states["quality_checks"] == "failed", states
    assert tis["quality_checks"]["try_number"] == 1            # a contract failure is not retried
    assert states["hdfs_storage"] == "upstream_failed" and states["cleanup"] == "success", states
    log = p.log(run_id, "quality_checks", 1)
    assert "of rows rejected" in log and "limit 20%" in log and "malformed_row" in log, log[-3000:]
    # nothing published, the inputs kept for a rerun; the store keeps it staged (it blocks later batches)
    assert p.hdfs("-test", "-e", f"/optasia/warehouse/transactions/batch_id={B2}", check=False).returncode != 0
    assert p.hdfs("-test", "-e", f"/optasia/warehouse/rejects/batch_id={B2}", check=False).returncode != 0
    assert (p.landing / B2 / "transactions.csv").exists()
    assert p.sql("SELECT status FROM etl_batches WHERE batch_id = %s", B2) == [("staged",)]
    # the reason, one line, the same in the three places an operator looks
    (reason,) = p.sql("SELECT reason FROM etl_batch_overview WHERE batch_id = %s", B2)[0]
    assert reason.startswith("quality_checks: ") and "% of rows rejected (" in reason and "limit 20%" in reason
    status = new_user_make(stack, "status", "LIMIT=50").stdout
    row = next(ln.split() for ln in status.splitlines() if ln.startswith(B2))
    assert row[1] == "failed", status
    assert f"{B2} failed: {reason}" in status, status
    assert "next: its store changes are applied and hold back later batches" in status
    assert f"`make run BATCH={B2}`" in status and f"`make abandon BATCH={B2}`" in status
    req = urllib.request.Request(stack.airflow_api() + "/optasia-batches/api/batches?limit=50",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        page = {b["batch_id"]: b for b in json.load(resp)}[B2]
    assert page["state"] == "failed" and page["error"] == reason and f"make abandon BATCH={B2}" in page["next_step"]
    note = p.api(f"/api/v2/dags/{DAG}/dagRuns/{run_id}")["note"]
    assert note.startswith(f"**Failed** at `quality_checks`, batch `{B2}`: ") and reason.split(": ", 1)[1] in note
    assert f"make run BATCH={B2}" in note and "/plugin/optasia-batches" in note
    # the alert: DAG, task, batch, log URL, reason
    mail = mailbox.wait_for(f"batch {B2}", "quality_checks")
    assert "ops@example.com" in mail and DAG in mail and "of rows rejected" in mail
    assert f"/dags/{DAG}/runs/" in mail and "/tasks/quality_checks" in mail
    # fixed inputs landed, then what the operator is told: `make run` runs the failed run again
    p.land(B2, seed=24, dirty=0.1, first=first)
    out = new_user_make(stack, "run", f"BATCH={B2}", timeout=1200).stdout
    assert f"cleared run {run_id}" in out and f"batch {B2} published" in out, out[-3000:]
    assert p.state(run_id) == "success"
    check_partition(p, B2, tmp_path)
    assert p.sql("SELECT state, reason FROM etl_batch_overview WHERE batch_id = %s", B2) == [("published", None)]
    assert p.api(f"/api/v2/dags/{DAG}/dagRuns/{run_id}")["note"].startswith(f"**Published** batch `{B2}`")


def test_a_datanode_outage_during_spark_processing_is_retried(pipeline, stack):
    p = pipeline
    p.land(B3, seed=25)
    run_id = p.trigger(B3)
    datanode = stack.compose("ps", "-q", "datanode").stdout.strip()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:   # the spark-job container of this batch is up
        if run(["docker", "ps", "-q", "--filter", f"label=optasia.batch_id={B3}",
                "--filter", "label=optasia.task=spark_processing"]).stdout.strip():
            break
        assert p.state(run_id) not in ("success", "failed"), p.explain(run_id)
        time.sleep(1)
    else:
        raise AssertionError("spark_processing never started")
    run(["docker", "stop", "-t", "5", datanode])
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ti = p.tis(run_id)["spark_processing"]
            if ti["state"] == "up_for_retry" or ti["try_number"] >= 2:
                break
            time.sleep(2)
        else:
            raise AssertionError(f"spark_processing did not fail over while the DataNode was down: {ti}")
    finally:
        run(["docker", "start", datanode])
    assert p.wait(run_id, timeout=1200) == "success", p.explain(run_id)
    ti = p.tis(run_id)["spark_processing"]
    assert ti["try_number"] >= 2
    first_try = p.log(run_id, "spark_processing", 1)
    assert "will retry" in first_try
    assert p.metrics_doc(B3)["batch_id"] == B3
    stack.health()


# ----------------------------------------------------------------------------
# services failing mid-run: the batch is published exactly once, or fails with a reason
# ----------------------------------------------------------------------------

_F = _D + dt.timedelta(days=2)          # after B3; the landing and abandon batches come after these
# In the order the tests run (batches go strictly in order).
F_PG, F_SCHED, F_WORKER, F_WARM, F_NN, F_OOM = (f"{_F + dt.timedelta(days=i // 2)}_{'ab'[i % 2]}" for i in range(6))


def airflow_container(service: str) -> str:
    out = run(["docker", "compose", "-p", AIRFLOW, "ps", "-q", service]).stdout.split()
    assert out, f"no running {service} container"
    return out[0]


def job_containers(batch: str, all_states: bool = False) -> list[str]:
    return run(["docker", "ps", *(["-a"] if all_states else []), "-q", "--filter", f"label=optasia.batch_id={batch}",
                "--filter", "label=optasia.task=spark_processing"]).stdout.split()


def wait_until(what: str, check, p: Pipeline, run_id: str, timeout: float = 600, every: float = 1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        assert p.state(run_id) not in ("success", "failed"), f"run ended before {what}: {p.explain(run_id)}"
        time.sleep(every)
    raise AssertionError(f"never {what} within {timeout:.0f}s: {p.tis(run_id)}")


def subscriber_count(p: Pipeline) -> int:
    try:
        return p.sql("SELECT count(*) FROM subscribers")[0][0]
    except psycopg.errors.UndefinedTable:      # a store db_init has not created yet
        return 0


def store_runs(p: Pipeline, batch: str) -> list[tuple]:
    try:
        return p.sql("SELECT run_id, status, coalesce(error, '') FROM etl_batch_runs WHERE batch_id = %s "
                     "ORDER BY run_id", batch)
    except psycopg.errors.UndefinedTable:      # before db_init's first run
        return []


def check_fault_outcome(p: Pipeline, batch: str, subscribers_before: int, tmp_path: Path) -> dict:
    """What every fault test asks: the batch published once with the rows and
    rejects the contract gives for its files (the generator's counts), and the
    store holding it applied exactly once."""
    doc = check_partition(p, batch, tmp_path)
    m = doc["metrics"]
    assert subscriber_count(p) - subscribers_before == m["subscribers_inserted"]
    (active, distinct), = p.sql("SELECT count(*), count(DISTINCT (ts, sub_id, amount, channel)) "
                                "FROM pending_transactions WHERE removed_batch_id IS NULL")
    assert active == distinct == m["pending_out"]
    published = [r for r in store_runs(p, batch) if r[1] == "published"]
    assert [r[0] for r in published] == [doc["run_id"]], store_runs(p, batch)
    assert job_containers(batch, all_states=True) == []     # no job container left behind
    return doc


def test_postgres_restarted_while_the_job_runs_and_while_the_publish_is_recorded(pipeline, stack, tmp_path):
    """The store restarted twice in one run: while spark_processing holds the
    batch lock (the job dies with its connection; the retry ends that run as
    failed and applies the batch once), and while hdfs_storage's
    etl_mark_published waits on a row lock (the retry finds the partitions
    already moved and records the publish)."""
    p = pipeline
    p.land(F_PG, seed=31)
    before = subscriber_count(p)
    run_id = p.trigger(F_PG)
    wait_until("the job's run row", lambda: [r for r in store_runs(p, F_PG) if r[1] == "running"], p, run_id,
               every=0.5)
    stack.compose("restart", "-t", "10", "postgres")
    # The row lock is taken as soon as the retried job's apply committed (its run
    # row `staged`: the job writes etl_batches no more), long before hdfs_storage
    # can start; waiting for spark_processing's success left a race with a fast
    # quality_checks.
    def staged():
        try:
            return [r for r in store_runs(p, F_PG) if r[1] == "staged"]
        except psycopg.OperationalError:        # the store is still restarting
            return []
    wait_until("the retried job's apply committed", staged, p, run_id, timeout=900, every=0.5)
    ep = stack.endpoints()
    lock = psycopg.connect(host="127.0.0.1", port=int(ep["postgres_port"]), dbname="optasia", user="optasia",
                           password=stack.secret("postgres_store_password"))
    try:
        lock.execute("SELECT 1 FROM etl_batches WHERE batch_id = %s FOR UPDATE", (F_PG,))   # holds the row
        wait_until("etl_mark_published waiting on the row lock", lambda: p.sql(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            "%etl_mark_published%"), p, run_id, timeout=300, every=0.5)
        stack.compose("restart", "-t", "10", "postgres")
    finally:
        lock.close()
    assert p.wait(run_id, timeout=900) == "success", p.explain(run_id)
    tis = p.tis(run_id)
    assert tis["spark_processing"]["try_number"] >= 2 and tis["hdfs_storage"]["try_number"] >= 2, tis
    assert "could not record the publish" in p.log(run_id, "hdfs_storage", 1)
    assert "already moved by an earlier try" in p.log(run_id, "hdfs_storage", tis["hdfs_storage"]["try_number"])
    runs = store_runs(p, F_PG)
    assert [r[1] for r in runs] == ["failed", "published"], runs   # the lost run ended, one applied
    assert "process ended without finishing" in runs[0][2]
    check_fault_outcome(p, F_PG, before, tmp_path)
    stack.health()


def test_scheduler_and_api_server_restarted_mid_run(pipeline, stack, tmp_path):
    """Both restarted while spark_processing runs: the run goes on, each stage
    runs once, one job applies the batch."""
    p = pipeline
    p.land(F_SCHED, seed=32)
    before = subscriber_count(p)
    run_id = p.trigger(F_SCHED)
    (job,) = wait_until("the spark-job container up", lambda: job_containers(F_SCHED), p, run_id)
    # the job's container has the services' least privilege too (user spark, no caps)
    assert hardening_problems(json.loads(run(["docker", "inspect", job]).stdout)[0], False, set()) == []
    run(["docker", "restart", "-t", "30", airflow_container("airflow-scheduler")])
    run(["docker", "restart", "-t", "30", airflow_container("airflow-api-server")])
    p.api("/api/v2/version", patience=300)          # the API answers again
    assert p.wait(run_id, timeout=900) == "success", p.explain(run_id)
    tis = p.tis(run_id)
    assert {t: tis[t]["try_number"] for t in STAGES} == {t: 1 for t in STAGES}
    assert [r[1] for r in store_runs(p, F_SCHED)] == ["published"]
    check_fault_outcome(p, F_SCHED, before, tmp_path)
    stack.health()


def test_a_killed_worker_s_job_is_waited_for_not_run_twice(pipeline, stack, tmp_path):
    """The Celery worker's container SIGKILLed while its spark-job container
    runs (the engine restarts the worker; the job container goes on). The
    scheduler retries the lost task after the heartbeat timeout; the retry
    finds the orphan by its labels, waits for it and takes its result: one job
    applied the batch, and no container is left."""
    p = pipeline
    p.land(F_WORKER, seed=33)
    before = subscriber_count(p)
    run_id = p.trigger(F_WORKER)
    (orphan,) = wait_until("the spark-job container up", lambda: job_containers(F_WORKER), p, run_id)
    worker = airflow_container("airflow-worker")
    pid = run(["docker", "inspect", "-f", "{{.State.Pid}}", worker]).stdout.strip()
    run(["kill", "-KILL", pid])                # a crash, not a stop: the restart policy brings it back
    assert job_containers(F_WORKER) == [orphan]          # the job goes on without its worker
    assert p.wait(run_id, timeout=1200) == "success", p.explain(run_id)
    tis = p.tis(run_id)
    n = tis["spark_processing"]["try_number"]
    assert n >= 2, tis["spark_processing"]
    retry_log = p.log(run_id, "spark_processing", n)
    assert "of an earlier try" in retry_log and "finished the job (exit 0)" in retry_log, retry_log[-3000:]
    assert [r[1] for r in store_runs(p, F_WORKER)] == ["published"]   # exactly one job applied it
    check_fault_outcome(p, F_WORKER, before, tmp_path)
    stack.health()


def test_a_worker_restarted_normally_mid_job_applies_the_batch_once(pipeline, stack, tmp_path):
    """`docker restart` of the worker (warm shutdown, then the engine's stop
    timeout) while the spark-job container runs: however the try ends, the run
    succeeds, one job's run is the published one (any other ended failed) and
    no container is left."""
    p = pipeline
    p.land(F_WARM, seed=36)
    before = subscriber_count(p)
    run_id = p.trigger(F_WARM)
    wait_until("the spark-job container up", lambda: job_containers(F_WARM), p, run_id)
    run(["docker", "restart", airflow_container("airflow-worker")])
    assert p.wait(run_id, timeout=1200) == "success", p.explain(run_id)
    statuses = [r[1] for r in store_runs(p, F_WARM)]
    assert statuses[-1] == "published" and set(statuses[:-1]) <= {"failed"}, statuses
    check_fault_outcome(p, F_WARM, before, tmp_path)
    stack.health()


def test_a_namenode_restarted_before_spark_processing_is_waited_out(pipeline, stack, tmp_path):
    """HDFS refuses writes right after ingest_raw (safe mode), then the NameNode
    restarts and comes back in safe mode: the stages wait until HDFS takes
    writes again (a try that started before the safe mode fails and its retry
    waits) and the run succeeds. The safe mode is entered by hand so that the
    fault always reaches a stage: a bare restart is over in seconds and raced
    past spark_processing's check (CI, 2026-12-07)."""
    p = pipeline
    stages = ("spark_processing", "quality_checks", "hdfs_storage")

    def logs() -> str:
        tis = p.tis(run_id)
        return "".join(p.log(run_id, t, n) for t in stages for n in range(1, (tis[t]["try_number"] or 0) + 1))

    p.land(F_NN, seed=34)
    before = subscriber_count(p)
    run_id = p.trigger(F_NN)
    wait_until("ingest_raw succeeded", lambda: p.tis(run_id)["ingest_raw"]["state"] == "success", p, run_id,
               every=0.5)
    stack.compose("exec", "-T", "namenode", "dfsadmin", "-safemode", "enter")
    wait_until("a stage waiting for HDFS", lambda: "waiting for HDFS" in logs(), p, run_id, every=2)
    stack.compose("restart", "-t", "10", "namenode")
    assert p.wait(run_id, timeout=1200) == "success", p.explain(run_id)
    assert "HDFS writable again" in logs(), p.tis(run_id)
    check_fault_outcome(p, F_NN, before, tmp_path)
    stack.health()


def test_a_job_killed_for_memory_fails_once_saying_which_setting_to_raise(pipeline, stack, tmp_path):
    """A spark_memory_overhead far too small for the job: the kernel kills the
    container's JVM; spark_processing fails at once (no retry loop of the same
    OOM) naming the settings; nothing is published; with the memory back the
    cleared run publishes."""
    p = pipeline
    p.land(F_OOM, seed=35)
    before = subscriber_count(p)
    var = p.api("/api/v2/variables/optasia_pipeline")
    settings = json.loads(var["value"])
    small = {**settings, "spark_memory": "512m", "spark_memory_overhead": "0m"}
    p.api("/api/v2/variables/optasia_pipeline", "PATCH", {"key": "optasia_pipeline", "value": json.dumps(small)})
    try:
        run_id = p.trigger(F_OOM)
        assert p.wait(run_id) == "failed"
    finally:
        p.api("/api/v2/variables/optasia_pipeline", "PATCH", {"key": "optasia_pipeline", "value": var["value"]})
    ti = p.tis(run_id)["spark_processing"]
    assert (ti["state"], ti["try_number"]) == ("failed", 1), ti
    log = p.log(run_id, "spark_processing", 1)
    assert "ran out of memory" in log and "airflow_pipeline_spark_memory" in log, log[-3000:]
    assert p.hdfs("-test", "-e", f"/optasia/warehouse/transactions/batch_id={F_OOM}", check=False).returncode != 0
    p.clear(run_id)
    assert p.wait(run_id) == "success", p.explain(run_id)
    runs = store_runs(p, F_OOM)
    assert [r[1] for r in runs] == ["failed", "published"], runs
    check_fault_outcome(p, F_OOM, before, tmp_path)


# ----------------------------------------------------------------------------
# operator mistakes: each gets an error that says what to do, and changes nothing
# ----------------------------------------------------------------------------

M_UNREAD, M_STUCK = f"{_D + dt.timedelta(days=5)}_a", f"{_D + dt.timedelta(days=5)}_b"


def dag_runs(p: Pipeline) -> list[str]:
    return [r["dag_run_id"] for r in p.api(f"/api/v2/dags/{DAG}/dagRuns?limit=1000")["dag_runs"]]


def test_a_bad_batch_id_is_refused_before_anything_runs(pipeline, stack):
    """`make run BATCH=garbage` (or a date that does not exist) and a trigger
    whose batch_id param is either: refused with the reason, no run created."""
    p = pipeline
    before = dag_runs(p)
    for bad in ("garbage", "2023-02-30_a"):
        out = run(["make", "--no-print-directory", "run", f"BATCH={bad}"], env={"OPTASIA_HOME": stack.home},
                  check=False)
        assert out.returncode != 0, (out.stdout, out.stderr)
        assert f"BATCH='{bad}'" in out.stderr and "nothing was changed" in out.stderr, out.stderr
        status, body = api(stack, f"/api/v2/dags/{DAG}/dagRuns", "POST",
                           {"dag_run_id": f"e2e_bad_{uuid.uuid4().hex[:6]}",
                            "logical_date": dt.datetime.now(dt.timezone.utc).isoformat(),
                            "conf": {"batch_id": bad}}, token=p.token)
        assert status == 400 and "batch_id" in json.dumps(body), (status, body)
    assert dag_runs(p) == before


def test_a_batch_the_worker_cannot_read_fails_naming_the_file_and_uid(pipeline, tmp_path):
    """transactions.csv owned by root, mode 0600: wait_for_landing fails at once
    naming the file, its owner and mode and the worker's uid; nothing is read
    or changed. Made readable and cleared, the run publishes every row."""
    p = pipeline
    p.land(M_UNREAD, seed=37)
    tx = p.landing / M_UNREAD / "transactions.csv"
    os.chown(tx, 0, 0)
    tx.chmod(0o600)
    run_id = p.trigger(M_UNREAD)
    assert p.wait(run_id) == "failed"
    ti = p.tis(run_id)["wait_for_landing"]
    assert (ti["state"], ti["try_number"]) == ("failed", 1), ti
    log = p.log(run_id, "wait_for_landing", 1)
    for words in (f"/{M_UNREAD}/transactions.csv is not readable by the Airflow worker (uid 50000",
                  "owned by uid 0, gid 0, mode -rw-------", "then clear wait_for_landing"):
        assert words in log, log[-3000:]
    # the store knows only that this attempt failed, and why; nothing of the batch is applied
    (failed,) = store_runs(p, M_UNREAD)
    assert failed[1] == "failed" and failed[2].startswith("wait_for_landing: ") and "not readable" in failed[2]
    assert p.sql("SELECT status, applied_run_id FROM etl_batches WHERE batch_id = %s", M_UNREAD) == [
        ("failed", None)]
    assert p.hdfs("-test", "-e", f"/optasia/raw/{M_UNREAD}", check=False).returncode != 0
    os.chown(tx, 50000, 0)
    tx.chmod(0o664)
    p.clear(run_id)
    assert p.wait(run_id) == "success", p.explain(run_id)
    check_partition(p, M_UNREAD, tmp_path)


def test_make_demo_behind_a_run_stuck_waiting_for_files_says_so(pipeline, stack):
    """A run waiting for a batch that never lands holds the queue: `make demo`
    refuses (naming the run, the batch and both ways out) without landing or
    triggering anything. The sensor's timeout then fails the stuck run saying
    what it waited for, and `make abandon` lets the batches after it run."""
    p = pipeline
    run_id = p.trigger(M_STUCK)
    deadline = time.monotonic() + 180
    while p.tis(run_id)["wait_for_landing"]["state"] != "up_for_reschedule":
        assert time.monotonic() < deadline, p.tis(run_id)
        time.sleep(2)
    before, landed = dag_runs(p), sorted(os.listdir(p.landing))
    out = run(["make", "--no-print-directory", "demo"], env={"OPTASIA_HOME": stack.home}, check=False)
    assert out.returncode != 0, (out.stdout, out.stderr)
    for words in (f"run {run_id} is waiting for batch {M_STUCK}'s files", f"make abandon BATCH={M_STUCK}",
                  "Nothing was changed"):
        assert words in out.stderr, out.stderr
    assert dag_runs(p) == before
    assert sorted(os.listdir(p.landing)) == landed          # nothing landed
    # The way out that needs no one: the sensor's timeout (landing_timeout_minutes),
    # here shortened to 1 min, fails the run saying what it waited for.
    var = p.api("/api/v2/variables/optasia_pipeline")
    short = {**json.loads(var["value"]), "landing_timeout_minutes": 1}
    p.api("/api/v2/variables/optasia_pipeline", "PATCH", {"key": "optasia_pipeline", "value": json.dumps(short)})
    try:
        assert p.wait(run_id, timeout=300) == "failed"
    finally:
        p.api("/api/v2/variables/optasia_pipeline", "PATCH", {"key": "optasia_pipeline", "value": var["value"]})
    ti = p.tis(run_id)["wait_for_landing"]
    log = p.log(run_id, "wait_for_landing", ti["try_number"])
    assert ti["state"] == "failed" and f"batch {M_STUCK}: no complete batch after 1 min: missing" in log, log[-3000:]
    out = run(["make", "--no-print-directory", "abandon", f"BATCH={M_STUCK}"], env={"OPTASIA_HOME": stack.home})
    assert f"batch {M_STUCK} abandoned; later batches can run" in out.stdout
    tis = p.tis(run_id)
    assert {tis[t]["state"] for t in ("spark_processing", "quality_checks", "hdfs_storage")} == {"skipped"}, tis


# ----------------------------------------------------------------------------
# landing and abandoning (the abandoned batch's subscribers never reach the store,
# so the generator's counts hold for no batch after it: these come last)
# ----------------------------------------------------------------------------

def test_a_file_still_being_written_is_taken_only_once_complete(pipeline, tmp_path):
    """A producer still copying transactions.csv when wait_for_landing pokes, and
    writing no _READY marker: the sensor waits until both files have rested for
    the settle time (60 s), then the run takes every row. The bytes and SHA-256
    it saw travel with the run: ingest_raw checks them, raw/<batch>/_inputs.json
    and the store's run row keep them."""
    p = pipeline
    b5 = f"{_D + dt.timedelta(days=6)}_a"   # after the fault batches, before the abandoned one
    p.land(b5, seed=27)                  # the generator writes both files, then _READY
    folder = p.landing / b5
    tx = folder / "transactions.csv"
    full = tx.read_bytes()
    (folder / "_READY").unlink()
    quarter = len(full) // 4
    with open(tx, "r+b") as f:           # the producer has written a quarter so far
        f.truncate(quarter)
    run_id = p.trigger(b5)
    deadline = time.monotonic() + 180
    while p.tis(run_id)["wait_for_landing"]["state"] != "up_for_reschedule":
        assert time.monotonic() < deadline, p.tis(run_id)["wait_for_landing"]
        time.sleep(2)
    for i in (2, 3, 4):                  # it goes on writing, in steps shorter than the settle time
        time.sleep(20)
        assert p.tis(run_id)["wait_for_landing"]["state"] != "success"
        with open(tx, "ab") as f:
            f.write(full[quarter * (i - 1): quarter * i if i < 4 else len(full)])
    last_write = dt.datetime.now(dt.timezone.utc)
    assert tx.read_bytes() == full
    assert p.wait(run_id) == "success", p.explain(run_id)
    sensed = dt.datetime.fromisoformat(p.tis(run_id)["wait_for_landing"]["end_date"].replace("Z", "+00:00"))
    assert (sensed - last_write).total_seconds() >= 55, (sensed, last_write)
    doc = check_partition(p, b5, tmp_path)   # every row: the generator's counts of the whole file
    want = {"bytes": len(full), "sha256": hashlib.sha256(full).hexdigest()}
    assert doc["inputs"]["transactions.csv"] == want
    raw = json.loads(p.hdfs("-cat", f"/optasia/raw/{b5}/_inputs.json").stdout)
    assert raw["transactions.csv"] == want and raw == doc["inputs"]
    (inputs,) = p.sql("SELECT inputs FROM etl_batch_runs WHERE run_id = %s", doc["run_id"])[0]
    assert inputs == doc["inputs"]


def test_make_abandon_gives_up_a_failed_batch_so_later_ones_run(pipeline, stack):
    """A batch failed after staging blocks later ones until it is rerun or abandoned
    (the next batch's spark_processing fails at once naming it); `make abandon`
    undoes its store changes and unblocks the DAG: the blocked run, cleared, is
    published."""
    p = pipeline
    b4 = f"{_D + dt.timedelta(days=6)}_b"
    p.land(b4, seed=26, dirty=0.9)
    run_id = p.trigger(b4)
    assert p.wait(run_id) == "failed"
    assert p.sql("SELECT status FROM etl_batches WHERE batch_id = %s", b4) == [("staged",)]
    # the next batch is blocked by it: spark_processing fails at once naming both
    b7 = f"{_D + dt.timedelta(days=7)}_a"
    p.land(b7, seed=28)
    blocked = p.trigger(b7)
    assert p.wait(blocked) == "failed"
    ti = p.tis(blocked)["spark_processing"]
    log = p.log(blocked, "spark_processing", 1)
    assert (ti["state"], ti["try_number"]) == ("failed", 1), ti
    assert "order of batches" in log and f"batch {b4} failed after staging" in log and f"blocks batch {b7}" in log
    # nothing of b7 applied: the store holds the refused attempt and its reason only
    (refused,) = store_runs(p, b7)
    assert refused[1] == "failed" and f"batch {b4} failed after staging" in refused[2], refused
    assert p.sql("SELECT status, applied_run_id FROM etl_batches WHERE batch_id = %s", b7) == [("failed", None)]
    out = run(["make", "--no-print-directory", "abandon", f"BATCH={b4}"], env={"OPTASIA_HOME": stack.home}).stdout
    assert f"batch {b4} abandoned; later batches can run" in out
    assert p.sql("SELECT status FROM etl_batches WHERE batch_id = %s", b4) == [("abandoned",)]
    tis = p.tis(run_id)
    assert (tis["quality_checks"]["state"], tis["hdfs_storage"]["state"]) == ("skipped", "skipped")
    assert (p.landing / b4 / "transactions.csv").exists()      # its files are kept
    p.clear(blocked)                                           # and the blocked batch goes through
    assert p.wait(blocked) == "success", p.explain(blocked)
    assert p.sql("SELECT status FROM etl_batches WHERE batch_id = %s", b7) == [("published",)]


def test_make_abandon_refuses_an_older_or_unknown_batch_and_changes_nothing(pipeline, stack):
    """Only the latest batch can be abandoned (later ones built on it), and a
    batch neither the store nor Airflow knows is refused: each says why, and the
    store and the published partitions stay as they were."""
    p = pipeline
    env = {"OPTASIA_HOME": stack.home}
    before = p.store_state(), p.sql("SELECT batch_id, status, applied_run_id FROM etl_batches ORDER BY batch_id")
    older = run(["make", "--no-print-directory", "abandon", f"BATCH={B0}"], env=env, check=False)
    assert older.returncode != 0, older.stdout
    assert f"batch {B0} is not the latest batch" in older.stderr and "nothing was changed" in older.stdout
    unknown = f"{_D - dt.timedelta(days=30)}_a"
    out = run(["make", "--no-print-directory", "abandon", f"BATCH={unknown}"], env=env, check=False)
    assert out.returncode != 0 and f"batch {unknown} is unknown" in out.stderr, (out.stdout, out.stderr)
    assert (p.store_state(), p.sql("SELECT batch_id, status, applied_run_id FROM etl_batches "
                                   "ORDER BY batch_id")) == before
    assert p.hdfs("-test", "-e", f"/optasia/warehouse/transactions/batch_id={B0}", check=False).returncode == 0


def test_make_demo_runs_a_sample_batch_end_to_end(pipeline, stack):
    """What a new user runs first: `make demo` lands ~100k transactions for the
    current half-day, runs the DAG through the REST API and prints the result.
    A run for that half-day already waiting for its files (as the scheduled run
    is) is followed, and asked to look for the files now rather than at its
    next poke."""
    import re

    from spark_jobs.contract import batch_id_for
    from tests.services import pipeline_cli

    started = dt.datetime.now(dt.timezone.utc)
    batch = batch_id_for(started)
    active = pipeline.api(f"/api/v2/dags/{DAG}/dagRuns?state=queued&state=running&limit=100")["dag_runs"]
    assert all(pipeline_cli().batch_of_run(r) == batch for r in active), active   # nothing ahead of the demo
    waiting = active[0]["dag_run_id"] if active else pipeline.trigger(batch)
    deadline = time.monotonic() + 180
    while pipeline.tis(waiting)["wait_for_landing"]["state"] != "up_for_reschedule":
        assert time.monotonic() < deadline, pipeline.tis(waiting)
        time.sleep(2)
    p = run(["make", "--no-print-directory", "demo"], env={"OPTASIA_HOME": stack.home}, timeout=2400)
    out = p.stdout
    print(out[-2500:])
    if batch_id_for(dt.datetime.now(dt.timezone.utc)) == batch:
        assert f"run {waiting} is already working on batch" in out, out
        assert "asked it to look now" in out, out
    # the half-day the demo started in (the run may cross 00:00 or 12:00 UTC)
    demo_batch = re.search(r"^generating batch (\S+):", out, re.M).group(1)
    assert demo_batch in {batch, batch_id_for(dt.datetime.now(dt.timezone.utc))}, demo_batch
    assert f"batch {demo_batch} published" in out
    assert f"hdfs://namenode:8020/optasia/warehouse/transactions/batch_id={demo_batch}" in out
    assert "counts from _metrics.json:" in out and "spark_processing       success" in out
    published = int(next(ln.split()[-1] for ln in out.splitlines() if ln.strip().startswith("published "))
                    .replace(",", ""))
    assert published > 80_000
    assert "http://127.0.0.1:8080/dags/optasia_etl_pipeline" in out and "http://localhost:9870/" in out
