"""Tests of the synthetic data generator ``optasia_datagen``.

The generator's claims (which reason each dirty row gets, what is published,
pending, expired) are checked against a small independent reading of
``docs/data-contract.md`` + ``docs/data-contract-notes.md`` written here in plain
Python (``_Oracle``), not against the generator's own code.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

import optasia_datagen as datagen

REPO = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc

# --------------------------------------------------------------------------
# An independent reading of the contract
# --------------------------------------------------------------------------

WS = " \t\r\n\f\v"
SUB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
TS_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                   r"(?:\.([0-9]{1,6}))?(Z|[+-][0-9]{2}:[0-9]{2})?", re.ASCII)
AMOUNT_RE = re.compile(r"[0-9]{1,14}(?:\.[0-9]{1,4})?", re.ASCII)
CHANNELS = ("SMS", "USSD", "APP", "WEB")
# docs/data-contract.md: a line over max_line_bytes (UTF-8, line ending excluded;
# default 1,048,576) is a malformed_row without being cut into fields
MAX_LINE_BYTES = 1_048_576


def _line_fields(line: str, max_line_bytes=MAX_LINE_BYTES):
    """One line (without its ending) -> "" when empty, its fields, or None when unparseable."""
    if line.startswith("\ufeff"):
        line = line[1:]
    if line == "":
        return ""
    if len(line) * 4 > max_line_bytes and len(line.encode("utf-8")) > max_line_bytes:
        return None                      # over the bound: not cut into fields
    limit = csv.field_size_limit(sys.maxsize)     # notes #19: a field may be as long as its line
    try:
        parsed = list(csv.reader([line], strict=True))
    except csv.Error:
        parsed = None
    finally:
        csv.field_size_limit(limit)
    return parsed[0] if parsed and len(parsed) == 1 else None


def split_lines(data: bytes, max_line_bytes=MAX_LINE_BYTES):
    """(rows as field lists or None when unparseable, number of empty lines)."""
    text = data.decode("utf-8")
    parts = re.split(r"\r\n|\n|\r", text)
    if parts and parts[-1] == "":
        parts.pop()                      # text after the last line ending
    rows, empty = [], 0
    for line in parts:
        fields = _line_fields(line, max_line_bytes)
        if fields == "":
            empty += 1
        else:
            rows.append(fields)
    return rows, empty


def read_rows(path: Path, max_line_bytes=MAX_LINE_BYTES):
    """The rows of a file as split_lines gives them, streamed line by line (a file
    of hostile lines is hundreds of MB)."""
    with open(path, "rb") as f:
        for raw in f:                    # ends at each LF; a lone CR also ends a line
            for line in re.split(r"\r\n|\n|\r", raw.decode("utf-8")):
                fields = _line_fields(line, max_line_bytes) if line else ""
                if fields != "":
                    yield fields


def parse_date(text):
    m = DATE_RE.fullmatch(text)
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def parse_ts(text):
    m = TS_RE.fullmatch(text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(m[i]) for i in range(1, 7))
    if h > 23 or mi > 59 or s > 59:
        return None
    try:
        base = dt.datetime(y, mo, d, h, mi, s, int((m[7] or "").ljust(6, "0")), tzinfo=UTC)
    except ValueError:
        return None
    zone = m[8]
    if zone in (None, "Z"):
        return base
    hh, mm = int(zone[1:3]), int(zone[4:6])
    if hh > 18 or mm > 59 or hh * 60 + mm > 18 * 60:
        return None
    off = dt.timedelta(hours=hh, minutes=mm)
    return base - off if zone[0] == "+" else base + off


def classify_sub(fields, batch_date):
    if fields is None or len(fields) != 2:
        return "malformed_row"
    sid, date = (f.strip(WS) for f in fields)
    if not SUB_RE.fullmatch(sid):
        return "invalid_sub_id"
    d = parse_date(date)
    if d is None or d > batch_date:
        return "invalid_activation_date"
    return sid, d


def classify_tx(fields, channels=CHANNELS):
    if fields is None or len(fields) != 4:
        return "malformed_row"
    ts, sid, amount, channel = (f.strip(WS) for f in fields)
    utc = parse_ts(ts)
    if utc is None:
        return "invalid_timestamp"
    if not SUB_RE.fullmatch(sid):
        return "invalid_sub_id"
    if not AMOUNT_RE.fullmatch(amount) or Decimal(amount) <= 0:
        return "invalid_amount"
    if channel.upper() not in channels:
        return "invalid_channel"
    return (utc, sid, Decimal(amount), channel.upper())


class _Oracle:
    """Subscriber store + pending table across batches, as the contract says."""

    def __init__(self, ttl=7, max_line_bytes=MAX_LINE_BYTES):
        self.store: dict[str, dt.date] = {}
        self.pending: dict[tuple, str] = {}       # key -> batch id
        self.ttl = ttl
        self.max_line_bytes = max_line_bytes

    def run(self, landing: Path, batch_id: str) -> Counter:
        batch_date = dt.date.fromisoformat(batch_id[:10])
        folder = landing / batch_id
        m = Counter()
        valid: dict[str, dt.date] = {}
        for fields in read_rows(folder / "subscribers.csv", self.max_line_bytes):
            m["subscribers_input"] += 1
            r = classify_sub(fields, batch_date)
            if isinstance(r, str):
                m["subscribers_rejected." + r] += 1
            elif r[0] in valid:
                m["subscribers_duplicate"] += 1
                valid[r[0]] = min(valid[r[0]], r[1])
            else:
                valid[r[0]] = r[1]
        for sid, d in valid.items():
            if sid not in self.store:
                self.store[sid] = d
                m["subscribers_inserted"] += 1
            elif d < self.store[sid]:
                self.store[sid] = d
                m["subscribers_updated"] += 1
            else:
                m["subscribers_unchanged"] += 1

        cutoff = dt.datetime.combine(batch_date, dt.time(), UTC) - dt.timedelta(days=self.ttl)
        new: dict[tuple, str] = {}
        for fields in read_rows(folder / "transactions.csv", self.max_line_bytes):
            m["transactions_input"] += 1
            r = classify_tx(fields)
            if isinstance(r, str):
                m["transactions_rejected." + r] += 1
            elif r in self.pending or r in new:
                m["transactions_duplicate"] += 1
            else:
                new[r] = batch_id
        m["pending_in"] = len(self.pending)
        out = {}
        for source, group in (("pending", self.pending), ("new", new)):
            for key, origin in group.items():
                utc, sid = key[0], key[1]
                if sid in self.store:
                    if utc.date() < self.store[sid]:
                        m["transactions_rejected.before_activation"] += 1
                        m[source + ".before_activation"] += 1
                    else:
                        m["published"] += 1
                        m[source + ".published"] += 1
                elif utc < cutoff:
                    m["transactions_rejected.unmatched_expired"] += 1
                    m[source + ".unmatched_expired"] += 1
                else:
                    out[key] = origin
        self.pending = out
        m["pending_out"] = len(out)
        m["pending_resolved"] = m["pending.published"]
        # the conservation laws
        rej = sum(v for k, v in m.items() if k.startswith("subscribers_rejected."))
        assert m["subscribers_input"] == (rej + m["subscribers_duplicate"] + m["subscribers_inserted"]
                                          + m["subscribers_updated"] + m["subscribers_unchanged"])
        rej = sum(v for k, v in m.items() if k.startswith("transactions_rejected."))
        assert m["transactions_input"] + m["pending_in"] == (
            rej + m["transactions_duplicate"] + m["published"] + m["pending_out"])
        return m


def expected_as_counter(summary) -> Counter:
    e = summary["expected"]
    s, t = e["subscribers"], e["transactions"]
    c = Counter(subscribers_input=s["input"], subscribers_duplicate=s["duplicate"],
                subscribers_inserted=s["inserted"], subscribers_updated=s["updated"],
                subscribers_unchanged=s["unchanged"], transactions_input=t["input"],
                transactions_duplicate=t["duplicate"], published=t["published"],
                pending_new=t["pending_new"])
    for r, n in s["rejected"].items():
        c["subscribers_rejected." + r] = n
    for r, n in t["rejected"].items():
        c["transactions_rejected." + r] = n
    return +c


def oracle_as_counter(m: Counter) -> Counter:
    keys = ("subscribers_input", "subscribers_duplicate", "subscribers_inserted",
            "subscribers_updated", "subscribers_unchanged", "transactions_input",
            "transactions_duplicate")
    c = Counter({k: m[k] for k in keys})
    c.update({k: v for k, v in m.items() if k.startswith("subscribers_rejected.")})
    # rows of this batch's own file only
    c["published"] = m["new.published"]
    c["pending_new"] = m["pending_out"] - (m["pending_in"] - m["pending.published"]
                                           - m["pending.before_activation"]
                                           - m["pending.unmatched_expired"])
    for r in ("malformed_row", "invalid_timestamp", "invalid_sub_id", "invalid_amount",
              "invalid_channel"):
        c["transactions_rejected." + r] = m["transactions_rejected." + r]
    c["transactions_rejected.before_activation"] = m["new.before_activation"]
    c["transactions_rejected.unmatched_expired"] = m["new.unmatched_expired"]
    return +c


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def gen(landing: Path, batch_id="2024-03-01_a", *extra, subscribers=200, transactions=2000,
        dirty=0.2, seed=7, capsys=None):
    """Run the CLI in process with --summary; return the parsed summary."""
    argv = ["--landing", str(landing), "--batch-id", batch_id, "--subscribers", str(subscribers),
            "--transactions", str(transactions), "--dirty-share", str(dirty), "--seed", str(seed),
            "--summary", "--quiet", *extra]
    assert capsys is not None
    capsys.readouterr()
    rc = datagen.main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def exit_code(argv) -> int:
    try:
        return datagen.main(argv)
    except SystemExit as e:           # argparse errors
        return e.code


def files(landing: Path, batch_id="2024-03-01_a"):
    d = landing / batch_id
    return (d / "subscribers.csv").read_bytes(), (d / "transactions.csv").read_bytes()


def make_gen(tmp_path, *extra, cls=datagen.TransactionGen):
    ns = datagen.build_parser().parse_args(
        ["--landing", str(tmp_path), "--batch-id", "2024-03-01_b", "--subscribers", "100",
         "--transactions", "1000", "--seed", "3", *extra])
    cfg = datagen.Config(ns)
    return cls(cfg, datagen._Calendar(cfg.batch_date, cfg.ttl))


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_or_batch_differs(tmp_path, capsys):
    gen(tmp_path / "a", capsys=capsys)
    gen(tmp_path / "b", capsys=capsys)
    gen(tmp_path / "c", seed=8, capsys=capsys)
    gen(tmp_path / "d", "2024-03-01_b", capsys=capsys)
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert a == b and len(a[1]) > 10_000
    c = files(tmp_path / "c")
    assert c[0] != a[0] and c[1] != a[1]
    d = files(tmp_path / "d", "2024-03-01_b")
    assert d[0] != a[0] and d[1] != a[1]


def test_global_random_state_is_not_used(tmp_path, capsys):
    import random
    random.seed(1)
    gen(tmp_path / "a", capsys=capsys)
    random.seed(2)
    state = random.getstate()
    gen(tmp_path / "b", capsys=capsys)
    assert random.getstate() == state
    assert files(tmp_path / "a") == files(tmp_path / "b")


def test_every_dirty_kind_and_edge_appears(tmp_path, capsys):
    s = gen(tmp_path, subscribers=2000, transactions=2000, dirty=0.2, capsys=capsys)
    assert set(s["subscribers"]["dirty"]) == set(datagen.SUB_DIRTY_KINDS)
    assert set(s["transactions"]["dirty"]) == set(datagen.TX_DIRTY_KINDS)
    assert s["subscribers"]["dirty_total"] == 400
    assert s["transactions"]["dirty_total"] == 400
    # spread evenly over the reasons
    for section in ("subscribers", "transactions"):
        by_reason = s[section]["dirty_by_reason"].values()
        assert max(by_reason) - min(by_reason) <= 1
    assert s["subscribers"]["edges"]["activation_on_feb_29"] > 0
    assert s["subscribers"]["edges"]["activation_on_batch_date"] > 0
    for edge in ("orphan_expired_1us_before_cutoff", "orphan_pending_at_cutoff"):
        assert s["transactions"]["edges"][edge] > 0
    sub_bytes, tx_bytes = files(tmp_path)
    assert b",2024-02-29\n" in sub_bytes or b",2024-02-29\r\n" in sub_bytes


@pytest.mark.parametrize("kind", sorted(k for k, r in datagen.TX_DIRTY_KINDS.items()
                                        if r not in ("duplicate", "before_activation")))
def test_each_transaction_variant_gets_its_reason(tmp_path, kind):
    g = make_gen(tmp_path)
    for _ in range(25):                     # variants have random sub-variants
        rows, _ = split_lines((g.dirty_line(kind) + "\n").encode())
        assert len(rows) == 1
        assert classify_tx(rows[0]) == datagen.TX_DIRTY_KINDS[kind], g.dirty_line(kind)


@pytest.mark.parametrize("kind", sorted(k for k, r in datagen.SUB_DIRTY_KINDS.items()
                                        if r != "duplicate"))
def test_each_subscriber_variant_gets_its_reason(tmp_path, kind):
    g = make_gen(tmp_path, cls=datagen.SubscriberGen)
    for _ in range(25):
        rows, _ = split_lines((g.dirty_line(kind) + "\r\n").encode())
        assert len(rows) == 1
        assert classify_sub(rows[0], dt.date(2024, 3, 1)) == datagen.SUB_DIRTY_KINDS[kind]


def test_oracle_agrees_with_the_summary_single_batch(tmp_path, capsys):
    s = gen(tmp_path, subscribers=2000, transactions=4000, dirty=0.2, capsys=capsys)
    m = _Oracle().run(tmp_path, "2024-03-01_a")
    assert oracle_as_counter(m) == expected_as_counter(s)
    t = s["transactions"]
    assert m["published"] == t["clean"]
    assert m["transactions_duplicate"] == t["dirty"]["dup_renormalised"]
    assert m["transactions_rejected.unmatched_expired"] == t["orphan_expired"]
    assert m["pending_out"] == t["late"] + t["orphan_pending"]


def test_multi_batch_late_rows_resolve_and_orphans_expire(tmp_path, capsys):
    o = _Oracle()
    a = gen(tmp_path, "2024-03-01_a", "--late-share", "0.05", "--orphan-share", "0.02",
            subscribers=300, transactions=3000, dirty=0.05, seed=1, capsys=capsys)
    ma = o.run(tmp_path, "2024-03-01_a")
    assert oracle_as_counter(ma) == expected_as_counter(a)
    assert a["late_ids"] == [300, 600] and a["next_first_subscriber"] == 300

    b = gen(tmp_path, "2024-03-01_b", "--first-subscriber", "300", "--resend-share", "0.2",
            "--late-share", "0.05", subscribers=300, transactions=3000, dirty=0.05, seed=2,
            capsys=capsys)
    mb = o.run(tmp_path, "2024-03-01_b")
    assert oracle_as_counter(mb) == expected_as_counter(b)
    assert mb["pending_resolved"] == a["transactions"]["late"] > 0
    assert mb["pending.before_activation"] == 0
    assert mb["subscribers_updated"] == b["subscribers"]["resend_earlier"] == 30
    assert mb["subscribers_unchanged"] == b["subscribers"]["resend_later"] == 30

    c = gen(tmp_path, "2024-03-02_a", "--first-subscriber", "600", subscribers=300,
            transactions=3000, dirty=0.05, seed=3, capsys=capsys)
    mc = o.run(tmp_path, "2024-03-02_a")
    assert oracle_as_counter(mc) == expected_as_counter(c)
    assert mc["pending_resolved"] == b["transactions"]["late"]
    assert mc["pending.before_activation"] == 0

    # much later, with no new subscribers: every pending row has expired
    gen(tmp_path, "2024-03-20_a", "--first-subscriber", "900", subscribers=0,
        transactions=100, dirty=0.0, capsys=capsys)
    md = o.run(tmp_path, "2024-03-20_a")
    assert md["pending_in"] > 0
    assert md["pending.unmatched_expired"] == md["pending_in"]


def test_id_ranges(tmp_path, capsys):
    s = gen(tmp_path, "2024-03-01_a", "--first-subscriber", "1000", "--late-share", "0.1",
            "--orphan-share", "0.1", subscribers=500, transactions=3000, dirty=0.0, capsys=capsys)
    sub_rows, _ = split_lines(files(tmp_path)[0])
    ids = sorted(int(classify_sub(f, dt.date(2024, 3, 1))[0][3:]) for f in sub_rows)
    assert ids == list(range(1000, 1500))
    tx_rows, _ = split_lines(files(tmp_path)[1])
    late = orphan = known = 0
    orphan_times = []
    for f in tx_rows:
        utc, sid, _, _ = classify_tx(f)
        n = int(sid[3:]) if re.fullmatch(r"SUB[0-9]{9}", sid) else None
        if n is not None and n < 1500:
            known += 1
        elif n is not None and 1500 <= n < 2000:
            late += 1
            assert utc >= dt.datetime(2024, 3, 1, tzinfo=UTC)
        else:
            assert n is None or n >= datagen.ORPHAN_BASE
            orphan += 1
            orphan_times.append(utc)
    assert late == s["transactions"]["late"] == 300
    assert orphan == 300 and known == 2400
    cutoff = dt.datetime(2024, 2, 23, tzinfo=UTC)
    assert sum(t < cutoff for t in orphan_times) == s["transactions"]["orphan_expired"] == 150
    assert cutoff in orphan_times                            # boundary edge: stays pending
    assert cutoff - dt.timedelta(microseconds=1) in orphan_times


def test_line_counts_and_no_extra_files(tmp_path, capsys):
    s = gen(tmp_path, "2024-03-01_a", "--empty-line-share", "0.05", "--resend-share", "0.1",
            "--first-subscriber", "50", subscribers=400, transactions=1500, dirty=0.1,
            capsys=capsys)
    sub_bytes, tx_bytes = files(tmp_path)
    sub_rows, sub_empty = split_lines(sub_bytes)
    tx_rows, tx_empty = split_lines(tx_bytes)
    assert len(tx_rows) == 1500 == s["transactions"]["rows"]
    assert len(sub_rows) == 400 + 40 + 40 == s["subscribers"]["rows"]
    assert sub_empty == s["subscribers"]["empty_lines"] > 0
    assert tx_empty == s["transactions"]["empty_lines"] > 0
    assert tx_bytes.count(b"\n") == 1500 + tx_empty
    assert sub_bytes.endswith(b"\n") and tx_bytes.endswith(b"\n")
    assert b"\r" not in tx_bytes.replace(b"\r\n", b"")
    assert sorted(os.listdir(tmp_path / "2024-03-01_a")) == ["_READY", "subscribers.csv", "transactions.csv"]
    folder = tmp_path / "2024-03-01_a"   # the marker is written last, after both files
    assert (folder / "_READY").stat().st_mtime >= max((folder / f).stat().st_mtime
                                                       for f in ("subscribers.csv", "transactions.csv"))
    assert s["subscribers"]["bytes"] == len(sub_bytes)


def test_crlf_quotes_padding_and_formats_present(tmp_path, capsys):
    s = gen(tmp_path, subscribers=1000, transactions=5000, dirty=0.0, capsys=capsys)
    sub_bytes, tx_bytes = files(tmp_path)
    for data, section in ((sub_bytes, "subscribers"), (tx_bytes, "transactions")):
        lines = data.split(b"\n")
        assert s[section]["crlf_rows"] > 0
        assert sum(line.endswith(b"\r") and line != b"\r" for line in lines) == s[section]["crlf_rows"]
        assert s[section]["quoted_rows"] > 0 and s[section]["padded_rows"] > 0
        assert any(line.startswith(b'"') or b',"' in line for line in lines)
    rows, _ = split_lines(tx_bytes)
    ts = [f[0].strip(WS) for f in rows]
    assert any("T" in t for t in ts) and any(t[10] == " " for t in ts)
    fractions = {len(m[1]) for t in ts if (m := re.search(r"\.([0-9]+)", t))}
    assert fractions == {1, 2, 3, 4, 5, 6}
    assert any(t.endswith("Z") for t in ts)
    assert any(re.search(r"\+[0-9]{2}:[0-9]{2}$", t) for t in ts)
    assert any(re.search(r"-[0-9]{2}:[0-9]{2}$", t) for t in ts)
    assert any(re.search(r":[0-9]{2}(\.[0-9]+)?$", t) for t in ts)     # no zone
    channels = {f[3] for f in rows}
    assert {"SMS", "sms", " SMS"} & channels and len(channels) > 8
    amounts = [f[2].strip(WS) for f in rows]
    assert {len(a.partition(".")[2]) for a in amounts} == {0, 1, 2, 3, 4}
    # no dirty rows asked: every row is valid (late/orphan rows at their default shares)
    results = [classify_tx(f) for f in rows]
    assert all(not isinstance(r, str) for r in results)
    assert len(set(results)) == len(results)              # no accidental duplicates
    sub_rows, _ = split_lines(sub_bytes)
    dates = [classify_sub(f, dt.date(2024, 3, 1))[1] for f in sub_rows]
    assert max(dates) == dt.date(2024, 3, 1)


def test_duplicates_are_renormalised_copies(tmp_path, capsys):
    gen(tmp_path, subscribers=100, transactions=3000, dirty=0.3, seed=5, capsys=capsys)
    rows, _ = split_lines(files(tmp_path)[1])
    seen: dict[tuple, list] = {}
    for f in rows:
        r = classify_tx(f)
        if not isinstance(r, str):
            seen.setdefault(r, []).append(f)
    dups = [v for v in seen.values() if len(v) > 1]
    assert dups
    # the copies are written differently from the original (zone, decimals, case...)
    assert sum(v[0] != v[1] for v in dups) >= 0.9 * len(dups)
    assert any(v[0][0].strip() != v[1][0].strip() for v in dups)
    assert any(v[0][2].strip() != v[1][2].strip() for v in dups)


def test_dup_line_keeps_the_key_of_its_original(tmp_path):
    g = make_gen(tmp_path)
    day0 = dt.datetime(2024, 3, 1, tzinfo=UTC)
    originals = [(-86_000, 0, 0, 7, 125_000, 0, 0, "SMS"),
                 (3_600, 5, 1, 8, 10_000 * (90_000_000_000_000 + 12), 1, 3600, "ussd"),
                 (86_399, 999_999, 6, 9, 1, 3, -64800, " WEB"),
                 (-1, 12, 2, 99, 99_999_999_999_999_9999, 2, 19800, "App")]
    for entry in originals:
        sec, f, p, k, n4, chi, _, _ = entry
        key = (day0 + dt.timedelta(seconds=sec, microseconds=f * 10 ** (6 - p)), "SUB%09d" % k,
               Decimal(n4) / 10000, CHANNELS[chi])
        g.ring[0], g.ring_n = entry, 1
        for _ in range(200):
            line = g._dup_line()
            rows, _ = split_lines(line.encode())
            assert classify_tx(rows[0]) == key, line


@pytest.mark.parametrize("extra", [["--empty"], ["--subscribers", "0", "--transactions", "0"]])
def test_empty_files(tmp_path, capsys, extra):
    s = gen(tmp_path, "2024-03-01_a", "--bom", *extra, capsys=capsys)
    d = tmp_path / "2024-03-01_a"
    assert (d / "subscribers.csv").stat().st_size == 0
    assert (d / "transactions.csv").stat().st_size == 0
    assert s["subscribers"]["rows"] == s["transactions"]["rows"] == 0


def test_bom_only_at_file_start(tmp_path, capsys):
    gen(tmp_path, "2024-03-01_a", "--bom", subscribers=50, transactions=50, capsys=capsys)
    for data in files(tmp_path):
        assert data.startswith("\ufeff".encode()) and data.count("\ufeff".encode()) == 1


def test_replace_and_no_clobber(tmp_path, capsys):
    s1 = gen(tmp_path, capsys=capsys)
    s2 = gen(tmp_path, capsys=capsys)
    assert not s1["replaced_existing"] and s2["replaced_existing"]
    rc = exit_code(["--landing", str(tmp_path), "--batch-id", "2024-03-01_a", "--no-clobber"])
    assert rc == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "2024-03-01_a")) == ["_READY", "subscribers.csv", "transactions.csv"]


@pytest.mark.parametrize("args, message", [
    (["--batch-id", "2024-03-01"], "batch-id"),
    (["--batch-id", "2024-03-01_c"], "batch-id"),
    (["--batch-id", "2023-02-29_a"], "real date"),
    (["--subscribers", "-1"], ">= 0"),
    (["--transactions", "x"], "integer"),
    (["--dirty-share", "1.5"], "[0, 1]"),
    (["--late-share", "-0.1"], "[0, 1]"),
    (["--orphan-share", "nan"], "[0, 1]"),
    (["--dirty-share", "0.6", "--late-share", "0.6"], "<= 1"),
    (["--channels", ","], "channels"),
    (["--subscribers", "0", "--first-subscriber", "0"], "need subscribers"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    argv = ["--landing", str(tmp_path), "--batch-id", "2024-03-01_a", *args]
    assert exit_code(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "2024-03-01_a").exists() or not os.listdir(tmp_path / "2024-03-01_a")


def test_unwritable_landing_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = exit_code(["--landing", str(blocker), "--batch-id", "2024-03-01_a"])
    assert rc == 2
    assert "cannot create" in capsys.readouterr().err


def test_cli_module_streams_with_small_memory(tmp_path):
    """300k transactions via ``python -m``: small, flat peak RSS; progress on stderr."""
    probe = ("import resource, sys; from optasia_datagen import main; rc = main(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
             "print('pyspark' in sys.modules); sys.exit(rc)")

    def run(n, landing):
        p = subprocess.run([sys.executable, "-c", probe, "--landing", str(landing),
                            "--batch-id", "2024-03-01_b", "--subscribers", str(n // 10),
                            "--transactions", str(n), "--seed", "1"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        rss_kb, pyspark = p.stdout.split()
        return int(rss_kb) / 1024, pyspark == "True", p.stderr

    small_mb, _, _ = run(30_000, tmp_path / "s")
    big_mb, pyspark, err = run(300_000, tmp_path / "b")
    assert not pyspark
    assert big_mb < 200, big_mb   # the budget: ~200 MB even for 10M rows
    assert big_mb - small_mb < 15, (small_mb, big_mb)      # does not grow with the rows
    assert "rows/s" in err and "100%" in err and "datagen: wrote" in err
    rows, _ = split_lines((tmp_path / "b" / "2024-03-01_b" / "transactions.csv").read_bytes())
    assert len(rows) == 300_000


def test_python_dash_m_entry_point(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "optasia_datagen", "--landing", str(tmp_path),
                               *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    ok = run("--batch-id", "2024-03-01_b", "--subscribers", "10", "--transactions", "100",
             "--summary")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["transactions"]["rows"] == 100
    assert "datagen: wrote" in ok.stderr
    bad = run("--batch-id", "2024-02-30_a")
    assert bad.returncode == 2 and "real date" in bad.stderr and not bad.stdout


def test_activation_date_is_monotone_and_shared(tmp_path):
    d1, d2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    for k in range(0, 5000, 7):
        a1, a2 = datagen.activation_date(k, d1), datagen.activation_date(k, d2)
        assert a1 <= a2 and a1 <= d1 and a2 <= d2
        assert d1 - a1 <= dt.timedelta(days=datagen.MAX_ACTIVATION_AGE_DAYS)


# --------------------------------------------------------------------------
# --hostile
# --------------------------------------------------------------------------

MB = 1_000_000
FIELD_REASONS = {
    "subscribers.csv": {"sub_id": "invalid_sub_id", "activation_date": "invalid_activation_date"},
    "transactions.csv": {"timestamp": "invalid_timestamp", "sub_id": "invalid_sub_id",
                         "amount": "invalid_amount", "channel": "invalid_channel"},
}
FIELD_ORDER = {f: list(r) for f, r in FIELD_REASONS.items()}
SMALL_CASES = "field-1mb,million-commas,unclosed-quote"
ALL_CASES = {"field-1mb", "field-8mb", "line-50mb", "million-commas", "last-line-20mb", "unclosed-quote"}


def raw_lines(path: Path):
    """(line without its ending, ending) of each physical line, streamed."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\r\n"):
                yield raw[:-2], b"\r\n"
            elif raw.endswith(b"\n"):
                yield raw[:-1], b"\n"
            else:
                yield raw, b""


def extra_lines(path: Path, plain: Path):
    """The lines of ``path`` that are not the lines of ``plain`` in order (these
    must be a subsequence of them): [(line, ending, ordinary lines before it)]."""
    ordinary = plain.read_bytes().splitlines(keepends=True)
    j, extra = 0, []
    for line, end in raw_lines(path):
        if j < len(ordinary) and line + end == ordinary[j]:
            j += 1
        else:
            extra.append((line, end, j))
    assert j == len(ordinary), "an ordinary line is missing or changed"
    return extra


def check_hostile_value(kind: str, raw: str, n: int):
    """The raw text of a hostile field of ``n`` characters of this kind."""
    assert len(raw) == n
    if kind == "digits":
        assert raw == "0123456789" * (n // 10)
    elif kind == "letters":
        assert raw == ("abcdefghijklmnopqrstuvwxyz" * (n // 26 + 1))[:n]
    elif kind == "quotes":
        assert raw == '"' + '""' * (n // 2 - 1) + '"'
    else:
        assert raw == '"' + "a," * (n // 2 - 1) + '"'


def check_field_line(file: str, field: str, kind: str, line: str, n: int):
    """A field-1mb/8mb line: its field is the hostile value, the others are valid
    (with a valid value in its place the row would pass every rule)."""
    names = FIELD_ORDER[file]
    i, after = names.index(field), len(names) - names.index(field) - 1
    # the other fields are short and have no comma: cut them off both ends
    head = line[:200].split(",", i)[:i]
    tail = line[-200:].rsplit(",", after)[1:] if after else []
    start = sum(len(f) + 1 for f in head)
    stop = len(line) - sum(len(f) + 1 for f in tail)
    check_hostile_value(kind, line[start:stop], n)
    good = {"sub_id": "SUB000000000", "activation_date": "2024-01-01",
            "timestamp": "2024-03-01T00:00:00Z", "amount": "1.50", "channel": "SMS"}[field]
    valid = head + [good] + tail
    if file == "subscribers.csv":
        assert not isinstance(classify_sub(valid, dt.date(2024, 3, 1)), str), line[:200]
    else:
        assert not isinstance(classify_tx(valid), str), line[:200]


def test_hostile_small_batch_agrees_with_the_oracle(tmp_path, capsys):
    args = dict(subscribers=300, transactions=3000, dirty=0.2)
    plain = gen(tmp_path / "plain", capsys=capsys, **args)
    s = gen(tmp_path / "h", "2024-03-01_a", "--hostile", SMALL_CASES, capsys=capsys, **args)
    m = _Oracle().run(tmp_path / "h", "2024-03-01_a")
    assert oracle_as_counter(m) == expected_as_counter(s)
    assert s["max_line_bytes"] == MAX_LINE_BYTES
    by_file = {f: [h for h in s["hostile"] if h["file"] == f] for f in FIELD_REASONS}
    assert len(by_file["subscribers.csv"]) == 8 + 1 + 1 and len(by_file["transactions.csv"]) == 16 + 1 + 1
    for section, f in (("subscribers", "subscribers.csv"), ("transactions", "transactions.csv")):
        hs = by_file[f]
        assert s[section]["hostile"] == len(hs)
        assert s[section]["rows"] == plain[section]["rows"] + len(hs)
        assert s["expected"][section]["input"] == plain["expected"][section]["input"] + len(hs)
        # the ordinary rows are the same; the hostile lines are added, each ending with LF
        extra = extra_lines(tmp_path / "h" / "2024-03-01_a" / f, tmp_path / "plain" / "2024-03-01_a" / f)
        assert [len(x[0]) for x in extra] == [h["bytes"] for h in hs]
        assert all(end == b"\n" for _, end, _ in extra)
        rows = plain[section]["rows"]
        for (line, _, before), h in zip(extra, hs, strict=True):
            text = line.decode("ascii")
            if h["case"] == "field-1mb":
                assert h["reason"] == FIELD_REASONS[f][h["field"]]
                check_field_line(f, h["field"], h["kind"], text, MB)
            elif h["case"] == "million-commas":
                assert text == "," * MB and h["bytes"] == MB and h["reason"] == "malformed_row"
            else:
                assert h["case"] == "unclosed-quote" and h["reason"] == "malformed_row"
                assert text.count('"') == 1 and _line_fields(text) is None
                assert rows - before >= rows / 2          # swallows half the file if misread
        # evenly spaced, first one after a row
        befores = [x[2] for x in extra]
        assert befores == sorted(befores) and befores[0] >= 1
        gaps = [b - a for a, b in zip([0] + befores[:-1], befores, strict=True)]
        assert max(gaps) - min(gaps) <= 0.1 * rows
    # deterministic
    again = gen(tmp_path / "again", "2024-03-01_a", "--hostile", "unclosed-quote,million-commas,field-1mb",
                capsys=capsys, **args)
    assert again["hostile"] == s["hostile"]
    assert files(tmp_path / "again") == files(tmp_path / "h")


def test_hostile_all(tmp_path):
    """--hostile all (~290 MB) via ``python -m``: small memory, the oracle agrees,
    the ordinary rows are unchanged, the last line has no line ending."""
    probe = ("import json, resource, sys; from optasia_datagen import main; rc = main(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")

    def run(landing, *extra):
        p = subprocess.run([sys.executable, "-c", probe, "--landing", str(landing), "--batch-id",
                            "2024-03-01_a", "--subscribers", "500", "--transactions", "5000",
                            "--seed", "4", "--summary", *extra],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        *_, final, rss_kb = p.stderr.splitlines()
        return json.loads(p.stdout), final, int(rss_kb) / 1024

    plain, _, plain_mb = run(tmp_path / "plain")
    s, final, hostile_mb = run(tmp_path / "h", "--hostile", "all")
    assert hostile_mb - plain_mb < 40, (plain_mb, hostile_mb)     # streamed, never a 50 MB str
    assert "54 hostile lines" in final
    hs = s["hostile"]
    assert {h["case"] for h in hs} == ALL_CASES
    assert len(hs) == 24 + 24 + 1 + 2 + 1 + 2
    total = sum(h["bytes"] for h in hs)
    assert 280 * MB < total < 300 * MB
    m = _Oracle().run(tmp_path / "h", "2024-03-01_a")
    assert oracle_as_counter(m) == expected_as_counter(s)
    for f in FIELD_REASONS:
        mine = [h for h in hs if h["file"] == f]
        extra = extra_lines(tmp_path / "h" / "2024-03-01_a" / f, tmp_path / "plain" / "2024-03-01_a" / f)
        assert [len(x[0]) for x in extra] == [h["bytes"] for h in mine]
        for (line, end, _), h in zip(extra, mine, strict=True):
            if h["case"] in ("field-1mb", "field-8mb"):
                n = MB if h["case"] == "field-1mb" else 8 * MB
                check_field_line(f, h["field"], h["kind"], line.decode("ascii"), n)
                assert h["reason"] == (FIELD_REASONS[f][h["field"]] if n == MB else "malformed_row")
            elif h["case"] == "line-50mb":
                assert f == "transactions.csv" and len(line) == 50 * MB and b"," not in line
                assert b'"' not in line and h["reason"] == "malformed_row"
            elif h["case"] == "last-line-20mb":
                assert len(line) == 20 * MB and end == b"" and h["reason"] == "malformed_row"
                assert not isinstance(classify_tx(line[:200].decode().split(",")[:3] + ["SMS"]), str)
            else:
                assert h["reason"] == "malformed_row"
            assert end == (b"" if h["case"] == "last-line-20mb" else b"\n")
    tx = (tmp_path / "h" / "2024-03-01_a" / "transactions.csv")
    with open(tx, "rb") as fh:
        fh.seek(-20 * MB - 1, os.SEEK_END)
        assert fh.read(1) == b"\n"                           # the line before still ends
    assert s["transactions"]["bytes"] == tx.stat().st_size


def test_last_line_without_newline(tmp_path, capsys):
    s = gen(tmp_path, "2024-03-01_a", "--hostile", "last-line-20mb", subscribers=50, transactions=100, capsys=capsys)
    (h,) = s["hostile"]
    assert h == {"case": "last-line-20mb", "file": "transactions.csv", "field": "channel",
                 "kind": "letters", "bytes": 20 * MB, "reason": "malformed_row", "after_row": 100}
    data = files(tmp_path)[1]
    last = data[data.rindex(b"\n") + 1:]
    assert len(last) == 20 * MB and not data.endswith(b"\n")
    fields = last.decode("ascii").split(",")
    channel = re.match(r"(SMS|USSD|APP|WEB)[a-z]+$", fields[3])
    assert len(fields) == 4 and channel
    assert not isinstance(classify_tx(fields[:3] + [channel[1]]), str)     # else valid
    assert files(tmp_path)[0].endswith(b"\n")
    # exactly at the bound it is not over it: then the channel's rule rejects it
    s = gen(tmp_path, "2024-03-01_a", "--hostile", "last-line-20mb", "--max-line-bytes", str(20 * MB),
            subscribers=50, transactions=100, capsys=capsys)
    assert s["hostile"][0]["reason"] == "invalid_channel"
    m = _Oracle(max_line_bytes=20 * MB).run(tmp_path, "2024-03-01_a")
    assert oracle_as_counter(m) == expected_as_counter(s)
    assert s["expected"]["transactions"]["rejected"]["invalid_channel"] == \
        s["transactions"]["dirty_by_reason"]["invalid_channel"] + 1


def test_max_line_bytes_16m_gives_the_8mb_fields_their_reasons(tmp_path, capsys):
    s = gen(tmp_path, "2024-03-01_a", "--hostile", "field-8mb,line-50mb", "--max-line-bytes", "16000000",
            subscribers=100, transactions=500, capsys=capsys)
    assert s["max_line_bytes"] == 16_000_000
    for h in s["hostile"]:
        if h["case"] == "field-8mb":
            assert h["reason"] == FIELD_REASONS[h["file"]][h["field"]]
        else:
            assert h["case"] == "line-50mb" and h["reason"] == "malformed_row"
    m = _Oracle(max_line_bytes=16_000_000).run(tmp_path, "2024-03-01_a")
    assert oracle_as_counter(m) == expected_as_counter(s)
    # the default bound: every 8 MB line is a malformed_row
    d = gen(tmp_path, "2024-03-01_a", "--hostile", "field-8mb", subscribers=100, transactions=500, capsys=capsys)
    assert {h["reason"] for h in d["hostile"]} == {"malformed_row"}


def test_hostile_without_ordinary_rows(tmp_path, capsys):
    s = gen(tmp_path, "2024-03-01_a", "--hostile", "unclosed-quote,million-commas", "--bom", "--first-subscriber", "5",
            subscribers=0, transactions=0, dirty=0.0, capsys=capsys)
    sub, tx = files(tmp_path)
    assert not sub.startswith("\ufeff".encode())          # no BOM on a file of hostile lines only
    assert sub.count(b"\n") == tx.count(b"\n") == 2
    assert s["expected"]["subscribers"]["input"] == s["expected"]["transactions"]["input"] == 2
    assert oracle_as_counter(_Oracle().run(tmp_path, "2024-03-01_a")) == expected_as_counter(s)


@pytest.mark.parametrize("args, message", [
    (["--hostile", "field-1mb", "--empty"], "--empty"),
    (["--hostile", "field-2mb"], "valid cases: field-1mb, field-8mb, last-line-20mb, line-50mb, "
                                 "million-commas, unclosed-quote, or all"),
    (["--hostile", "all,nope"], "'nope'"),
    (["--hostile", ","], "no case given"),
    (["--max-line-bytes", "100"], ">= 1024"),
    (["--max-line-bytes", "x"], "integer"),
])
def test_hostile_usage_errors_exit_2(tmp_path, capsys, args, message):
    argv = ["--landing", str(tmp_path), "--batch-id", "2024-03-01_a", *args]
    assert exit_code(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "2024-03-01_a").exists()
