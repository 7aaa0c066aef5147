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


def split_lines(data: bytes):
    """(rows as field lists or None when unparseable, number of empty lines)."""
    text = data.decode("utf-8")
    parts = re.split(r"\r\n|\n|\r", text)
    if parts and parts[-1] == "":
        parts.pop()                      # text after the last line ending
    rows, empty = [], 0
    for line in parts:
        if line.startswith("\ufeff"):
            line = line[1:]
        if line == "":
            empty += 1
            continue
        try:
            parsed = list(csv.reader([line], strict=True))
        except csv.Error:
            parsed = None
        rows.append(parsed[0] if parsed and len(parsed) == 1 else None)
    return rows, empty


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

    def __init__(self, ttl=7):
        self.store: dict[str, dt.date] = {}
        self.pending: dict[tuple, str] = {}       # key -> batch id
        self.ttl = ttl

    def run(self, landing: Path, batch_id: str) -> Counter:
        batch_date = dt.date.fromisoformat(batch_id[:10])
        folder = landing / batch_id
        m = Counter()
        rows, _ = split_lines((folder / "subscribers.csv").read_bytes())
        valid: dict[str, dt.date] = {}
        for fields in rows:
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
        rows, _ = split_lines((folder / "transactions.csv").read_bytes())
        for fields in rows:
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
