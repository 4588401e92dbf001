"""The DVC metrics: one short headline per stage — the selected configuration's CV
score, the nested estimate, the test score — so that `dvc metrics show` and
`dvc exp show` fit a 120-column terminal. Every statistic of every configuration stays
in the detailed files (``results/cv_metrics.json``, ``cv_table.csv``, ``nested.json``,
``test_metrics.json``), which DVC tracks as plain outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foldwise.files import write_json


def _r(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, int | float) else value


def cv(metric: str, score: dict[str, Any], n_configs: int) -> dict[str, Any]:
    """``{"cv": {"val_f1": mean, "se": se}, "configs": n}`` for the selection."""
    return {"cv": {metric: _r(score.get("mean")), "se": _r(score.get("se"))},
            "configs": n_configs}  # fmt: skip


def nested(report: dict[str, Any]) -> dict[str, Any]:
    """``{"nested": {"val_f1": mean, "se": se}}``, or nothing when nested CV is off."""
    if not report.get("enabled"):
        return {}
    st = report["nested"]
    return {"nested": {report["metric"]: _r(st.get("mean")), "se": _r(st.get("se"))}}


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
    return {"test": {name: _r(s["value"]), "lo": _r(s["ci_low"]), "hi": _r(s["ci_high"]),
                     "look": doc.get("look")}}  # fmt: skip


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
