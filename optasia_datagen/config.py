"""The arguments: the parser, their validation and the derived counts (Config)."""

from __future__ import annotations

import argparse
import datetime as dt
import re

from spark_jobs.contract import DEFAULT_CHANNELS, DEFAULT_MAX_LINE_BYTES, batch_date

from .hostile import CASES as HOSTILE_CASES
from .hostile import parse_cases
from .values import ORPHAN_BASE

_CHANNEL_RE = re.compile(r"^[A-Z0-9_-]{1,32}$")
#: the least --max-line-bytes: every ordinary line (dirty ones included) is
#: shorter than 256 bytes, so only hostile lines can be over the bound
MIN_MAX_LINE_BYTES = 1024


class UsageError(Exception):
    """A bad argument: reported on stderr with exit status 2."""


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
    p.add_argument("--hostile", metavar="CASES", type=parse_cases, default=None,
                   help="add hostile lines (huge fields and lines, an unclosed quote) to the "
                        "ordinary rows: comma-separated cases among "
                        f"{', '.join(HOSTILE_CASES)}, or all")
    p.add_argument("--max-line-bytes", metavar="N", type=_count, default=DEFAULT_MAX_LINE_BYTES,
                   help="the job's max_line_bytes: a line longer than this (line ending "
                        "excluded) is expected to be a malformed_row")
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
        self.hostile = ns.hostile or ()
        if self.hostile and ns.empty:
            raise UsageError("--hostile cannot be used with --empty (the files of --empty are 0 bytes)")
        self.max_line_bytes = ns.max_line_bytes
        if self.max_line_bytes < MIN_MAX_LINE_BYTES:
            raise UsageError(f"--max-line-bytes must be >= {MIN_MAX_LINE_BYTES} (ordinary lines are "
                             f"up to 255 bytes and must stay within it), got {self.max_line_bytes}")
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
