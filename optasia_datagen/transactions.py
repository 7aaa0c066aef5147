"""transactions.csv: exactly M rows (clean, dirty, late, orphan)."""

from __future__ import annotations

import random

from .config import Config
from .dirt import TX_DIRTY_KINDS, TransactionDirt, _KindCycle
from .values import (_AMOUNT_CLASSES, _D3, _FRAC, _M64, _POW10, CHUNK_ROWS, DAY, ORPHAN_BASE,
                     ORPHAN_SPAN, SUB_FMT, _Calendar, _channel_table, _Counter, _format_table,
                     _pad, _pow2_table, _quote, latest_feb29)
from .writer import _Progress, _Writer


class TransactionGen(TransactionDirt):
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
        flush_at = min(CHUNK_ROWS, w.stop)       # w.stop: rows after which hostile lines are due
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
                w.flush(i)
                flush_at = min(i + CHUNK_ROWS, w.stop)
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
