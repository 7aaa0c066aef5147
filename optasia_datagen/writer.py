"""The buffered line writer of one file and the progress lines on stderr."""

from __future__ import annotations

import sys
import time


#: ``_Writer.stop`` when no hostile line is due
NEVER = 1 << 62


class _Writer:
    """Buffered line writer to a temporary file, renamed into place by the caller.

    ``hostile`` is a list of (ordinary rows before it, HostileLine) in file
    order and ``last`` a line to end the file with: the generators call
    ``flush(rows)`` whenever ``rows`` reaches ``stop`` (the next position), and
    ``finish()`` writes what is left once the ordinary rows are written.
    """

    def __init__(self, path: str, bom: bool, hostile=(), last=None):
        self.path = path
        self.f = open(path, "w", encoding="utf-8", newline="", buffering=1 << 20)
        self.chunk: list[str] = []
        self.bom = bom
        self.lines = 0
        self.hostile = list(hostile)
        self.last = last
        self._next = 0                    # index of the next hostile line to write
        self.stop = self.hostile[0][0] if self.hostile else NEVER

    def flush(self, rows=None):
        if self.chunk:
            if self.bom:
                self.chunk[0] = "\ufeff" + self.chunk[0]
                self.bom = False
            self.f.write("".join(self.chunk))
            self.chunk.clear()
        if rows is not None and rows >= self.stop:
            self._write_hostile(rows)

    def _write_hostile(self, rows):
        """The hostile lines due after ``rows`` ordinary rows, streamed in pieces."""
        hostile, write = self.hostile, self.f.write
        i = self._next
        while i < len(hostile) and hostile[i][0] <= rows:
            for piece in hostile[i][1].pieces():
                write(piece)
            i += 1
        self._next = i
        self.stop = hostile[i][0] if i < len(hostile) else NEVER

    def finish(self):
        """After the last ordinary row: the hostile lines left, then the last line."""
        self.flush()
        if self._next < len(self.hostile):
            self._write_hostile(NEVER)
        if self.last is not None:
            for piece in self.last.pieces():
                self.f.write(piece)
            self.last = None

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
