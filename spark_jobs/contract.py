"""The data contract as code (docs/data-contract.md): what the Spark job, the
DAG, the host scripts and the DuckDB reference all agree on, written once.

Pure Python (no Spark, no Airflow, no I/O): the airflow role ships this very
file beside the DAG's package as ``optasia_pipeline/contract.py``, and the
spark-job image carries it inside ``spark_jobs``.
"""

from __future__ import annotations

import datetime as dt
import re

# ----------------------------------------------------------------------------
# batches: YYYY-MM-DD_a (00:00-11:59 UTC) or YYYY-MM-DD_b (12:00-23:59 UTC)
# ----------------------------------------------------------------------------

_MONTH_DAY = (r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)"
              r"|02-(?:0[1-9]|1\d|2[0-8]))")
_LEAP_YEAR = r"(?:\d{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
# A batch id naming a real date (leap years included), as a JSON-schema/JavaScript
# compatible pattern: the DAG's batch_id Param uses it, so the trigger form and the
# REST API refuse 2023-02-30_a before a run exists.
BATCH_PATTERN = rf"^(?!0000)(?:\d{{4}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)_[ab]$"
# The shape only; group 1 is the date, group 2 the half-day.
BATCH_SHAPE = re.compile(r"^(\d{4}-\d{2}-\d{2})_([ab])$")


def batch_date(batch_id: str) -> dt.date:
    """The date of ``YYYY-MM-DD_a|b``; ValueError saying what is wrong otherwise."""
    m = BATCH_SHAPE.fullmatch(batch_id or "")
    if not m:
        raise ValueError(f"batch_id {batch_id!r} is not of the form YYYY-MM-DD_a or YYYY-MM-DD_b")
    try:
        return dt.date.fromisoformat(m.group(1))
    except ValueError:
        raise ValueError(f"batch_id {batch_id!r} does not name a real date") from None


def batch_id_for(when: dt.datetime) -> str:
    """The batch id of a moment (a run's logical date): its UTC date, _a before 12:00."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    return f"{when:%Y-%m-%d}_{'a' if when.hour < 12 else 'b'}"


# ----------------------------------------------------------------------------
# where things live
# ----------------------------------------------------------------------------

DATASETS = ("transactions", "rejects")
INPUT_FILES = ("subscribers.csv", "transactions.csv")
# A landing folder is complete when the producer writes this after both files
# (or, with no marker, once both have rested for the settle time).
READY_MARKER = "_READY"


def partition(warehouse: str, dataset: str, batch_id: str) -> str:
    """A published partition: ``<warehouse>/<dataset>/batch_id=<batch>``."""
    return f"{warehouse.rstrip('/')}/{dataset}/batch_id={batch_id}"


def staging_root(warehouse: str, staging: str = "") -> str:
    """Where runs stage their partitions: ``staging``, else ``<warehouse>/_staging``."""
    return (staging or f"{warehouse.rstrip('/')}/_staging").rstrip("/")


def staged_run(root: str, batch_id: str, run_id: int) -> str:
    """A run's staged datasets: ``<staging root>/<batch>/run-<run>/<dataset>``."""
    return f"{root}/{batch_id}/run-{run_id}"


def trash(warehouse: str, batch_id: str) -> str:
    """Where a publish moves the partitions it replaces, until the store records it."""
    return f"{warehouse.rstrip('/')}/_trash/{batch_id}"


# Written into each staged dataset once all its files are; the transactions
# dataset also carries the run's _metrics.json (its run_id names the run).
SUCCESS_MARKER = "_SUCCESS"
METRICS_FILE = "_metrics.json"


# ----------------------------------------------------------------------------
# values and outputs
# ----------------------------------------------------------------------------

DEFAULT_CHANNELS = ("SMS", "USSD", "APP", "WEB")
# A line (its UTF-8 bytes, line ending excluded) longer than this is a
# malformed_row without being parsed field by field; real lines are under
# 200 bytes. The setting max_line_bytes overrides it.
DEFAULT_MAX_LINE_BYTES = 1 << 20
SUBSCRIBER_REASONS = ("malformed_row", "invalid_sub_id", "invalid_activation_date")
TRANSACTION_REASONS = ("malformed_row", "invalid_timestamp", "invalid_sub_id", "invalid_amount",
                       "invalid_channel", "before_activation", "unmatched_expired")
# The published datasets' columns (Spark's simple type strings).
OUTPUT_SCHEMA = {
    "transactions": [["timestamp", "timestamp"], ["sub_row_key", "string"], ["sub_id", "string"],
                     ["amount", "decimal(18,4)"], ["channel", "string"], ["activation_date", "date"]],
    "rejects": [["source", "string"], ["reason", "string"], ["record", "array<string>"]],
}


# Every batch's numbers, in the order _metrics.json and reports show them.
METRIC_KEYS = (
    "subscribers_input",
    "subscribers_rejected",
    "subscribers_duplicate",
    "subscribers_inserted",
    "subscribers_updated",
    "subscribers_unchanged",
    "transactions_input",
    "pending_in",
    "transactions_rejected",
    "transactions_duplicate",
    "pending_resolved",
    "published",
    "pending_out",
)


def conservation_errors(m: dict) -> list[str]:
    """The contract's two laws over a batch's metrics; each broken one as a
    sentence naming both sides."""
    errors = []
    subs_right = (sum(m["subscribers_rejected"].values()) + m["subscribers_duplicate"]
                  + m["subscribers_inserted"] + m["subscribers_updated"] + m["subscribers_unchanged"])
    if m["subscribers_input"] != subs_right:
        errors.append(
            f"subscribers_input ({m['subscribers_input']}) != rejected + duplicate + inserted + "
            f"updated + unchanged ({subs_right})")
    tx_left = m["transactions_input"] + m["pending_in"]
    tx_right = (sum(m["transactions_rejected"].values()) + m["transactions_duplicate"]
                + m["published"] + m["pending_out"])
    if tx_left != tx_right:
        errors.append(
            f"transactions_input + pending_in ({tx_left}) != rejected + duplicate + published + "
            f"pending_out ({tx_right})")
    return errors


# ----------------------------------------------------------------------------
# exit codes of `python -m spark_jobs`
# ----------------------------------------------------------------------------

EXIT_FAILED = 1           # anything else: retried
EXIT_CONFIG = 2           # bad arguments or settings: fix the call
EXIT_INFRASTRUCTURE = 3   # a service unreachable or lost mid-run: retry later
EXIT_CONTRACT = 4         # the data breaks the contract: do not retry
EXIT_ORDER = 5            # the batch may not run now (blocked, older than the latest)
# The ones retrying cannot fix, and what they mean.
FINAL_EXIT_CODES = {EXIT_CONFIG: "configuration error", EXIT_CONTRACT: "contract failure",
                    EXIT_ORDER: "order of batches"}

