"""The one exception type users see: what is wrong, and how to fix it; and how every
stage entry script ends (:func:`run_stage`): exit codes, interrupts, redaction."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class FoldwiseError(ValueError):
    """A problem with the user's input or state, raised before any work is done.

    Entry scripts print ``str(err)`` without a traceback and exit with status 2.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  Fix: {fix}")


# Writing results failed for a reason the user must fix (no space, no permission).
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)

_signal: dict[str, int | None] = {"received": None}


def _interrupt(signum: int, _frame) -> None:
    """SIGTERM (``kill``, a scheduler, ``docker stop``) is handled like Ctrl-C: the same
    KeyboardInterrupt, so the same cleanup (runs closed as KILLED, finished work kept).
    Further SIGTERMs during that cleanup are ignored (SIGKILL still ends the process)."""
    if _signal["received"] is not None:
        return  # (a flag, not SIG_IGN: Lightning puts this handler back after a fit)
    _signal["received"] = signum
    raise KeyboardInterrupt(signal.Signals(signum).name)


def handle_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into KeyboardInterrupt in this process; returns the undo."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def _ancestors(limit: int = 8):
    """The command lines of this process's ancestors, nearest first (Linux ``/proc``)."""
    pid = os.getppid()
    for _ in range(limit):
        if pid <= 1:
            return
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        yield [a.decode(errors="replace") for a in argv if a]
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def dvc_command(ancestors) -> str | None:
    """The ``dvc ...`` command line among ``ancestors`` (argv lists), as the user typed
    it (``dvc`` itself, or a Python running its entry point)."""
    for argv in ancestors:
        for i, arg in enumerate(argv):
            if Path(arg).name == "dvc" and len(argv) > i + 1:
                return shlex.join(["dvc", *argv[i + 1 :]])
    return None


def resume_hint(argv: list[str], ancestors=None) -> str:
    """How to pick up where an interrupted stage stopped: the command that ran it, again
    (a plain ``dvc repro`` would go on to refit and open the lockbox, which the user
    may never have asked for)."""
    stage = os.environ.get("DVC_STAGE")
    in_exp = os.environ.get("DVC_EXP_BASELINE_REV") or os.environ.get("DVC_EXP_NAME")
    if stage or in_exp:
        typed = dvc_command(_ancestors() if ancestors is None else ancestors)
        if typed:
            return f"run `{typed}` again"
        if in_exp:
            return "run the same `dvc exp run ...` again (the same -S options)"
        return f"run `dvc repro {stage}` again (up to this stage)"
    return f"run `python {' '.join(argv)}` again"


def run_stage(main: Callable[[], int | None]) -> NoReturn:
    """Run a stage's ``main``; a :class:`FoldwiseError` becomes a one-line message and exit 2.

    Ctrl-C and SIGTERM exit 130 and 143 with how to resume; a full disk or an unwritable
    folder exits 1 with what could not be written. Everything printed or logged has its
    secrets redacted (:mod:`foldwise.redact`).
    """
    from foldwise import redact

    argv = list(sys.argv)  # as typed (the sweep rewrites sys.argv for Hydra)
    undo_redact = redact.install()
    _signal["received"] = None
    undo_signal = handle_sigterm()
    try:
        code = main() or 0
    except FoldwiseError as err:
        print(f"foldwise: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        name = "SIGTERM" if _signal["received"] == signal.SIGTERM else "Ctrl-C"
        print(
            f"foldwise: interrupted; finished work is kept ({name} stopped the stage). "
            f"To resume, {resume_hint(argv)}: only what did not finish runs again.",
            file=sys.stderr,
        )
        code = 143 if _signal["received"] == signal.SIGTERM else 130
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(
            f"foldwise: error: could not write{where}: {err.strerror or err} (errno "
            f"{errno.errorcode.get(err.errno, err.errno)}).\n  Fix: free disk space or make "
            "the output folder writable, then re-run: results already written are complete "
            "(each file is written whole or not at all) and are kept.",
            file=sys.stderr,
        )
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        undo_signal()
        undo_redact()
    sys.exit(code)
