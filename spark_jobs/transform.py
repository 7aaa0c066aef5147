"""Pure DataFrame transformations of the data contract.

Every function here takes DataFrames (and plain values) and returns
DataFrames: no I/O, no session globals, so a test can feed a few rows.
The rules are ``DATA_CONTRACT.md``; where it is silent,
``docs/data-contract-notes.md`` says what we chose.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

SUB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
DATE_PATTERN = r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$"
# Groups: 1 y, 2 mo, 3 d, 4 h, 5 mi, 6 s, 7 fraction, 8 zone
TIMESTAMP_PATTERN = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])"
    r"(?:\.([0-9]{1,6}))?(Z|[+-](?:(?:0[0-9]|1[0-7]):[0-5][0-9]|18:00))?$"
)
AMOUNT_PATTERN = r"^[0-9]{1,14}(\.[0-9]{1,4})?$"
# ASCII white space (docs/data-contract-notes.md #7)
_WS = r"[ \t\n\r\f\x0B]"
AMOUNT_TYPE = T.DecimalType(18, 4)
MICROS_PER_DAY = 86_400_000_000

RECORD_TYPE = T.ArrayType(T.StringType())
REJECT_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("record", RECORD_TYPE, False),
    ]
)
PUBLISHED_COLUMNS = ["timestamp", "sub_row_key", "sub_id", "amount", "channel", "activation_date"]


@dataclass(frozen=True)
class BatchRules:
    """The per-run settings the rules depend on."""

    batch_date: dt.date
    allowed_channels: tuple[str, ...] = ("SMS", "USSD", "APP", "WEB")
    pending_ttl_days: int = 7

    @property
    def expiry_cutoff_micros(self) -> int:
        """UTC micros before which an unmatched transaction is expired."""
        cutoff = self.batch_date - dt.timedelta(days=self.pending_ttl_days)
        return (cutoff - dt.date(1970, 1, 1)).days * MICROS_PER_DAY


# --------------------------------------------------------------------------
# Lines -> fields
# --------------------------------------------------------------------------

def _quoted_line_parser():
    """A UDF for RFC 4180 lines, like Python's csv with strict=True.

    Built in a closure so it is shipped to the Python workers by value: they
    need not be able to import this package (spark-submit of a bare file).
    """
    def parse(line):
        import csv
        import sys

        csv.field_size_limit(sys.maxsize)  # a field is as long as its line: no 128 KiB cap
        try:
            rows = list(csv.reader([line], strict=True))
        except csv.Error:
            return (None, False)
        if len(rows) != 1:
            return (None, False)
        return (rows[0], True)

    return F.udf(parse, T.StructType([T.StructField("fields", RECORD_TYPE),
                                      T.StructField("ok", T.BooleanType())]))


def parse_lines(lines: DataFrame) -> DataFrame:
    """Text lines (column ``value``) -> ``record`` (fields, untrimmed) and ``parsed``.

    Empty lines are dropped here (they are not rows). A leading U+FEFF is
    removed. Lines without a quote are split on commas in the JVM; the rare
    lines with quotes go through Python's csv module. An unparseable line
    keeps the whole line as its single-element record and ``parsed`` false.
    """
    line = F.regexp_replace(F.col("value"), "^\uFEFF", "").alias("line")
    rows = lines.select(line).where(F.length("line") > 0)
    has_quote = F.col("line").contains('"')
    plain = rows.where(~has_quote).select(
        F.split(F.col("line"), ",", -1).alias("record"), F.lit(True).alias("parsed")
    )
    quoted = (
        rows.where(has_quote)
        .select("line", _quoted_line_parser()(F.col("line")).alias("p"))
        .select(
            F.when(F.col("p.ok"), F.col("p.fields")).otherwise(F.array(F.col("line"))).alias("record"),
            F.col("p.ok").alias("parsed"),
        )
    )
    return plain.unionByName(quoted)


def trim_ws(c: Column) -> Column:
    """Remove surrounding ASCII white space."""
    return F.regexp_replace(c, f"^{_WS}+|{_WS}+$", "")


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------

def _valid_ymd(y: Column, m: Column, d: Column) -> Column:
    """True for a real proleptic Gregorian date with year 0001..9999.

    Checked without make_date's error or null behaviour, so it holds with
    ANSI mode on or off.
    """
    month_ok = (m >= 1) & (m <= 12)
    year_ok = (y >= 1) & (y <= 9999)
    first = F.make_date(F.when(year_ok, y).otherwise(F.lit(2000)),
                        F.when(month_ok, m).otherwise(F.lit(1)), F.lit(1))
    days_in_month = F.dayofmonth(F.last_day(first))
    return F.coalesce(year_ok & month_ok & (d >= 1) & (d <= days_in_month), F.lit(False))


def _safe_make_date(ok: Column, y: Column, m: Column, d: Column) -> Column:
    """make_date that never sees invalid parts (it raises on them in ANSI mode)."""
    return F.make_date(F.when(ok, y).otherwise(1970), F.when(ok, m).otherwise(1), F.when(ok, d).otherwise(1))


def parse_date(s: Column) -> Column:
    """``YYYY-MM-DD`` string -> date, null when not a real date."""
    y = F.regexp_extract(s, DATE_PATTERN, 1).try_cast("int")
    m = F.regexp_extract(s, DATE_PATTERN, 2).try_cast("int")
    d = F.regexp_extract(s, DATE_PATTERN, 3).try_cast("int")
    ok = s.rlike(DATE_PATTERN) & _valid_ymd(y, m, d)
    return F.when(ok, _safe_make_date(ok, y, m, d))


def parse_timestamp(s: Column) -> Column:
    """Contract timestamp string -> UTC timestamp, null when invalid.

    Computed from epoch microseconds so the session time zone plays no part.
    """
    def g(i: int) -> Column:
        return F.regexp_extract(s, TIMESTAMP_PATTERN, i)

    y, mo, d = g(1).try_cast("int"), g(2).try_cast("int"), g(3).try_cast("int")
    h, mi, sec = g(4).try_cast("long"), g(5).try_cast("long"), g(6).try_cast("long")
    frac = F.when(g(7) == "", F.lit(0)).otherwise(F.rpad(g(7), 6, "0").try_cast("long"))
    zone = g(8)
    offset_minutes = (
        F.when((zone == "") | (zone == "Z"), F.lit(0))
        .otherwise(
            (F.substring(zone, 2, 2).try_cast("long") * 60 + F.substring(zone, 5, 2).try_cast("long"))
            * F.when(F.substring(zone, 1, 1) == "-", F.lit(-1)).otherwise(F.lit(1))
        )
    )
    ok = s.rlike(TIMESTAMP_PATTERN) & _valid_ymd(y, mo, d)
    day = F.unix_date(_safe_make_date(ok, y, mo, d)).cast("long")
    micros = (
        day * MICROS_PER_DAY
        + ((h * 60 + mi - offset_minutes) * 60 + sec) * 1_000_000
        + frac
    )
    return F.when(ok, F.timestamp_micros(micros))


def utc_date(ts: Column) -> Column:
    """UTC calendar date of a timestamp, independent of the session zone."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / F.lit(MICROS_PER_DAY)).try_cast("int"))


def parse_amount(s: Column) -> Column:
    """Amount string -> decimal(18,4); null when the contract rejects it."""
    value = F.when(s.rlike(AMOUNT_PATTERN), s.try_cast(AMOUNT_TYPE))
    return F.when(value > 0, value)


def _field(i: int) -> Column:
    return trim_ws(F.get(F.col("record"), i))


# --------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------

def validate_subscribers(records: DataFrame, rules: BatchRules) -> DataFrame:
    """-> ``record, reason, sub_id, activation_date`` (reason null when valid)."""
    sub_id = _field(0)
    date_s = _field(1)
    activation = parse_date(date_s)
    reason = (
        F.when(~F.col("parsed") | (F.size("record") != 2), "malformed_row")
        .when(~F.coalesce(sub_id.rlike(SUB_ID_PATTERN), F.lit(False)), "invalid_sub_id")
        .when(
            activation.isNull() | (activation > F.lit(rules.batch_date)),
            "invalid_activation_date",
        )
    )
    return records.select(
        "record",
        reason.alias("reason"),
        sub_id.alias("sub_id"),
        activation.alias("activation_date"),
    )


def collapse_subscribers(valid: DataFrame) -> DataFrame:
    """Valid rows -> one row per ``sub_id`` with the earliest date, and ``rows``."""
    return valid.groupBy("sub_id").agg(
        F.min("activation_date").alias("activation_date"), F.count(F.lit(1)).alias("rows")
    )


def plan_subscriber_merge(incoming: DataFrame, store: DataFrame) -> DataFrame:
    """First activation wins: ``sub_id, activation_date, old_activation_date, action``.

    ``action`` is ``inserted`` (new sub_id), ``updated`` (earlier date than
    the store) or ``unchanged``.
    """
    old = store.select("sub_id", F.col("activation_date").alias("old_activation_date"))
    joined = incoming.join(old, "sub_id", "left")
    action = (
        F.when(F.col("old_activation_date").isNull(), "inserted")
        .when(F.col("activation_date") < F.col("old_activation_date"), "updated")
        .otherwise("unchanged")
    )
    return joined.withColumn("action", action)


def subscribers_after_merge(incoming: DataFrame, store: DataFrame) -> DataFrame:
    """The store as it is after the merge: ``sub_id, activation_date``."""
    new = incoming.select("sub_id", F.col("activation_date").alias("new_date"))
    old = store.select("sub_id", F.col("activation_date").alias("old_date"))
    return new.join(old, "sub_id", "full_outer").select(
        "sub_id", F.least("new_date", "old_date").alias("activation_date")
    )


def row_key(sub_id: Column, activation_date: Column) -> Column:
    """``<sub_id>_<yyyyMMdd>``."""
    return F.concat(sub_id, F.lit("_"), F.date_format(activation_date, "yyyyMMdd"))


# --------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------

def validate_transactions(records: DataFrame, rules: BatchRules) -> DataFrame:
    """-> ``record, reason, timestamp, sub_id, amount, channel`` (reason null when valid)."""
    ts = parse_timestamp(_field(0))
    sub_id = _field(1)
    amount = parse_amount(_field(2))
    channel = F.upper(_field(3))
    allowed = [c.upper() for c in rules.allowed_channels]
    reason = (
        F.when(~F.col("parsed") | (F.size("record") != 4), "malformed_row")
        .when(ts.isNull(), "invalid_timestamp")
        .when(~F.coalesce(sub_id.rlike(SUB_ID_PATTERN), F.lit(False)), "invalid_sub_id")
        .when(amount.isNull(), "invalid_amount")
        .when(~F.coalesce(channel.isin(allowed), F.lit(False)), "invalid_channel")
    )
    return records.select(
        "record",
        reason.alias("reason"),
        ts.alias("timestamp"),
        sub_id.alias("sub_id"),
        amount.alias("amount"),
        channel.alias("channel"),
    )


TX_KEY = ["timestamp", "sub_id", "amount", "channel"]


def collapse_transactions(new_valid: DataFrame, pending: DataFrame) -> DataFrame:
    """Exact duplicates (after normalisation) collapse to one candidate.

    ``new_valid``: ``timestamp, sub_id, amount, channel, record``.
    ``pending``: the same plus ``pending_id``.
    Returns one row per key: the key, ``origin`` (``pending`` wins over
    ``new``), ``pending_id``, ``record``, ``duplicates`` (extra rows) and
    ``dropped_pending_ids`` (pending rows that were themselves duplicates;
    only possible if the table was edited by hand, but never lost silently).
    """
    new = new_valid.select(*TX_KEY, "record").withColumns(
        {"priority": F.lit(1), "pending_id": F.lit(None).try_cast("long")}
    )
    old = pending.select(*TX_KEY, "record", "pending_id").withColumn("priority", F.lit(0))
    both = new.unionByName(old)
    keep = F.min(F.struct("priority", "pending_id", "record")).alias("keep")
    grouped = both.groupBy(*TX_KEY).agg(
        keep,
        F.count(F.lit(1)).alias("n"),
        F.collect_list("pending_id").alias("pending_ids"),
    )
    return grouped.select(
        *TX_KEY,
        F.when(F.col("keep.priority") == 0, "pending").otherwise("new").alias("origin"),
        F.col("keep.pending_id").alias("pending_id"),
        F.col("keep.record").alias("record"),
        (F.col("n") - 1).alias("duplicates"),
        F.array_remove(F.col("pending_ids"), F.coalesce(F.col("keep.pending_id"), F.lit(-1)))
        .alias("dropped_pending_ids"),
    )


def classify_transactions(candidates: DataFrame, subscribers: DataFrame, rules: BatchRules) -> DataFrame:
    """Match candidates with the merged store and decide each one's fate.

    Adds ``activation_date`` (null when unmatched), ``status`` (``published``,
    ``pending`` or ``rejected``) and ``reason`` (for rejected rows).
    """
    subs = subscribers.select("sub_id", "activation_date")
    joined = candidates.join(subs, "sub_id", "left")
    matched = F.col("activation_date").isNotNull()
    expired = F.unix_micros("timestamp") < F.lit(rules.expiry_cutoff_micros)
    reason = (
        F.when(~matched & expired, "unmatched_expired")
        .when(matched & (utc_date(F.col("timestamp")) < F.col("activation_date")), "before_activation")
    )
    status = (
        F.when(reason.isNotNull(), "rejected")
        .when(~matched, "pending")
        .otherwise("published")
    )
    return joined.withColumns({"reason": reason, "status": status})


def published_rows(classified: DataFrame) -> DataFrame:
    """The published dataset, in the contract's column order and types."""
    return classified.where(F.col("status") == "published").select(
        F.col("timestamp"),
        row_key(F.col("sub_id"), F.col("activation_date")).alias("sub_row_key"),
        F.col("sub_id"),
        F.col("amount").cast(AMOUNT_TYPE).alias("amount"),
        F.col("channel"),
        F.col("activation_date"),
    )


def reject_rows(
    subscribers: DataFrame, transactions: DataFrame, classified: DataFrame
) -> DataFrame:
    """All rejects of the batch: ``source, reason, record``."""
    subs = subscribers.where(F.col("reason").isNotNull()).select(
        F.lit("subscribers").alias("source"), "reason", "record"
    )
    txs = transactions.where(F.col("reason").isNotNull()).select(
        F.lit("transactions").alias("source"), "reason", "record"
    )
    later = classified.where(F.col("status") == "rejected").select(
        F.when(F.col("origin") == "pending", "pending").otherwise("transactions").alias("source"),
        "reason",
        "record",
    )
    return subs.unionByName(txs).unionByName(later)
