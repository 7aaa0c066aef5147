#!/usr/bin/env python3
"""The operator's verbs on the deployed stack (`make restart|shell|airflow|parse|status|flower`).

  scripts/stack.py services                    the services of both compose projects
  scripts/stack.py restart [SERVICE]           restart one service (default: all), wait until healthy
  scripts/stack.py shell SERVICE [CMD ...]     a shell in a running service (or run CMD there)
  scripts/stack.py logs SERVICE [--since T] [--no-follow]   a service's logs (last 200 lines, then follow)
  scripts/stack.py airflow ARGS ...            the Airflow CLI inside the stack
  scripts/stack.py parse                       import the deployed DAGs; non-zero exit on any error
  scripts/stack.py status [--limit N]          the last batches from the store
  scripts/stack.py flower [--stop]             Celery's Flower on 127.0.0.1 (compose profile `flower`)

Finds each service's compose project from the endpoints the playbook wrote to
the bundle home, so nobody needs to know compose paths. `make` runs it with the
project's venv (it imports the contract from spark_jobs through scripts/pipeline.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import HOME, die, say, spec  # noqa: E402  (scripts/pipeline.py: the stack's settings)

AIRFLOW_CLI_SERVICE = "airflow-scheduler"   # has the CLI, the DAG folder and the metadata database
FLOWER_PROFILE, FLOWER_SERVICE = "flower", "airflow-flower"


def projects() -> list[Path]:
    """Compose project folders, infrastructure first (the order to start them in)."""
    found = []
    for name, key in (("endpoints.json", "infrastructure_dir"), ("endpoints-airflow.json", "airflow_dir")):
        try:
            found.append(Path(json.loads((HOME / name).read_text())[key]))
        except (OSError, KeyError, ValueError):
            continue
    if not found:
        die(f"the stack is not provisioned in {HOME}; run `make up` first")
    return found


def compose(project: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "compose", "--project-directory", str(project), *args], **kw)


def services(project: Path, profiles: bool = False) -> list[str]:
    extra = ["--profile", FLOWER_PROFILE] if profiles else []
    p = compose(project, *extra, "config", "--services", capture_output=True, text=True)
    return p.stdout.split() if p.returncode == 0 else []


def project_of(service: str) -> Path:
    for project in projects():
        if service in services(project, profiles=True):
            return project
    known = ", ".join(s for p in projects() for s in services(p))
    die(f"no service {service!r}; the services are: {known}")
    raise AssertionError


def _is_tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def exec_in(service: str, argv: list[str]) -> int:
    """Run argv in the running container of a service; a terminal when we have one."""
    tty = [] if _is_tty() else ["-T"]
    return compose(project_of(service), "exec", *tty, service, *argv).returncode


def wait_healthy(project: Path, names: list[str], timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        p = compose(project, "ps", "--format", "json", *pending, capture_output=True, text=True)
        rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip().startswith("{")]
        pending = [r["Service"] for r in rows if r.get("Health") not in ("healthy", "")
                   or r.get("State") != "running"]
        if pending:
            time.sleep(2)
    if pending:
        say(f"still not healthy after {timeout:.0f}s: {', '.join(pending)}; see `make logs SERVICE={pending[0]}`")
        return False
    return True


def cmd_restart(service: str | None) -> int:
    targets = [(project_of(service), [service])] if service else [(p, services(p)) for p in projects()]
    for project, names in targets:
        names = [n for n in names if n != "airflow-init"]   # a one-shot job, not a service
        say(f"restarting {', '.join(names)} ...")
        t0 = time.monotonic()
        if compose(project, "restart", *names).returncode != 0:
            return 1
        if not wait_healthy(project, names):
            return 1
        say(f"  healthy again after {time.monotonic() - t0:.0f}s")
    return 0


def cmd_shell(service: str, argv: list[str]) -> int:
    if argv:
        return exec_in(service, argv)
    return exec_in(service, ["sh", "-c", "command -v bash >/dev/null && exec bash || exec sh"])


def cmd_logs(service: str, since: str | None, follow: bool) -> int:
    args = ["logs", "--tail", "200", *(["--since", since] if since else []), *(["-f"] if follow else [])]
    return compose(project_of(service), *args, service).returncode


def cmd_airflow(argv: list[str]) -> int:
    return exec_in(AIRFLOW_CLI_SERVICE, ["airflow", *argv])


PARSE = r"""
import json, sys, time
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
from airflow.configuration import conf
folder = conf.get("core", "dags_folder")
sys.path.insert(0, folder)   # as the DAG processor does: the DAGs' own packages import
t0 = time.monotonic()
bag = DagBag(dag_folder=folder)
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors, "folder": str(bag.dag_folder),
                  "seconds": round(time.monotonic() - t0, 2)}))
"""


def cmd_parse() -> int:
    """Import every file of the deployed DAG folder, as the DAG processor does."""
    p = compose(project_of(AIRFLOW_CLI_SERVICE), "exec", "-T", AIRFLOW_CLI_SERVICE, "python", "-c", PARSE,
                capture_output=True, text=True)
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        die(f"could not parse the DAG folder (exit {p.returncode}): {p.stderr.strip()[-2000:]}")
        raise
    say(f"{len(out['dags'])} DAG(s) in {out['folder']} imported in {out['seconds']:.1f}s: {', '.join(out['dags'])}")
    for path, error in sorted(out["errors"].items()):
        say(f"\nIMPORT ERROR in {path}:\n{error.rstrip()}")
    if out["errors"]:
        say(f"\n{len(out['errors'])} file(s) do not import; fix them (the scheduler ignores them until then)")
        return 1
    return 0


# The store's own view of each batch (spark_jobs/sql/0007_batch_overview.sql):
# the state shown, the last run, its one-line reason; the Batches page reads it too.
STATUS_SQL = """
SELECT batch_id, state, run_id, run_state,
       coalesce(to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), ''),
       coalesce(seconds::int::text, ''), CASE WHEN state = 'published' THEN published::text ELSE '' END,
       coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(transactions_rejected))::text, ''),
       coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(subscribers_rejected))::text, ''),
       coalesce(pending_in::text, ''), coalesce(pending_out::text, ''),
       coalesce(transactions_duplicate::text, ''), coalesce(reason, ''), coalesce(next_step, '')
FROM etl_batch_overview ORDER BY batch_id DESC LIMIT %d
"""
STATUS_COLUMNS = ("batch", "state", "run", "run state", "started (UTC)", "seconds", "published",
                  "tx rejected", "subs rejected", "pending in", "pending out", "duplicates")
NO_STORE = "does not exist"   # psql's words for a store no run has created yet


def store_query(sql: str) -> list[list[str]] | None:
    """Rows of a query on the store (psql in the postgres container); None when it has no tables yet."""
    s = spec()
    db = s["connections"][s["variables"]["optasia_pipeline"]["store_conn_id"]]["schema"]
    infra = projects()[0]
    p = compose(infra, "exec", "-T", "-u", "postgres", "postgres", "psql", "-d", db, "-X", "-tA", "-F", "\t",
                "-v", "ON_ERROR_STOP=1", "-c", sql, capture_output=True, text=True)
    if p.returncode != 0 and NO_STORE in p.stderr:
        return None
    if p.returncode != 0:
        die(f"cannot read the store ({db}): {p.stderr.strip()[-1000:]}; check `make health`")
    return [line.split("\t") for line in p.stdout.splitlines() if line]


def cmd_status(limit: int) -> int:
    """The table, then each failed batch's reason and what to do, one line each."""
    rows = store_query(STATUS_SQL % int(limit))
    if not rows:
        say("no batches in the store yet; `make demo` runs one")
        return 0
    table = [r[:len(STATUS_COLUMNS)] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(STATUS_COLUMNS)]
    say("  ".join(c.ljust(w) for c, w in zip(STATUS_COLUMNS, widths, strict=True)).rstrip())
    for r in table:
        say("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    notes = [(r[0], r[1], r[-2], r[-1]) for r in rows if r[-2] and r[1] == "failed"]
    if notes:
        say("")
    for batch, state, reason, next_step in notes:
        say(f"{batch} {state}: {reason}")
        if next_step:
            say(f"  next: {next_step}")
    return 0


def cmd_flower(stop: bool) -> int:
    project = project_of(FLOWER_SERVICE)
    if stop:
        return compose(project, "--profile", FLOWER_PROFILE, "rm", "-sf", FLOWER_SERVICE).returncode
    if compose(project, "--profile", FLOWER_PROFILE, "up", "-d", FLOWER_SERVICE).returncode != 0:
        return 1
    if not wait_healthy(project, [FLOWER_SERVICE], timeout=180):
        return 1
    port = json.loads((HOME / "endpoints-airflow.json").read_text()).get("flower_port", 5555)
    say(f"Flower (Celery workers and tasks): http://127.0.0.1:{port}  (stop it: make flower STOP=1)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("services")
    p = sub.add_parser("restart")
    p.add_argument("service", nargs="?")
    p = sub.add_parser("shell")
    p.add_argument("service")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("logs")
    p.add_argument("service")
    p.add_argument("--since", help="only lines newer than this (10m, 2h, an RFC 3339 time)")
    p.add_argument("--no-follow", action="store_true", help="print and exit instead of following")
    p = sub.add_parser("airflow")
    p.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("parse")
    p = sub.add_parser("status")
    p.add_argument("--limit", type=int, default=10)
    p = sub.add_parser("flower")
    p.add_argument("--stop", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "services":
        for project in projects():
            say(f"{project}: {' '.join(services(project))}")
        return 0
    if args.command == "restart":
        return cmd_restart(args.service)
    if args.command == "shell":
        return cmd_shell(args.service, args.cmd)
    if args.command == "logs":
        return cmd_logs(args.service, args.since, not args.no_follow)
    if args.command == "airflow":
        return cmd_airflow(args.args)
    if args.command == "parse":
        return cmd_parse()
    if args.command == "status":
        return cmd_status(args.limit)
    return cmd_flower(args.stop)


if __name__ == "__main__":
    sys.exit(main())
