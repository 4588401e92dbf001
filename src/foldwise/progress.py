"""The sweep's progress line: models done of total, the current stack's epoch, the last score, ETA.

The ETA comes from measured throughput in *model-epochs per second* (a stack of 80
models that runs one epoch in 0.5 s did 160 model-epochs/s), times the model-epochs
still to do at most (every training model to its ``max_epochs``, pending stacks in
full). The first epoch of a process pays warm-up and is not measured, so no ETA is
shown until one steady epoch has run; early stopping only ever shortens it.

Lines are printed at most every ``every`` seconds (and at each stack's first and last
epoch), so a log file from CI or a cluster stays readable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def process_seconds() -> float | None:
    """Seconds since this process started, interpreter start-up and imports included
    (Linux: ``/proc/self/stat``, to 1/100 s); None where that is not known."""
    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


@dataclass
class Progress:
    total: int  # models in the whole sweep
    done: int = 0  # finished before or during this run (incl. skipped and reused)
    pending_epochs: int = 0  # model-epochs of the stacks not started yet
    every: float = 5.0
    out: Callable[[str], None] = field(default=lambda s: print(s, flush=True))
    started: float = field(default_factory=time.monotonic)
    last: str = ""
    _work: float = 0.0  # model-epochs measured
    _seconds: float = 0.0
    _printed: float = -1e9
    _warm: bool = False

    @property
    def rate(self) -> float:
        return self._work / self._seconds if self._seconds > 0 else float("nan")

    def finished(self, label: str, fold: int | str, score: str) -> None:
        """``fold``: a fold number, or a text saying where the model belongs."""
        self.done += 1
        where = f"fold {fold}" if isinstance(fold, int) else fold
        self.last = f"{label} · {where} · {score}"

    def skipped(self, n: int = 1) -> None:
        self.done += n

    def epoch(
        self,
        stack: int,
        n_stacks: int,
        epoch: int,
        max_epochs: int,
        work: int,
        seconds: float,
        remaining: int,
        training: int,
    ) -> None:
        """After each stack epoch: ``work`` model-epochs took ``seconds``; ``remaining``
        model-epochs are left at most in this stack, ``training`` models still train."""
        if self._warm:
            self._work += work
            self._seconds += seconds
        self._warm = True
        now = time.monotonic()
        first_or_last = epoch == 1 or training == 0
        if not first_or_last and now - self._printed < self.every:
            return
        self._printed = now
        eta = (remaining + self.pending_epochs) / self.rate
        line = (
            f"[foldwise] models {self.done}/{self.total} · stack {stack + 1}/{n_stacks} · "
            f"epoch {epoch}/{max_epochs} · {training} training · elapsed "
            f"{clock(now - self.started)} · ETA {clock(eta)}"
        )
        self.out(line + (f" · last: {self.last}" if self.last else ""))


def default_every() -> float:
    """Every 2 s on a terminal, every 10 s in a log file."""
    return 2.0 if sys.stdout.isatty() else 10.0
