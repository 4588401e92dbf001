"""Torch's CPU threads for a training process, shared with the others on this machine.

torch gives every process one intra-op thread per core. Two trainings at once — queued
DVC experiments (``dvc queue start -j 2``), joblib workers, a second sweep in another
checkout — then run twice as many threads as there are cores, and tiny models, whose
steps are short, slow down several times over (measured: ``benchmarks/bench_threads.py``).

So each training process registers itself in a machine-wide folder (a file named by its
pid), counts the live registrations, and takes its share of the cores it may run on
(``os.sched_getaffinity``: what SLURM or ``taskset`` granted). :func:`rebalance` runs at
every epoch start (rate-limited), so a process that started alone gives cores back as soon
as a second one starts. It must run on the training thread: with OpenMP the thread count
is per thread. ``FOLDWISE_THREADS=n`` fixes the count; with ``OMP_NUM_THREADS`` set,
foldwise leaves torch's count alone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# Seconds between two looks at the registry from the same process.
EVERY = 2.0

_registered: Path | None = None
_cap: int | None = None  # this process's most (a worker's cpus_per_task, cores ÷ n_jobs)
_last_look = -EVERY
_last_set: int | None = None


def registry() -> Path:
    """The machine-wide folder of training processes (one per user)."""
    return Path(tempfile.gettempdir()) / f"foldwise-threads-{os.getuid()}"


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def live(folder: Path) -> int:
    """Live registered processes (stale entries of dead ones are removed)."""
    n = 0
    for entry in folder.glob("*") if folder.is_dir() else ():
        if not entry.name.isdigit():
            continue
        if _alive(int(entry.name)):
            n += 1
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return n


def share(n_cores: int, n_live: int) -> int:
    """This process's threads: an even share of the cores, at least one."""
    return max(1, n_cores // max(1, n_live))


def _unregister() -> None:
    global _registered
    if _registered is not None:
        with contextlib.suppress(OSError):
            _registered.unlink()
        _registered = None


def _register() -> None:
    global _registered
    folder = registry()
    mine = folder / str(os.getpid())
    if _registered == mine and mine.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    mine.touch()
    _registered = mine
    atexit.register(_unregister)  # an exception or Ctrl-C; kill -9 leaves a dead pid: pruned


_training = 0  # stacks training now in this process (one per device worker thread)
_training_lock = threading.Lock()


@contextlib.contextmanager
def training() -> Iterator[None]:
    """While a stack trains: this process counts as a training one, with its share
    (until its last stack ends: device workers train several at once)."""
    global _training
    with _training_lock:
        _training += 1
        _register()
    try:
        rebalance(force=True)
        yield
    finally:
        with _training_lock:
            _training -= 1
            if not _training:
                _unregister()


def cap(n: int | None) -> None:
    """At most ``n`` threads in this process, whatever its share (None: no cap)."""
    global _cap, _last_look
    _cap = n
    _last_look = -EVERY  # the next rebalance applies it


def rebalance(force: bool = False) -> int | None:
    """Set torch's threads to this process's share of the cores; returns the count set
    (``None`` when the user fixed it with ``OMP_NUM_THREADS``). Cheap when called often:
    it looks at the registry every ``EVERY`` seconds."""
    global _last_look
    explicit = os.environ.get("FOLDWISE_THREADS")
    if explicit:
        _set(int(explicit))
        return int(explicit)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    now = time.monotonic()
    if not force and now - _last_look < EVERY:
        return _last_set
    _last_look = now
    n = share(cores(), max(1, live(registry())))
    n = min(n, _cap) if _cap else n
    _set(n)
    return n


def _set(n: int) -> None:
    global _last_set
    if n != _last_set:
        import torch

        torch.set_num_threads(n)
        _last_set = n
