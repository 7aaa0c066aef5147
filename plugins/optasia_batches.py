"""The Batches page of the Airflow UI: how the pipeline has been doing, from the store.

An Airflow 3 plugin: a FastAPI app under ``/optasia-batches`` (the page and
its JSON) and an entry "Batches" in the UI's Browse menu that shows the page
inside the UI. The page lists the last batches (state, published, rejected by
reason, pending in/out, duplicates, duration, links to the DAG run and to the
published partition in the NameNode UI) and charts them with Chart.js, which
the playbook fetches from the npm registry (pinned in versions.env) into
``optasia_batches_static/``.

Data: the store's ``etl_batches`` / ``etl_batch_metrics`` through the
``optasia_store`` Connection; the DAG run of a batch from Airflow's own
database (the ``batch_id`` task's return value). Every route needs a
logged-in user: the UI's session cookie or a bearer token of the REST API.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import urllib.parse
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from airflow.plugins_manager import AirflowPlugin

DAG_ID = "optasia_etl_pipeline"
SETTINGS_VARIABLE = "optasia_pipeline"
PREFIX = "/optasia-batches"
STATIC = Path(__file__).resolve().with_name("optasia_batches_static")
# The NameNode UI as the browser reaches it (the compose file sets it from the inventory).
NAMENODE_UI = os.environ.get("OPTASIA_NAMENODE_UI", "http://localhost:9870")

# The store's own view of each batch (spark_jobs/sql/0007_batch_overview.sql),
# which `make status` reads too: the state shown, the one-line reason, what next.
BATCHES_SQL = """
SELECT batch_id, state, run_id, run_state, started_at, finished_at, reason, next_step,
       published, pending_in, pending_out, pending_resolved, transactions_input,
       transactions_duplicate, subscribers_input, transactions_rejected, subscribers_rejected
FROM etl_batch_overview
ORDER BY batch_id DESC
LIMIT %s
"""

app = FastAPI(title="optasia batches", docs_url=None, redoc_url=None, openapi_url=None)
app.mount("/static", StaticFiles(directory=str(STATIC), check_dir=False), name="static")


async def require_user(request: Request):
    """The logged-in user (UI session cookie, or ``Authorization: Bearer``); 401 otherwise."""
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get("_token")
    return await resolve_user_from_token(token)


def _settings() -> dict:
    from airflow.models.variable import Variable

    return Variable.get(SETTINGS_VARIABLE, deserialize_json=True)


def _store_rows(limit: int) -> list[tuple]:
    import psycopg
    from airflow.models.connection import Connection

    conn_id = _settings().get("store_conn_id", "optasia_store")
    c = Connection.get_connection_from_secrets(conn_id)
    with psycopg.connect(host=c.host, port=c.port or 5432, user=c.login, password=c.password,
                         dbname=c.schema, connect_timeout=10) as conn:
        try:
            return conn.execute(BATCHES_SQL, (limit,)).fetchall()
        except psycopg.errors.UndefinedTable:   # a fresh install: no run has created the store yet
            return []


def _runs_by_batch() -> dict[str, str]:
    """batch id -> the latest DAG run that worked on it (its ``batch_id`` task's result)."""
    from sqlalchemy import text

    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(text(
            "SELECT run_id, value FROM xcom WHERE dag_id = :dag AND task_id = 'batch_id' "
            "AND key = 'return_value' ORDER BY timestamp"), {"dag": DAG_ID}).fetchall()
    out = {}
    for run_id, value in rows:
        if isinstance(value, (bytes, str)):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if isinstance(value, str):
            out[value] = run_id
    return out


def _seconds(start, end) -> float | None:
    return round((end - start).total_seconds(), 1) if start and end else None


def batches(limit: int) -> list[dict]:
    settings = _settings()
    runs = _runs_by_batch()
    part = settings.get("warehouse_dir", "/optasia/warehouse").rstrip("/") + "/transactions/batch_id="
    out = []
    for (batch, state, run_id, run_state, started, finished, reason, next_step, published, pending_in,
         pending_out, resolved, tx_in, dups, subs_in, tx_rej, subs_rej) in _store_rows(limit):
        dag_run = runs.get(batch)
        out.append({
            "batch_id": batch, "state": state, "run_id": run_id, "run_state": run_state,
            "started_at": started.isoformat() if started else None,
            "seconds": _seconds(started, finished), "error": (reason or "")[:500],
            "next_step": next_step,
            "published": published, "pending_in": pending_in, "pending_out": pending_out,
            "pending_resolved": resolved, "transactions_input": tx_in, "duplicates": dups,
            "subscribers_input": subs_in,
            "rejected": {k: v for k, v in (tx_rej or {}).items() if v},
            "subscribers_rejected": {k: v for k, v in (subs_rej or {}).items() if v},
            "dag_run_url": (f"/dags/{DAG_ID}/runs/{urllib.parse.quote(dag_run, safe='')}" if dag_run else None),
            "partition_url": f"{NAMENODE_UI}/explorer.html#{part}{batch}" if state == "published" else None,
        })
    return out


@app.get("/api/batches")
async def batches_json(request: Request, limit: int = Query(30, ge=1, le=500)):
    await require_user(request)
    import asyncio

    return JSONResponse(await asyncio.to_thread(batches, limit))


@app.exception_handler(HTTPException)
async def _auth_page(request: Request, exc: HTTPException):
    if exc.status_code in (401, 403) and not request.url.path.endswith("/api/batches"):
        login = "/auth/login?next=" + urllib.parse.quote(f"{PREFIX}/")
        return HTMLResponse(f'<p>Log in to see the batches: <a href="{login}" target="_top">log in</a>.</p>',
                            status_code=exc.status_code)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def _reason(b: dict) -> str:
    """A failed batch's one-line reason, and what to do about it."""
    out = html.escape(b["error"][:300])
    if b.get("next_step"):
        out += f'<div class="next">Next: {html.escape(b["next_step"])}.</div>'
    return out


def _last(n: int) -> str:
    return "No batches yet" if n == 0 else "The last batch" if n == 1 else f"The last {n} batches"


def _cell(v) -> str:
    return "" if v is None else html.escape(f"{v:,}" if isinstance(v, int) else str(v))


@app.get("/", response_class=HTMLResponse)
async def page(request: Request, limit: int = Query(30, ge=1, le=500)):
    await require_user(request)
    import asyncio

    rows = await asyncio.to_thread(batches, limit)
    body = []
    for b in rows:
        rejected = ", ".join(f"{html.escape(k)} {v:,}" for k, v in sorted(b["rejected"].items())) or "-"
        links = []
        if b["dag_run_url"]:
            links.append(f'<a href="{html.escape(b["dag_run_url"])}" target="_top">run</a>')
        if b["partition_url"]:
            links.append(f'<a href="{html.escape(b["partition_url"])}" target="_blank" rel="noopener">partition</a>')
        body.append(
            f'<tr class="batch" data-batch="{html.escape(b["batch_id"])}"><td>{html.escape(b["batch_id"])}</td>'
            f'<td class="state-{html.escape(b["state"])}">{html.escape(b["state"])}</td>'
            f'<td class="n">{_cell(b["published"])}</td><td>{rejected}</td>'
            f'<td class="n">{_cell(b["pending_in"])}</td><td class="n">{_cell(b["pending_out"])}</td>'
            f'<td class="n">{_cell(b["duplicates"])}</td><td class="n">{_cell(b["seconds"])}</td>'
            f'<td>{" · ".join(links)}</td><td class="err">{_reason(b)}</td></tr>')
    chrono = list(reversed(rows))
    reasons = sorted({r for b in rows for r in b["rejected"]})
    chart_data = {
        "labels": [b["batch_id"] for b in chrono],
        "published": [b["published"] or 0 for b in chrono],
        "rejected": [sum(b["rejected"].values()) for b in chrono],
        "pending": [b["pending_out"] or 0 for b in chrono],
        "reasons": {r: [b["rejected"].get(r, 0) for b in chrono] for r in reasons},
    }
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return HTMLResponse(PAGE.replace("__ROWS__", "\n".join(body) or '<tr><td colspan="10">no batches yet: '
                                     '<code>make demo</code> runs one</td></tr>')
                        .replace("__DATA__", json.dumps(chart_data).replace("</", "<\\/"))
                        .replace("__LAST__", _last(len(rows))).replace("__GENERATED__", generated))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Batches - optasia</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #1f2933; }
 h1 { font-size: 20px; margin: 0 0 4px; } .sub { color: #616e7c; margin-bottom: 16px; }
 .charts { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; margin-bottom: 20px; }
 .chart { border: 1px solid #e4e7eb; border-radius: 6px; padding: 8px; height: 280px; }
 table { border-collapse: collapse; width: 100%; } th, td { padding: 4px 8px; border-bottom: 1px solid #e4e7eb; }
 th { text-align: left; background: #f5f7fa; } td:first-child { white-space: nowrap; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; }
 .state-published { color: #0f7b3d; } .state-failed, .state-staged { color: #b42318; } .err { color: #b42318; }
 .next { color: #3e4c59; margin-top: 2px; }
</style></head>
<body>
<h1>Batches</h1>
<div class="sub">__LAST__ of optasia_etl_pipeline, from the store (generated __GENERATED__).</div>
<div class="charts">
 <div class="chart"><canvas id="outcomes" aria-label="published, rejected and pending per batch"></canvas></div>
 <div class="chart"><canvas id="reasons" aria-label="reject reasons per batch"></canvas></div>
</div>
<table>
<thead><tr><th>batch</th><th>state</th><th>published</th><th>rejected by reason</th><th>pending in</th>
<th>pending out</th><th>duplicates</th><th>seconds</th><th>links</th><th>reason</th></tr></thead>
<tbody>
__ROWS__
</tbody></table>
<script src="static/chart.umd.min.js"></script>
<script>
const data = __DATA__;
const common = { responsive: true, maintainAspectRatio: false, animation: false,
                 scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } };
new Chart(document.getElementById("outcomes"), { type: "bar", data: { labels: data.labels, datasets: [
  { label: "published", data: data.published, backgroundColor: "#2f9e44" },
  { label: "rejected", data: data.rejected, backgroundColor: "#e03131" },
  { label: "pending out", data: data.pending, backgroundColor: "#f59f00" } ] },
  options: { ...common, plugins: { title: { display: true, text: "Rows per batch" } } } });
const palette = ["#e03131", "#9c36b5", "#1971c2", "#f08c00", "#2b8a3e", "#5c940d", "#c2255c", "#495057"];
new Chart(document.getElementById("reasons"), { type: "bar", data: { labels: data.labels,
  datasets: Object.entries(data.reasons).map(([r, v], i) => ({ label: r, data: v,
    backgroundColor: palette[i % palette.length] })) },
  options: { ...common, plugins: { title: { display: true, text: "Rejected transactions by reason" } } } });
document.body.dataset.charts = "ready";
</script>
</body></html>
"""


class OptasiaBatchesPlugin(AirflowPlugin):
    name = "optasia_batches"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "optasia batches"}]
    external_views = [{"name": "Batches", "href": f"{PREFIX}/", "url_route": "optasia-batches",
                       "destination": "nav", "category": "browse"}]
