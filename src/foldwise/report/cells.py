"""The report's plain-data vocabulary: cells, tables, figures, confusion matrices, and
how a number is written. :mod:`foldwise.report.context` fills them; the templates under
``templates/`` lay them out. Nothing here is markup: text is escaped by the templates."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from foldwise import headline
from foldwise.report.inputs import Confusion

# Larger confusion matrices are unreadable as a table; the CSV files still hold them.
MAX_CONFUSION_CLASSES = 30


@dataclass(frozen=True)
class Cell:
    """A table cell: ``text``, then ``notes`` in small print on lines of their own;
    ``badge`` (a CSS class) draws the text as a coloured badge."""

    text: Any
    notes: tuple[str, ...] = ()
    badge: str | None = None


@dataclass
class Table:
    """``text`` columns are left-aligned and wrap, the others are numbers (right-aligned,
    never broken); ``head=None`` for a key/value list. ``row_classes``: a CSS class per
    row ("" for none)."""

    head: Sequence[str] | None
    rows: list[list[Any]]
    text: Collection[int] = (0,)
    row_classes: Sequence[str] = ()


@dataclass(frozen=True)
class Figure:
    uri: str  # a data: PNG
    alt: str


@dataclass
class Matrix:
    """A confusion matrix as a table: ``rows`` are (actual class, [(count, shade)]),
    shade the cell's background opacity; ``too_many`` replaces it when it is too big."""

    classes: list[str] = field(default_factory=list)
    rows: list[tuple[str, list[tuple[int, str]]]] = field(default_factory=list)
    too_many: str = ""


def num(value: Any, digits: int = 4, sign: bool = False) -> str:
    """A number for reading; "–" where a scheme has none (None or NaN)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return f"{value:{'+' if sign else ''}.{digits}f}"


def interval(low: Any, high: Any, sign: bool = False) -> str:
    """``[low, high]`` to the precision its half-width supports (foldwise's one rule,
    :func:`foldwise.headline.interval`)."""
    return headline.interval(low, high, sign)


def near(value: Any, low: Any, high: Any, sign: bool = False) -> str:
    """A value printed beside its interval ``[low, high]``, to the same precision."""
    return headline.near(value, low, high, sign)


def note(anchor: str, title: str, text: str, cls: str = "note") -> dict[str, Any]:
    """A section that says only why it has nothing to show."""
    return {"anchor": anchor, "title": title, "note": text, "note_class": cls}


def numbers(t: Any, cols: Sequence[str]) -> Table:
    """A curve table's columns (those it has), for the "the numbers" fold-out."""
    cols = [c for c in cols if c in t.columns]
    rows = [
        [v if c == "x" else num(v) for c, v in zip(cols, r, strict=True)]
        for r in t[cols].itertuples(index=False)
    ]
    return Table(cols, rows)


def matrix(conf: Confusion) -> Matrix:
    n = len(conf.classes)
    if n > MAX_CONFUSION_CLASSES:
        return Matrix(too_many=f"{n} classes: too many for a table here; see the CSV file.")
    top = max((max(r) for r in conf.counts if r), default=0) or 1
    rows = [
        (name, [(v, f"{0.85 * v / top:.2f}") for v in row])
        for name, row in zip(conf.classes, conf.counts, strict=True)
    ]
    return Matrix(list(conf.classes), rows)
