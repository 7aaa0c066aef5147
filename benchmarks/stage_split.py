"""Where a Spark run's seconds go, from its event log: the same phases for
the job and the naive baseline, so `make bench-etl` can set them side by side.

A stage belongs to the first phase whose operators it runs (the names of its
RDD scopes), in this order: ``write`` (a stage that writes files, with what
runs before the write in that stage), ``store read`` (JDBC scans),
``read, parse, validate`` (a scan of the input text or CSV, up to its
shuffle), ``dedupe, rank, match`` (sorts, windows, joins, aggregates after a
shuffle), ``other``. ``driver, no stage`` is the wall time when no stage ran
(planning, collects, the store's COPY and SQL, Python). Wall seconds of a
phase are the union of its stages' intervals; task seconds are the
executors' run time summed (2 cores: at most twice the wall).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PHASES = ("read, parse, validate", "store read", "dedupe, rank, match", "write", "other", "driver, no stage")


def with_event_log(env: dict, log_dir: Path) -> dict:
    """``env`` for a PySpark process that writes an uncompressed event log into ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{log_dir}",
            "spark.eventLog.compress": "false"}
    args = " ".join(f"--conf {k}={v}" for k, v in conf.items())
    return dict(env, PYSPARK_SUBMIT_ARGS=f"{args} pyspark-shell")


def latest_log(log_dir: Path) -> Path:
    files = [p for p in log_dir.rglob("*") if p.is_file() and not p.name.startswith("appstatus")]
    return max(files, key=os.path.getmtime)


def _phase(scopes: set[str]) -> str:
    if scopes & {"WriteFiles", "Execute InsertIntoHadoopFsRelationCommand"}:
        return "write"
    if any(s.startswith("Scan JDBCRelation") for s in scopes):
        return "store read"
    if any(s.startswith(("Scan text", "Scan csv")) for s in scopes):
        return "read, parse, validate"
    if scopes & {"Window", "Sort", "SortMergeJoin", "BroadcastHashJoin", "ShuffledHashJoin", "HashAggregate",
                 "SortAggregate", "ObjectHashAggregate"}:
        return "dedupe, rank, match"
    return "other"


def _union(intervals: list[tuple[int, int]]) -> float:
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total / 1000


def split(log: Path) -> dict:
    """phase -> {"wall": s, "tasks": s} for one application's event log."""
    intervals: dict[str, list] = {p: [] for p in PHASES}
    tasks = dict.fromkeys(PHASES, 0.0)
    start = end = None
    with open(log, encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            kind = e["Event"]
            if kind == "SparkListenerApplicationStart":
                start = e["Timestamp"]
            elif kind == "SparkListenerApplicationEnd":
                end = e["Timestamp"]
            elif kind == "SparkListenerStageCompleted":
                info = e["Stage Info"]
                if not info.get("Submission Time") or not info.get("Completion Time"):
                    continue
                scopes = {json.loads(r["Scope"])["name"] if r.get("Scope") else r["Name"] for r in info["RDD Info"]}
                phase = _phase(scopes)
                intervals[phase].append((info["Submission Time"], info["Completion Time"]))
                tasks[phase] += sum(a.get("Value", 0) for a in info.get("Accumulables", [])
                                    if a.get("Name") == "internal.metrics.executorRunTime") / 1000
    out = {p: {"wall": _union(intervals[p]), "tasks": tasks[p]} for p in PHASES if p != "driver, no stage"}
    if start and end:
        busy = _union([i for p in intervals.values() for i in p])
        out["driver, no stage"] = {"wall": max(0.0, (end - start) / 1000 - busy), "tasks": 0.0}
    return out


def table(runs: list[tuple[str, dict]]) -> str:
    """Markdown: one column pair (wall, task seconds) per run."""
    head = "| phase | " + " | ".join(f"{name} wall s | {name} task s" for name, _ in runs) + " |"
    rows = [head, "|---" * (1 + 2 * len(runs)) + "|"]
    for p in PHASES:
        cells = []
        for _, s in runs:
            v = s.get(p, {"wall": 0.0, "tasks": 0.0})
            cells += [f"{v['wall']:.1f}", f"{v['tasks']:.1f}"]
        rows.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
