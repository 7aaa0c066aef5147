"""Synthetic landing files for the optasia_etl_pipeline job (stdlib and spark_jobs.contract only).

    python -m optasia_datagen --landing DIR --batch-id 2024-03-01_a \\
        --subscribers 1000 --transactions 100000 --dirty-share 0.05 --seed 7

writes ``DIR/<batch_id>/subscribers.csv`` and ``DIR/<batch_id>/transactions.csv``
(headerless, UTF-8) following ``docs/data-contract.md`` and
``docs/data-contract-notes.md``.  Same arguments => byte-identical files.
Rows are streamed to disk: memory does not grow with the row count.

What is written
---------------
Subscribers: every id in ``[first, first+N)`` (``SUB%09d``) gets exactly one
clean row; its activation date is a pure function of the id and the batch
date (``activation_date()``), on or before the batch date (1% of ids on the
batch date itself, 1% on the latest 29 February).  Dirty rows and re-sent
rows (``--resend-share``) are written *in addition* to the N clean rows, so
that every id of the range really exists after the batch.

Transactions: exactly M rows.  Selected at random positions with exact counts:
``round(M*dirty)`` dirty rows, ``round(M*late)`` late rows (ids of the next
batch's range ``[first+N, first+2N)``, pending now, matched by the next batch
if it is generated with ``--first-subscriber first+N`` and a batch date at
most one day later), ``round(M*orphan)`` orphans (ids that never exist; half
older than the TTL so they expire, half recent so they stay pending); the
rest are clean and match ids in ``[0, first+N)`` on or after their activation
date (true for ids of earlier batches made by this tool with a batch date not
after this one).  Amounts are unique within the file (the value is ``row
index mod P`` in units of 0.0001), so no two rows are accidental duplicates;
only the ``dup_renormalised`` rows are.

Dirty rows are spread evenly over the reject reasons (plus ``duplicate``) and,
within a reason, round-robin over the variants in ``SUB_DIRTY_KINDS`` /
``TX_DIRTY_KINDS``.  ``--summary`` prints a JSON document with the exact count
of every kind and the outcome the contract implies for this file.

Re-sent subscribers (``--resend-share``, ids of ``[0, first)``): odd ones carry a
date 1500+ days before ``activation_date(k, batch date)`` (an update, as long as
the id's earlier batch was less than ~4 years ago and did not already send an
even earlier date), even ones a date between that and the batch date
(unchanged).

Valid edges are mixed into the clean rows: zones +-18:00 and -00:00, 1..6
fraction digits, amounts with 14 integer digits, leading zeros or padded
decimals, channel case and white space, padding inside RFC 4180 quotes, orphan
ids of 1 and 64 characters or differing from a real id only by case, orphans
exactly at the expiry cutoff (pending) and 1 microsecond before it (expired).
The files are written to hidden temporary names in the batch folder and both
renamed into place at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import re
import sys
import time

from spark_jobs.contract import DEFAULT_CHANNELS, READY_MARKER, batch_date
from spark_jobs.contract import SUBSCRIBER_REASONS as SUB_REASONS
from spark_jobs.contract import TRANSACTION_REASONS as TX_REASONS

SUB_FMT = "SUB%09d"
#: ids ``SUB900000000`` and up are never given to a subscriber (orphans).
ORPHAN_BASE = 900_000_000
ORPHAN_SPAN = 99_999_999
DAY = 86_400
MAX_ACTIVATION_AGE_DAYS = 1499
CHUNK_ROWS = 8192
_M64 = (1 << 64) - 1

#: dirty subscriber kinds -> the reason the ETL must give (``duplicate`` is
#: counted as a duplicate, not a reject)
SUB_DIRTY_KINDS = {
    "sub_fields_1": "malformed_row",
    "sub_fields_3": "malformed_row",
    "sub_trailing_comma": "malformed_row",
    "sub_blank_line": "malformed_row",
    "sub_unterminated_quote": "malformed_row",
    "sub_text_after_quote": "malformed_row",
    "sid_underscore_first": "invalid_sub_id",
    "sid_dash_first": "invalid_sub_id",
    "sid_65_chars": "invalid_sub_id",
    "sid_illegal_char": "invalid_sub_id",
    "sid_non_ascii": "invalid_sub_id",
    "sid_empty": "invalid_sub_id",
    "sid_quoted_comma": "invalid_sub_id",
    "date_feb_30": "invalid_activation_date",
    "date_feb_29_non_leap": "invalid_activation_date",
    "date_month_13": "invalid_activation_date",
    "date_day_00": "invalid_activation_date",
    "date_year_0000": "invalid_activation_date",
    "date_future": "invalid_activation_date",
    "date_slashes": "invalid_activation_date",
    "date_unpadded": "invalid_activation_date",
    "date_with_time": "invalid_activation_date",
    "date_empty": "invalid_activation_date",
    "dup_later_date": "duplicate",
}

#: dirty transaction kinds -> the reason the ETL must give
TX_DIRTY_KINDS = {
    "tx_fields_1": "malformed_row",
    "tx_fields_3": "malformed_row",
    "tx_fields_5": "malformed_row",
    "tx_trailing_comma": "malformed_row",
    "tx_blank_line": "malformed_row",
    "tx_unterminated_quote": "malformed_row",
    "tx_text_after_quote": "malformed_row",
    "ts_hour_24": "invalid_timestamp",
    "ts_minute_60": "invalid_timestamp",
    "ts_second_60": "invalid_timestamp",
    "ts_zone_25": "invalid_timestamp",
    "ts_zone_over_18": "invalid_timestamp",
    "ts_zone_no_colon": "invalid_timestamp",
    "ts_fraction_7": "invalid_timestamp",
    "ts_fraction_empty": "invalid_timestamp",
    "ts_lowercase_t": "invalid_timestamp",
    "ts_lowercase_z": "invalid_timestamp",
    "ts_no_seconds": "invalid_timestamp",
    "ts_two_spaces": "invalid_timestamp",
    "ts_feb_30": "invalid_timestamp",
    "ts_feb_29_non_leap": "invalid_timestamp",
    "ts_slashes": "invalid_timestamp",
    "ts_date_only": "invalid_timestamp",
    "ts_empty": "invalid_timestamp",
    "sid_underscore_first": "invalid_sub_id",
    "sid_dash_first": "invalid_sub_id",
    "sid_65_chars": "invalid_sub_id",
    "sid_illegal_char": "invalid_sub_id",
    "sid_non_ascii": "invalid_sub_id",
    "sid_empty": "invalid_sub_id",
    "sid_quoted_comma": "invalid_sub_id",
    "amt_negative": "invalid_amount",
    "amt_zero": "invalid_amount",
    "amt_exponent": "invalid_amount",
    "amt_thousands_quoted": "invalid_amount",
    "amt_5_decimals": "invalid_amount",
    "amt_15_int_digits": "invalid_amount",
    "amt_empty": "invalid_amount",
    "amt_plus_sign": "invalid_amount",
    "amt_leading_dot": "invalid_amount",
    "amt_trailing_dot": "invalid_amount",
    "ch_fax": "invalid_channel",
    "ch_email": "invalid_channel",
    "ch_empty": "invalid_channel",
    "ch_quote_not_first": "invalid_channel",
    "ch_escaped_quote": "invalid_channel",
    "dup_renormalised": "duplicate",
    "before_activation": "before_activation",
}

_CHANNEL_RE = re.compile(r"^[A-Z0-9_-]{1,32}$")


class UsageError(Exception):
    """A bad argument: reported on stderr with exit status 2."""


# --------------------------------------------------------------------------
# The id -> activation date function, shared by every batch
# --------------------------------------------------------------------------

def _id_hash(k: int) -> int:
    return (((k + 0x2545F491) * 0x9E3779B97F4A7C15) & _M64) >> 32


def latest_feb29(ordinal: int) -> int:
    """Ordinal of the latest 29 February on or before ``ordinal``."""
    d = dt.date.fromordinal(ordinal)
    y = d.year if (d.month, d.day) >= (2, 29) else d.year - 1
    while not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        y -= 1
    return dt.date(y, 2, 29).toordinal()


def activation_date(k: int, batch_date: dt.date) -> dt.date:
    """Activation date of subscriber ``k`` when it arrives in a batch of ``batch_date``.

    It depends only on the id and the batch date (not on the seed) and never
    decreases when the batch date does not: so a subscriber of an earlier
    batch is active no later than ``activation_date(k, this batch date)``.
    1% of ids activate on the batch date, 1% on the latest 29 February,
    the rest 1..1499 days before the batch date.
    """
    o = batch_date.toordinal()
    h = _id_hash(k)
    c = h % 1000
    if c < 10:
        return batch_date
    if c < 20:
        return dt.date.fromordinal(latest_feb29(o))
    return dt.date.fromordinal(o - 1 - (h // 1000) % MAX_ACTIVATION_AGE_DAYS)


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------

def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0.0 <= v <= 1.0):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m optasia_datagen",
        description="Write synthetic subscribers.csv and transactions.csv for one batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--landing", required=True, help="landing root; files go to LANDING/BATCH_ID/")
    p.add_argument("--batch-id", required=True, help="YYYY-MM-DD_a or YYYY-MM-DD_b")
    p.add_argument("--subscribers", type=_count, default=1000,
                   help="new subscribers (clean rows, ids [first, first+N)); dirty and "
                        "re-sent rows come on top")
    p.add_argument("--transactions", type=_count, default=10000,
                   help="transaction rows (dirty, late and orphan rows included)")
    p.add_argument("--dirty-share", type=_share, default=0.05,
                   help="dirty rows: a share of the transaction rows, and round(N*share) "
                        "extra subscriber rows")
    p.add_argument("--seed", type=int, default=0, help="random seed (combined with the batch id)")
    p.add_argument("--first-subscriber", type=_count, default=0,
                   help="first new subscriber id; ids below it exist from earlier batches")
    p.add_argument("--late-share", type=_share, default=0.02,
                   help="share of transactions for ids [first+N, first+2N) of the next batch")
    p.add_argument("--orphan-share", type=_share, default=0.01,
                   help="share of transactions for ids that never exist (half expire)")
    p.add_argument("--pending-ttl-days", type=_count, default=7,
                   help="the ETL's pending TTL; expired orphans are older than this")
    p.add_argument("--resend-share", type=_share, default=0.0,
                   help="extra subscriber rows re-sending ids of earlier batches "
                        "(half with an earlier date, half with a later one)")
    p.add_argument("--crlf-share", type=_share, default=0.1, help="lines ended by CRLF")
    p.add_argument("--quote-share", type=_share, default=0.02,
                   help="clean rows with an RFC 4180 quoted field")
    p.add_argument("--pad-share", type=_share, default=0.05,
                   help="clean rows with white space around a field")
    p.add_argument("--empty-line-share", type=_share, default=0.002,
                   help="chance of an empty line before a row (ignored by the ETL)")
    p.add_argument("--channels", default=",".join(DEFAULT_CHANNELS),
                   help="allowed channels of the ETL, comma separated")
    p.add_argument("--bom", action="store_true", help="start each non-empty file with a UTF-8 BOM")
    p.add_argument("--empty", action="store_true", help="write two empty (0 byte) files")
    p.add_argument("--no-clobber", action="store_true",
                   help="fail (exit 2) if a file already exists instead of replacing it")
    p.add_argument("--summary", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress or final line on stderr")
    return p


class Config:
    """Validated arguments plus derived values."""

    def __init__(self, ns: argparse.Namespace):
        try:
            self.batch_date = batch_date(ns.batch_id)
        except ValueError as exc:
            raise UsageError(f"--batch-id: {exc}") from None
        if not (dt.date(1900, 1, 1) <= self.batch_date <= dt.date(9990, 12, 31)):
            raise UsageError("--batch-id: the generator supports batch dates 1900-01-01..9990-12-31")
        self.batch_id = ns.batch_id
        self.landing = ns.landing
        self.seed = ns.seed
        self.empty = ns.empty
        self.n_sub = 0 if ns.empty else ns.subscribers
        self.n_tx = 0 if ns.empty else ns.transactions
        self.first = ns.first_subscriber
        self.dirty_share = ns.dirty_share
        self.late_share = ns.late_share
        self.orphan_share = ns.orphan_share
        self.resend_share = ns.resend_share
        self.ttl = ns.pending_ttl_days
        if self.ttl > 36500:
            raise UsageError("--pending-ttl-days must be <= 36500")
        self.crlf_share = ns.crlf_share
        self.quote_share = ns.quote_share
        self.pad_share = ns.pad_share
        self.empty_line_share = ns.empty_line_share
        self.bom = ns.bom
        self.no_clobber = ns.no_clobber
        self.summary = ns.summary
        self.quiet = ns.quiet
        chans = [c.strip().upper() for c in ns.channels.split(",") if c.strip()]
        if not chans or not all(_CHANNEL_RE.match(c) for c in chans) or len(set(chans)) != len(chans):
            raise UsageError(f"--channels must be distinct names like SMS,USSD,APP,WEB, got {ns.channels!r}")
        self.channels = tuple(chans)

        if self.dirty_share + self.late_share + self.orphan_share > 1.0 + 1e-12:
            raise UsageError("--dirty-share + --late-share + --orphan-share must be <= 1")
        n_tx = self.n_tx
        self.tx_dirty = round(n_tx * self.dirty_share)
        self.tx_late = min(round(n_tx * self.late_share), n_tx - self.tx_dirty)
        self.tx_orphan = min(round(n_tx * self.orphan_share), n_tx - self.tx_dirty - self.tx_late)
        self.tx_orphan_expired = (self.tx_orphan + 1) // 2
        self.tx_orphan_pending = self.tx_orphan - self.tx_orphan_expired
        self.tx_clean = n_tx - self.tx_dirty - self.tx_late - self.tx_orphan
        self.known = self.first + self.n_sub          # ids [0, known) exist after the batch
        self.late_lo = self.known
        self.late_n = max(self.n_sub, 1)             # [known, known + late_n)
        if self.tx_clean > 0 and self.known == 0:
            raise UsageError("clean transactions need subscribers: pass --subscribers > 0 or "
                             "--first-subscriber > 0 (or make every row dirty/late/orphan)")
        top = self.known + (self.late_n if self.tx_late else 0)
        if top > ORPHAN_BASE:
            raise UsageError(f"subscriber ids must stay below {ORPHAN_BASE:,} "
                             f"(first + subscribers{' + late range' if self.tx_late else ''} = {top:,})")
        self.sub_dirty = round(self.n_sub * self.dirty_share)
        self.sub_resend = min(round(self.n_sub * self.resend_share), self.first)


# --------------------------------------------------------------------------
# Shared tables
# --------------------------------------------------------------------------

# (zone text, offset seconds, weight per 1000)
_ZONES = (("", 0, 250), ("Z", 0, 300), ("+00:00", 0, 40), ("-00:00", 0, 5),
          ("+01:00", 3600, 60), ("+02:00", 7200, 60), ("+03:00", 10800, 40),
          ("+05:30", 19800, 40), ("+05:45", 20700, 10), ("+08:00", 28800, 40),
          ("+14:00", 50400, 10), ("-03:00", -10800, 40), ("-05:00", -18000, 50),
          ("-08:00", -28800, 40), ("-12:00", -43200, 10), ("+18:00", 64800, 3),
          ("-18:00", -64800, 2))
_SEPS = (("T", 7), (" ", 3))
_PRECISIONS = ((0, 8), (1, 1), (2, 1), (3, 5), (4, 1), (5, 1), (6, 3))
_POW10 = tuple(10 ** i for i in range(16))
# amount classes: number of trailing zero digits of the value in units of 0.0001
# (4 = integer, 2 = cents, 0 = four decimals), weight per 100
_AMOUNT_CLASSES = ((4, 20), (2, 50), (3, 10), (1, 10), (0, 10))


# fraction strings with their dot: _FRAC[p][f] = "." + f as p digits (p = 1..4)
_FRAC = [[""]] + [["." + "%0*d" % (p, f) for f in range(10 ** p)] for p in range(1, 5)]
_D3 = ["%03d" % f for f in range(1000)]


def _pow2_table(weighted):
    """(table, bits): ``table[getrandbits(bits)]`` draws items by weight (each kept >= once)."""
    total = sum(w for _, w in weighted)
    bits = max(1, (total - 1).bit_length())
    size = 1 << bits
    out, acc, prev = [], 0, 0
    for item, w in weighted:
        acc += w
        end = max(round(acc * size / total), prev + 1)
        out.extend([item] * (end - prev))
        prev = end
    del out[size:]
    assert len(out) == size
    return out, bits


def _format_table():
    """Timestamp formats (sep, digits, zone text, zone offset s, 10**digits) by weight."""
    weighted = [((sep, p, zs, zo, _POW10[p]), wz * ws * wp)
                for zs, zo, wz in _ZONES for sep, ws in _SEPS for p, wp in _PRECISIONS]
    return _pow2_table(weighted)


def _channel_table(channels):
    """Written channel texts (mixed case, white space) with their index, by weight."""
    weighted = []
    for i, c in enumerate(channels):
        low = c.lower()
        mixed = "".join(ch.lower() if j % 2 else ch for j, ch in enumerate(c))
        for text, w in ((c, 60), (low, 15), (c.capitalize(), 10), (mixed, 5), (" " + c, 3),
                        (c + " ", 3), (" " + low + " ", 2), ("\t" + c, 1), (c + "\t", 1)):
            weighted.append(((text, i), w))
    return _pow2_table(weighted)


def _coprime_step(n: int, rnd) -> int:
    """A multiplier coprime with n (for an affine permutation of range(n))."""
    if n <= 1:
        return 1
    a = 1 + int(rnd() * (n - 1))
    while math.gcd(a, n) != 1:
        a += 1
    return a


class _Calendar:
    """Date strings relative to the batch date, precomputed for the hot paths."""

    def __init__(self, batch_date: dt.date, ttl: int):
        self.ordinal = batch_date.toordinal()
        self.lo = -(max(ttl, MAX_ACTIVATION_AGE_DAYS) + 60)
        hi = 6
        self.off = -self.lo
        self.table = [dt.date.fromordinal(self.ordinal + r).isoformat() for r in range(self.lo, hi)]
        self.hms = ["%02d:%02d:%02d" % (h, m, s) for h in range(24) for m in range(60) for s in range(60)]

    def date(self, rel: int) -> str:
        i = rel + self.off
        if 0 <= i < len(self.table):
            return self.table[i]
        return dt.date.fromordinal(self.ordinal + rel).isoformat()

    def act_rel(self, k: int, rel_batch: int = 0) -> int:
        """activation_date(k, batch date + rel_batch) in days relative to the batch date."""
        h = _id_hash(k)
        c = h % 1000
        if c < 10:
            return rel_batch
        if c < 20:
            return latest_feb29(self.ordinal + rel_batch) - self.ordinal
        return rel_batch - 1 - (h // 1000) % MAX_ACTIVATION_AGE_DAYS


def _pad(text: str, rnd) -> str:
    x = rnd()
    if x < 0.3:
        return " " + text
    if x < 0.6:
        return text + " "
    if x < 0.8:
        return "  " + text + " "
    if x < 0.9:
        return "\t" + text
    return " " + text + "\t"


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class _Writer:
    """Buffered line writer to a temporary file, renamed into place by the caller."""

    def __init__(self, path: str, bom: bool):
        self.path = path
        self.f = open(path, "w", encoding="utf-8", newline="", buffering=1 << 20)
        self.chunk: list[str] = []
        self.bom = bom
        self.lines = 0

    def flush(self):
        if self.chunk:
            if self.bom:
                self.chunk[0] = "\ufeff" + self.chunk[0]
                self.bom = False
            self.f.write("".join(self.chunk))
            self.chunk.clear()

    def close(self):
        self.flush()
        self.f.close()


class _Progress:
    def __init__(self, label: str, total: int, quiet: bool):
        self.label = label
        self.total = total
        self.enabled = not quiet and total >= 200_000
        self.t0 = self.last = time.perf_counter()
        self.next_share = 0.1

    def update(self, done: int, final: bool = False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if final or done >= self.total * self.next_share or now - self.last >= 5.0:
            rate = done / max(now - self.t0, 1e-9)
            print(f"datagen: {self.label} {done:,}/{self.total:,} rows "
                  f"({100.0 * done / self.total:.0f}%), {rate:,.0f} rows/s",
                  file=sys.stderr, flush=True)
            self.last = now
            while self.next_share <= done / self.total:
                self.next_share += 0.1


class _KindCycle:
    """Round-robin over reasons, then over each reason's variants, reshuffled each round."""

    def __init__(self, kinds: dict, rnd, exclude=()):
        self.rnd = rnd
        self.by_reason: dict[str, list[str]] = {}
        for name, reason in kinds.items():
            if name not in exclude:
                self.by_reason.setdefault(reason, []).append(name)
        self.reasons = list(self.by_reason)
        self.r_order: list[str] = []
        self.v_order: dict[str, list[str]] = {r: [] for r in self.reasons}

    def _shuffled(self, items):
        items = list(items)
        for i in range(len(items) - 1, 0, -1):
            j = int(self.rnd() * (i + 1))
            items[i], items[j] = items[j], items[i]
        return items

    def next(self, skip_reason=None) -> str:
        for _ in range(2 * len(self.reasons) + 2):
            if not self.r_order:
                self.r_order = self._shuffled(self.reasons)
            reason = self.r_order.pop()
            if reason == skip_reason:
                continue
            vo = self.v_order[reason]
            if not vo:
                vo.extend(self._shuffled(self.by_reason[reason]))
            return vo.pop()
        raise AssertionError("no dirty kind available")


class _Counter(dict):
    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n


# --------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------

class SubscriberGen:
    """Streams subscribers.csv; ``dirty_line(kind)`` builds one dirty row."""

    def __init__(self, cfg: Config, cal: _Calendar):
        self.cfg = cfg
        self.cal = cal
        self.rng = random.Random(f"optasia-datagen|{cfg.seed}|{cfg.batch_id}|subscribers")
        self.rnd = self.rng.random
        self.year = cfg.batch_date.year
        self.stats = _Counter()
        self.dirty = _Counter()
        self.edges = _Counter()

    # -- helpers ---------------------------------------------------------------
    def _some_id(self) -> int:
        c = self.cfg
        return c.first + int(self.rnd() * c.n_sub) if c.n_sub else int(self.rnd() * 1000)

    def _valid_pair(self):
        k = self._some_id()
        return SUB_FMT % k, self.cal.date(self.cal.act_rel(k))

    def dirty_line(self, kind: str) -> str:
        rnd = self.rnd
        sid, date = self._valid_pair()
        y = self.year - 1
        if kind == "sub_fields_1":
            return sid if rnd() < 0.5 else sid + ";" + date
        if kind == "sub_fields_3":
            return f"{sid},{date},{'extra' if rnd() < 0.5 else ''}x"
        if kind == "sub_trailing_comma":
            return f"{sid},{date},"
        if kind == "sub_blank_line":
            return " " * (1 + int(rnd() * 3)) if rnd() < 0.7 else " \t "
        if kind == "sub_unterminated_quote":
            return f'"{sid},{date}' if rnd() < 0.5 else f'{sid},"{date}'
        if kind == "sub_text_after_quote":
            return f'"{sid}"x,{date}' if rnd() < 0.5 else f'{sid},"{date}" '
        if kind == "sid_underscore_first":
            return f"_{sid},{date}"
        if kind == "sid_dash_first":
            return f"-{sid},{date}"
        if kind == "sid_65_chars":
            return f"{sid}{'A' * (65 - len(sid))},{date}"
        if kind == "sid_illegal_char":
            bad = ".:# /+@"[int(rnd() * 7)]
            return f"{sid[:3]}{bad}{sid[3:]},{date}"
        if kind == "sid_non_ascii":
            return f"{sid}\u00e9,{date}" if rnd() < 0.5 else f"{sid}\u00a0,{date}"
        if kind == "sid_empty":
            return f",{date}" if rnd() < 0.5 else f"  ,{date}"
        if kind == "sid_quoted_comma":
            return f'"{sid[:5]},{sid[5:]}",{date}'
        if kind == "date_feb_30":
            return f"{sid},{y:04d}-02-30"
        if kind == "date_feb_29_non_leap":
            return f"{sid},{'2023-02-29' if rnd() < 0.5 else '1900-02-29'}"
        if kind == "date_month_13":
            return f"{sid},{y:04d}-13-01"
        if kind == "date_day_00":
            return f"{sid},{y:04d}-05-00"
        if kind == "date_year_0000":
            return f"{sid},0000-01-01"
        if kind == "date_future":
            return f"{sid},{self.cal.date(1 if rnd() < 0.5 else 1 + int(rnd() * 400))}"
        if kind == "date_slashes":
            return f"{sid},{date.replace('-', '/')}"
        if kind == "date_unpadded":
            d = dt.date.fromisoformat(date)
            return f"{sid},{d.year}-{d.month}-{d.day}" if d.month < 10 or d.day < 10 \
                else f"{sid},{d.year}-1-2"
        if kind == "date_with_time":
            return f"{sid},{date}T00:00:00"
        if kind == "date_empty":
            return f"{sid}," if rnd() < 0.5 else f"{sid}, "
        if kind == "dup_later_date":
            cal = self.cal
            for _ in range(16):
                k = self._some_id()
                a = cal.act_rel(k)
                if a < 0:
                    break
            later = a + 1 + int(rnd() * -a) if a < 0 else a     # in (a, 0], or a itself
            return f"{SUB_FMT % k},{cal.date(later)}"
        raise KeyError(kind)

    # -- main loop -----------------------------------------------------------------
    def write(self, w: _Writer, progress: _Progress):
        c, cal, rnd = self.cfg, self.cal, self.rnd
        n, first = c.n_sub, c.first
        total = n + c.sub_dirty + c.sub_resend
        if total == 0:
            return
        cycle = _KindCycle(SUB_DIRTY_KINDS, rnd, exclude=() if n else ("dup_later_date",))
        step = _coprime_step(n, rnd)
        shift = int(rnd() * n) if n else 0
        r_step = _coprime_step(first, rnd)
        r_shift = int(rnd() * first) if first else 0
        rem_dirty, rem_resend = c.sub_dirty, c.sub_resend
        crlf, deco = c.crlf_share, c.pad_share + c.quote_share
        empty_p = c.empty_line_share
        date_tab, doff, hid = cal.table, cal.off, _id_hash
        leap_rel = latest_feb29(cal.ordinal) - cal.ordinal
        chunk = w.chunk
        stats, edges = self.stats, self.edges
        j = 0            # clean rows written
        resent = 0
        remaining = total
        done = 0
        while remaining:
            special = rem_dirty + rem_resend
            u = rnd() * remaining
            if u >= special:
                k = first + (step * j + shift) % n
                j += 1
                h = hid(k)
                cls = h % 1000
                if cls < 10:
                    a = 0
                    edges.add("activation_on_batch_date")
                elif cls < 20:
                    a = leap_rel
                    edges.add("activation_on_feb_29")
                else:
                    a = -1 - (h // 1000) % MAX_ACTIVATION_AGE_DAYS
                fields = [SUB_FMT % k, date_tab[a + doff]]
                if rnd() < deco:
                    self._decorate(fields)
                line = fields[0] + "," + fields[1]
            elif u < rem_dirty:
                rem_dirty -= 1
                kind = cycle.next()
                self.dirty.add(kind)
                line = self.dirty_line(kind)
            else:
                rem_resend -= 1
                k = (r_step * resent + r_shift) % first
                resent += 1
                a = cal.act_rel(k)
                if resent % 2:
                    stats.add("resend_earlier")
                    a -= MAX_ACTIVATION_AGE_DAYS + 1 + int(rnd() * 365)
                else:
                    stats.add("resend_later")
                    a = a + int(rnd() * (1 - a))                 # in [a, 0]
                line = SUB_FMT % k + "," + cal.date(a)
            x = rnd()
            if x < empty_p and done:               # never first: keeps a --bom on a row
                chunk.append("\r\n" if x < empty_p * crlf else "\n")
                stats.add("empty_lines")
            if rnd() < crlf:
                chunk.append(line + "\r\n")
                stats.add("crlf_rows")
            else:
                chunk.append(line + "\n")
            remaining -= 1
            done += 1
            if len(chunk) >= CHUNK_ROWS:
                w.flush()
                progress.update(done)
        w.flush()
        progress.update(done, final=True)
        stats["rows"] = total
        stats["clean"] = j

    def _decorate(self, fields):
        c, rnd = self.cfg, self.rnd
        i = int(rnd() * len(fields))
        if rnd() * (c.pad_share + c.quote_share) < c.pad_share:
            fields[i] = _pad(fields[i], rnd)
            self.stats.add("padded_rows")
        else:
            fields[i] = _quote(_pad(fields[i], rnd) if rnd() < 0.3 else fields[i])
            self.stats.add("quoted_rows")


# --------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------

class TransactionGen:
    """Streams transactions.csv; ``dirty_line(kind)`` builds one dirty row."""

    RING = 64

    def __init__(self, cfg: Config, cal: _Calendar):
        self.cfg = cfg
        self.cal = cal
        self.rng = random.Random(f"optasia-datagen|{cfg.seed}|{cfg.batch_id}|transactions")
        self.rnd = self.rng.random
        self.grb = self.rng.getrandbits
        self.cal_year = cfg.batch_date.year
        self.dtab, self.doff, self.ndtab, self.hms = cal.table, cal.off, len(cal.table), cal.hms
        self.fmt, self.fmt_bits = _format_table()
        self.chan, self.chan_bits = _channel_table(cfg.channels)
        self.amount_classes, self.amount_bits = _pow2_table(_AMOUNT_CLASSES)
        # amounts: value in units of 0.0001 is congruent to the row index modulo P
        # (P > rows, coprime with 10), so no two rows share an amount value.
        p = max(cfg.n_tx, 1) + 1
        while p % 2 == 0 or p % 5 == 0:
            p += 1
        self.P = p
        self.inv = [pow(10, -k, p) if p > 1 else 0 for k in range(5)]
        self.spread = [max(1, 10 ** (8 - k) // p) for k in range(5)]
        self.ring: list = [None] * self.RING
        self.ring_n = 0
        self.row = 0                 # 1-based index of the current row
        self.stats = _Counter()
        self.dirty = _Counter()
        self.edges = _Counter()
        self.owed_dups = 0
        self.bad_channels = [b for b in ("FAX", "EMAIL", "TELEX", "POST") if b not in cfg.channels]

    # -- value helpers -------------------------------------------------------------
    def amount_units(self, i: int) -> tuple[int, int]:
        """(value in units of 0.0001, amount class) for row index i."""
        grb = self.grb
        k = self.amount_classes[grb(self.amount_bits)]
        m = (i * self.inv[k]) % self.P
        sp = self.spread[k]
        if sp > 1:
            m += self.P * ((grb(30) * sp) >> 30)
        return (m or self.P) * _POW10[k], k          # row 0 (outside a run) would give 0

    @staticmethod
    def amount_text(n4: int, decimals: int) -> str:
        ip, fr = divmod(n4, 10000)
        if decimals == 0:
            return str(ip)
        return str(ip) + _FRAC[decimals][fr // _POW10[4 - decimals]]

    def ts_text(self, sec: int, f: int, p: int, entry=None) -> str:
        """Render UTC second ``sec`` (relative to the batch date) + fraction f/10^p."""
        if entry is None:
            entry = self.fmt[self.grb(self.fmt_bits)]
        loc = sec + entry[3]
        d = loc // DAY
        j = d + self.doff
        date = self.dtab[j] if 0 <= j < self.ndtab else self.cal.date(d)
        if p == 0:
            frac = ""
        elif p < 5:
            frac = _FRAC[p][f]
        else:
            frac = _FRAC[p - 3][f // 1000] + _D3[f % 1000]
        return f"{date}{entry[0]}{self.hms[loc - d * DAY]}{frac}{entry[2]}"

    def random_ts(self, sec: int, fraction: bool = True) -> str:
        entry = self.fmt[self.grb(self.fmt_bits)]
        p = entry[1] if fraction else 0
        f = (self.grb(24) * entry[4]) >> 24 if p else 0
        return self.ts_text(sec, f, p, entry)

    def channel_text(self) -> str:
        return self.chan[self.grb(self.chan_bits)][0]

    def _valid_fields(self, sec=None):
        """Plain valid fields for a dirty row: [ts, sub, amount, channel]."""
        grb = self.grb
        if sec is None:
            sec = ((grb(32) * 2 * DAY) >> 32) - DAY
        n4, k = self.amount_units(self.row)
        return [self.random_ts(sec), SUB_FMT % ((grb(32) * max(self.cfg.known, 1)) >> 32),
                self.amount_text(n4, 4 - k), self.channel_text()]

    # -- dirty rows ----------------------------------------------------------------
    def dirty_line(self, kind: str) -> str:
        rnd = self.rnd
        if kind == "dup_renormalised":
            return self._dup_line()
        if kind == "before_activation":
            return self._before_activation_line()
        f = self._valid_fields()
        ts, sid, amt, ch = f

        def row(t=ts, i=sid, a=amt, c=ch):
            return f"{t},{i},{a},{c}"

        if kind.startswith("ts_"):
            # a plain UTC timestamp in the clean window, as pieces to break
            d, s = divmod(((self.grb(32) * 2 * DAY) >> 32) - DAY, DAY)
            date, hms = self.cal.date(d), self.hms[s]
            hh, mm, ss = hms.split(":")
            y1 = self.cal_year - 1

        if kind == "tx_fields_1":
            return ";".join(f) if rnd() < 0.5 else sid
        if kind == "tx_fields_3":
            return f"{ts},{sid},{amt}"
        if kind == "tx_fields_5":
            return row() + ",extra"
        if kind == "tx_trailing_comma":
            return row() + ","
        if kind == "tx_blank_line":
            return " " * (1 + int(rnd() * 3)) if rnd() < 0.7 else "\t "
        if kind == "tx_unterminated_quote":
            return f'{ts},"{sid},{amt},{ch}' if rnd() < 0.5 else f'{ts},{sid},{amt},"{ch.strip()}'
        if kind == "tx_text_after_quote":
            return row(c=f'"{ch.strip()}"x') if rnd() < 0.5 else row(c=f'"{ch.strip()}" ')
        if kind == "ts_hour_24":
            return row(t=f"{date}T24:{mm}:{ss}Z")
        if kind == "ts_minute_60":
            return row(t=f"{date} {hh}:60:{ss}")
        if kind == "ts_second_60":
            return row(t=f"{date}T23:59:60Z")
        if kind == "ts_zone_25":
            return row(t=f"{date}T{hms}+25:00")
        if kind == "ts_zone_over_18":
            return row(t=f"{date}T{hms}{'+18:30' if rnd() < 0.5 else '-19:00'}")
        if kind == "ts_zone_no_colon":
            return row(t=f"{date}T{hms}+0200")
        if kind == "ts_fraction_7":
            return row(t=f"{date}T{hms}.1234567Z")
        if kind == "ts_fraction_empty":
            return row(t=f"{date}T{hms}.Z")
        if kind == "ts_lowercase_t":
            return row(t=f"{date}t{hms}Z")
        if kind == "ts_lowercase_z":
            return row(t=f"{date}T{hms}z")
        if kind == "ts_no_seconds":
            return row(t=f"{date}T{hh}:{mm}Z" if rnd() < 0.5 else f"{date} {hh}:{mm}")
        if kind == "ts_two_spaces":
            return row(t=f"{date}  {hms}")
        if kind == "ts_feb_30":
            return row(t=f"{y1:04d}-02-30T{hms}Z")
        if kind == "ts_feb_29_non_leap":
            return row(t=f"{'2023' if rnd() < 0.5 else '2100'}-02-29 {hms}")
        if kind == "ts_slashes":
            return row(t=f"{date.replace('-', '/')} {hms}")
        if kind == "ts_date_only":
            return row(t=date)
        if kind == "ts_empty":
            return row(t="" if rnd() < 0.5 else "  ")
        if kind == "sid_underscore_first":
            return row(i="_" + sid)
        if kind == "sid_dash_first":
            return row(i="-" + sid)
        if kind == "sid_65_chars":
            return row(i=sid + "B" * (65 - len(sid)))
        if kind == "sid_illegal_char":
            return row(i=sid[:3] + ".:# /+@"[int(rnd() * 7)] + sid[3:])
        if kind == "sid_non_ascii":
            return row(i=sid + ("\u00e9" if rnd() < 0.5 else "\u00a0"))
        if kind == "sid_empty":
            return row(i="" if rnd() < 0.5 else " ")
        if kind == "sid_quoted_comma":
            return row(i=f'"{sid[:5]},{sid[5:]}"')
        if kind == "amt_negative":
            return row(a="-" + amt)
        if kind == "amt_zero":
            return row(a=("0", "0.0", "0.0000", "000")[int(rnd() * 4)])
        if kind == "amt_exponent":
            return row(a=("1e5", "1E3", "2.5e2")[int(rnd() * 3)])
        if kind == "amt_thousands_quoted":
            return row(a='"1,%03d.%02d"' % (int(rnd() * 1000), int(rnd() * 100)))
        if kind == "amt_5_decimals":
            return row(a="%d.%05d" % (1 + int(rnd() * 999), 1 + int(rnd() * 99998)))
        if kind == "amt_15_int_digits":
            return row(a="1" + "%014d" % int(rnd() * 10 ** 14) + (".50" if rnd() < 0.5 else ""))
        if kind == "amt_empty":
            return row(a="" if rnd() < 0.5 else " ")
        if kind == "amt_plus_sign":
            return row(a="+" + amt)
        if kind == "amt_leading_dot":
            return row(a=".5")
        if kind == "amt_trailing_dot":
            return row(a="%d." % (1 + int(rnd() * 999)))
        if kind == "ch_fax":
            return row(c=self.bad_channels[0] if self.bad_channels else "X" * 33)
        if kind == "ch_email":
            return row(c=(self.bad_channels[1:] or ["X" * 34])[0].lower())
        if kind == "ch_empty":
            return row(c="" if rnd() < 0.5 else "  ")
        if kind == "ch_quote_not_first":
            return row(c=f' "{ch.strip()}"')
        if kind == "ch_escaped_quote":
            c = ch.strip()
            return row(c=f'"{c[:1]}""{c[1:]}"')
        raise KeyError(kind)

    def _before_activation_line(self) -> str:
        c, rnd = self.cfg, self.rnd
        k = c.first + int(rnd() * c.n_sub)
        a = self.cal.act_rel(k)
        sec = (a - 30) * DAY + int(rnd() * 30 * DAY)       # strictly before day a
        n4, cls = self.amount_units(self.row)
        return f"{self.random_ts(sec)},{SUB_FMT % k},{self.amount_text(n4, 4 - cls)},{self.channel_text()}"

    def _dup_line(self) -> str:
        """Same key as a recent clean row, written differently."""
        rnd = self.rnd
        n = min(self.ring_n, self.RING)
        sec, f, p, k, n4, chi, zo0, ch0 = self.ring[(self.ring_n - 1 - int(rnd() * n)) % self.RING]
        # another zone offset and maybe more fraction digits: same instant
        for _ in range(8):
            entry = self.fmt[int(rnd() * len(self.fmt))]
            if entry[3] != zo0:
                break
        p2 = p + int(rnd() * (7 - p))
        ts = self.ts_text(sec, f * _POW10[p2 - p], p2, entry)
        # the same amount value with other decimals / leading zeros (10.5 = 10.50 = 010.5000)
        ip, fr = divmod(n4, 10000)
        frs = ("%04d" % fr).rstrip("0")
        x = rnd()
        if x < 0.5:
            amt = "%d.%04d" % (ip, fr)
        elif x < 0.75 and ip < 10 ** 12:           # leading zeros, still <= 14 digits
            amt = "00%d.%s" % (ip, frs or "0")
        else:
            amt = "%d.%s" % (ip, frs) if frs else str(ip)
        name = self.cfg.channels[chi]
        for _ in range(8):
            ch = self.chan[int(rnd() * len(self.chan))]
            if ch[1] == chi and ch[0] != ch0:
                break
        else:
            ch = (name.lower() if ch0 != name.lower() else " " + name, chi)
        return f"{ts},{SUB_FMT % k},{amt},{ch[0]}"

    # -- main loop -------------------------------------------------------------------
    def write(self, w: _Writer, progress: _Progress):
        c, cal, rnd = self.cfg, self.cal, self.rnd
        M = c.n_tx
        if M == 0:
            return
        exclude = []
        if c.n_sub == 0:
            exclude.append("before_activation")
        if c.tx_clean == 0:
            exclude.append("dup_renormalised")
        cycle = _KindCycle(TX_DIRTY_KINDS, rnd, exclude=exclude)
        rem = [c.tx_dirty, c.tx_late, c.tx_orphan_expired, c.tx_orphan_pending]
        special = sum(rem)
        known = c.known
        grb = self.rng.getrandbits
        fmt, fbits = self.fmt, self.fmt_bits
        chan, cbits = self.chan, self.chan_bits
        acls, abits = self.amount_classes, self.amount_bits
        P, inv, spread = self.P, self.inv, self.spread
        date_tab, doff, hms = cal.table, cal.off, cal.hms
        fr, d3 = _FRAC, _D3
        subs = [SUB_FMT % k for k in range(known)] if known <= 1 << 17 else None
        sub_fmt = SUB_FMT
        leap_is_today = latest_feb29(cal.ordinal) == cal.ordinal
        # 32-bit thresholds for the per-row decisions
        deco_thr = int((c.pad_share + c.quote_share + 0.004) * 2 ** 32)
        crlf_thr = int(c.crlf_share * 2 ** 32)
        empty_thr = 2 ** 32 - int(c.empty_line_share * 2 ** 32)
        empty_crlf_thr = 2 ** 32 - int(c.empty_line_share * c.crlf_share * 2 ** 32)
        ring, RING = self.ring, self.RING
        div = (10000, 1000, 100, 10, 1)
        pow10 = _POW10
        chunk = w.chunk
        append = chunk.append
        n_clean = n_crlf = n_empty = 0
        remaining = M
        i = 0
        flush_at = CHUNK_ROWS
        while remaining:
            i += 1
            u = rnd() * remaining
            remaining -= 1
            if u < special:
                self.row = i
                line = self._special_row(u, rem, cycle)
                special -= 1
                y = grb(32)
            else:
                # ---- clean row (hot path) ----
                b = grb(64)
                k = ((b & 0xFFFFFFFF) * known) >> 32
                sec = (((b >> 32) * 172800) >> 32) - DAY        # [D-1 00:00, D+1 00:00)
                if sec < 0:
                    cls_ = ((((k + 0x2545F491) * 0x9E3779B97F4A7C15) & _M64) >> 32) % 1000
                    if cls_ < 10 or (cls_ < 20 and leap_is_today):
                        sec += DAY                              # activation is the batch date
                sep, p, zs, zo, pw = fmt[grb(fbits)]
                loc = sec + zo
                d = loc // DAY
                if p == 0:
                    f = 0
                    frac = ""
                elif p < 5:
                    f = (grb(24) * pw) >> 24
                    frac = fr[p][f]
                else:
                    f = (grb(24) * pw) >> 24
                    frac = fr[p - 3][f // 1000] + d3[f % 1000]
                ak = acls[grb(abits)]
                m = (i * inv[ak]) % P
                sp = spread[ak]
                if sp > 1:
                    m += P * ((grb(30) * sp) >> 30)
                if ak == 4:
                    amt = str(m)
                else:
                    dv = div[ak]
                    amt = str(m // dv) + fr[4 - ak][m % dv]
                n4 = m * pow10[ak]
                ch, chi = chan[grb(cbits)]
                sid = subs[k] if subs is not None else sub_fmt % k
                y = grb(64)
                if (y & 0xFFFFFFFF) < deco_thr:
                    ts = date_tab[d + doff] + sep + hms[loc - d * DAY] + frac + zs
                    ts, sid, amt, ch, n4 = self._decorate(ts, sid, amt, ch, n4)
                    line = f"{ts},{sid},{amt},{ch}"
                else:
                    line = f"{date_tab[d + doff]}{sep}{hms[loc - d * DAY]}{frac}{zs},{sid},{amt},{ch}"
                ring[n_clean % RING] = (sec, f, p, k, n4, chi, zo, ch)
                n_clean += 1
                self.ring_n = n_clean
                y >>= 32
            if y >= empty_thr and i > 1:        # never first: keeps a --bom on a row
                append("\r\n" if y >= empty_crlf_thr else "\n")
                n_empty += 1
            if y < crlf_thr:
                append(line + "\r\n")
                n_crlf += 1
            else:
                append(line + "\n")
            if i >= flush_at:
                w.flush()
                flush_at = i + CHUNK_ROWS
                progress.update(i)
        stats = self.stats
        stats.add("crlf_rows", n_crlf)
        stats.add("empty_lines", n_empty)
        w.flush()
        progress.update(M, final=True)
        stats["rows"] = M
        stats["clean"] = n_clean
        if self.owed_dups:
            stats["dups_not_placed"] = self.owed_dups

    def _special_row(self, u, rem, cycle) -> str:
        c, rnd, cal = self.cfg, self.rnd, self.cal
        if u < rem[0]:
            rem[0] -= 1
            if self.owed_dups and self.ring_n:
                self.owed_dups -= 1
                kind = "dup_renormalised"
            else:
                kind = cycle.next()
                while kind == "dup_renormalised" and not self.ring_n:
                    self.owed_dups += 1
                    kind = cycle.next(skip_reason="duplicate")
            self.dirty.add(kind)
            return self.dirty_line(kind)
        u -= rem[0]
        n4, cls = self.amount_units(self.row)
        amt = self.amount_text(n4, 4 - cls)
        ch = self.channel_text()
        if u < rem[1]:
            rem[1] -= 1
            self.stats.add("late")
            k = c.late_lo + int(rnd() * c.late_n)
            # activated on the next batch (date <= D+1) on day a: be on or after it
            a = max(cal.act_rel(k, 1), 0)
            sec = a * DAY + int(rnd() * DAY)
            return f"{self.random_ts(sec)},{SUB_FMT % k},{amt},{ch}"
        u -= rem[1]
        boundary = -c.ttl * DAY
        sid = self._orphan_id()
        if u < rem[2]:
            rem[2] -= 1
            self.stats.add("orphan_expired")
            if self.stats.get("orphan_expired") == 1 or rnd() < 0.05:
                self.edges.add("orphan_expired_1us_before_cutoff")
                ts = self.ts_text(boundary - 1, 999999, 6)
            else:
                ts = self.random_ts(boundary - 1 - int(rnd() * 30 * DAY))
            return f"{ts},{sid},{amt},{ch}"
        rem[3] -= 1
        self.stats.add("orphan_pending")
        if self.stats.get("orphan_pending") == 1 or rnd() < 0.05:
            self.edges.add("orphan_pending_at_cutoff")
            ts = self.random_ts(boundary, fraction=False)
        else:
            ts = self.random_ts(boundary + int(rnd() * (DAY - boundary)))
        return f"{ts},{sid},{amt},{ch}"

    def _orphan_id(self) -> str:
        rnd = self.rnd
        x = rnd()
        if x < 0.9:
            return SUB_FMT % (ORPHAN_BASE + int(rnd() * ORPHAN_SPAN))
        self.edges.add("orphan_edge_sub_id")
        if x < 0.93:     # valid but case-different from a real id (sub_id is case sensitive)
            return "sub%09d" % int(rnd() * max(self.cfg.known, 1))
        if x < 0.96:     # the longest valid id
            return ("Z%08d" % int(rnd() * 10 ** 8)) + "-_" * 27 + "x"
        if x < 0.98:     # the shortest valid id
            return "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY"[int(rnd() * 61)]
        return "orphan_%d-x" % int(rnd() * 10 ** 6)

    def _decorate(self, ts, sid, amt, ch, n4):
        c, rnd = self.cfg, self.rnd
        fields = [ts, sid, amt, ch]
        x = rnd() * (c.pad_share + c.quote_share + 0.004)
        i = int(rnd() * 4)
        if x < c.pad_share:
            fields[i] = _pad(fields[i], rnd)
            self.stats.add("padded_rows")
        elif x < c.pad_share + c.quote_share:
            fields[i] = _quote(_pad(fields[i], rnd) if rnd() < 0.3 else fields[i])
            self.stats.add("quoted_rows")
        else:
            # valid amount edges; values stay unique
            y = rnd()
            ip, fr = divmod(n4, 10000)
            if y < 0.4:
                n4 += 90_000_000_000_000 * 10000            # 14 integer digits
                ip += 90_000_000_000_000
                fields[2] = "%d.%04d" % (ip, fr)
                self.edges.add("amount_14_integer_digits")
            elif y < 0.7:
                fields[2] = "000" + fields[2]
                self.edges.add("amount_leading_zeros")
            else:
                fields[2] = "%d.%04d" % (ip, fr)
                self.edges.add("amount_4_decimals_padded")
        return fields[0], fields[1], fields[2], fields[3], n4


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------

def _expected(cfg: Config, sg: SubscriberGen, tg: TransactionGen) -> dict:
    sub_rej = {r: 0 for r in SUB_REASONS}
    sub_dup = 0
    for kind, n in sg.dirty.items():
        reason = SUB_DIRTY_KINDS[kind]
        if reason == "duplicate":
            sub_dup += n
        else:
            sub_rej[reason] += n
    tx_rej = {r: 0 for r in TX_REASONS}
    tx_dup = 0
    for kind, n in tg.dirty.items():
        reason = TX_DIRTY_KINDS[kind]
        if reason == "duplicate":
            tx_dup += n
        else:
            tx_rej[reason] += n
    tx_rej["unmatched_expired"] += tg.stats.get("orphan_expired", 0)
    return {
        "note": ("outcome of this batch's files alone, assuming the store holds ids "
                 "[0, first_subscriber) from earlier batches of this tool and no pending "
                 "row equals a row here; pending rows of earlier batches come on top"),
        "subscribers": {
            "input": sg.stats.get("rows", 0),
            "rejected": sub_rej,
            "duplicate": sub_dup,
            "inserted": cfg.n_sub,
            "updated": sg.stats.get("resend_earlier", 0),
            "unchanged": sg.stats.get("resend_later", 0),
        },
        "transactions": {
            "input": tg.stats.get("rows", 0),
            "rejected": tx_rej,
            "duplicate": tx_dup,
            "published": tg.stats.get("clean", 0),
            "pending_new": tg.stats.get("late", 0) + tg.stats.get("orphan_pending", 0),
        },
    }


def _section(gen, path, nbytes, kinds) -> dict:
    by_reason = {}
    for kind, n in gen.dirty.items():
        by_reason[kinds[kind]] = by_reason.get(kinds[kind], 0) + n
    st = dict(gen.stats)
    return {
        "path": path,
        "bytes": nbytes,
        "rows": st.pop("rows", 0),
        **{k: st[k] for k in sorted(st)},
        "dirty_total": sum(gen.dirty.values()),
        "dirty_by_reason": dict(sorted(by_reason.items())),
        "dirty": dict(sorted(gen.dirty.items())),
        "edges": dict(sorted(gen.edges.items())),
    }


def generate(cfg: Config) -> dict:
    """Write both files of the batch; return the summary document."""
    t0 = time.perf_counter()
    batch_dir = os.path.join(cfg.landing, cfg.batch_id)
    try:
        os.makedirs(batch_dir, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {batch_dir}: {e.strerror or e}") from None
    if not os.access(batch_dir, os.W_OK | os.X_OK):
        raise UsageError(f"landing directory not writable: {batch_dir}")
    paths = {name: os.path.join(batch_dir, name) for name in ("subscribers.csv", "transactions.csv")}
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and cfg.no_clobber:
        raise UsageError(f"already exists (--no-clobber): {', '.join(existing)}")
    cal = _Calendar(cfg.batch_date, cfg.ttl)
    sg = SubscriberGen(cfg, cal)
    tg = TransactionGen(cfg, cal)
    tmp = {name: os.path.join(batch_dir, f".{name}.tmp-{os.getpid()}") for name in paths}
    try:
        for name, gen, total in (("subscribers.csv", sg, cfg.n_sub + cfg.sub_dirty + cfg.sub_resend),
                                 ("transactions.csv", tg, cfg.n_tx)):
            try:
                w = _Writer(tmp[name], cfg.bom and total > 0)
            except OSError as e:
                raise UsageError(f"landing directory not writable: {batch_dir}: "
                                 f"{e.strerror or e}") from None
            try:
                gen.write(w, _Progress(name, total, cfg.quiet))
            finally:
                w.close()
        for name in paths:          # both complete: move both into place
            os.replace(tmp[name], paths[name])
        # Last, as a producer should: the pipeline's wait_for_landing takes a
        # batch at once when this marker is newer than both files.
        with open(os.path.join(batch_dir, READY_MARKER), "w", encoding="utf-8"):
            pass
    except BaseException:
        for p in tmp.values():
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        raise
    elapsed = time.perf_counter() - t0
    sizes = {n: os.path.getsize(p) for n, p in paths.items()}
    summary = {
        "batch_id": cfg.batch_id,
        "seed": cfg.seed,
        "batch_dir": batch_dir,
        "first_subscriber": cfg.first,
        "subscriber_ids": [cfg.first, cfg.known],
        "late_ids": [cfg.late_lo, cfg.late_lo + cfg.late_n],
        "next_first_subscriber": cfg.known,
        "orphan_ids": [ORPHAN_BASE, ORPHAN_BASE + ORPHAN_SPAN],
        "pending_ttl_days": cfg.ttl,
        "channels": list(cfg.channels),
        "replaced_existing": bool(existing),
        "seconds": round(elapsed, 3),
        "subscribers": _section(sg, paths["subscribers.csv"], sizes["subscribers.csv"], SUB_DIRTY_KINDS),
        "transactions": _section(tg, paths["transactions.csv"], sizes["transactions.csv"], TX_DIRTY_KINDS),
        "expected": _expected(cfg, sg, tg),
    }
    return summary


def main(argv=None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)          # exits 2 on bad syntax / values
    try:
        cfg = Config(ns)
        summary = generate(cfg)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:                  # e.g. disk full while writing
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    if not cfg.quiet:
        s, t = summary["subscribers"], summary["transactions"]
        rows = s["rows"] + t["rows"]
        secs = max(summary["seconds"], 1e-3)
        print(f"datagen: wrote {summary['batch_dir']}: subscribers.csv {s['rows']:,} rows "
              f"({s['dirty_total']:,} dirty, {s['bytes']:,} B), transactions.csv {t['rows']:,} rows "
              f"({t['dirty_total']:,} dirty, {t.get('late', 0):,} late, "
              f"{t.get('orphan_expired', 0) + t.get('orphan_pending', 0):,} orphan, "
              f"{t['bytes']:,} B) in {summary['seconds']:.2f} s ({rows / secs:,.0f} rows/s)"
              + (", replaced the existing files" if summary["replaced_existing"] else ""),
              file=sys.stderr)
    if cfg.summary:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0

