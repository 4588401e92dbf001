"""The DVC metrics: one short headline per stage — the selected configuration's CV
score, the nested estimate, the test score — so that `dvc metrics show` and
`dvc exp show` fit a 120-column terminal. Every statistic of every configuration stays
in the detailed files (``results/cv_metrics.json``, ``cv_table.csv``, ``nested.json``,
``test_metrics.json``), which DVC tracks as plain outputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from foldwise.files import write_json

# Decimals of a number printed without an interval (the scheme gives none).
PLAIN_DECIMALS = 4


def decimals(half: Any) -> int | None:
    """Decimal places an uncertainty of ``half`` (a standard error or an interval's
    half-width) supports: its two significant digits, but never fewer than none (181,
    not 180). None when there is no finite positive uncertainty to go by.

    The single rule every ``value ± uncertainty`` foldwise prints follows: the value is
    rounded to the same decimal place as its uncertainty (``3083 ± 181``, not
    ``3083.0985 ± 180.6618``). JSON files keep full precision."""
    if not isinstance(half, int | float) or isinstance(half, bool):
        return None
    if not math.isfinite(half) or half <= 0:
        return None
    return max(0, 1 - math.floor(math.log10(abs(half))))


def fixed(value: Any, half: Any = None, sign: bool = False) -> str:
    """``value`` at the precision ``half`` supports (:func:`decimals`; without one,
    ``PLAIN_DECIMALS``); "–" where there is no number."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    if not math.isfinite(value):
        return "–"
    d = decimals(half)
    d = PLAIN_DECIMALS if d is None else d
    return f"{value:{'+' if sign else ''}.{d}f}"


def plus_minus(value: Any, half: Any, sign: bool = False) -> str:
    """``"3083 ± 181"``: value and uncertainty at the precision the uncertainty supports;
    the value alone when there is no uncertainty."""
    if decimals(half) is None:
        return fixed(value, sign=sign)
    return f"{fixed(value, half, sign)} ± {fixed(half, half)}"


def interval(low: Any, high: Any, sign: bool = False) -> str:
    """``"[2902, 3264]"``, at the precision of the interval's half-width; "–" without
    both ends."""
    if fixed(low) == "–" or fixed(high) == "–":
        return "–"
    half = (high - low) / 2
    return f"[{fixed(low, half, sign)}, {fixed(high, half, sign)}]"


def half_width(low: Any, high: Any) -> float | None:
    """Half the width of ``[low, high]``; None without two finite ends."""
    ok = all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in (low, high)
    )
    return (high - low) / 2 if ok else None


def near(value: Any, low: Any, high: Any, sign: bool = False) -> str:
    """A value printed beside its interval ``[low, high]``, to the interval's precision."""
    return fixed(value, half_width(low, high), sign)


def rounded(value: float, half: Any) -> float:
    """``value`` rounded to the decimal place ``half`` supports (unchanged without one):
    the numbers of ``cv_table.csv``."""
    d = decimals(half)
    if d is None or not isinstance(value, int | float) or not math.isfinite(value):
        return value
    return round(float(value), d)


def _r(value: Any, half: Any = None) -> Any:
    """A headline number at the precision ``half`` supports (four decimals without one):
    ``dvc metrics show`` is read like the terminal (the detailed files keep every digit)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if not math.isfinite(value):
        return value
    d = decimals(half)
    return round(float(value), PLAIN_DECIMALS if d is None else d)


def _setting(value: Any) -> Any:
    """A swept value: four significant digits (a learning rate of 1e-05 is not 0.0)."""
    return float(f"{value:.4g}") if isinstance(value, float) and math.isfinite(value) else value


def cv(metric: str, score: dict[str, Any], chosen: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"cv": {"val_f1": mean, "se": se}, "hidden": 128, "lr": 0.001}`` for the selection:
    its CV score and its swept values (``chosen``; ``model.hidden`` → ``hidden``, as in its
    label), so an experiment's row says what it chose, not params.yaml's base value.
    The grid's size stays in ``cv_metrics.json`` and the MLflow run name: ``dvc metrics
    show`` must fit 120 columns."""
    se = score.get("se")
    out: dict[str, Any] = {"cv": {metric: _r(score.get("mean"), se), "se": _r(se, se)}}
    short = [k.rsplit(".", 1)[-1] for k in chosen or {}]
    for (k, v), s in zip((chosen or {}).items(), short, strict=True):
        name = s if short.count(s) == 1 and s != "cv" else k
        out[name] = _setting(v)
    return out


def nested(report: dict[str, Any]) -> dict[str, Any]:
    """``{"nested": {"val_f1": mean, "se": se}}``, or nothing when nested CV is off."""
    if not report.get("enabled"):
        return {}
    st = report["nested"]
    se = st.get("se")
    return {"nested": {report["metric"]: _r(st.get("mean"), se), "se": _r(se, se)}}


def test(doc: dict[str, Any], metric: str | None) -> dict[str, Any]:
    """``{"test": {"f1": value, "lo": .., "hi": .., "look": n}}`` from the test stage's
    document (the selection metric's score), or ``{"test": {"status": "refused"}}``."""
    if doc.get("status") != "opened":
        return {"test": {"status": doc.get("status", "refused")}}
    scores = doc.get("test") or {}
    name = (metric or "").removeprefix("val_")
    name = name if name in scores else next(iter(scores), None)
    if name is None:
        return {"test": {"look": doc.get("look")}}
    s = scores[name]
    half = half_width(s["ci_low"], s["ci_high"])
    return {"test": {name: _r(s["value"], half), "lo": _r(s["ci_low"], half),
                     "hi": _r(s["ci_high"], half), "look": doc.get("look")}}  # fmt: skip


NOT_OPENED = {"test": {"status": "not opened"}}


def mark_stale_test(layout: Any, config_hash: str, split_key: str) -> bool:
    """Say "not opened" in the test headline unless it is about the new selection.

    An experiment that stops at aggregate (``dvc exp run aggregate -S ...``) would
    otherwise carry its baseline's ``test.*`` columns in ``dvc exp show``: scores of a model
    this experiment did not select; and with no file at all DVC warns "failed to load some
    metrics". Only the headline is written (the lockbox is not touched, and the test
    stage, which runs once the model is refit, writes it again); the detailed
    ``test_metrics.json`` stays (the report checks whom it is about). Returns whether it
    wrote."""
    from foldwise.files import read_json

    path = layout.headline("test")
    if path.is_file():
        if read_json(path) == NOT_OPENED:
            return False
        doc = read_json(layout.test_metrics) if layout.test_metrics.is_file() else {}
        if doc.get("config") == config_hash and doc.get("split_key") == split_key:
            return False
    write(path, NOT_OPENED)
    return True


def fill_nested(layout: Any) -> bool:
    """The nested headline as the nested stage writes it when off (``{}``), if there is
    none yet: an experiment that stops at aggregate never runs that stage, and DVC warns
    about a metrics file it cannot load. Returns whether it wrote."""
    path = layout.headline("nested")
    if path.is_file():
        return False
    write(path, {})
    return True


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
