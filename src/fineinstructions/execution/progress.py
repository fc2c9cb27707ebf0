"""Progress of long stages: rows done, rows/s, tokens/s, elapsed and ETA, on stderr.

Two displays, chosen by whether the stream is a terminal:

- a terminal gets a live ``tqdm`` bar, redrawn by a heartbeat thread too, so its
  elapsed time and rates keep moving between updates;
- anything else (a log file, CI, a cluster job) gets one plain line every ``interval``
  seconds (30 by default) from a daemon thread, whether or not an ``update()`` came in
  between, and a final line on ``close()``. A stage that stalls therefore still says so.

``enabled=False`` prints nothing and starts no thread. ``update()`` may be called from
any thread (the runner calls it from callbacks). ``close()`` is idempotent.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

# A terminal bar is redrawn this often by the heartbeat when no update comes.
TERMINAL_REFRESH = 1.0
LOG_INTERVAL = 30.0


def format_duration(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` (``M:SS`` under an hour)."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts rows and tokens of one stage run and reports them while it runs.

    ``interval`` is the seconds between plain lines when the stream is not a terminal
    (default 30), or between heartbeat redraws of the terminal bar (default 1). The
    ``total`` may be set or raised after construction (``progress.total = n``).
    Usable as a context manager, which closes it.
    """

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
        if interval is not None and interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval}")
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self.interval = interval if interval is not None else (TERMINAL_REFRESH if self.tty else LOG_INTERVAL)
        self.done = 0
        self.tokens = 0
        self.extra = ""
        self.started = time.monotonic()
        self._total = total
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._closed = False
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        if self.tty:
            from tqdm import tqdm  # only a terminal needs it

            self._bar = tqdm(
                total=total, desc=label, unit=unit, file=self.stream, dynamic_ncols=True, leave=True
            )
        self._thread = threading.Thread(target=self._heartbeat, name=f"progress:{label}", daemon=True)
        self._thread.start()

    # -- state --------------------------------------------------------------------------

    @property
    def total(self) -> int | None:
        """How many rows the run will have, when known."""
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        with self._lock:
            self._total = value
            if self._bar is not None:
                self._bar.total = value
                self._bar.refresh()

    def set_total(self, value: int | None) -> None:
        """Set (or raise) the total: the same as ``progress.total = value``."""
        self.total = value

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def running(self) -> bool:
        """Whether the heartbeat thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def update(self, rows: int = 0, *, tokens: int = 0, extra: str = "") -> None:
        """Count ``rows`` more rows and ``tokens`` more tokens; ``extra`` (when given)
        replaces the free text shown at the end of the line."""
        with self._lock:
            self.done += rows
            self.tokens += tokens
            if extra:
                self.extra = extra
            if self._bar is not None and not self._closed:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
                self._bar.update(rows)

    # -- display --------------------------------------------------------------------------

    def line(self, *, final: bool = False) -> str:
        """The plain progress line: rows (of total), rates, elapsed, ETA, extra."""
        elapsed = self.elapsed
        rate = self.done / elapsed
        total = self._total
        of = f"/{total}" if total is not None else ""
        parts = [f"{self.label}: {self.done}{of} {self.unit}"]
        if total:
            parts[0] += f" ({100 * self.done / total:.1f}%)"
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.tokens:
            parts.append(f"{self.tokens / elapsed:.0f} tok/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if total is not None and not final:
            left = max(total - self.done, 0)
            parts.append(f"ETA {format_duration(left / rate)}" if rate > 0 else "ETA ?")
        if self.extra:
            parts.append(self.extra)
        return ", ".join(parts)

    def _postfix(self) -> str:
        tokens = f"{self.tokens / self.elapsed:.0f} tok/s" if self.tokens else ""
        return ", ".join(part for part in (tokens, self.extra) if part)

    def _heartbeat(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                if self._bar is not None:
                    self._bar.set_postfix_str(self._postfix(), refresh=False)
                    self._bar.refresh()
                    continue
                text = self.line()
            self._write(text)  # outside the lock: a slow stream never holds up update()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (ValueError, OSError):  # the stream was closed under us: stay quiet
            pass

    def close(self) -> None:
        """Stop the heartbeat and print the final state; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if not self.enabled:
            return
        with self._lock:
            if self._bar is not None:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
                self._bar.close()
            else:
                self._write(self.line(final=True))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
