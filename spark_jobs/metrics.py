"""A run's numbers: the seconds of each step (``timings``) and the contract's
per-batch metrics from the job's counts, checked against the conservation laws
(docs/data-contract.md "Metrics")."""

from __future__ import annotations

import logging
import time

from . import transform as tr
from .contract import SUBSCRIBER_REASONS, TRANSACTION_REASONS, conservation_errors
from .errors import ContractError, EtlError

log = logging.getLogger(__name__)


OVERLAPPED = "_overlapped"


class Timings:
    """Seconds per step of a run, logged as each ends: long work shows progress.

    ``with timings.step("store_read", "reading the store"):`` adds the step's
    wall time under its key; the dict goes into ``_metrics.json`` and the
    store's run row.
    """

    def __init__(self, initial: dict | None = None):
        self.seconds: dict[str, float] = dict(initial or {})

    def step(self, key: str, text: str):
        return _Step(self, key, text)

    def add(self, key: str, seconds: float):
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def as_dict(self) -> dict:
        """Seconds per step and ``total``; a key ending in ``OVERLAPPED`` holds
        seconds that ran alongside other steps and stays out of the total."""
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        out["total"] = round(sum(v for k, v in self.seconds.items() if not k.endswith(OVERLAPPED)), 3)
        return out


class _Step:
    def __init__(self, timings: Timings, key: str, text: str):
        self.timings, self.key, self.text = timings, key, text

    def __enter__(self):
        self.t0 = time.monotonic()
        log.info("%s ...", self.text)
        return self

    def __exit__(self, exc_type, *_):
        took = time.monotonic() - self.t0
        self.timings.add(self.key, took)
        if exc_type is None:
            log.info("%s done in %.1fs", self.text, took)


def compute_metrics(sub_reasons: dict, merge_rows: list, fates_rows: list, transactions_input: int,
                    pending_in: int) -> dict:
    """All per-batch numbers of the contract.

    ``sub_reasons``: reason (None = valid) -> rows of the subscribers file;
    ``merge_rows``: ``(action, subscribers, duplicates)`` of the batch's
    unique subscribers; ``fates_rows``: ``(origin, status, reason, rows)`` of
    transaction_fates. ``transactions_input`` (lines of the file) and
    ``pending_in`` (rows read from the store) are counted on their own, so
    the conservation law checks the fates against the inputs.
    """
    actions = {a: n for a, n, _ in merge_rows}
    m = {
        "subscribers_input": sum(sub_reasons.values()),
        "subscribers_rejected": {r: sub_reasons.get(r, 0) for r in SUBSCRIBER_REASONS},
        "subscribers_duplicate": int(sum(d or 0 for _, _, d in merge_rows)),
        "subscribers_inserted": actions.get("inserted", 0),
        "subscribers_updated": actions.get("updated", 0),
        "subscribers_unchanged": actions.get("unchanged", 0),
        "transactions_input": transactions_input,
        "pending_in": pending_in,
        "transactions_rejected": {r: 0 for r in TRANSACTION_REASONS},
        "transactions_duplicate": sum(n for _, st, _, n in fates_rows if st == tr.DUPLICATE),
        "pending_resolved": sum(n for o, st, _, n in fates_rows if o == "pending" and st == tr.PUBLISHED),
        "published": sum(n for _, st, _, n in fates_rows if st == tr.PUBLISHED),
        "pending_out": sum(n for _, st, _, n in fates_rows if st == tr.PENDING),
    }
    unknown = {r for r in sub_reasons if r} - set(SUBSCRIBER_REASONS)
    for _, st, reason, n in fates_rows:
        if st == tr.REJECTED:
            if reason not in m["transactions_rejected"]:
                unknown.add(reason)
            else:
                m["transactions_rejected"][reason] += n
        elif st not in (tr.PUBLISHED, tr.PENDING, tr.DUPLICATE):
            unknown.add(f"status {st}")
    if unknown:
        raise EtlError(f"internal error: unexpected reject reasons or fates {sorted(map(str, unknown))}")
    return m


def check_conservation(m: dict):
    errors = conservation_errors(m)
    if errors:
        raise ContractError("conservation law broken, nothing published: " + "; ".join(errors))
