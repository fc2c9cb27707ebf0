"""Progress lines for long stages: rows/s and tokens/s, on stderr.

On a terminal the line redraws in place; elsewhere (logs, CI) a line is printed at most
every ``interval`` seconds, so logs stay readable; ``enabled=False`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "rows",
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if hasattr(self.stream, "isatty") else False
        self.interval = interval if interval is not None else (0.2 if self.tty else 30.0)
        self.done = 0
        self.tokens = 0
        self.started = time.monotonic()
        self._last = 0.0
        self.extra = ""

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def update(self, rows: int = 0, *, tokens: int = 0, extra: str = "") -> None:
        self.done += rows
        self.tokens += tokens
        if extra:
            self.extra = extra
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._emit(final=False)

    def line(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        rate = self.done / self.elapsed
        parts = [f"{self.label}: {self.done}{of} {self.unit}", f"{rate:.2f} {self.unit}/s"]
        if self.tokens:
            parts.append(f"{self.tokens / self.elapsed:.0f} tok/s")
        parts.append(f"{self.elapsed:.0f}s")
        if self.extra:
            parts.append(self.extra)
        return ", ".join(parts)

    def _emit(self, *, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._emit(final=True)
