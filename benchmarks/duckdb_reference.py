"""DuckDB measuring stick: the data contract for ONE batch, written independently of Spark.

It processes one batch against an EMPTY subscriber store and an EMPTY pending
table (the benchmark case) and returns the batch metrics; optionally it writes
the published rows to Parquet. The rules are ``docs/data-contract.md``; where the
contract is silent, ``docs/data-contract-notes.md`` (``[n]`` below = its point n).

Nearly everything runs in DuckDB SQL:

1. DuckDB's CSV reader, with one VARCHAR column, quote/escape off and a
   delimiter byte the file does not hold, hands over the physical lines
   (LF, CRLF, lone CR; empty lines come back NULL and are dropped).
2. A line without ``"`` is split on commas; a line with one is checked
   against an RE2 grammar of RFC 4180 as Python's ``csv`` (strict) reads it
   and cut into fields by ``regexp_extract_all``. Fields are trimmed of
   ASCII white space.
3. The rules run as one CASE per row, in the contract's order; rows are
   grouped in the same pass (rejected rows by reason, valid transactions by
   their normalised key), so duplicates fall out as ``n - 1`` per group.
4. The valid groups are joined with the batch's subscribers and classified.

Python only pre-scans each file (memchr speed) and, when DuckDB's reader can
not be used as is (invalid UTF-8 [4], a U+0001 byte, a doubled BOM at the
start), rewrites its lines into a temporary file; and it upper-cases the
rare distinct non-ASCII channel values (full Unicode case mapping like
Java/Python: ``ß`` -> ``SS``; DuckDB's ``upper`` gives ``ẞ``) [11].

Usage::

    from benchmarks.duckdb_reference import run_reference
    metrics = run_reference("/data/landing", "2024-06-15_a")

    python3 benchmarks/duckdb_reference.py /data/landing 2024-06-15_a \
        [--channels SMS,USSD,APP,WEB] [--pending-ttl-days 7] [--output DIR] [--timings]
"""

from __future__ import annotations

import argparse
import codecs
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from typing import Iterable, Sequence

import duckdb

# The names the contract gives (channels, reasons, metrics) and its laws, shared
# with the job; the rules themselves are this module's own reading of the contract.
from spark_jobs.contract import (DEFAULT_CHANNELS, DEFAULT_MAX_LINE_BYTES, METRIC_KEYS, SUBSCRIBER_REASONS,
                                 TRANSACTION_REASONS, conservation_errors)
from spark_jobs.contract import batch_date as _batch_date

__all__ = [
    "DEFAULT_CHANNELS",
    "SUBSCRIBER_REASONS",
    "TRANSACTION_REASONS",
    "METRIC_KEYS",
    "run_reference",
    "check_conservation",
    "main",
]

MICROS_PER_DAY = 86_400_000_000

# --------------------------------------------------------------------------
# SQL building blocks (RE2 syntax; regexp_full_match anchors the whole string)
# --------------------------------------------------------------------------

SUB_ID_RE = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
# [8] years 0001..9999 (0000 excluded here), months 01-12, days 01-31; whether
# the day exists in that month is left to the cast (checked in the tests).
_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
DATE_RE = rf"{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
# [9] hour 00-23, minute 00-59, second 00-59; zone Z or +-HH:MM with at most 18:00
TS_RE = (
    rf"{DATE_RE}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}})?"
    r"(?:Z|[+-](?:(?:0[0-9]|1[0-7]):[0-5][0-9]|18:00))?"
)
AMOUNT_RE = r"[0-9]{1,14}(?:\.[0-9]{1,4})?"
# [5] RFC 4180 like Python csv strict=True: a field is quoted only when it starts
# with '"'; "" inside is a quote; after the closing quote a comma or the end.
_CSV_FIELD = r'"(?:[^"]|"")*"|[^",][^,]*'
CSV_LINE_RE = rf"(?:{_CSV_FIELD})?(?:,(?:{_CSV_FIELD})?)*"
CSV_TOKEN_RE = rf",({_CSV_FIELD}|)"   # applied to ',' || line: each match is one field
# [7] ASCII white space (a line never holds CR or LF)
_WS_LIT = "' \t\x0b\f'"         # the same four as a literal (trim is faster with one)
# Has an unquoted line white space at a field's edge (next to a comma or at
# either end)? Spaces are common (the 'YYYY-MM-DD HH:MM:SS' form), the others rare.
_EDGE_WS = ("contains(line, ' ,') OR contains(line, ', ') OR starts_with(line, ' ') OR ends_with(line, ' ') "
            "OR CASE WHEN contains(line, chr(9)) OR contains(line, chr(11)) OR contains(line, chr(12)) THEN "
            + " OR ".join(f"contains(line, {c} || ',') OR contains(line, ',' || {c}) "
                          f"OR starts_with(line, {c}) OR ends_with(line, {c})"
                          for c in ("chr(9)", "chr(11)", "chr(12)"))
            + " ELSE false END")

# line -> list of fields, unquoted [5] and trimmed [7]; NULL when the line is
# unparseable or longer than the line bound (its UTF-8 bytes, strlen; filled in
# by record_sql). Lines without '"' (nearly all) are split on commas; only
# those with white space at a field's edge pay for trimming.
_RECORD_SQL = f"""CASE
    WHEN strlen(line) > @MAX_LINE_BYTES@ THEN NULL
    WHEN NOT contains(line, '"') THEN CASE
        WHEN {_EDGE_WS} THEN list_transform(string_split(line, ','), lambda x: trim(x, {_WS_LIT}))
        ELSE string_split(line, ',') END
    WHEN regexp_full_match(line, '{CSV_LINE_RE}') THEN list_transform(
        regexp_extract_all(',' || line, '{CSV_TOKEN_RE}', 1),
        lambda x: trim(CASE WHEN starts_with(x, '"')
                            THEN replace(substr(x, 2, length(x) - 2), '""', '"') ELSE x END, {_WS_LIT}))
    END"""


def record_sql(max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> str:
    """The line -> record expression for a line bound (a longer line is a malformed_row)."""
    return _RECORD_SQL.replace("@MAX_LINE_BYTES@", str(int(max_line_bytes)))


_DELIM = "\x01"      # never in a sane CSV; if it occurs the file is rewritten
_BOM = "\ufeff"
_BOM_BYTES = _BOM.encode()
_CHUNK = 1 << 24
_MAX_LINE = 1 << 21        # DuckDB's default; a larger one makes the CSV scan single-threaded
_MAX_LINE_RETRY = 1 << 30


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# --------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------

def _needs_rewrite(path: str) -> tuple[bool, bool]:
    """-> (rewrite, ascii). One pass over the bytes.

    DuckDB's CSV reader with a one-column schema, quote/escape off and
    ``new_line='\\n'`` gives back exactly the physical lines (LF, CRLF and a
    lone CR all end a line [1]; empty lines come back as NULL [2]; one BOM at
    the start of the file is removed). It cannot be used as is when the file
    has invalid UTF-8 (it raises), contains the delimiter byte, or starts with
    two BOMs (only one may be removed [3]).
    """
    ascii_only = True
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    with open(path, "rb") as fh:
        first = True
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            if first:
                first = False
                if chunk.startswith(_BOM_BYTES * 2):
                    return True, False
            if _DELIM.encode() in chunk:
                return True, False
            if ascii_only and chunk.isascii():
                continue
            ascii_only = False
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return True, False
        if not ascii_only:
            try:
                decoder.decode(b"", True)
            except UnicodeDecodeError:
                return True, False
    return False, ascii_only


_NEWLINE = re.compile("[\r\n]")


def _rewrite_lines(path: str, out_path: str) -> None:
    """Physical lines -> one RFC 4180 quoted field per line, in Python.

    Invalid UTF-8 becomes U+FFFD [4]; LF, CRLF, lone CR end a line [1]; one
    leading BOM per line is removed [3]; empty lines are dropped [2].
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def emit(parts: Iterable[str], out) -> None:
        for p in parts:
            if p.startswith(_BOM):
                p = p[1:]
            if p:
                out.write('"' + p.replace('"', '""') + '"\n')

    with open(path, "rb") as fh, open(out_path, "w", encoding="utf-8", newline="") as out:
        carry = ""
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            parts = _NEWLINE.split(carry + decoder.decode(chunk))
            carry = parts.pop()
            emit(parts, out)
        emit(_NEWLINE.split(carry + decoder.decode(b"", True)), out)


def _lines_sql(path: str, tmpdir: str, name: str, force_rewrite: bool = False,
               max_line: int = _MAX_LINE) -> tuple[str, bool]:
    """-> (a SELECT giving column ``line``: every non-empty line, BOM removed; file is ASCII)."""
    rewrite, ascii_only = (True, False) if force_rewrite else _needs_rewrite(path)
    common = (f"columns={{'line': 'VARCHAR'}}, header=false, auto_detect=false, "
              f"new_line='\\n', comment='', skip=0, max_line_size={max_line}")
    if rewrite:
        clean = os.path.join(tmpdir, f"{name}.lines.csv")
        _rewrite_lines(path, clean)
        return (f"SELECT line FROM read_csv({_sql_str(clean)}, {common}, delim=',', "
                f"quote='\"', escape='\"', strict_mode=true)"), False
    src = (f"read_csv({_sql_str(path)}, {common}, delim={_sql_str(_DELIM)}, quote='', escape='', "
           f"strict_mode=false)")
    if ascii_only:
        return f"SELECT line FROM {src} WHERE line IS NOT NULL AND line <> ''", True
    # [3] a BOM at the start of any line (the file's first one is gone already)
    return (f"SELECT line FROM (SELECT CASE WHEN starts_with(line, chr(65279)) THEN substr(line, 2) "
            f"ELSE line END AS line FROM {src}) WHERE line IS NOT NULL AND line <> ''"), False


# --------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------

def _default_memory_limit() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "4GB"
    return f"{max(1, int(total * 0.6) // (1 << 20))}MB"


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _connect(threads: int | None, memory_limit: str | None, tmpdir: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:", config={
        "threads": threads or _default_threads(),
        "memory_limit": memory_limit or _default_memory_limit(),
        "preserve_insertion_order": False,
        "temp_directory": os.path.join(tmpdir, "spill"),
    })
    con.execute("SET TimeZone = 'UTC'")    # only for TIMESTAMPTZ output; all maths is explicit
    return con



def _subscribers(con, lines_sql: str, batch_date: dt.date, keep_records: bool = False,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
    """-> temp table ``ref_sub_groups(reason, sub_id, activation_date, n)``.

    Rejected rows are grouped by reason only; valid rows by ``sub_id`` with
    the earliest date [17]. Empty store: every valid ``sub_id`` is inserted.
    """
    kept = "CASE WHEN reason IS NOT NULL THEN rec END AS rec," if keep_records else ""
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE ref_sub_groups AS
WITH r AS (SELECT {record_sql(max_line_bytes)} AS rec FROM ({lines_sql})),
p AS (
    SELECT rec, rec[1] AS sub_id,
        -- exact format and ranges by RE2, then the calendar (Feb 30, Feb 29) by the cast
        CASE WHEN regexp_full_match(rec[2], '{DATE_RE}') THEN TRY_CAST(rec[2] AS DATE) END AS act
    FROM r
),
c AS (
    SELECT
        CASE WHEN rec IS NULL OR len(rec) <> 2 THEN 'malformed_row'
             WHEN NOT regexp_full_match(sub_id, '{SUB_ID_RE}') THEN 'invalid_sub_id'
             WHEN act IS NULL OR act > DATE '{batch_date.isoformat()}' THEN 'invalid_activation_date'
        END AS reason,
        sub_id, act, rec
    FROM p
)
SELECT reason, CASE WHEN reason IS NULL THEN sub_id END AS sub_id,
       {kept}
       min(CASE WHEN reason IS NULL THEN act END) AS activation_date, count(*) AS n
FROM c GROUP BY ALL""")
    con.execute("""
CREATE OR REPLACE TEMP TABLE ref_subs AS
SELECT sub_id, activation_date,
       sub_id || '_' || lpad(CAST(year(activation_date) AS VARCHAR), 4, '0')
              || lpad(CAST(month(activation_date) AS VARCHAR), 2, '0')
              || lpad(CAST(day(activation_date) AS VARCHAR), 2, '0') AS row_key
FROM ref_sub_groups WHERE reason IS NULL""")


def _transactions(con, lines_sql: str, allowed: Sequence[str], keep_records: bool = False,
                  max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
    """-> temp table ``ref_tx_groups(reason, micros, sub_id, amount, channel, ascii, n)``.

    Rules 1-5 in order; rejected rows are grouped by reason only, the others
    by their normalised key [16]. A non-ASCII channel is left for Python
    (reason NULL, ``ascii`` false, ``channel`` as trimmed); see _finish.
    """
    allowed_sql = ", ".join(_sql_str(c) for c in allowed)
    # equal work: a rejected row's record, and the record a group of valid rows keeps
    kept = ("\n    CASE WHEN reason IS NOT NULL THEN rec END AS rec,"
            "\n    min(CASE WHEN reason IS NULL THEN rec END) AS kept_rec,") if keep_records else ""
    not_allowed = f"channel NOT IN ({allowed_sql})" if allowed else "true"
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE ref_tx_groups AS
WITH r AS (SELECT {record_sql(max_line_bytes)} AS rec FROM ({lines_sql})),
f AS (SELECT rec, rec[1] AS ts_s, rec[2] AS sub_id, rec[3] AS amt_s, rec[4] AS ch FROM r),
z AS (
    SELECT *,
        regexp_full_match(ts_s, '{TS_RE}') AS ts_fmt,
        -- length of the zone suffix: 'Z', '+HH:MM' / '-HH:MM', or none
        CASE WHEN ends_with(ts_s, 'Z') THEN 1 WHEN substr(ts_s, -6, 1) IN ('+', '-') THEN 6 ELSE 0 END AS zlen
    FROM f
),
w AS (
    SELECT rec, sub_id,
        -- [9] local date-time (its calendar checked by the cast) minus the zone offset
        CASE WHEN ts_fmt THEN
            epoch_us(TRY_CAST(substr(ts_s, 1, length(ts_s) - zlen) AS TIMESTAMP))
            - CASE WHEN zlen = 6 THEN
                  (CASE WHEN substr(ts_s, -6, 1) = '-' THEN -1 ELSE 1 END)
                  * (CAST(substr(ts_s, -5, 2) AS BIGINT) * 60 + CAST(substr(ts_s, -2, 2) AS BIGINT)) * 60000000
              ELSE 0 END
        END AS micros,
        -- [10] by decimal value
        CASE WHEN regexp_full_match(amt_s, '{AMOUNT_RE}') THEN CAST(amt_s AS DECIMAL(18, 4)) END AS amount,
        strlen(ch) = length(ch) AS ascii,
        -- [11] DuckDB's upper is exact for ASCII only
        CASE WHEN strlen(ch) = length(ch) THEN upper(ch) ELSE ch END AS channel
    FROM z
),
c AS (
    SELECT
        CASE WHEN rec IS NULL OR len(rec) <> 4 THEN 'malformed_row'
             WHEN micros IS NULL THEN 'invalid_timestamp'
             WHEN NOT regexp_full_match(sub_id, '{SUB_ID_RE}') THEN 'invalid_sub_id'
             WHEN amount IS NULL OR amount <= 0 THEN 'invalid_amount'
             WHEN ascii AND {not_allowed} THEN 'invalid_channel'
        END AS reason,
        micros, sub_id, amount, channel, ascii, rec
    FROM w
)
SELECT reason,{kept}
    CASE WHEN reason IS NULL THEN micros END AS micros,
    CASE WHEN reason IS NULL THEN sub_id END AS sub_id,
    CASE WHEN reason IS NULL THEN amount END AS amount,
    CASE WHEN reason IS NULL THEN channel END AS channel,
    CASE WHEN reason IS NULL THEN ascii END AS ascii,
    count(*) AS n
FROM c GROUP BY ALL""")


def _non_ascii_channels(con, allowed: Sequence[str], keep_records: bool = False) -> tuple[str, int]:
    """-> (SQL of the valid candidates ``micros, sub_id, amount, channel, n``, invalid_channel count).

    The distinct non-ASCII channel values (rare) are upper-cased by Python,
    i.e. full Unicode case mapping like Java's and Python's ``upper``
    (``ß`` -> ``SS``, ``ſ`` -> ``S``), not DuckDB's simple mapping.
    """
    rec, rec_agg = (", kept_rec", ", min(kept_rec) AS kept_rec") if keep_records else ("", "")
    ascii_sql = f"SELECT micros, sub_id, amount, channel, n{rec} FROM ref_tx_groups WHERE reason IS NULL AND ascii"
    others = con.execute("SELECT channel, sum(n) FROM ref_tx_groups WHERE reason IS NULL AND NOT ascii "
                         "GROUP BY channel").fetchall()
    if not others:
        return ascii_sql, 0
    allowed_set = set(allowed)
    mapping = [(v, v.upper()) for v, _ in others if v.upper() in allowed_set]
    invalid = sum(int(k) for v, k in others if v.upper() not in allowed_set)
    if not mapping:
        return ascii_sql, invalid
    cases = " ".join(f"WHEN {_sql_str(v)} THEN {_sql_str(u)}" for v, u in mapping)
    # mapped values may now equal other rows' keys: group again
    return f"""SELECT micros, sub_id, amount, channel, sum(n) AS n{rec_agg} FROM (
    SELECT micros, sub_id, amount, CASE WHEN ascii THEN channel ELSE CASE channel {cases} END END AS channel, n{rec}
    FROM ref_tx_groups WHERE reason IS NULL
) WHERE channel IS NOT NULL GROUP BY micros, sub_id, amount, channel""", invalid


def _finish(con, allowed: Sequence[str], cutoff_micros: int, output_dir, ascii_file: bool,
            keep_records: bool = False) -> dict:
    sub_rows = con.execute("SELECT reason, count(*), sum(n) FROM ref_sub_groups GROUP BY reason").fetchall()
    sub_reasons = {r: int(k) for r, _, k in sub_rows if r is not None}
    sub_valid = [(int(g), int(k)) for r, g, k in sub_rows if r is None]
    sub_unique, sub_valid_rows = sub_valid[0] if sub_valid else (0, 0)

    tx_rows = con.execute("SELECT reason, sum(n) FROM ref_tx_groups GROUP BY reason").fetchall()
    tx_reasons = {r: int(k) for r, k in tx_rows if r is not None}
    tx_input = sum(int(k) for _, k in tx_rows)
    # equal work: the record a group keeps travels with it (pending rows, late rejects)
    rec = ", kept_rec" if keep_records else ""
    if ascii_file:   # no non-ASCII channel can exist
        valid_sql = f"SELECT micros, sub_id, amount, channel, n{rec} FROM ref_tx_groups WHERE reason IS NULL"
    else:
        valid_sql, invalid = _non_ascii_channels(con, allowed, keep_records)
        tx_reasons["invalid_channel"] = tx_reasons.get("invalid_channel", 0) + invalid

    # Match with the store (= this batch's subscribers): unmatched -> expired
    # (strictly before the cutoff) or pending [14]; matched with an earlier UTC
    # calendar date than the activation -> before_activation [15]; else published.
    kept = " g.kept_rec," if keep_records else ""
    fate_sql = f"""
SELECT g.micros, g.sub_id, g.amount, g.channel, g.n, s.activation_date, s.row_key,{kept}
    CASE WHEN s.sub_id IS NULL THEN
             CASE WHEN g.micros < {cutoff_micros} THEN 'unmatched_expired' ELSE 'pending' END
         WHEN CAST(make_timestamp(g.micros) AS DATE) < s.activation_date THEN 'before_activation'
         ELSE 'published' END AS fate
FROM ({valid_sql}) g LEFT JOIN ref_subs s ON g.sub_id = s.sub_id"""
    if output_dir is not None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE ref_fate AS {fate_sql}")
        fate_sql = "SELECT * FROM ref_fate"
    fates = {f: (int(k), int(d)) for f, k, d in con.execute(
        f"SELECT fate, count(*), sum(n - 1) FROM ({fate_sql}) GROUP BY fate").fetchall()}
    for f in ("before_activation", "unmatched_expired"):
        tx_reasons[f] = fates.get(f, (0, 0))[0]

    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        target = os.path.join(os.fspath(output_dir), "published.parquet")
        con.execute(f"""
COPY (
    SELECT CAST(make_timestamp(micros) AS TIMESTAMPTZ) AS "timestamp", row_key AS sub_row_key, sub_id,
           CAST(amount AS DECIMAL(18, 4)) AS amount, channel, activation_date
    FROM ref_fate WHERE fate = 'published'
) TO {_sql_str(target)} (FORMAT parquet)""")

    return {
        "subscribers_input": sum(int(k) for _, _, k in sub_rows),
        "subscribers_rejected": {r: sub_reasons.get(r, 0) for r in SUBSCRIBER_REASONS},
        "subscribers_duplicate": sub_valid_rows - sub_unique,
        "subscribers_inserted": sub_unique,
        "subscribers_updated": 0,
        "subscribers_unchanged": 0,
        "transactions_input": tx_input,
        "pending_in": 0,
        "transactions_rejected": {r: tx_reasons.get(r, 0) for r in TRANSACTION_REASONS},
        "transactions_duplicate": sum(d for _, d in fates.values()),
        "pending_resolved": 0,
        "published": fates.get("published", (0, 0))[0],
        "pending_out": fates.get("pending", (0, 0))[0],
    }


def _write_rejects(con, output_dir) -> None:
    """Equal work: every rejected row (each counted row once) to rejects.parquet."""
    target = os.path.join(os.fspath(output_dir), "rejects.parquet")
    con.execute(f"""
COPY (
    SELECT 'subscribers' AS source, reason, rec AS record FROM ref_sub_groups, range(n)
    WHERE reason IS NOT NULL
    UNION ALL
    SELECT 'transactions', reason, rec FROM ref_tx_groups, range(n) WHERE reason IS NOT NULL
    UNION ALL
    SELECT 'transactions', fate, kept_rec FROM ref_fate WHERE fate IN ('before_activation', 'unmatched_expired')
) TO {_sql_str(target)} (FORMAT parquet)""")


def _load_store(con, store_dsn: str, tmpdir: str) -> None:
    """Equal work: the batch's subscribers and pending rows into PostgreSQL by COPY."""
    import psycopg

    subs_csv, pend_csv = os.path.join(tmpdir, "subs.csv"), os.path.join(tmpdir, "pending.csv")
    con.execute(f"COPY (SELECT sub_id, activation_date, row_key FROM ref_subs) TO {_sql_str(subs_csv)} "
                "(FORMAT csv, HEADER false)")
    con.execute(f"""COPY (SELECT strftime(make_timestamp(micros), '%Y-%m-%d %H:%M:%S.%f') || '+00', sub_id,
        CAST(amount AS VARCHAR), channel, to_json(kept_rec) FROM ref_fate WHERE fate = 'pending')
        TO {_sql_str(pend_csv)} (FORMAT csv, HEADER false)""")
    with psycopg.connect(store_dsn) as pg:
        pg.execute("DROP TABLE IF EXISTS duck_subscribers, duck_pending")
        pg.execute("CREATE TABLE duck_subscribers (sub_id text PRIMARY KEY, activation_date date NOT NULL, "
                   "row_key text NOT NULL)")
        pg.execute("CREATE TABLE duck_pending (pending_id bigserial PRIMARY KEY, ts timestamptz NOT NULL, "
                   "sub_id text NOT NULL, amount numeric(18,4) NOT NULL, channel text NOT NULL, record text)")
        for table, cols, path in (("duck_subscribers", "sub_id, activation_date, row_key", subs_csv),
                                  ("duck_pending", "ts, sub_id, amount, channel, record", pend_csv)):
            with pg.cursor().copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as cp, \
                    open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    cp.write(block)


def _normalise_channels(allowed_channels: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(allowed_channels, str):
        allowed_channels = allowed_channels.split(",")
    out: list[str] = []
    for c in allowed_channels:
        c = c.strip(" \t\r\n\f\v").upper()
        if c and c not in out:
            out.append(c)
    return tuple(out)


def check_conservation(m: dict) -> None:
    """Raise ValueError when the metrics break one of the contract's two laws."""
    errors = conservation_errors(m)
    if errors:
        raise ValueError("conservation broken: " + "; ".join(errors))


def run_reference(
    landing_dir: str | os.PathLike,
    batch_id: str,
    allowed_channels: str | Iterable[str] = DEFAULT_CHANNELS,
    pending_ttl_days: int = 7,
    output_dir: str | os.PathLike | None = None,
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    timings: dict | None = None,
    store_dsn: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> dict:
    """Process one batch against an empty store and an empty pending table.

    Returns the metrics: keys ``METRIC_KEYS`` in that order, the reject dicts
    with every reason of the contract (zeros included). With ``output_dir``
    the published rows are written to ``<output_dir>/published.parquet``.
    ``timings``, when a dict, receives the seconds spent per step.
    ``store_dsn`` (with ``output_dir``) makes it do the job's whole work, for
    a fair benchmark: it also writes the rejects to
    ``<output_dir>/rejects.parquet`` and COPYs the subscribers and the
    pending rows into PostgreSQL (tables ``duck_subscribers`` and
    ``duck_pending``, made anew). Its records are the parsed fields (the
    job keeps the raw ones): the benchmark compares counts, not records.
    Raises ValueError for a bad batch_id / ttl, FileNotFoundError (naming
    the path) for a missing input file.
    """
    batch_date = _batch_date(batch_id)
    if isinstance(pending_ttl_days, bool) or not isinstance(pending_ttl_days, int) or pending_ttl_days < 0:
        raise ValueError(f"pending_ttl_days must be an int >= 0, got {pending_ttl_days!r}")
    allowed = _normalise_channels(allowed_channels)
    batch_dir = os.path.join(os.fspath(landing_dir), batch_id)
    paths = {n: os.path.join(batch_dir, f"{n}.csv") for n in ("subscribers", "transactions")}
    for p in paths.values():
        if not os.path.isfile(p):
            raise FileNotFoundError(f"input file missing: {p}")
    # [14] expired = strictly earlier than batch date 00:00 UTC - ttl days
    cutoff = batch_date - dt.timedelta(days=pending_ttl_days)
    cutoff_micros = (cutoff - dt.date(1970, 1, 1)).days * MICROS_PER_DAY
    clock = timings if timings is not None else {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        clock[name] = round(now - t0, 3)
        t0 = now

    keep = store_dsn is not None
    if keep and output_dir is None:
        raise ValueError("store_dsn needs output_dir (the equal-work run writes the Parquet outputs)")
    with tempfile.TemporaryDirectory(prefix="duckdb_ref_") as tmpdir:
        con = _connect(threads, memory_limit, tmpdir)
        try:
            sub_lines, _ = _lines_sql(paths["subscribers"], tmpdir, "subscribers")
            tx_lines, tx_ascii = _lines_sql(paths["transactions"], tmpdir, "transactions")
            lap("prescan")
            # DuckDB's reader may still refuse a file (a line over 2 MiB, a UTF-8
            # sequence Python accepted): rewrite it and retry with a large line limit.
            try:
                _subscribers(con, sub_lines, batch_date, keep, max_line_bytes)
            except duckdb.InvalidInputException:
                _subscribers(con, _lines_sql(paths["subscribers"], tmpdir, "subscribers", True,
                                             _MAX_LINE_RETRY)[0], batch_date, keep, max_line_bytes)
            lap("subscribers")
            try:
                _transactions(con, tx_lines, allowed, keep, max_line_bytes)
            except duckdb.InvalidInputException:
                tx_ascii = False
                _transactions(con, _lines_sql(paths["transactions"], tmpdir, "transactions", True,
                                              _MAX_LINE_RETRY)[0], allowed, keep, max_line_bytes)
            lap("transactions")
            metrics = _finish(con, allowed, cutoff_micros, output_dir, tx_ascii, keep)
            lap("match_and_count")
            if keep:
                _write_rejects(con, output_dir)
                lap("rejects_write")
                _load_store(con, store_dsn, tmpdir)
                lap("store_load")
        finally:
            con.close()
    check_conservation(metrics)
    return metrics


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="duckdb_reference",
        description="DuckDB reference of the data contract for one batch against an empty subscriber "
                    "store and pending table. Prints the metrics as JSON on stdout.")
    ap.add_argument("landing_dir", help="landing root; reads LANDING_DIR/BATCH_ID/{subscribers,transactions}.csv")
    ap.add_argument("batch_id", help="YYYY-MM-DD_a or YYYY-MM-DD_b")
    ap.add_argument("--channels", default=",".join(DEFAULT_CHANNELS),
                    help="allowed channels, comma separated (default %(default)s)")
    ap.add_argument("--pending-ttl-days", type=int, default=7, help="default %(default)s")
    ap.add_argument("--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES,
                    help="a longer line is a malformed_row (default %(default)s)")
    ap.add_argument("--output", metavar="DIR", help="write the published rows to DIR/published.parquet")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: the CPUs this process may use)")
    ap.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. 4GB (default: 60%% of RAM)")
    ap.add_argument("--timings", action="store_true", help="print seconds per step as JSON on stderr")
    ap.add_argument("--store-dsn", help="equal work (needs --output): also write rejects.parquet and COPY the "
                                        "subscribers and pending rows into this PostgreSQL (libpq DSN; the "
                                        "password from PGPASSWORD)")
    args = ap.parse_args(argv)
    timings: dict = {}
    start = time.perf_counter()
    try:
        metrics = run_reference(args.landing_dir, args.batch_id, args.channels, args.pending_ttl_days,
                                args.output, threads=args.threads, memory_limit=args.memory_limit,
                                timings=timings, store_dsn=args.store_dsn, max_line_bytes=args.max_line_bytes)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.timings:
        timings["total"] = round(time.perf_counter() - start, 3)
        print(json.dumps(timings), file=sys.stderr)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
