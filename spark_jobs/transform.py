"""Pure DataFrame transformations of the data contract.

Every function here takes DataFrames (and plain values) and returns
DataFrames: no I/O, no session globals, so a test can feed a few rows.
The rules are ``docs/data-contract.md``; where it is silent,
``docs/data-contract-notes.md`` says what we chose.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from .contract import DEFAULT_MAX_LINE_BYTES

SUB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
DATE_PATTERN = r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$"
# Groups: 1 y, 2 mo, 3 d, 4 h, 5 mi, 6 s, 7 fraction, 8 zone
TIMESTAMP_PATTERN = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])"
    r"(?:\.([0-9]{1,6}))?(Z|[+-](?:(?:0[0-9]|1[0-7]):[0-5][0-9]|18:00))?$"
)
AMOUNT_PATTERN = r"^[0-9]{1,14}(\.[0-9]{1,4})?$"
# ASCII white space (docs/data-contract-notes.md #7)
_WS_CHARS = " \t\n\r\f\x0B"
AMOUNT_TYPE = T.DecimalType(18, 4)
# What the rejects keep of a line over max_line_bytes: its first characters,
# then a note of its size (docs/data-contract.md, "Rejects").
OVERSIZED_KEPT_CHARS = 1024
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
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    @property
    def expiry_cutoff_micros(self) -> int:
        """UTC micros before which an unmatched transaction is expired."""
        cutoff = self.batch_date - dt.timedelta(days=self.pending_ttl_days)
        return (cutoff - dt.date(1970, 1, 1)).days * MICROS_PER_DAY


# --------------------------------------------------------------------------
# Lines -> fields
# --------------------------------------------------------------------------

# RFC 4180 lines as Python's csv module reads them with strict=True (the
# contract's parser): a field is either quoted ("...", a quote inside doubled)
# or unquoted (it does not start with a quote; later quotes are literal). A
# quoted field must be followed by a comma or the end of the line, and must be
# closed. Possessive quantifiers keep Java's matcher iterative (no stack depth
# per field or per doubled quote) and are exact here: the grammar never needs
# to give back what a field matched.
_QUOTED = r'"[^"]*+(?:""[^"]*+)*+"'
_FIELD = rf'(?:{_QUOTED}|[^",][^,]*+|)'
CSV_LINE_PATTERN = rf"^{_FIELD}(?:,{_FIELD})*+$"
# One match per field of a valid line with a comma put in front of it.
_CSV_FIELD_PATTERN = rf',({_QUOTED}|[^,]*+)'


def _csv_fields(line: Column) -> Column:
    """The fields of a line that matched CSV_LINE_PATTERN, quotes removed."""
    raw = F.regexp_extract_all(F.concat(F.lit(","), line), F.lit(_CSV_FIELD_PATTERN), 1)
    return F.transform(raw, lambda x: F.when(
        x.startswith('"'), F.replace(F.substring(x, 2, F.length(x) - 2), F.lit('""'), F.lit('"'))).otherwise(x))


def text_rows(lines: DataFrame) -> DataFrame:
    """Text lines (column ``value``) -> the file's rows (column ``line``).

    Empty lines are dropped here (they are not rows). A leading U+FEFF is
    removed.
    """
    value = F.col("value")
    line = F.when(value.startswith("\uFEFF"), F.substring(value, 2, 1 << 30)).otherwise(value).alias("line")
    return lines.select(line).where(F.octet_length("line") > 0)


def oversized_record(line: Column) -> Column:
    """What the rejects keep of a line over the size bound: its first
    OVERSIZED_KEPT_CHARS characters, and a second element saying its size."""
    note = F.concat(F.lit("[truncated: the line has "), F.octet_length(line).cast("string"),
                    F.lit(f" bytes; its first {OVERSIZED_KEPT_CHARS} characters are kept]"))
    return F.array(F.substring(line, 1, OVERSIZED_KEPT_CHARS), note)


def parse_record(line: Column, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> tuple[Column, Column]:
    """``(record, parsed)`` of one line, computed in the JVM.

    A line over ``max_line_bytes`` (UTF-8 bytes; a constant-time check) is
    not parsed: ``parsed`` is false and its record is oversized_record's. A
    line without a quote is split on commas; a line with one is checked
    against CSV_LINE_PATTERN and its fields cut out. An unparseable line
    keeps the whole line as its single-element record and ``parsed`` false.
    """
    fits = F.octet_length(line) <= F.lit(max_line_bytes)
    has_quote = line.contains('"')
    parsed = fits & (~has_quote | line.rlike(CSV_LINE_PATTERN))
    record = (F.when(~fits, oversized_record(line)).when(~has_quote, F.split(line, ",", -1))
              .when(parsed, _csv_fields(line)).otherwise(F.array(line)))
    return record, parsed


def parse_lines(lines: DataFrame, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> DataFrame:
    """Text lines (column ``value``) -> ``record`` (fields, untrimmed) and ``parsed``.

    Rows as text_rows gives them, in one pass (see parse_record).
    """
    record, parsed = parse_record(F.col("line"), max_line_bytes)
    return text_rows(lines).select(record.alias("record"), parsed.alias("parsed"))


def trim_ws(c: Column) -> Column:
    """Remove surrounding ASCII white space (one pass, no regular expression)."""
    return F.btrim(c, F.lit(_WS_CHARS))


# --------------------------------------------------------------------------
# Values
#
# Each field is matched against its pattern once, and only a value that
# matched is converted: the patterns are anchored and bounded, so their cost is
# linear in the field, while a conversion of an unbounded value need not be
# (Java's decimal parsing is quadratic in the digits). The parts of a matched
# value sit at fixed positions, so they are cut out with substrings. The
# callers build columns in stages (trimmed field -> match -> value -> reason)
# because Catalyst does not share a subexpression between the branches of a
# CASE WHEN: written as one expression, each regex would run several times.
# --------------------------------------------------------------------------

def _int(s: str, matched: str, pos: int, length: int) -> Column:
    return F.when(F.col(matched), F.substring(F.col(s), pos, length).try_cast("int"))


def _valid_ymd(y: Column, m: Column, d: Column) -> Column:
    """True for a real proleptic Gregorian date with year 0001..9999 (integer arithmetic)."""
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    days_in_month = (F.when(m == 2, F.when(leap, 29).otherwise(28))
                     .when(m.isin(4, 6, 9, 11), 30).otherwise(31))
    return F.coalesce((y >= 1) & (y <= 9999) & (m >= 1) & (m <= 12) & (d >= 1) & (d <= days_in_month),
                      F.lit(False))


def _epoch_day(ok: str, y: str, m: str, d: str) -> Column:
    """Days since 1970-01-01 of valid parts (make_date raises on invalid ones in ANSI mode)."""
    return F.unix_date(F.make_date(F.when(F.col(ok), F.col(y)).otherwise(1970),
                                   F.when(F.col(ok), F.col(m)).otherwise(1),
                                   F.when(F.col(ok), F.col(d)).otherwise(1)))


def with_date(df: DataFrame, src: str, matched: str, out: str) -> DataFrame:
    """Adds ``out``: the date of ``src`` (a string that matched DATE_PATTERN when
    ``matched``), null when not a real date. Adds ``_d_*`` helper columns."""
    parts = df.select("*", _int(src, matched, 1, 4).alias("_d_y"), _int(src, matched, 6, 2).alias("_d_m"),
                      _int(src, matched, 9, 2).alias("_d_d"))
    checked = parts.select("*", (F.coalesce(F.col(matched), F.lit(False))
                                 & _valid_ymd(F.col("_d_y"), F.col("_d_m"), F.col("_d_d"))).alias("_d_ok"))
    return checked.select("*", F.when(F.col("_d_ok"), F.date_from_unix_date(
        _epoch_day("_d_ok", "_d_y", "_d_m", "_d_d"))).alias(out))


def with_timestamp(df: DataFrame, src: str, matched: str, out: str) -> DataFrame:
    """Adds ``out``: the UTC timestamp of ``src`` (a string that matched
    TIMESTAMP_PATTERN when ``matched``), null when not a real date.

    ``YYYY-MM-DD?HH:MM:SS`` fills positions 1-19; the rest is an optional
    ``.`` + 1-6 digits, then an optional ``Z`` or ``+HH:MM``/``-HH:MM``.
    Computed from epoch microseconds so the session time zone plays no part.
    Adds ``_t_*`` helper columns.
    """
    def part(pos: int, length: int) -> Column:
        return _int(src, matched, pos, length)

    parts = df.select(
        "*", part(1, 4).alias("_t_y"), part(6, 2).alias("_t_mo"), part(9, 2).alias("_t_d"),
        (part(12, 2) * 3600 + part(15, 2) * 60 + part(18, 2)).cast("long").alias("_t_secs"),
        F.when(F.col(matched), F.substring(F.col(src), 20, 64)).alias("_t_rest"))
    rest = F.col("_t_rest")
    offset_zone = (F.length(rest) >= 6) & F.substring(rest, -6, 1).isin("+", "-")
    zoned = parts.select(
        "*", (F.coalesce(F.col(matched), F.lit(False))
              & _valid_ymd(F.col("_t_y"), F.col("_t_mo"), F.col("_t_d"))).alias("_t_ok"),
        F.when(rest.endswith("Z"), 1).when(offset_zone, 6).otherwise(0).alias("_t_zone_len"))
    zone = F.substring(rest, -6, 6)
    frac_digits = F.when(rest.startswith("."), rest.substr(F.lit(2), F.length(rest) - 1 - F.col("_t_zone_len")))
    valued = zoned.select(
        "*", _epoch_day("_t_ok", "_t_y", "_t_mo", "_t_d").cast("long").alias("_t_day"),
        F.coalesce(F.rpad(frac_digits, 6, "0").try_cast("long"), F.lit(0)).alias("_t_frac"),
        F.when(F.col("_t_zone_len") == 6,
               (F.substring(zone, 2, 2).try_cast("long") * 60 + F.substring(zone, 5, 2).try_cast("long"))
               * F.when(F.substring(zone, 1, 1) == "-", -1).otherwise(1)).otherwise(0).alias("_t_offset"))
    micros = (F.col("_t_day") * MICROS_PER_DAY + (F.col("_t_secs") - F.col("_t_offset") * 60) * 1_000_000
              + F.col("_t_frac"))
    return valued.select("*", F.when(F.col("_t_ok"), F.timestamp_micros(micros)).alias(out))


def utc_date(ts: Column) -> Column:
    """UTC calendar date of a timestamp, independent of the session zone."""
    return F.date_from_unix_date(F.floor(F.unix_micros(ts) / F.lit(MICROS_PER_DAY)).try_cast("int"))


def _field(i: int) -> Column:
    return trim_ws(F.get(F.col("record"), i))


def _matches(c: str, pattern: str) -> Column:
    return F.coalesce(F.col(c).rlike(pattern), F.lit(False))


# --------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------

def validate_subscribers(records: DataFrame, rules: BatchRules) -> DataFrame:
    """-> ``record, reason, sub_id, activation_date`` (reason null when valid)."""
    fields = records.select("record", "parsed", F.size("record").alias("_n"),
                            _field(0).alias("sub_id"), _field(1).alias("_date"))
    matched = fields.select("*", _matches("sub_id", SUB_ID_PATTERN).alias("_sub_ok"),
                            F.col("_date").rlike(DATE_PATTERN).alias("_date_ok"))
    valued = with_date(matched, "_date", "_date_ok", "activation_date")
    reason = (
        F.when(~F.col("parsed") | (F.col("_n") != 2), "malformed_row")
        .when(~F.col("_sub_ok"), "invalid_sub_id")
        .when(F.col("activation_date").isNull() | (F.col("activation_date") > F.lit(rules.batch_date)),
              "invalid_activation_date")
    )
    return valued.select("record", reason.alias("reason"), "sub_id", "activation_date")


def collapse_subscribers(valid: DataFrame) -> DataFrame:
    """Valid rows -> one row per ``sub_id`` with the earliest date, and ``rows``."""
    return valid.groupBy("sub_id").agg(
        F.min("activation_date").alias("activation_date"), F.count(F.lit(1)).alias("rows")
    )


def merge_subscribers(incoming: DataFrame, store: DataFrame) -> DataFrame:
    """First activation wins, for the batch's subscribers and the store rows it read.

    -> ``sub_id, activation_date`` (incoming, null for store-only rows),
    ``old_activation_date`` (store, null when new), ``rows`` (incoming rows),
    ``action`` (``inserted`` new sub_id, ``updated`` earlier date than the
    store, ``unchanged``; null for store-only rows) and
    ``after_activation_date`` (the store after the merge).
    """
    old = store.select("sub_id", F.col("activation_date").alias("old_activation_date"))
    joined = incoming.join(old, "sub_id", "full_outer")
    action = (
        F.when(F.col("activation_date").isNull(), F.lit(None).cast("string"))
        .when(F.col("old_activation_date").isNull(), "inserted")
        .when(F.col("activation_date") < F.col("old_activation_date"), "updated")
        .otherwise("unchanged")
    )
    return joined.select("sub_id", "activation_date", "old_activation_date", "rows", action.alias("action"),
                         F.least("activation_date", "old_activation_date").alias("after_activation_date"))


def plan_subscriber_merge(incoming: DataFrame, store: DataFrame) -> DataFrame:
    """The batch's subscribers: ``sub_id, activation_date, old_activation_date, action``."""
    return merge_subscribers(incoming, store).where(F.col("action").isNotNull())


def subscribers_after_merge(incoming: DataFrame, store: DataFrame) -> DataFrame:
    """The store as it is after the merge: ``sub_id, activation_date``."""
    return merge_subscribers(incoming, store).select(
        "sub_id", F.col("after_activation_date").alias("activation_date"))


def row_key(sub_id: Column, activation_date: Column) -> Column:
    """``<sub_id>_<yyyyMMdd>``."""
    return F.concat(sub_id, F.lit("_"), F.date_format(activation_date, "yyyyMMdd"))


# --------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------

def validate_transactions(records: DataFrame, rules: BatchRules) -> DataFrame:
    """-> ``record, reason, timestamp, sub_id, amount, channel`` (reason null when valid)."""
    allowed = [c.upper() for c in rules.allowed_channels]
    # Upper-casing never shortens a string (in code points), so a channel
    # longer than every allowed one is invalid without converting it.
    longest = max((len(c) for c in allowed), default=0)
    channel = _field(3)
    fields = records.select("record", "parsed", F.size("record").alias("_n"), _field(0).alias("_ts"),
                            _field(1).alias("sub_id"), _field(2).alias("_amount"),
                            F.when(F.length(channel) <= longest, F.upper(channel)).alias("channel"))
    matched = fields.select(
        "*", F.col("_ts").rlike(TIMESTAMP_PATTERN).alias("_ts_ok"),
        _matches("sub_id", SUB_ID_PATTERN).alias("_sub_ok"),
        F.col("_amount").rlike(AMOUNT_PATTERN).alias("_amount_ok"))
    valued = with_timestamp(matched, "_ts", "_ts_ok", "timestamp").select(
        "*", F.when(F.col("_amount_ok"), F.col("_amount").try_cast(AMOUNT_TYPE)).alias("_amount_value"))
    valued = valued.select("*", F.when(F.col("_amount_ok") & (F.col("_amount_value") > 0),
                                       F.col("_amount_value")).alias("amount"))
    reason = (
        F.when(~F.col("parsed") | (F.col("_n") != 4), "malformed_row")
        .when(F.col("timestamp").isNull(), "invalid_timestamp")
        .when(~F.col("_sub_ok"), "invalid_sub_id")
        .when(F.col("amount").isNull(), "invalid_amount")
        .when(~F.coalesce(F.col("channel").isin(allowed), F.lit(False)), "invalid_channel")
    )
    return valued.select("record", reason.alias("reason"), "timestamp", "sub_id", "amount", "channel")


def transaction_sub_id_rows(records: DataFrame) -> DataFrame:
    """One row per transaction row: ``sub_id`` where the row could be a valid
    transaction (a superset: only the field count and the sub_id rule are
    checked), else null. Its non-null values are what the batch needs to read
    from the store; its row count is the file's."""
    sub_id = _field(1)
    could = F.col("parsed") & (F.size("record") == 4) & F.coalesce(sub_id.rlike(SUB_ID_PATTERN), F.lit(False))
    return records.select(F.when(could, sub_id).alias("sub_id"))


TX_KEY = ["timestamp", "sub_id", "amount", "channel"]
# Fates of a transaction row in the batch (column ``status`` of transaction_fates).
PUBLISHED, PENDING, REJECTED, DUPLICATE = "published", "pending", "rejected", "duplicate"


def rank_transactions(txs: DataFrame, pending: DataFrame, partitions: int = 8) -> DataFrame:
    """New and pending rows in one shuffle, each duplicate group ranked.

    ``txs``: validate_transactions' output (valid and rejected rows).
    ``pending``: ``pending_id, timestamp, sub_id, amount, channel, record``.

    Exact duplicates (same UTC timestamp, sub_id, amount value, channel) are
    ranked: a pending row before a new one, then the lowest pending_id, then
    the smallest record; ``_rank`` 1 is the row the group keeps.

    Rows are hash-partitioned once by ``shard`` (the sub_id; a rejected row's
    record, so those spread and never match a subscriber): the duplicate
    window and the later sort-merge join with the subscribers both reuse that
    partitioning and its sort order.
    """
    valid = F.col("reason").isNull()
    new = txs.select(
        F.lit(1).alias("priority"), F.lit(None).cast("long").alias("pending_id"), "record", "reason",
        *[F.when(valid, F.col(c)).alias(c) for c in TX_KEY],
        F.when(valid, F.col("sub_id")).otherwise(F.concat(F.lit("!"), F.concat_ws(",", "record"))).alias("shard"))
    old = pending.select(
        F.lit(0).alias("priority"), F.col("pending_id").cast("long"), "record",
        F.lit(None).cast("string").alias("reason"), *TX_KEY, F.col("sub_id").alias("shard"))
    both = new.unionByName(old).repartition(max(1, partitions), "shard")
    group = Window.partitionBy("shard", "timestamp", "amount", "channel").orderBy(
        "priority", "pending_id", "record")
    return both.withColumn("_rank", F.row_number().over(group))


def decide_fates(ranked: DataFrame, subscribers: DataFrame, rules: BatchRules) -> DataFrame:
    """Each ranked row's fate, matched with ``subscribers`` (the store after this
    batch's merge, ``sub_id, activation_date``, at least the batch's sub_ids).

    A group's kept row becomes ``published``, ``pending`` or ``rejected``
    (``before_activation``, ``unmatched_expired``); the group's other rows are
    ``duplicate``; rows that broke a rule are ``rejected`` with their reason.

    Returns ``origin`` (new | pending), ``pending_id``, ``status``, ``reason``,
    ``record`` (kept only where an output needs it: rejected and pending rows),
    the key columns and ``activation_date``.
    """
    valid = F.col("reason").isNull()
    subs = subscribers.select(F.col("sub_id").alias("shard"), "activation_date")
    joined = ranked.join(subs, "shard", "left")
    matched = F.col("activation_date").isNotNull()
    expired = F.unix_micros("timestamp") < F.lit(rules.expiry_cutoff_micros)
    late_reason = (
        F.when(~matched & expired, "unmatched_expired")
        .when(matched & (utc_date(F.col("timestamp")) < F.col("activation_date")), "before_activation"))
    kept = F.col("_rank") == 1
    reason = F.when(~valid, F.col("reason")).when(kept, late_reason)
    status = (
        F.when(~valid, REJECTED)
        .when(~kept, DUPLICATE)
        .when(late_reason.isNotNull(), REJECTED)
        .when(~matched, PENDING)
        .otherwise(PUBLISHED))
    decided = joined.select("*", status.alias("status"), reason.alias("_reason"))
    return decided.select(
        F.when(F.col("priority") == 0, "pending").otherwise("new").alias("origin"),
        "pending_id", "status", F.col("_reason").alias("reason"),
        F.when(F.col("status").isin(REJECTED, PENDING), F.col("record")).alias("record"),
        *TX_KEY, "activation_date")


def transaction_fates(txs: DataFrame, pending: DataFrame, subscribers: DataFrame, rules: BatchRules,
                      partitions: int = 8) -> DataFrame:
    """Every transaction row of the batch, new or pending, with its fate (rank, then decide)."""
    return decide_fates(rank_transactions(txs, pending, partitions), subscribers, rules)


def published_rows(fates: DataFrame) -> DataFrame:
    """The published dataset, in the contract's column order and types."""
    return fates.where(F.col("status") == PUBLISHED).select(
        F.col("timestamp"),
        row_key(F.col("sub_id"), F.col("activation_date")).alias("sub_row_key"),
        F.col("sub_id"),
        F.col("amount").cast(AMOUNT_TYPE).alias("amount"),
        F.col("channel"),
        F.col("activation_date"),
    )


def reject_rows(subscribers: DataFrame, fates: DataFrame) -> DataFrame:
    """All rejects of the batch: ``source, reason, record``."""
    subs = subscribers.where(F.col("reason").isNotNull()).select(
        F.lit("subscribers").alias("source"), "reason", "record"
    )
    txs = fates.where(F.col("status") == REJECTED).select(
        F.when(F.col("origin") == "pending", "pending").otherwise("transactions").alias("source"),
        "reason",
        "record",
    )
    return subs.unionByName(txs)
