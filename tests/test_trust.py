"""The report's "How much to trust these numbers" (foldwise/report/trust.py): the coverage
study's numbers for the setting most like the run, each share with its exact binomial
interval, and the run's own interval named."""

from __future__ import annotations

import json

import pytest
from scipy.stats import beta
from test_report import classification, sections

from foldwise.report import html, trust


def _row(xy: int, err: int) -> dict:
    return {"xy": {"cover": xy, "bias": 0.0}, "err": {"cover": err, "bias": 0.0}, "width": 0.1}


STUDY = {
    "seed": 0,
    "settings": [
        {"task": "classification", "n": 300, "folds": 5, "reps": 100,
         "table": {"naive": _row(81, 84), "corrected": _row(93, 95), "ncv": _row(94, 96),
                   "lockbox": _row(95, 97)}},
        {"task": "classification", "n": 100, "folds": 10, "reps": 100,
         "table": {"naive": _row(70, 72), "corrected": _row(90, 91), "ncv": _row(92, 93),
                   "lockbox": _row(94, 95)}},
        {"task": "regression", "n": 300, "folds": 5, "reps": 100,
         "table": {"naive": _row(88, 80), "corrected": _row(96, 94), "ncv": _row(95, 95),
                   "lockbox": _row(93, 93)}},
    ],
}  # fmt: skip


@pytest.mark.parametrize("k, n", [(0, 100), (81, 100), (100, 100), (3, 7)])
def test_a_coverage_is_printed_with_its_exact_binomial_interval(k, n):
    lo = beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0  # Clopper–Pearson, from its beta form
    hi = beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    assert trust.coverage_text(k, n) == f"{k / n:.0%} ({lo:.0%}–{hi:.0%})"


def test_the_nearest_setting_has_the_runs_task_then_its_size_and_folds():
    settings = STUDY["settings"]
    assert trust.nearest(settings, "classification", 280, 5)["n"] == 300
    assert trust.nearest(settings, "classification", 120, 10)["n"] == 100
    assert trust.nearest(settings, "classification", 170, 10)["n"] == 100  # ratio: 1.7 vs 1.76
    assert trust.nearest(settings, "regression", 90, 10)["task"] == "regression"
    assert trust.nearest(settings, "ordinal", 90, 10) is None


def test_the_section_quotes_the_study_for_the_run_and_names_its_interval(monkeypatch):
    monkeypatch.setattr(trust, "study", lambda: STUDY)
    inp = classification()
    inp.manifest = {**(inp.manifest or {}), "n_dev": 280, "n_splits": 5}
    inp.kind = "folds"
    part = sections(html.render(inp))["trust"]
    assert "100 simulated runs like this one (classification, 300 dev rows, 5-fold" in part
    assert "this run: 280 dev rows, 5 resamples" in part
    assert trust.coverage_text(81, 100) in part and trust.coverage_text(96, 100) in part
    assert "split=kfold&#x27;s interval) ← this run&#x27;s CV interval" in part
    assert "under-covers (81%)" in part and "selection.interval=ncv" in part
    assert "not as a guarantee" in part


def test_without_a_split_or_a_matching_study_the_section_says_so(monkeypatch):
    monkeypatch.setattr(trust, "study", lambda: STUDY)
    inp = classification()
    inp.manifest = None
    assert "No coverage study applies" in sections(html.render(inp))["trust"]


def test_the_shipped_study_has_every_interval_for_both_tasks_at_r_100():
    doc = json.loads(trust.STUDY.read_text())
    assert {s["task"] for s in doc["settings"]} == {"classification", "regression"}
    for s in doc["settings"]:
        assert s["reps"] >= 100
        assert set(s["table"]) == set(trust.NAMES)
        for row in s["table"].values():
            assert 0 <= row["xy"]["cover"] <= s["reps"] and 0 <= row["err"]["cover"] <= s["reps"]
