"""subscribers.csv: every new id once, plus dirty and re-sent rows."""

from __future__ import annotations

import random

from .config import Config
from .dirt import SUB_DIRTY_KINDS, SubscriberDirt, _KindCycle
from .values import (CHUNK_ROWS, MAX_ACTIVATION_AGE_DAYS, SUB_FMT, _Calendar, _coprime_step,
                     _Counter, _id_hash, _pad, _quote, latest_feb29)
from .writer import _Progress, _Writer


class SubscriberGen(SubscriberDirt):
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
        stop = w.stop            # rows after which hostile lines are due
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
            if len(chunk) >= CHUNK_ROWS or done >= stop:
                w.flush(done)
                stop = w.stop
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
