"""The one exception type users see: what is wrong, and how to fix it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class FoldwiseError(ValueError):
    """A problem with the user's input or state, raised before any work is done.

    Entry scripts print ``str(err)`` without a traceback and exit with status 2.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  Fix: {fix}")


def run_stage(main: Callable[[], int | None]) -> NoReturn:
    """Run a stage's ``main``; a :class:`FoldwiseError` becomes a one-line message and exit 2."""
    try:
        code = main()
    except FoldwiseError as err:
        print(f"foldwise: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("foldwise: interrupted; finished work is kept, re-run to resume.", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
