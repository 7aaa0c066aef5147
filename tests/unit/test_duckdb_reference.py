"""Tests of the DuckDB measuring stick ``benchmarks/duckdb_reference.py``.

Small hand-written files in tmp dirs, one assertion per reject reason and per
edge case of ``docs/data-contract.md`` and ``docs/data-contract-notes.md`` (``[n]``
= point n of the notes). One batch, empty store, empty pending table.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.duckdb_reference import (  # noqa: E402
    METRIC_KEYS,
    SUBSCRIBER_REASONS,
    TRANSACTION_REASONS,
    check_conservation,
    run_reference,
)

BATCH = "2024-03-01_a"          # cutoff with ttl 7: 2024-02-23T00:00:00Z
# Subscribers every transaction test can match.
BASE_SUBS = "S1,2024-01-01\nS2,2024-02-10\n"
GOOD_TX = "2024-02-29T10:00:00Z,S1,10.50,SMS"


def write_batch(root: Path, subs: str | bytes, txs: str | bytes, batch: str = BATCH) -> Path:
    d = root / batch
    d.mkdir(parents=True, exist_ok=True)
    for name, content in (("subscribers.csv", subs), ("transactions.csv", txs)):
        (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def run(tmp_path: Path, subs: str | bytes = BASE_SUBS, txs: str | bytes = "", batch: str = BATCH, **kw) -> dict:
    return run_reference(write_batch(tmp_path, subs, txs, batch), batch, **kw)


def tx_outcomes(m: dict) -> dict:
    """Non-zero transaction outcomes: reasons, duplicate, published, pending."""
    out = {r: n for r, n in m["transactions_rejected"].items() if n}
    for k, name in (("transactions_duplicate", "duplicate"), ("published", "published"),
                    ("pending_out", "pending")):
        if m[k]:
            out[name] = m[k]
    return out


def sub_outcomes(m: dict) -> dict:
    out = {r: n for r, n in m["subscribers_rejected"].items() if n}
    for k, name in (("subscribers_duplicate", "duplicate"), ("subscribers_inserted", "inserted")):
        if m[k]:
            out[name] = m[k]
    return out


def tx_fate(tmp_path: Path, line: str | bytes, subs: str = BASE_SUBS, **kw) -> str:
    """The single outcome of a one-row transaction file."""
    txs = line + (b"\n" if isinstance(line, bytes) else "\n")
    out = tx_outcomes(run(tmp_path, subs, txs, **kw))
    assert sum(out.values()) == 1, out
    return next(iter(out))


def sub_fate(tmp_path: Path, line: str | bytes) -> str:
    subs = line + (b"\n" if isinstance(line, bytes) else "\n")
    out = sub_outcomes(run(tmp_path, subs, ""))
    assert sum(out.values()) == 1, out
    return next(iter(out))


# --------------------------------------------------------------------------
# Shape of the result, inputs, CLI
# --------------------------------------------------------------------------

def test_metric_keys_and_reason_keys(tmp_path):
    m = run(tmp_path, BASE_SUBS, GOOD_TX + "\n")
    assert tuple(m) == METRIC_KEYS
    assert tuple(m["subscribers_rejected"]) == SUBSCRIBER_REASONS
    assert tuple(m["transactions_rejected"]) == TRANSACTION_REASONS
    assert (m["subscribers_updated"], m["subscribers_unchanged"], m["pending_in"], m["pending_resolved"]) == (0,) * 4


def test_empty_files_are_a_valid_batch(tmp_path):
    m = run(tmp_path, b"", b"")
    assert m["subscribers_input"] == m["transactions_input"] == m["published"] == m["pending_out"] == 0
    assert sum(m["subscribers_rejected"].values()) + sum(m["transactions_rejected"].values()) == 0


def test_file_of_only_empty_lines_has_zero_rows(tmp_path):
    m = run(tmp_path, b"\n\r\n\r\n\n", b"\r\n\n")
    assert (m["subscribers_input"], m["transactions_input"]) == (0, 0)


@pytest.mark.parametrize("missing", ["subscribers.csv", "transactions.csv"])
def test_missing_file_is_an_error_naming_the_path(tmp_path, missing):
    write_batch(tmp_path, BASE_SUBS, GOOD_TX)
    path = tmp_path / BATCH / missing
    path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        run_reference(tmp_path, BATCH)


@pytest.mark.parametrize("batch_id", ["2024-03-01", "2024-03-01_c", "2024-02-30_a", "24-03-01_a", "2024-03-01_a "])
def test_bad_batch_id_is_refused(tmp_path, batch_id):
    with pytest.raises(ValueError, match="batch_id"):
        run_reference(tmp_path, batch_id)


def test_cli_prints_metrics_json(tmp_path):
    write_batch(tmp_path, BASE_SUBS, GOOD_TX + "\n")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "duckdb_reference.py"), str(tmp_path), BATCH,
                          "--channels", "sms,app", "--pending-ttl-days", "3"],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)
    assert m["published"] == 1 and tuple(m) == METRIC_KEYS


def test_cli_missing_file_exits_2_naming_the_path(tmp_path):
    (tmp_path / BATCH).mkdir()
    (tmp_path / BATCH / "transactions.csv").write_text("")
    out = subprocess.run([sys.executable, "-m", "benchmarks.duckdb_reference", str(tmp_path), BATCH],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert str(tmp_path / BATCH / "subscribers.csv") in out.stderr


# --------------------------------------------------------------------------
# Lines [1]-[4]
# --------------------------------------------------------------------------

def test_lf_crlf_and_lone_cr_all_end_a_line(tmp_path):
    subs = b"S1,2024-01-01\r\nS2,2024-01-01\rS3,2024-01-01\nS4,2024-01-01"
    assert run(tmp_path, subs, b"")["subscribers_inserted"] == 4


def test_crlf_does_not_leave_cr_in_last_field(tmp_path):
    txs = (GOOD_TX + "\r\n").encode()
    assert tx_outcomes(run(tmp_path, BASE_SUBS, txs)) == {"published": 1}


def test_empty_lines_are_ignored_and_not_counted(tmp_path):
    m = run(tmp_path, "\nS1,2024-01-01\n\n\r\n", "\r\n" + GOOD_TX + "\n\n")
    assert (m["subscribers_input"], m["transactions_input"], m["published"]) == (1, 1, 1)


def test_a_line_over_the_bound_is_a_malformed_row(tmp_path):
    at_bound = "S1," + "2" * 297                      # 300 bytes: judged field by field
    subs = f"{at_bound}\n{'é' * 151}\nS2,2024-01-01\n"  # the second line: 302 bytes
    assert sub_outcomes(run(tmp_path, subs, "", max_line_bytes=300)) == {
        "invalid_activation_date": 1, "malformed_row": 1, "inserted": 1}
    big = "2024-03-01T10:00:00Z,S1,5,SMS" + " " * 3_000_000      # over DuckDB's own 2 MiB line limit
    assert tx_fate(tmp_path, big) == "malformed_row"
    assert tx_fate(tmp_path, big, max_line_bytes=4_000_000) == "published"


@pytest.mark.parametrize("blank", [" ", "\t", "  \t ", "\x0b", "\x0c"])
def test_whitespace_only_line_is_a_malformed_row(tmp_path, blank):
    assert sub_fate(tmp_path, blank) == "malformed_row"
    assert tx_fate(tmp_path, blank) == "malformed_row"


def test_bom_at_start_of_file_is_removed(tmp_path):
    m = run(tmp_path, "\ufeffS1,2024-01-01\n", "\ufeff" + GOOD_TX + "\n")
    assert (m["subscribers_inserted"], m["published"]) == (1, 1)


def test_bom_at_start_of_a_later_line_is_removed(tmp_path):
    m = run(tmp_path, "S2,2024-01-01\n\ufeffS1,2024-01-01\n",
            GOOD_TX + "\n\ufeff" + GOOD_TX.replace("10.50", "3") + "\n")
    assert (m["subscribers_inserted"], m["published"]) == (2, 2)


def test_only_one_bom_is_removed(tmp_path):
    assert sub_fate(tmp_path, "\ufeff\ufeffS1,2024-01-01") == "invalid_sub_id"


def test_only_one_bom_is_removed_on_a_later_line(tmp_path):
    m = run(tmp_path, "S2,2024-01-01\n\ufeff\ufeffS1,2024-01-01\n", "")
    assert sub_outcomes(m) == {"invalid_sub_id": 1, "inserted": 1}


def test_bom_only_line_is_an_empty_line(tmp_path):
    m = run(tmp_path, "S2,2024-01-01\n\ufeff\n", "\ufeff\n")
    assert (m["subscribers_input"], m["transactions_input"]) == (1, 0)


def test_bom_inside_a_line_is_data(tmp_path):
    assert sub_fate(tmp_path, "S1\ufeff,2024-01-01") == "invalid_sub_id"


def test_invalid_utf8_rejects_the_row_never_drops_it(tmp_path):
    m = run(tmp_path, b"S\xff1,2024-01-01\nS1,2024-01-01\n", b"2024-02-29T10:00:00Z,S1,10.50,SM\xc3\n")
    assert m["subscribers_rejected"]["invalid_sub_id"] == 1 and m["subscribers_inserted"] == 1
    assert tx_outcomes(m) == {"invalid_channel": 1}


def test_control_byte_in_a_row_keeps_every_line(tmp_path):
    # \x01 is the reader's delimiter on the fast path; the file is then rewritten
    m = run(tmp_path, b"S1,2024-01-01\nS\x012,2024-01-01\n", (GOOD_TX + "\x01\n" + GOOD_TX + "\n").encode())
    assert (m["subscribers_input"], m["subscribers_inserted"]) == (2, 1)
    assert tx_outcomes(m) == {"invalid_channel": 1, "published": 1}


def test_line_longer_than_the_readers_limit_is_still_a_row(tmp_path):
    long_id = "S" * (3 << 20)
    subs = f"S1,2024-01-01\n{long_id},2024-01-01\n\"{long_id}\",2024-01-01\n"
    m = run(tmp_path, subs, "", max_line_bytes=4 << 20)
    assert sub_outcomes(m) == {"invalid_sub_id": 2, "inserted": 1}
    # over the job's default line bound: not parsed
    assert sub_outcomes(run(tmp_path, subs, "")) == {"malformed_row": 2, "inserted": 1}


def test_non_ascii_file_with_nbsp_is_data_not_white_space(tmp_path):   # [7]
    assert sub_fate(tmp_path, "\u00a0S1,2024-01-01") == "invalid_sub_id"


# --------------------------------------------------------------------------
# CSV quoting [5] and field count [6]
# --------------------------------------------------------------------------

@pytest.mark.parametrize("line, fate", [
    ('"S1","2024-01-01"', "inserted"),
    ('"S1",2024-01-01', "inserted"),
    ('" S1 ",2024-01-01', "inserted"),            # trimmed after unquoting [7]
    ('"S""1",2024-01-01', "invalid_sub_id"),      # "" is one quote
    ('"S,1",2024-01-01', "invalid_sub_id"),       # comma inside quotes is data
    ('S"1,2024-01-01', "invalid_sub_id"),         # quote inside an unquoted field is literal
    (' "S1",2024-01-01', "invalid_sub_id"),       # not first character: literal
    ('"S1" ,2024-01-01', "malformed_row"),        # text after the closing quote
    ('"S1"x,2024-01-01', "malformed_row"),
    ('"S1,2024-01-01', "malformed_row"),          # unterminated
    ('S1,"2024-01-01', "malformed_row"),
    ('"",2024-01-01', "invalid_sub_id"),
    ('S1,2024-01-01,', "malformed_row"),          # a,b, has 3 fields
    ('S1', "malformed_row"),
    ('S1,2024-01-01,x', "malformed_row"),
    ('"S1,2024-01-01",', "invalid_sub_id"),       # 2 fields: 'S1,2024-01-01' and ''
    ('"S1,2024-01-01"', "malformed_row"),         # 1 field
])
def test_subscriber_quoting_and_field_count(tmp_path, line, fate):
    assert sub_fate(tmp_path, line) == fate


def test_quoted_comma_keeps_four_fields(tmp_path):
    assert tx_fate(tmp_path, '2024-02-29T10:00:00Z,S1,"1,000",SMS') == "invalid_amount"


def test_fully_quoted_transaction_is_published(tmp_path):
    assert tx_fate(tmp_path, '"2024-02-29T10:00:00Z","S1","10.50","sms"') == "published"


def test_quoted_field_cannot_span_lines(tmp_path):   # [1]
    m = run(tmp_path, 'S1,"2024\n-01-01"\n', "")
    assert m["subscribers_input"] == 2 and m["subscribers_rejected"]["malformed_row"] == 2


def test_each_half_of_a_split_quoted_field_is_judged_alone(tmp_path):   # [1] + [5]
    # 'X",2024-01-01' parses (a quote inside an unquoted field is literal): 2 fields
    m = run(tmp_path, '"S1\nX",2024-01-01\n', "")
    assert sub_outcomes(m) == {"malformed_row": 1, "invalid_sub_id": 1}


def test_transaction_broken_quoting_is_malformed(tmp_path):
    assert tx_fate(tmp_path, '2024-02-29T10:00:00Z,"S1"x,10.50,SMS') == "malformed_row"


@pytest.mark.parametrize("line", [
    "2024-02-29T10:00:00Z,S1,10.50",
    "2024-02-29T10:00:00Z,S1,10.50,SMS,",
    "2024-02-29T10:00:00Z,S1,10.50,SMS,x",
])
def test_transaction_field_count(tmp_path, line):
    assert tx_fate(tmp_path, line) == "malformed_row"


# --------------------------------------------------------------------------
# Subscribers: rules 2 and 3, order, duplicates
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sub_id", ["", "_S", "-S", "S" * 65, "S 1", "é1", "S.1", "S1\\n", "Ｓ1"])
def test_invalid_sub_id(tmp_path, sub_id):
    assert sub_fate(tmp_path, f"{sub_id},2024-01-01") == "invalid_sub_id"


@pytest.mark.parametrize("sub_id", ["S", "1", "S" * 64, "a-_9", "S1-"])
def test_valid_sub_id(tmp_path, sub_id):
    assert sub_fate(tmp_path, f"{sub_id},2024-01-01") == "inserted"


@pytest.mark.parametrize("date", [
    "2023-02-29", "1900-02-29", "2024-02-30", "2024-04-31", "2024-13-01", "2024-00-10", "2024-01-00",
    "0000-01-01", "2024-1-01", "2024/01/01", "24-01-01", "2024-01-01T00:00:00", "2024-01-01x", "",
    "2024-03-02",           # after the batch date
    "9999-12-31",
    "２０２４-01-01",
])
def test_invalid_activation_date(tmp_path, date):
    assert sub_fate(tmp_path, f"S1,{date}") == "invalid_activation_date"


@pytest.mark.parametrize("date", ["2024-02-29", "2000-02-29", "2024-03-01", "0001-01-01", "1970-01-01"])
def test_valid_activation_date_incl_leap_day_and_batch_date(tmp_path, date):
    assert sub_fate(tmp_path, f"S1,{date}") == "inserted"


def test_subscriber_rules_apply_in_order(tmp_path):
    assert sub_fate(tmp_path, "bad id,2023-02-30") == "invalid_sub_id"
    assert sub_fate(tmp_path, "bad id,2023-02-30,x") == "malformed_row"


def test_subscriber_fields_are_trimmed(tmp_path):
    assert sub_fate(tmp_path, " \tS1 , 2024-01-01\x0b") == "inserted"


def test_subscriber_duplicates_keep_the_earliest_date(tmp_path):
    subs = "S1,2024-02-20\nS1,2024-02-10\nS1,2024-02-25\n"
    txs = "2024-02-15T00:00:00Z,S1,1,SMS\n2024-02-09T23:59:59Z,S1,1,SMS\n"
    m = run(tmp_path, subs, txs)
    assert sub_outcomes(m) == {"duplicate": 2, "inserted": 1}
    assert tx_outcomes(m) == {"published": 1, "before_activation": 1}


def test_subscriber_duplicates_are_counted_among_valid_rows_only(tmp_path):
    m = run(tmp_path, "S1,2024-02-30\nS1,2024-02-30\nS1,2024-01-01\n", "")
    assert sub_outcomes(m) == {"invalid_activation_date": 2, "inserted": 1}


def test_sub_id_is_case_sensitive(tmp_path):
    m = run(tmp_path, "S1,2024-01-01\ns1,2024-01-01\n", "2024-02-29T10:00:00Z,s2,1,SMS\n")
    assert m["subscribers_inserted"] == 2 and m["subscribers_duplicate"] == 0
    assert tx_outcomes(m) == {"pending": 1}


# --------------------------------------------------------------------------
# Transactions: rules 2-5 and their order
# --------------------------------------------------------------------------

@pytest.mark.parametrize("ts", [
    "2023-02-29T10:00:00Z",         # not a leap year
    "2024-02-30T10:00:00Z",
    "2024-13-01T10:00:00Z",
    "0000-06-01T10:00:00Z",         # year 0000 [8]
    "2024-02-29T24:00:00Z",         # hour 24 [9]
    "2024-02-29T10:60:00Z",
    "2024-02-29T10:00:60Z",         # no leap second
    "2024-02-29t10:00:00Z",         # T upper case only
    "2024-02-29T10:00:00z",
    "2024-02-29  10:00:00",         # exactly one space
    "2024-02-29T10:00",
    "2024-02-29",
    "2024-02-29T10:00:00.",
    "2024-02-29T10:00:00.1234567",  # > 6 fraction digits
    "2024-02-29T10:00:00+18:01",    # beyond +18:00 [9]
    "2024-02-29T10:00:00-19:00",
    "2024-02-29T10:00:00+05:60",
    "2024-02-29T10:00:00+0500",
    "2024-02-29T10:00:00+05",
    "2024-02-29T10:00:00 Z",
    "2024-02-29T10:00:00Z+01:00",
    "2024-2-29T10:00:00Z",
    "",
])
def test_invalid_timestamp(tmp_path, ts):
    assert tx_fate(tmp_path, f"{ts},S1,1,SMS") == "invalid_timestamp"


@pytest.mark.parametrize("ts", [
    "2024-02-29T10:00:00", "2024-02-29 10:00:00", "2024-02-29T10:00:00Z", "2024-02-29T10:00:00.1",
    "2024-02-29T10:00:00.123456Z", "2024-02-29T10:00:00+18:00", "2024-02-29T10:00:00-18:00",
    "2024-02-29T10:00:00+05:30", "2024-02-29 23:59:59.999999-00:00",
])
def test_valid_timestamp_forms(tmp_path, ts):
    assert tx_fate(tmp_path, f"{ts},S1,1,SMS") == "published"


@pytest.mark.parametrize("amount", [
    "0", "0.0", "0.0000", "00", "-1", "+1", "1e5", "1E5", "1,000", "1.12345", ".5", "5.", "1..5",
    "123456789012345", "", "1 0", "١", "0x10", "NaN", "Infinity",
])
def test_invalid_amount(tmp_path, amount):
    field = f'"{amount}"' if "," in amount else amount
    assert tx_fate(tmp_path, f"2024-02-29T10:00:00Z,S1,{field},SMS") == "invalid_amount"


@pytest.mark.parametrize("amount", ["1", "0.0001", "007.50", "99999999999999.9999", "12345678901234"])
def test_valid_amount(tmp_path, amount):
    assert tx_fate(tmp_path, f"2024-02-29T10:00:00Z,S1,{amount},SMS") == "published"


@pytest.mark.parametrize("channel", ["FAX", "", "S MS", "SMS.", "ＳＭＳ", "ßms", "ussd\u00a0"])
def test_invalid_channel(tmp_path, channel):
    assert tx_fate(tmp_path, f"2024-02-29T10:00:00Z,S1,1,{channel}") == "invalid_channel"


@pytest.mark.parametrize("channel", ["SMS", "sms", "Ussd", " app ", "\tweb\x0c", "ſms", "uſſd"])
def test_valid_channel_is_trimmed_and_upper_cased(tmp_path, channel):
    # ſ (long s) upper-cases to S as in Python/Java; DuckDB alone would agree,
    # but ß -> SS (above) it would not.
    assert tx_fate(tmp_path, f"2024-02-29T10:00:00Z,S1,1,{channel}") == "published"


def test_allowed_channels_are_configurable(tmp_path):
    assert tx_fate(tmp_path, "2024-02-29T10:00:00Z,S1,1,SMS", allowed_channels=["app"]) == "invalid_channel"
    assert tx_fate(tmp_path, "2024-02-29T10:00:00Z,S1,1,app", allowed_channels="APP, fax") == "published"
    assert tx_fate(tmp_path, "2024-02-29T10:00:00Z,S1,1,SSMS", allowed_channels=["ßms"]) == "published"


@pytest.mark.parametrize("line, reason", [
    ("2024-02-30T10:00:00Z,bad id,-1,FAX", "invalid_timestamp"),
    ("2024-02-29T10:00:00Z,bad id,-1,FAX", "invalid_sub_id"),
    ("2024-02-29T10:00:00Z,S1,-1,FAX", "invalid_amount"),
    ("2024-02-29T10:00:00Z,S9,1,FAX", "invalid_channel"),          # checked before matching
    ("2024-02-29T10:00:00Z,S1,1,FAX,", "malformed_row"),
])
def test_transaction_rules_apply_in_order(tmp_path, line, reason):
    assert tx_fate(tmp_path, line) == reason


@pytest.mark.parametrize("sub_id", ["_S", "S" * 65, "S 1"])
def test_transaction_invalid_sub_id(tmp_path, sub_id):
    assert tx_fate(tmp_path, f"2024-02-29T10:00:00Z,{sub_id},1,SMS") == "invalid_sub_id"


# --------------------------------------------------------------------------
# Duplicates [16]
# --------------------------------------------------------------------------

def test_cross_format_normalised_duplicates_collapse(tmp_path):
    txs = "\n".join([
        "2024-02-29T10:00:00Z,S1,10.5,SMS",
        "2024-02-29 10:00:00,S1,10.50,sms",
        "2024-02-29T11:30:00+01:30,S1,010.5000,Sms",
        "2024-02-29T09:00:00.000000-01:00,S1, 10.5 ,\tSMS",
        '"2024-02-29T10:00:00.0Z","S1","10.5","sms"',
    ]) + "\n"
    assert tx_outcomes(run(tmp_path, BASE_SUBS, txs)) == {"duplicate": 4, "published": 1}


def test_duplicates_across_midnight_by_zone(tmp_path):
    txs = "2024-02-29T23:30:00-01:00,S1,1,SMS\n2024-03-01T00:30:00Z,S1,1,SMS\n"
    assert tx_outcomes(run(tmp_path, BASE_SUBS, txs)) == {"duplicate": 1, "published": 1}


@pytest.mark.parametrize("other", [
    "2024-02-29T10:00:00.000001Z,S1,1,SMS",     # one microsecond later
    "2024-02-29T10:00:00Z,S2,1,SMS",
    "2024-02-29T10:00:00Z,s1,1,SMS",            # sub_id case sensitive
    "2024-02-29T10:00:00Z,S1,1.0001,SMS",
    "2024-02-29T10:00:00Z,S1,1,USSD",
])
def test_not_duplicates(tmp_path, other):
    m = run(tmp_path, BASE_SUBS + "s1,2024-01-01\n", "2024-02-29T10:00:00Z,S1,1,SMS\n" + other + "\n")
    assert m["transactions_duplicate"] == 0 and m["published"] == 2


def test_duplicates_only_among_valid_rows(tmp_path):
    txs = "2024-02-29T10:00:00Z,S1,1,FAX\n" * 3
    assert tx_outcomes(run(tmp_path, BASE_SUBS, txs)) == {"invalid_channel": 3}


def test_duplicate_of_an_expired_or_pending_row_is_a_duplicate(tmp_path):
    txs = ("2024-01-01T00:00:00Z,S9,1,SMS\n" * 2) + ("2024-02-29T00:00:00Z,S9,1,SMS\n" * 3)
    assert tx_outcomes(run(tmp_path, BASE_SUBS, txs)) == {"unmatched_expired": 1, "pending": 1, "duplicate": 3}


# --------------------------------------------------------------------------
# Unmatched: expired vs pending [14]; before_activation [15]
# --------------------------------------------------------------------------

@pytest.mark.parametrize("ts, fate", [
    ("2024-02-23T00:00:00Z", "pending"),                      # exactly at the cutoff
    ("2024-02-23T00:00:00", "pending"),
    ("2024-02-23T01:00:00+01:00", "pending"),                 # = cutoff in UTC
    ("2024-02-22T23:59:59.999999Z", "unmatched_expired"),     # 1 us before
    ("2024-02-23T00:30:00+01:00", "unmatched_expired"),       # 2024-02-22T23:30Z
    ("2024-02-22T23:30:00-01:00", "pending"),                 # 2024-02-23T00:30Z
    ("2024-03-05T00:00:00Z", "pending"),                      # future: still pending
])
def test_unmatched_expiry_boundary(tmp_path, ts, fate):
    assert tx_fate(tmp_path, f"{ts},S9,1,SMS") == fate


def test_pending_ttl_days_is_configurable(tmp_path):
    assert tx_fate(tmp_path, "2024-02-29T23:59:59Z,S9,1,SMS", pending_ttl_days=0) == "unmatched_expired"
    assert tx_fate(tmp_path, "2024-03-01T00:00:00Z,S9,1,SMS", pending_ttl_days=0) == "pending"
    assert tx_fate(tmp_path, "2024-01-01T00:00:00Z,S9,1,SMS", pending_ttl_days=100) == "pending"


def test_batch_b_has_the_same_cutoff_as_a(tmp_path):
    assert tx_fate(tmp_path, "2024-02-22T23:59:59Z,S9,1,SMS", batch="2024-03-01_b") == "unmatched_expired"


def test_unmatched_is_decided_after_the_subscriber_merge(tmp_path):
    # S3 arrives in the same batch as its transaction; S4's row is invalid
    subs = BASE_SUBS + "S3,2024-02-01\nS4,2024-02-30\n"
    txs = "2024-02-29T10:00:00Z,S3,1,SMS\n2024-02-29T10:00:00Z,S4,1,SMS\n"
    assert tx_outcomes(run(tmp_path, subs, txs)) == {"published": 1, "pending": 1}


@pytest.mark.parametrize("ts, fate", [
    ("2024-02-09T23:59:59.999999Z", "before_activation"),
    ("2024-02-10T00:00:00Z", "published"),                    # on the activation date
    ("2024-02-10T00:30:00+01:00", "before_activation"),       # UTC date 2024-02-09
    ("2024-02-09T23:30:00-01:00", "published"),               # UTC date 2024-02-10
    ("2023-12-31T23:59:59Z", "before_activation"),            # long ago: matched, so not expired
])
def test_before_activation_uses_the_utc_date(tmp_path, ts, fate):
    assert tx_fate(tmp_path, f"{ts},S2,1,SMS") == fate


# --------------------------------------------------------------------------
# Conservation laws and output
# --------------------------------------------------------------------------

MIXED_SUBS = (
    "\ufeffS1,2024-01-01\r\nS2,2024-02-10\nS2,2024-02-01\n\nbad id,2024-01-01\nS3,2024-02-30\n"
    "S4\n \n\"S5\",\"2024-02-29\"\n\"S6\n"
)
MIXED_TXS = (
    "2024-02-29T10:00:00Z,S1,10.5,sms\r\n2024-02-29 10:00:00,S1,10.50,SMS\n\n"
    "2024-02-30T00:00:00Z,S1,1,SMS\n2024-02-29T10:00:00Z,_x,1,SMS\n2024-02-29T10:00:00Z,S1,0,SMS\n"
    "2024-02-29T10:00:00Z,S1,1,fax\n2024-01-31T23:59:59Z,S2,1,APP\n2024-01-01T00:00:00Z,S9,1,WEB\n"
    "2024-02-28T00:00:00Z,S9,1,WEB\n\"2024-02-29T10:00:00Z\",S5,\"1,5\",SMS\nx\n\t\n"
)


def test_conservation_laws_hold(tmp_path):
    m = run(tmp_path, MIXED_SUBS, MIXED_TXS)
    assert m["subscribers_input"] == (sum(m["subscribers_rejected"].values()) + m["subscribers_duplicate"]
                                      + m["subscribers_inserted"] + m["subscribers_updated"]
                                      + m["subscribers_unchanged"])
    assert m["transactions_input"] + m["pending_in"] == (sum(m["transactions_rejected"].values())
                                                         + m["transactions_duplicate"] + m["published"]
                                                         + m["pending_out"])
    assert (m["subscribers_input"], m["transactions_input"]) == (9, 12)
    assert sub_outcomes(m) == {"malformed_row": 3, "invalid_sub_id": 1, "invalid_activation_date": 1,
                               "duplicate": 1, "inserted": 3}
    assert tx_outcomes(m) == {"malformed_row": 2, "invalid_timestamp": 1, "invalid_sub_id": 1,
                              "invalid_amount": 2, "invalid_channel": 1, "before_activation": 1,
                              "unmatched_expired": 1, "duplicate": 1, "published": 1, "pending": 1}


def test_check_conservation_detects_a_lost_row(tmp_path):
    m = run(tmp_path, MIXED_SUBS, MIXED_TXS)
    check_conservation(m)
    with pytest.raises(ValueError, match="transaction"):
        check_conservation(dict(m, published=m["published"] - 1))
    with pytest.raises(ValueError, match="subscriber"):
        check_conservation(dict(m, subscribers_inserted=m["subscribers_inserted"] + 1))


def test_published_parquet_columns_and_values(tmp_path):
    subs = "S1,2024-01-01\nS2,0999-02-03\n"
    txs = ("2024-02-29T23:30:00.25-01:30,S1,007.5,sms\n2024-02-29T10:00:00Z,S2,1,ſms\n"
           "2024-02-29T10:00:00Z,S9,1,SMS\n")
    out = tmp_path / "out"
    m = run_reference(write_batch(tmp_path / "land", subs, txs), BATCH, output_dir=out)
    assert m["published"] == 2
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    path = str(out / "published.parquet")
    schema = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()}
    assert schema == {"timestamp": "TIMESTAMP WITH TIME ZONE", "sub_row_key": "VARCHAR", "sub_id": "VARCHAR",
                      "amount": "DECIMAL(18,4)", "channel": "VARCHAR", "activation_date": "DATE"}
    rows = con.execute(f"SELECT * FROM '{path}' ORDER BY sub_id").fetchall()
    utc = dt.timezone.utc
    assert rows == [
        (dt.datetime(2024, 3, 1, 1, 0, 0, 250000, tzinfo=utc), "S1_20240101", "S1", Decimal("7.5000"), "SMS",
         dt.date(2024, 1, 1)),
        (dt.datetime(2024, 2, 29, 10, 0, tzinfo=utc), "S2_09990203", "S2", Decimal("1.0000"), "SMS",
         dt.date(999, 2, 3)),
    ]


def test_large_generated_file_agrees_with_itself_on_both_read_paths(tmp_path):
    """The fast reader and the Python rewrite give the same result."""
    import random

    rnd = random.Random(7)
    subs = "".join(f"S{i},2024-0{rnd.randint(1, 2)}-{rnd.randint(10, 28)}\n" for i in range(300))
    channels = ["sms", "APP", " web", "fax", '"USSD"']
    eols = ["\n", "\r\n"]
    rows = []
    for _ in range(3000):
        ts = f"2024-02-{rnd.randint(15, 29):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00"
        ts += rnd.choice(["", "Z", "+02:00", "-05:30", ".5"])
        rows.append(f"{ts},{rnd.choice(['', ' '])}S{rnd.randint(0, 350)},{rnd.randint(0, 30)}.{rnd.randint(0, 9)}"
                    f",{rnd.choice(channels)}{rnd.choice(eols)}")
    txs = "".join(rows + rows[:200])
    fast = run(tmp_path / "a", subs, txs)
    slow = run(tmp_path / "b", subs, txs + "\x01\n")       # \x01 forces the rewrite path
    slow["transactions_input"] -= 1
    slow["transactions_rejected"]["malformed_row"] -= 1
    assert fast == slow
    assert fast["published"] > 1000 and fast["transactions_duplicate"] > 100
