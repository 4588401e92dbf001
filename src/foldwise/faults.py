"""TEST-ONLY fault injection: make chosen models fail the way real ones do.

Never set this in real work. The test suite sets the environment variable
``FOLDWISE_FAULT`` to check that one failing model fails alone (its fold run FAILED,
the rest of its stack and the other stacks trained, the stage's exit following
``sweep.max_failures``). This module is the only place that reads it; the engine calls
:func:`inject` at the end of every stack epoch, before scoring.

``FOLDWISE_FAULT`` holds rules separated by ``;``, each ``KIND[@EPOCH]:PATTERN[#FOLD]``:

* ``KIND``: ``raise`` (a ``RuntimeError``), ``oom`` (``torch.OutOfMemoryError``, as a
  GPU out of memory raises), ``memory`` (``MemoryError``, a host out of memory),
  ``kill`` (the process kills itself with SIGKILL, like the kernel's OOM killer),
  ``hang`` (the process stops making progress until a signal ends it: a stuck job, for
  the ``scancel`` and timeout tests);
* ``EPOCH``: the stack epoch it happens at (default 1);
* ``PATTERN``: space-separated ``key=value`` words that must all be in the model's
  label (``hidden=8 lr=0.01`` matches ``mlp hidden=8 lr=0.01``); ``*`` matches any;
* ``FOLD``: only that fold (resample) of the configuration.

Example: ``FOLDWISE_FAULT='raise:hidden=8 lr=0.01#1;oom@2:hidden=16'``.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass

ENV = "FOLDWISE_FAULT"
KINDS = ("raise", "oom", "memory", "kill", "hang")


@dataclass(frozen=True)
class Rule:
    kind: str
    epoch: int
    words: frozenset[str]
    fold: int | None

    def matches(self, label: str, key: str, epoch: int) -> bool:
        if epoch != self.epoch:
            return False
        if self.fold is not None and not key.endswith(f"-fold{self.fold}"):
            return False
        return "*" in self.words or self.words <= set(label.split())


@functools.lru_cache(maxsize=4)
def parse(text: str) -> tuple[Rule, ...]:
    rules = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        head, _, pattern = part.partition(":")
        kind, _, epoch = head.partition("@")
        if kind not in KINDS or not pattern:
            raise ValueError(f"{ENV}: bad rule {part!r} (KIND[@EPOCH]:PATTERN[#FOLD])")
        pattern, _, fold = pattern.partition("#")
        rules.append(
            Rule(kind, int(epoch or 1), frozenset(pattern.split()), int(fold) if fold else None)
        )
    return tuple(rules)


def inject(tasks: list, epoch: int, active: list[int]) -> None:
    """Fail as the first rule matching one of the ``active`` tasks at ``epoch`` says."""
    text = os.environ.get(ENV)
    if not text:
        return
    for rule in parse(text):
        for m in active:
            t = tasks[m]
            if rule.matches(t.label, t.key, epoch):
                where = f"{t.label} ({t.key}) at epoch {epoch}"
                if rule.kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                while rule.kind == "hang":  # SIGTERM's KeyboardInterrupt ends it
                    time.sleep(0.2)
                if rule.kind == "oom":
                    import torch

                    raise torch.OutOfMemoryError(f"injected out of memory: {where}")
                if rule.kind == "memory":
                    raise MemoryError(f"injected host out of memory: {where}")
                raise RuntimeError(f"injected fault: {where}")
