"""Render an :class:`~foldwise.report.inputs.Inputs` as one self-contained HTML page.

Self-contained means: inline CSS, figures as ``data:`` PNGs, no script, no font, no
link to anything outside the file — and a Content-Security-Policy that makes the
browser refuse any such load, so a slip shows up as a console error in the browser
test instead of a silent network request.

What the page says is computed as plain data by :mod:`foldwise.report.context`; the
Jinja2 templates in ``templates/`` (shipped as package data) lay it out. Autoescaping is
on: every string that came from a user (labels, class names, reasons, file contents) is
escaped, with the standard library's entities (``&quot;``, ``&#x27;``).
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from foldwise.report.cells import MAX_CONFUSION_CLASSES, Cell, interval, num
from foldwise.report.context import (
    LOWER_IS_BETTER,
    SECTIONS,
    configs,
    higher_is_better,
    page,
    test_state,
)
from foldwise.report.inputs import Inputs

__all__ = [
    "CSP",
    "LOWER_IS_BETTER",
    "MAX_CONFUSION_CLASSES",
    "SECTIONS",
    "configs",
    "environment",
    "higher_is_better",
    "interval",
    "num",
    "render",
    "test_state",
]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _escape(value: Any) -> Any:
    """Every ``{{ … }}`` value: markup from a macro as it is, anything else escaped as
    :func:`html.escape` does (autoescape would write ``&#34;`` and ``&#39;`` instead)."""
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("foldwise.report", "templates"),
        autoescape=True,
        finalize=_escape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.Undefined,
    )
    env.tests["cell"] = lambda value: isinstance(value, Cell)
    return env


def render(inp: Inputs) -> str:
    """The whole page."""
    template = environment().get_template("report.html.j2")
    return template.render(csp=Markup(CSP), **page(inp))
