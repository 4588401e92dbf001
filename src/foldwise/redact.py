"""Keep secrets out of what foldwise prints, logs and writes.

A tracking URI may carry a password (``http://user:secret@host:5000``). Everything a
stage writes about a URI goes through :func:`redact` (``http://user:***@host:5000``);
:func:`install`, done by every stage entry (:func:`foldwise.errors.run_stage`), also
filters the process's stdout, stderr and log records, so an exception message from a
library that names the URL is redacted too. Better still, keep the password out of the
URI: MLflow reads ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (or
``MLFLOW_TRACKING_TOKEN``); their values are redacted as well.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable

# scheme://user:password@  (the password: anything up to the '@' before the host)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):(?P<secret>[^/\s@]+)@")
MASK = "***"
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def redact(text: str) -> str:
    """``text`` with URI passwords and the values of :data:`SECRET_ENV` masked."""
    if not isinstance(text, str):
        return text
    out = _USERINFO.sub(rf"\g<head>:{MASK}@", text) if "://" in text else text
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4 and value in out:
            out = out.replace(value, MASK)
    return out


class _Stream:
    """A text stream that redacts what is written through it; everything else passes."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def write(self, s: str) -> int:
        self._inner.write(redact(s))
        return len(s)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def install() -> Callable[[], None]:
    """Redact this process's stdout, stderr and log records; returns the undo."""
    out, err = sys.stdout, sys.stderr
    if isinstance(out, _Stream):  # already (a stage entry, then a Hydra job in-process)
        return lambda: None
    factory = logging.getLogRecordFactory()

    def record(*args, **kwargs) -> logging.LogRecord:
        r = factory(*args, **kwargs)
        try:
            message = r.getMessage()
        except Exception:  # a malformed record is logging's to report
            return r
        clean = redact(message)
        if clean != message:
            r.msg, r.args = clean, ()
        return r

    sys.stdout, sys.stderr = _Stream(out), _Stream(err)
    logging.setLogRecordFactory(record)

    def undo() -> None:
        sys.stdout, sys.stderr = out, err
        logging.setLogRecordFactory(factory)

    return undo
