"""Hostile lines (``--hostile``): what a careless or malicious producer may send,
to show that the job's every check of a line is linear in its length.

Cases (MB = 1,000,000 bytes; every line is ASCII):

``field-1mb``       for each field of each file and each kind of value, one line
                    whose other fields are valid and this field is 1,000,000
                    characters as written: ``digits`` (``0123456789`` repeated),
                    ``letters`` (``abc..z`` repeated), ``quotes`` (a quoted field
                    of doubled quotes: a quote, ``""`` repeated, a quote),
                    ``commas`` (a quoted field ``"a,a,...a,"``); 6 fields x 4
                    kinds = 24 lines (8 + 16). Reason: that field's rule (no
                    value that long can pass it).
``field-8mb``       the same 24 lines with 8,000,000-character values.
``line-50mb``       one transactions line of 50,000,000 letters (one field).
``million-commas``  one line of exactly 1,000,000 commas in each file.
``last-line-20mb``  the last line of transactions.csv: 20,000,000 characters (a
                    valid timestamp, sub_id, amount and a channel padded with
                    letters), with no line ending after it; invalid_channel.
``unclosed-quote``  one line per file whose quoted field never closes
                    (``SUB000000001,"2024-01-01``), before at least half of the
                    file's ordinary rows: a physical line is a row, so it is a
                    malformed_row and the lines after it are judged on their own.

A line longer than ``--max-line-bytes`` (its bytes without the line ending) is
a ``malformed_row`` whatever it holds. Lines are written in pieces of about
1 MB: no hostile line is ever held in memory whole.
"""

from __future__ import annotations

import argparse
import random

from .values import DAY, SUB_FMT

MB = 1_000_000
#: the cases in the order they are placed in a file (unclosed-quote first, so
#: that it comes before at least half of the ordinary rows)
CASES = ("unclosed-quote", "field-1mb", "field-8mb", "million-commas", "line-50mb", "last-line-20mb")
KINDS = ("digits", "letters", "quotes", "commas")
#: file -> its fields in order, with the reason of each field's rule
FIELDS = {
    "subscribers.csv": (("sub_id", "invalid_sub_id"), ("activation_date", "invalid_activation_date")),
    "transactions.csv": (("timestamp", "invalid_timestamp"), ("sub_id", "invalid_sub_id"),
                         ("amount", "invalid_amount"), ("channel", "invalid_channel")),
}
_FIELD_SIZES = {"field-1mb": MB, "field-8mb": 8 * MB}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# characters per written piece: a multiple of 10, 26 and 2, so that a repeated
# unit continues seamlessly from one piece to the next
_PIECE = 40_000 * 26
_pieces: dict[str, str] = {}
# unquoted kinds -> their repeated unit ("comma-run" is a whole line of commas)
_UNITS = {"digits": "0123456789", "letters": _LETTERS, "comma-run": ","}


def parse_cases(text: str) -> tuple[str, ...]:
    """``--hostile``: comma-separated case names or ``all`` -> the cases in CASES order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    valid = ", ".join(sorted(CASES))
    if not names:
        raise argparse.ArgumentTypeError(f"no case given; valid cases: {valid}, or all")
    unknown = [n for n in names if n not in CASES and n != "all"]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown case{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid cases: {valid}, or all")
    return tuple(c for c in CASES if c in names or "all" in names)


def _repeat(unit: str, n: int):
    """``unit`` repeated to exactly n characters, as pieces of at most _PIECE."""
    piece = _pieces.get(unit)
    if piece is None:
        piece = _pieces[unit] = unit * (_PIECE // len(unit))
    full, rest = divmod(n, _PIECE)
    for _ in range(full):
        yield piece
    if rest:
        yield piece[:rest]


def _value(kind: str, n: int):
    """A field of n characters as written in the file (quotes included), in pieces."""
    unit = _UNITS.get(kind)
    if unit is not None:
        yield from _repeat(unit, n)
    else:                                   # a quoted field: "" + n - 2 characters
        yield '"'
        yield from _repeat('""' if kind == "quotes" else "a,", n - 2)
        yield '"'


class HostileLine:
    """One hostile line: what the summary says of it, and its text in pieces."""

    def __init__(self, case, file, field, kind, parts, natural_reason, ending="\n"):
        self.case, self.file, self.field, self.kind = case, file, field, kind
        # parts: strings, or (kind, n) for a generated value of n characters
        self.parts = parts
        self.bytes = sum(p[1] if isinstance(p, tuple) else len(p) for p in parts)
        self.natural_reason = natural_reason
        self.ending = ending
        self.after_row = 0               # ordinary rows before it, set when placed

    def reason(self, max_line_bytes: int) -> str:
        return "malformed_row" if self.bytes > max_line_bytes else self.natural_reason

    def pieces(self):
        for p in self.parts:
            if isinstance(p, tuple):
                yield from _value(*p)
            else:
                yield p
        if self.ending:
            yield self.ending

    def entry(self, max_line_bytes: int) -> dict:
        return {"case": self.case, "file": self.file, "field": self.field, "kind": self.kind,
                "bytes": self.bytes, "reason": self.reason(max_line_bytes), "after_row": self.after_row}


def _join(fields) -> list:
    """Fields (strings or generated values) -> parts with the commas between them."""
    parts: list = []
    for i, f in enumerate(fields):
        if i:
            parts.append(",")
        parts.append(f)
    return parts


class HostileMaker:
    """Builds the hostile lines of a batch with valid other fields drawn from its
    own random stream (the ordinary rows' streams are not touched)."""

    def __init__(self, cfg, cal):
        self.cfg, self.cal = cfg, cal
        self.rnd = random.Random(f"optasia-datagen|{cfg.seed}|{cfg.batch_id}|hostile").random

    # -- valid values --------------------------------------------------------------
    def _sub_fields(self) -> list:
        """A new id of the batch (or a known one) and its activation date."""
        c, rnd = self.cfg, self.rnd
        if c.n_sub:
            k = c.first + int(rnd() * c.n_sub)
        else:
            k = int(rnd() * max(c.known, 1))
        return [SUB_FMT % k, self.cal.date(self.cal.act_rel(k))]

    def _tx_fields(self) -> list:
        """A row that would be published: a known id, a time on the batch date (on
        or after any known id's activation), an amount and an allowed channel."""
        c, rnd = self.cfg, self.rnd
        k = int(rnd() * max(c.known, 1))
        sec = int(rnd() * DAY)
        ts = "%sT%s%s" % (self.cal.date(0), self.cal.hms[sec], "Z" if rnd() < 0.5 else "+00:00")
        amount = "%d.%02d" % (1 + int(rnd() * 9999), int(rnd() * 100))
        return [ts, SUB_FMT % k, amount, c.channels[int(rnd() * len(c.channels))]]

    def _fields(self, file) -> list:
        return self._sub_fields() if file == "subscribers.csv" else self._tx_fields()

    # -- the lines -----------------------------------------------------------------
    def lines(self, file: str) -> tuple[list[HostileLine], HostileLine | None]:
        """(the lines to mix into the rows of ``file`` in CASES order, the last line or None)."""
        out: list[HostileLine] = []
        last = None
        for case in self.cfg.hostile:
            if case == "unclosed-quote":
                # SUB..,"2024-01-01 / ts,SUB..,"12.50,SMS: the quote opens and never closes
                f = self._fields(file)
                i = 1 if file == "subscribers.csv" else 2
                f[i] = '"' + f[i]
                out.append(HostileLine(case, file, FIELDS[file][i][0], None, [",".join(f)],
                                       "malformed_row"))
            elif case in _FIELD_SIZES:
                n = _FIELD_SIZES[case]
                for i, (field, reason) in enumerate(FIELDS[file]):
                    for kind in KINDS:
                        f = self._fields(file)
                        f[i] = (kind, n)
                        out.append(HostileLine(case, file, field, kind, _join(f), reason))
            elif case == "million-commas":
                out.append(HostileLine(case, file, None, None, [("comma-run", MB)],
                                       "malformed_row"))
            elif case == "line-50mb" and file == "transactions.csv":
                out.append(HostileLine(case, file, None, None, [("letters", 50 * MB)], "malformed_row"))
            elif case == "last-line-20mb" and file == "transactions.csv":
                f = self._tx_fields()
                head = ",".join(f)               # ts,sub_id,amount,channel + letters to 20 MB
                last = HostileLine(case, file, "channel", "letters",
                                   [head, ("letters", 20 * MB - len(head))], "invalid_channel", ending="")
        return out, last


def place(lines: list[HostileLine], rows: int) -> list[tuple[int, HostileLine]]:
    """Evenly spaced positions (ordinary rows before each line) among ``rows`` rows;
    never before the first row when there is one (a --bom stays on a row)."""
    h = len(lines)
    placed = []
    for j, line in enumerate(lines):
        pos = max(1, (j + 1) * rows // (h + 1)) if rows else 0
        line.after_row = pos
        placed.append((pos, line))
    return placed
