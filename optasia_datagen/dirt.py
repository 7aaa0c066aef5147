"""Dirty rows: the kinds each file gets (with the reason the ETL must give) and
the builders of one dirty line, as mixins of the generators."""

from __future__ import annotations

import datetime as dt

from .values import _POW10, DAY, SUB_FMT

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


class SubscriberDirt:
    """``dirty_line(kind)`` of SubscriberGen (uses its rnd, cal, year, _valid_pair)."""

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


class TransactionDirt:
    """Dirty lines of TransactionGen (uses its rnd, grb, cal, fmt, chan, ring...)."""

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
