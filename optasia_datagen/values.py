"""Values shared by every file: ids, activation dates, the calendar, the text of
timestamps / amounts / channels and the weighted tables the hot loops draw from."""

from __future__ import annotations

import datetime as dt
import math

SUB_FMT = "SUB%09d"
#: ids ``SUB900000000`` and up are never given to a subscriber (orphans).
ORPHAN_BASE = 900_000_000
ORPHAN_SPAN = 99_999_999
DAY = 86_400
MAX_ACTIVATION_AGE_DAYS = 1499
CHUNK_ROWS = 8192
_M64 = (1 << 64) - 1


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


class _Counter(dict):
    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n
