"""The report's "How much to trust these numbers" section: what the coverage study
(``make bench-coverage``, benchmarks/bench_coverage.py) measured for runs like this one.

The study's results ship with foldwise (``coverage.json`` beside this module, written by
``make bench-coverage ARGS="--json src/foldwise/report/coverage.json"``). The section
picks the simulated setting closest to this run (the same task; the nearest dev size
and fold count) and quotes, for each interval, how often it covered the quantity it is
read as, with the binomial interval of that coverage. It says that the study's data and
network are not the user's: a guide to how each interval behaves, not a guarantee.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from foldwise.report.cells import Table
from foldwise.report.inputs import Inputs

STUDY = Path(__file__).with_name("coverage.json")

# What each interval is, as the report and the terminal name it.
NAMES = {
    "naive": "Student-t over folds (split=kfold's interval)",
    "corrected": "Nadeau–Bengio corrected t (the repeated schemes' interval)",
    "rows": "z over the CV rows' pooled losses (what per-row intervals print; not foldwise's)",
    "ncv": "nested CV (selection.interval=ncv)",
    "lockbox": "lockbox bootstrap BCa (the test stage's interval)",
}
# The interval this run's CV score carries, by the sweep's resampling kind.
PRINTED = {"folds": "naive", "repeated": "corrected"}


@lru_cache(maxsize=1)
def study() -> dict[str, Any] | None:
    try:
        return json.loads(STUDY.read_text())
    except (OSError, ValueError):
        return None


def nearest(settings: list[dict], task: str, n_dev: int, folds: int) -> dict | None:
    """The simulated setting most like this run: the same task, then the closest dev
    size (by ratio) and fold count."""
    same = [s for s in settings if s["task"] == task]
    if not same:
        return None
    return min(same, key=lambda s: (abs(math.log(s["n"] / max(n_dev, 1))), abs(s["folds"] - folds)))


def coverage_text(count: int, reps: int) -> str:
    """``83 % (74–90 %)``: the share and its exact (Clopper–Pearson) 95 % interval."""
    from scipy.stats import binomtest

    ci = binomtest(count, reps).proportion_ci(0.95, method="exact")
    return f"{count / reps:.0%} ({ci.low:.0%}–{ci.high:.0%})"


def trust_section(inp: Inputs) -> dict[str, Any]:
    out: dict[str, Any] = {"anchor": "trust", "title": "How much to trust these numbers"}
    doc, man = study(), inp.manifest or {}
    meta = inp.meta or {}
    task = meta.get("task") or ("classification" if meta.get("classes") else "regression")
    n_dev, folds = int(man.get("n_dev") or 0), int(man.get("n_splits") or 0)
    found = nearest(doc["settings"], task, n_dev, folds) if doc and n_dev else None
    if found is None:
        out["items"] = [
            "No coverage study applies to this run (make bench-coverage measures one for "
            "classification and regression)."
        ]
        return out
    reps = found["reps"]
    score = "accuracy" if task == "classification" else "mean squared error"
    rows = []
    for key, row in found["table"].items():
        mark = " ← this run's CV interval" if PRINTED.get(inp.kind or "") == key else ""
        rows.append([NAMES.get(key, key) + mark, coverage_text(row["xy"]["cover"], reps),
                     coverage_text(row["err"]["cover"], reps)])  # fmt: skip
    out["table"] = Table(
        ["95 % interval", "covered the refit model's true score", "covered the expected score"],
        rows,
        text=(0, 1, 2),
    )
    printed = PRINTED.get(inp.kind or "")
    items = [
        f"In {reps} simulated runs like this one ({task}, {found['n']} dev rows, "
        f"{found['folds']}-fold CV, a small MLP; this run: {n_dev} dev rows, "
        f"{folds} resamples), each interval covered the score it is read as this often "
        "(with the 95 % interval of that share). A 95 % interval should cover 95 % of the time.",
    ]
    if printed:
        cov = found["table"][printed]["xy"]["cover"] / reps
        verdict = "under-covers" if cov < 0.9 else "covers about as promised"
        items.append(
            f"This run's CV interval is the {NAMES[printed]}: in the study it {verdict} "
            f"({cov:.0%}) for the refit model's true {score}. Folds share rows, so it is "
            "narrower than the uncertainty it should carry; selection.interval=ncv gives "
            "the nested-CV interval (Bates, Hastie & Tibshirani 2023)."
            if cov < 0.9
            else f"This run's CV interval is the {NAMES[printed]}: in the study it "
            f"{verdict} ({cov:.0%})."
        )
    items.append(
        "The study's data and network are not yours: read this as how each interval "
        "behaves, not as a guarantee for this run. Re-measure with make bench-coverage."
    )
    out["items"] = items
    return out
