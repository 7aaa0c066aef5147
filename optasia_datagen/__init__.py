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

Hostile lines (``--hostile CASES``, or ``all``): fields of 1 MB and 8 MB, a line
of 50 MB, a line of a million commas, a last line of 20 MB without a line
ending, an unclosed quote (see ``optasia_datagen.hostile``). They are mixed in
at evenly spaced positions, on top of the ordinary rows, which stay exactly
those of the same command without ``--hostile``; their expected reason takes
``--max-line-bytes`` (the job's bound, default
``spark_jobs.contract.DEFAULT_MAX_LINE_BYTES``) into account, and ``--summary``
lists them under ``"hostile"`` and counts them in ``"expected"``.

The files are written to hidden temporary names in the batch folder and both
renamed into place at the end.

Modules
-------
``values``        ids, ``activation_date()``, the calendar, timestamp / amount /
                  channel text and the weighted tables;
``dirt``          the dirty kinds (``SUB_DIRTY_KINDS``, ``TX_DIRTY_KINDS``) and the
                  dirty-line builders;
``hostile``       the hostile cases (``--hostile``), streamed in pieces;
``subscribers``   ``SubscriberGen``, which streams subscribers.csv;
``transactions``  ``TransactionGen``, which streams transactions.csv;
``config``        the argument parser and ``Config``;
``writer``        the buffered writer (which mixes the hostile lines in) and progress;
``batch``         ``generate()`` and the summary;
``cli``           ``main()``.
"""

from .batch import generate
from .cli import main
from .config import Config, UsageError, build_parser
from .dirt import SUB_DIRTY_KINDS, TX_DIRTY_KINDS
from .hostile import CASES as HOSTILE_CASES
from .subscribers import SubscriberGen
from .transactions import TransactionGen
from .values import (CHUNK_ROWS, DAY, MAX_ACTIVATION_AGE_DAYS, ORPHAN_BASE, ORPHAN_SPAN, SUB_FMT,
                     _Calendar, activation_date, latest_feb29)

__all__ = [
    "CHUNK_ROWS", "DAY", "HOSTILE_CASES", "MAX_ACTIVATION_AGE_DAYS", "ORPHAN_BASE", "ORPHAN_SPAN",
    "SUB_DIRTY_KINDS", "SUB_FMT", "TX_DIRTY_KINDS", "Config", "SubscriberGen", "TransactionGen",
    "UsageError", "_Calendar", "activation_date", "build_parser", "generate", "latest_feb29", "main",
]
