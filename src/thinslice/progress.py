"""Progress of long steps, and where a step's messages go.

Run by hand, a step shows tqdm bars on the terminal. Run with `--log FILE` (as every
workflow rule does), everything the step prints, the C libraries' output included, goes to
its log file, and the console, which Snakemake shares among its jobs, gets only what a
user must see: a progress line every `CONSOLE_EVERY_S` seconds (30; the
environment variable THINSLICE_PROGRESS_S sets it) of a long loop (step,
loss, ETA) and the one-line error of a step that fails.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

def _console_every_s() -> float:
    try:
        return float(os.environ.get("THINSLICE_PROGRESS_S", "30"))
    except ValueError:
        return 30.0


CONSOLE_EVERY_S = _console_every_s()   # THINSLICE_PROGRESS_S sets it, e.g. 300 on a cluster

_console: TextIO | None = None   # the terminal, while stdout and stderr go to a log file
_label = "thinslice"             # starts every line of `say` and every console progress line


def log_to(path: str | Path, label: str) -> None:
    """Send stdout and stderr of this process to the log file `path` (created, or emptied);
    keep the terminal for `say` and the progress lines, prefixed with `label`."""
    global _console, _label
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "w")
    sys.stdout.flush()
    sys.stderr.flush()
    _console = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    log.close()
    _label = label


def logging_to_file() -> bool:
    return _console is not None


def say(text: str) -> None:
    """One line on stderr, and on the terminal too while stderr goes to a log file."""
    print(f"{_label}: {text}", file=sys.stderr, flush=True)
    if _console is not None:
        print(f"{_label}: {text}", file=_console, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A tqdm bar on stderr (the terminal, or the log file with a line every 15 s), and
    with `--log`, a line on the console every CONSOLE_EVERY_S seconds and, after those, one
    at the end."""

    def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "step", enabled: bool = True):
        from tqdm import tqdm

        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.done = self.start = initial
        self.postfix: dict[str, str] = {}
        self.t0 = self.last = time.monotonic()
        self.spoke = False
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                        disable=not enabled, dynamic_ncols=True,
                        mininterval=0.5 if sys.stderr.isatty() else 15.0)

    def set_postfix(self, **values: str) -> None:
        self.postfix = values
        self.bar.set_postfix(refresh=False, **values)   # the bar redraws at its own pace

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if now - self.last >= CONSOLE_EVERY_S:
            self.last = now
            self.spoke = True
            self._console_line(now)

    def _console_line(self, now: float, final: bool = False) -> None:
        if _console is None or not self.enabled:
            return
        elapsed = now - self.t0
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        if final:
            text = f"{self.desc}: done, {self.done}/{self.total} in {_clock(elapsed)}{extra}"
        else:
            rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
            eta = f", ETA {_clock((self.total - self.done) / rate)}" if rate > 0 else ""
            text = (f"{self.desc}: {self.unit} {self.done}/{self.total} ({100 * self.done // max(self.total, 1)}%)"
                    f"{extra}, {_clock(elapsed)} elapsed{eta}")
        print(f"{_label}: {text}", file=_console, flush=True)

    def close(self) -> None:
        self.bar.close()
        if self.spoke:   # a loop too short for a progress line ends without a line
            self._console_line(time.monotonic(), final=True)
