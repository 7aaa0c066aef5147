"""The contract's rules as pure DataFrame functions, on a few rows each."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import transform as tr
from spark_jobs.contract import conservation_errors

BATCH = dt.date(2024, 3, 2)
RULES = tr.BatchRules(BATCH)
UTC = dt.timezone.utc


def lines(spark, *rows):
    return spark.createDataFrame([(r,) for r in rows], "value string")


def subs_of(spark, *rows, rules=RULES):
    return tr.validate_subscribers(tr.parse_lines(lines(spark, *rows)), rules).collect()


def txs_of(spark, *rows, rules=RULES):
    return tr.validate_transactions(tr.parse_lines(lines(spark, *rows)), rules).collect()


# -- lines and fields ---------------------------------------------------------

def test_empty_lines_are_not_rows_but_blank_lines_are(spark):
    rows = subs_of(spark, "", "S1,2024-01-01", "", "   ", "\t")
    assert len(rows) == 3
    assert sorted(r["reason"] or "ok" for r in rows) == ["malformed_row", "malformed_row", "ok"]


def _python_csv(line):
    """What the contract's parser (Python's csv, strict) makes of one line."""
    import csv
    import sys

    csv.field_size_limit(sys.maxsize)
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error:
        return [line], False
    return (rows[0], True) if len(rows) == 1 else ([line], False)


def _jvm_parse(spark, texts):
    record, parsed = tr.parse_record(F.col("line"))
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i int, line string")
    return {r["i"]: (list(r["record"]), r["parsed"]) for r in df.select("i", record.alias("record"),
                                                                        parsed.alias("parsed")).collect()}


def test_quoted_lines_parse_as_python_csv_strict_does(spark):
    """Random short lines over the characters that matter, every one equal to Python's csv.

    No CR or LF: they end lines before a line reaches the parser (notes #1).
    """
    import random

    rnd = random.Random(20261201)
    alphabet = ['"', '"', '"', ",", ",", "a", "b", " ", "\t", "\x00", "é", "\U0001F600", "'"]
    texts = sorted({"".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 10))) for _ in range(6000)})
    texts += ['"a""b",c', '"a""",b', '"a""', '"a"b', '"a" ,b', ' "a",b', 'a"b",c', '"",""', '","', '"', '""',
              '""""', '"a,b",,"c"', ',"x"', '"x",', 'S"1,2024-01-01']
    got = _jvm_parse(spark, texts)
    wrong = [(t, got[i], _python_csv(t)) for i, t in enumerate(texts) if got[i] != _python_csv(t)]
    assert not wrong, wrong[:10]
    assert sum(1 for t in texts if not _python_csv(t)[1]) > 100   # the sample holds both kinds


def test_long_quoted_fields_and_many_fields_parse_without_stack_overflow(spark):
    texts = ['"' + 'x""' * 100_000 + '",b', ",".join(['"q"'] * 100_000), '"' + "y" * 1_000_000 + '"',
             '"' + 'x""' * 100_000 + ',b']   # the last one is never closed
    got = _jvm_parse(spark, texts)
    for i, t in enumerate(texts):
        assert got[i] == _python_csv(t), t[:40]
    assert got[3][1] is False and got[0][0][0].count('"') == 100_000


def test_a_line_over_the_bound_is_malformed_unparsed_and_kept_as_its_start_and_size(spark):
    rules = tr.BatchRules(BATCH, max_line_bytes=300)
    at_bound = "S1," + "2" * 297                      # 300 bytes: parsed, judged field by field
    over = '"' + "x" * 2000                            # would be an unclosed quote; never parsed
    multi = "é" * 151                                  # 302 bytes in 151 characters
    rows = tr.validate_subscribers(tr.parse_lines(lines(spark, at_bound, over, multi, "S2,2024-01-01"), 300),
                                   rules).collect()
    assert [r["reason"] for r in rows] == ["invalid_activation_date", "malformed_row", "malformed_row", None]
    assert rows[0]["record"] == ["S1", "2" * 297]
    assert rows[1]["record"] == [over[:tr.OVERSIZED_KEPT_CHARS],
                                 f"[truncated: the line has 2001 bytes; its first {tr.OVERSIZED_KEPT_CHARS} "
                                 "characters are kept]"]
    assert rows[2]["record"][0] == multi and "has 302 bytes" in rows[2]["record"][1]


def test_values_that_fail_their_pattern_are_never_converted(spark):
    """A megabyte of digits: the amount pattern rejects it, so no decimal
    parsing (quadratic in Java) runs; the timestamp and date parts likewise."""
    big = "9" * 1_000_000
    rows = txs_of(spark, f"2024-03-01T10:00:00Z,S1,{big},SMS", f"{big},S1,5,SMS", f"2024-03-01T10:00:00Z,S1,5,{big}",
                  "2024-03-01T10:00:00Z,S1,5,ſms")
    assert [r["reason"] for r in rows] == ["invalid_amount", "invalid_timestamp", "invalid_channel", None]
    assert rows[3]["channel"] == "SMS"
    (s,) = subs_of(spark, f"S1,{big}")
    assert s["reason"] == "invalid_activation_date"


def test_bom_is_removed(spark):
    (r,) = subs_of(spark, "\ufeffS1,2024-01-01")
    assert r["reason"] is None and r["sub_id"] == "S1"


def test_rfc4180_quoting(spark):
    (r,) = subs_of(spark, '"S1","2024-01-01"')
    assert r["reason"] is None and r["sub_id"] == "S1"
    (t,) = txs_of(spark, '2024-03-01T10:00:00Z,S1,"1,000.00",SMS')
    assert t["reason"] == "invalid_amount"   # one field, with a thousands separator
    assert t["record"] == ["2024-03-01T10:00:00Z", "S1", "1,000.00", "SMS"]
    (q,) = txs_of(spark, '2024-03-01T10:00:00Z,S1,5,"S""MS"')
    assert q["reason"] == "invalid_channel" and q["record"][3] == 'S"MS'


def test_broken_quoting_is_malformed_and_keeps_the_line(spark):
    (r,) = subs_of(spark, '"S1,2024-01-01')
    assert r["reason"] == "malformed_row" and r["record"] == ['"S1,2024-01-01']
    (r2,) = subs_of(spark, '"S1"x,2024-01-01')
    assert r2["reason"] == "malformed_row"


def test_fields_trimmed_but_record_untrimmed(spark):
    (r,) = subs_of(spark, "  S1\t, 2024-01-01  ")
    assert r["reason"] is None and r["sub_id"] == "S1"
    assert r["record"] == ["  S1\t", " 2024-01-01  "]


def test_crlf_leftover_carriage_return_is_trimmed(spark):
    (r,) = subs_of(spark, "S1,2024-01-01\r")
    assert r["reason"] is None


# -- subscribers ---------------------------------------------------------------

SUB_CASES = [
    ("S1", "malformed_row"),
    ("S1,2024-01-01,x", "malformed_row"),
    ("S1,2024-01-01,", "malformed_row"),
    ("_S1,2024-01-01", "invalid_sub_id"),
    ("-S1,2024-01-01", "invalid_sub_id"),
    ("S 1,2024-01-01", "invalid_sub_id"),
    ("S.1,2024-01-01", "invalid_sub_id"),
    (",2024-01-01", "invalid_sub_id"),
    ("A" * 65 + ",2024-01-01", "invalid_sub_id"),
    ("S1,2023-02-29", "invalid_activation_date"),
    ("S1,2024-02-30", "invalid_activation_date"),
    ("S1,2024-13-01", "invalid_activation_date"),
    ("S1,2024-00-10", "invalid_activation_date"),
    ("S1,0000-01-01", "invalid_activation_date"),
    ("S1,2024/01/02", "invalid_activation_date"),
    ("S1,2024-1-2", "invalid_activation_date"),
    ("S1,2024-03-03", "invalid_activation_date"),   # after the batch date
    ("S1,", "invalid_activation_date"),
    # valid edges
    ("S1,2024-02-29", None),            # leap day
    ("S1,2024-03-02", None),            # on the batch date
    ("A" * 64 + ",2024-01-01", None),   # longest id
    ("a_b-C9,0001-01-01", None),
]


@pytest.fixture(scope="module")
def sub_reasons(spark):
    """All subscriber cases validated in one Spark job (fast), keyed by line."""
    rows = subs_of(spark, *[row for row, _ in SUB_CASES])
    return {",".join(r["record"]): r["reason"] for r in rows}


@pytest.mark.parametrize("row,reason", SUB_CASES)
def test_subscriber_reject_reasons(sub_reasons, row, reason):
    assert sub_reasons[row] == reason


def test_sub_id_is_case_sensitive_and_duplicates_keep_earliest(spark):
    rows = spark.createDataFrame(
        [("s1", dt.date(2024, 1, 5)), ("s1", dt.date(2024, 1, 2)), ("S1", dt.date(2024, 1, 9)),
         ("s1", dt.date(2024, 1, 3))], "sub_id string, activation_date date")
    got = {r["sub_id"]: (r["activation_date"], r["rows"]) for r in tr.collapse_subscribers(rows).collect()}
    assert got == {"s1": (dt.date(2024, 1, 2), 3), "S1": (dt.date(2024, 1, 9), 1)}


def test_merge_plan_first_activation_wins(spark):
    incoming = spark.createDataFrame(
        [("NEW", dt.date(2024, 1, 1), 1), ("EARLIER", dt.date(2023, 1, 1), 1),
         ("LATER", dt.date(2024, 2, 1), 2), ("SAME", dt.date(2024, 1, 1), 1)],
        "sub_id string, activation_date date, rows long")
    store = spark.createDataFrame(
        [("EARLIER", dt.date(2023, 6, 1)), ("LATER", dt.date(2024, 1, 1)), ("SAME", dt.date(2024, 1, 1)),
         ("OTHER", dt.date(2020, 1, 1))], "sub_id string, activation_date date")
    plan = {r["sub_id"]: r["action"] for r in tr.plan_subscriber_merge(incoming, store).collect()}
    assert plan == {"NEW": "inserted", "EARLIER": "updated", "LATER": "unchanged", "SAME": "unchanged"}
    after = {r["sub_id"]: r["activation_date"] for r in tr.subscribers_after_merge(incoming, store).collect()}
    assert after == {"NEW": dt.date(2024, 1, 1), "EARLIER": dt.date(2023, 1, 1),
                     "LATER": dt.date(2024, 1, 1), "SAME": dt.date(2024, 1, 1), "OTHER": dt.date(2020, 1, 1)}


# -- transactions --------------------------------------------------------------

TX_CASES = [
    ("2024-03-01T10:00:00Z,S1,5", "malformed_row"),
    ("2024-03-01T10:00:00Z,S1,5,SMS,x", "malformed_row"),
    ("2024-03-01T24:00:00Z,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:60:00Z,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:60Z,S1,5,SMS", "invalid_timestamp"),
    ("2024-02-30T10:00:00Z,S1,5,SMS", "invalid_timestamp"),
    ("2023-02-29 10:00:00,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01t10:00:00,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00z,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00.1234567,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00.,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00+25:00,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00+18:01,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00+0200,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00+02:60,S1,5,SMS", "invalid_timestamp"),
    ("1709287200,S1,5,SMS", "invalid_timestamp"),
    ("2024-03-01T10:00:00Z,_S1,5,SMS", "invalid_sub_id"),
    ("2024-03-01T10:00:00Z,,5,SMS", "invalid_sub_id"),
    ("2024-03-01T10:00:00Z,S1,-5,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,+5,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,0,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,0.0000,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,1e5,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,1.23456,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,123456789012345,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,.5,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,5.,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,,SMS", "invalid_amount"),
    ("2024-03-01T10:00:00Z,S1,5,FAX", "invalid_channel"),
    ("2024-03-01T10:00:00Z,S1,5,", "invalid_channel"),
    # first broken rule wins
    ("bad,_bad,-1,FAX", "invalid_timestamp"),
    ("2024-03-01T10:00:00Z,_bad,-1,FAX", "invalid_sub_id"),
    ("2024-03-01T10:00:00Z,S1,-1,FAX", "invalid_amount"),
]


@pytest.fixture(scope="module")
def tx_reasons(spark):
    rows = txs_of(spark, *[row for row, _ in TX_CASES])
    return {",".join(r["record"]): r["reason"] for r in rows}


@pytest.mark.parametrize("row,reason", TX_CASES)
def test_transaction_reject_reasons(tx_reasons, row, reason):
    assert tx_reasons[row] == reason


TS_CASES = [
    ("2024-03-01T10:00:00", dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("2024-03-01 10:00:00", dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("2024-03-01T10:00:00Z", dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("2024-03-01T10:00:00.5", dt.datetime(2024, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ("2024-03-01T10:00:00.123456Z", dt.datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2024-03-01T01:30:00+02:00", dt.datetime(2024, 2, 29, 23, 30, tzinfo=UTC)),
    ("2024-02-29T23:00:00-05:30", dt.datetime(2024, 3, 1, 4, 30, tzinfo=UTC)),
    ("2024-03-01T10:00:00+18:00", dt.datetime(2024, 2, 29, 16, tzinfo=UTC)),
    ("2024-03-01T10:00:00-00:00", dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
]


@pytest.fixture(scope="module")
def parsed_timestamps(spark):
    rows = txs_of(spark, *[f"{text},S1,5,sms" for text, _ in TS_CASES])
    return {r["record"][0]: r for r in rows}


@pytest.mark.parametrize("text,expected", TS_CASES)
def test_timestamps_normalised_to_utc(parsed_timestamps, text, expected):
    r = parsed_timestamps[text]
    assert r["reason"] is None
    assert r["timestamp"].astimezone(UTC) == expected
    assert r["channel"] == "SMS"


def test_amount_and_channel_values(spark):
    rows = txs_of(spark, "2024-03-01T10:00:00Z,S1,007.50, web ", "2024-03-01T10:00:00Z,S1,99999999999999.9999,Ussd")
    assert [(r["amount"], r["channel"]) for r in rows] == [
        (Decimal("7.5000"), "WEB"), (Decimal("99999999999999.9999"), "USSD")]


def test_allowed_channels_are_configuration(spark):
    rules = tr.BatchRules(BATCH, allowed_channels=("fax",))
    assert [r["reason"] for r in txs_of(spark, "2024-03-01T10:00:00Z,S1,5,FAX", "2024-03-01T10:00:00Z,S1,5,SMS",
                                        rules=rules)] == [None, "invalid_channel"]


# -- duplicates, matching, pending ------------------------------------------------

TX_SCHEMA = "timestamp timestamp, sub_id string, amount decimal(18,4), channel string, record array<string>"
PENDING_SCHEMA = TX_SCHEMA + ", pending_id long"


def ts(*a):
    return dt.datetime(*a, tzinfo=UTC)


def fates_of(spark, new_rows, pending_rows=(), subs=(), rules=RULES):
    """transaction_fates of valid new rows and pending rows, as dicts keyed by record[0]."""
    txs = spark.createDataFrame(list(new_rows), TX_SCHEMA).selectExpr(
        "record", "CAST(NULL AS string) AS reason", "timestamp", "sub_id", "amount", "channel")
    pending = spark.createDataFrame(list(pending_rows), PENDING_SCHEMA)
    known = spark.createDataFrame(list(subs), "sub_id string, activation_date date")
    return tr.transaction_fates(txs, pending, known, rules, partitions=2)


def test_duplicates_collapse_within_file_and_against_pending(spark):
    new = [
        (ts(2024, 3, 1, 10), "S1", Decimal("10.5"), "SMS", ["a"]),
        (ts(2024, 3, 1, 10), "S1", Decimal("10.50"), "SMS", ["b"]),   # same value
        (ts(2024, 3, 1, 10), "S1", Decimal("10.5"), "APP", ["c"]),    # other channel: distinct
        (ts(2024, 2, 1, 0), "P1", Decimal("1"), "SMS", ["d"]),        # duplicate of a pending row
    ]
    pending = [(ts(2024, 2, 1, 0), "P1", Decimal("1"), "SMS", ["old"], 7)]
    got = fates_of(spark, new, pending).collect()
    kept = [r for r in got if r["status"] != "duplicate"]
    assert len(kept) == 3
    assert sum(r["status"] == "duplicate" for r in got) == 2
    p1 = [r for r in kept if r["sub_id"] == "P1"][0]
    assert (p1["origin"], p1["pending_id"], p1["record"]) == ("pending", 7, ["old"])


def test_duplicate_keeps_the_smallest_record_and_lowest_pending_id(spark):
    """Which row of a duplicate group is kept (its record goes to the pending
    table or the rejects): pending before new, lowest pending_id, then the
    smallest record; this pins the choice the job has always made."""
    t = ts(2024, 3, 1, 10)
    new = [(t, "N1", Decimal("1"), "SMS", ["x", "2"]), (t, "N1", Decimal("1.0"), "SMS", ["x", "10"]),
           (t, "N1", Decimal("1"), "SMS", ["x"])]
    pending = [(t, "P2", Decimal("1"), "SMS", ["late"], 9), (t, "P2", Decimal("1"), "SMS", ["early"], 8)]
    got = fates_of(spark, new, pending).collect()
    kept = {r["sub_id"]: r for r in got if r["status"] != "duplicate"}
    assert kept["N1"]["record"] == ["x"] and kept["N1"]["status"] == "pending"
    assert (kept["P2"]["pending_id"], kept["P2"]["record"]) == (8, ["early"])
    dropped = [r["pending_id"] for r in got if r["status"] == "duplicate" and r["origin"] == "pending"]
    assert dropped == [9]


def test_classification_pending_expiry_and_before_activation(spark):
    cutoff = dt.datetime(2024, 2, 24, tzinfo=UTC)   # batch 2024-03-02 minus 7 days
    new = [
        (ts(2024, 3, 1, 10), "KNOWN", Decimal("1"), "SMS", ["k"]),
        (ts(2024, 2, 9, 23, 59), "KNOWN", Decimal("1"), "SMS", ["early"]),
        (ts(2024, 2, 10, 0), "KNOWN", Decimal("2"), "SMS", ["sameday"]),
        (cutoff, "NOBODY", Decimal("1"), "SMS", ["edge"]),
        (cutoff - dt.timedelta(microseconds=1), "NOBODY", Decimal("1"), "SMS", ["old"]),
    ]
    pending = [
        (ts(2024, 2, 1), "NOBODY", Decimal("3"), "SMS", ["oldpending"], 5),
        (ts(2024, 3, 1), "KNOWN", Decimal("4"), "SMS", ["resolved"], 6),
    ]
    fates = fates_of(spark, new, pending, subs=[("KNOWN", dt.date(2024, 2, 10))])
    got = {(r["sub_id"], r["timestamp"], r["amount"]): (r["status"], r["reason"]) for r in fates.collect()}
    records = {r[4][0]: (r[1], r[0].replace(tzinfo=None), r[2]) for r in new + pending}
    got = {name: got[(sub, t, Decimal(a))] for name, (sub, t, a) in records.items()}
    assert got == {
        "k": ("published", None),
        "early": ("rejected", "before_activation"),
        "sameday": ("published", None),
        "edge": ("pending", None),
        "old": ("rejected", "unmatched_expired"),
        "oldpending": ("rejected", "unmatched_expired"),
        "resolved": ("published", None),
    }


def test_published_rows_schema_and_row_key(spark):
    cands = spark.createDataFrame([
        (ts(2024, 3, 1, 10), "S1", Decimal("10.5"), "SMS", ["x"], "new", None, 0, [], dt.date(2024, 1, 9),
         None, "published"),
    ], TX_SCHEMA + ", origin string, pending_id long, duplicates long, dropped_pending_ids array<long>,"
                   " activation_date date, reason string, status string")
    out = tr.published_rows(cands)
    assert [(f.name, f.dataType) for f in out.schema.fields] == [
        ("timestamp", T.TimestampType()), ("sub_row_key", T.StringType()), ("sub_id", T.StringType()),
        ("amount", T.DecimalType(18, 4)), ("channel", T.StringType()), ("activation_date", T.DateType())]
    assert out.collect()[0]["sub_row_key"] == "S1_20240109"


def test_rejects_carry_source(spark):
    subs = tr.validate_subscribers(tr.parse_lines(lines(spark, "bad")), RULES)
    txs = tr.validate_transactions(tr.parse_lines(lines(spark, "bad")), RULES)
    late = spark.createDataFrame(
        [("pending", "rejected", "unmatched_expired", [" a "]), ("new", "rejected", "before_activation", ["b"])],
        "origin string, status string, reason string, record array<string>")
    fates = tr.transaction_fates(txs, spark.createDataFrame([], PENDING_SCHEMA),
                                 spark.createDataFrame([], "sub_id string, activation_date date"), RULES, 2)
    fates = fates.select("origin", "status", "reason", "record").unionByName(late)
    got = sorted((r["source"], r["reason"], tuple(r["record"]))
                 for r in tr.reject_rows(subs, fates).collect())
    assert got == [("pending", "unmatched_expired", (" a ",)), ("subscribers", "malformed_row", ("bad",)),
                   ("transactions", "before_activation", ("b",)), ("transactions", "malformed_row", ("bad",))]


# -- conservation laws ----------------------------------------------------------

def _metrics(**over):
    m = {"subscribers_input": 5, "subscribers_rejected": {"malformed_row": 1}, "subscribers_duplicate": 1,
         "subscribers_inserted": 1, "subscribers_updated": 1, "subscribers_unchanged": 1,
         "transactions_input": 10, "pending_in": 3, "transactions_rejected": {"invalid_amount": 2},
         "transactions_duplicate": 1, "pending_resolved": 1, "published": 6, "pending_out": 4}
    m.update(over)
    return m


def test_conservation_laws_hold_and_break():
    assert conservation_errors(_metrics()) == []
    broken = conservation_errors(_metrics(subscribers_inserted=2))
    assert len(broken) == 1 and broken[0].startswith("subscribers_input (5)")
    broken = conservation_errors(_metrics(published=7))
    assert len(broken) == 1 and "transactions_input + pending_in (13)" in broken[0] and "(14)" in broken[0]


def test_utc_date_ignores_session_zone(spark):
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        df = spark.createDataFrame([(ts(2024, 3, 1, 2),)], "t timestamp")
        assert df.select(tr.utc_date(F.col("t")).alias("d")).collect()[0]["d"] == dt.date(2024, 3, 1)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
