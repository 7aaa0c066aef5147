"""Writing one batch: ``generate()`` and the summary with the outcome the contract
implies."""

from __future__ import annotations

import os
import time

from spark_jobs.contract import READY_MARKER
from spark_jobs.contract import SUBSCRIBER_REASONS as SUB_REASONS
from spark_jobs.contract import TRANSACTION_REASONS as TX_REASONS

from .config import Config, UsageError
from .dirt import SUB_DIRTY_KINDS, TX_DIRTY_KINDS
from .hostile import HostileMaker, place
from .subscribers import SubscriberGen
from .transactions import TransactionGen
from .values import ORPHAN_BASE, ORPHAN_SPAN, _Calendar
from .writer import _Progress, _Writer


def _expected(cfg: Config, sg: SubscriberGen, tg: TransactionGen, hostile: list) -> dict:
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
    for h in hostile:                   # the summary's entries of the hostile lines
        (sub_rej if h["file"] == "subscribers.csv" else tx_rej)[h["reason"]] += 1
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
    maker = HostileMaker(cfg, cal) if cfg.hostile else None
    hostile = []                    # the summary's entries, in file order
    tmp = {name: os.path.join(batch_dir, f".{name}.tmp-{os.getpid()}") for name in paths}
    try:
        for name, gen, total in (("subscribers.csv", sg, cfg.n_sub + cfg.sub_dirty + cfg.sub_resend),
                                 ("transactions.csv", tg, cfg.n_tx)):
            mixed, last = maker.lines(name) if maker else ([], None)
            placed = place(mixed, total)
            if last is not None:
                last.after_row = total
            try:
                w = _Writer(tmp[name], cfg.bom and total > 0, placed, last)
            except OSError as e:
                raise UsageError(f"landing directory not writable: {batch_dir}: "
                                 f"{e.strerror or e}") from None
            try:
                gen.write(w, _Progress(name, total, cfg.quiet))
                w.finish()
            finally:
                w.close()
            lines = mixed + ([last] if last else [])
            if lines:                 # counted as rows of the file like any other
                gen.stats["rows"] = gen.stats.get("rows", 0) + len(lines)
                gen.stats.add("hostile", len(lines))
                hostile.extend(h.entry(cfg.max_line_bytes) for h in lines)
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
        "max_line_bytes": cfg.max_line_bytes,
        "replaced_existing": bool(existing),
        "seconds": round(elapsed, 3),
        "subscribers": _section(sg, paths["subscribers.csv"], sizes["subscribers.csv"], SUB_DIRTY_KINDS),
        "transactions": _section(tg, paths["transactions.csv"], sizes["transactions.csv"], TX_DIRTY_KINDS),
        "hostile": hostile,
        "expected": _expected(cfg, sg, tg, hostile),
    }
    return summary
