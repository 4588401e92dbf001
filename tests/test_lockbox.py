"""foldwise.lockbox: opening decisions, the append-only audit log, bootstrap test scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from foldwise.errors import FoldwiseError
from foldwise.lockbox.audit import append_audit, read_audit
from foldwise.lockbox.opening import decide
from foldwise.methods.resampling import bootstrap_scores

TEST_A = "a" * 64
TEST_B = "b" * 64
MODEL_1 = "1" * 64
MODEL_2 = "2" * 64
MODEL_3 = "3" * 64


def entry(
    model: str,
    test: str = TEST_A,
    look: int = 1,
    reason: str | None = None,
    opened_at: str = "2025-01-01T00:00:00+00:00",
    label: str = "hidden=32",
) -> dict:
    return {
        "opened_at": opened_at,
        "test_sha256": test,
        "model_sha256": model,
        "label": label,
        "look": look,
        "reused_test_set": reason is not None,
        "override_reason": reason,
        "scores": {"acc": {"value": 0.9, "ci_low": 0.85, "ci_high": 0.95}},
    }


# --------------------------------------------------------------------------------------------
# decide
# --------------------------------------------------------------------------------------------


def test_first_opening():
    d = decide([], TEST_A, MODEL_1, None)
    assert d.kind == "first"
    assert d.previous == []
    assert d.recorded is None
    assert d.look == 1


def test_first_opening_ignores_override_reason():
    d = decide([], TEST_A, MODEL_1, "just because")
    assert d.kind == "first"
    assert d.look == 1


def test_same_model_is_a_repeat_without_a_new_look():
    first = entry(MODEL_1)
    d = decide([first], TEST_A, MODEL_1, None)
    assert d.kind == "repeat"
    assert d.recorded == first
    assert d.previous == [first]
    assert d.look == 1  # unchanged: the same model looked once


def test_repeat_after_an_override_reports_that_models_entry():
    audit = [
        entry(MODEL_1, opened_at="t1"),
        entry(MODEL_2, look=2, reason="bug fix", opened_at="t2"),
    ]
    d = decide(audit, TEST_A, MODEL_2, None)
    assert d.kind == "repeat"
    assert d.recorded is audit[1]
    assert d.look == 2
    d = decide(audit, TEST_A, MODEL_1, "another reason")
    assert d.kind == "repeat"
    assert d.recorded is audit[0]
    assert d.look == 2


def test_different_model_without_reason_is_refused():
    audit = [entry(MODEL_1, label="hidden=32", opened_at="2025-03-04T05:06:07+00:00")]
    for reason in (None, "", "   "):
        with pytest.raises(FoldwiseError) as err:
            decide(audit, TEST_A, MODEL_2, reason)
        message = str(err.value)
        assert "tunes hyperparameters on the test set" in message
        assert TEST_A[:12] in message
        assert "2025-03-04T05:06:07+00:00 hidden=32 (111111111111)" in message
        assert "lockbox.override_reason" in message


def test_different_model_with_reason_is_an_override():
    first = entry(MODEL_1)
    d = decide([first], TEST_A, MODEL_2, "found a preprocessing bug")
    assert d.kind == "override"
    assert d.previous == [first]
    assert d.recorded is None
    assert d.look == 2


def test_third_model_with_new_reason_is_look_three():
    audit = [entry(MODEL_1), entry(MODEL_2, look=2, reason="r1")]
    d = decide(audit, TEST_A, MODEL_3, "r2")
    assert d.kind == "override"
    assert d.look == 3


@pytest.mark.parametrize("reason", ["r1", "  r1  "])
def test_reason_authorises_only_one_opening(reason):
    audit = [entry(MODEL_1), entry(MODEL_2, look=2, reason="r1", opened_at="2025-02-02")]
    with pytest.raises(FoldwiseError) as err:
        decide(audit, TEST_A, MODEL_3, reason)
    message = str(err.value)
    assert "'r1' already authorised opening 2025-02-02" in message
    assert "each reason authorises one opening" in message


def test_other_test_set_is_a_fresh_lockbox():
    audit = [entry(MODEL_1, test=TEST_A), entry(MODEL_2, test=TEST_A, look=2, reason="r")]
    d = decide(audit, TEST_B, MODEL_3, None)
    assert d.kind == "first"
    assert d.previous == []
    assert d.look == 1
    # even a model already seen on another test set opens this one for the first time
    d = decide(audit, TEST_B, MODEL_1, None)
    assert d.kind == "first"


def test_previous_only_counts_this_test_set():
    audit = [entry(MODEL_1, test=TEST_B), entry(MODEL_2, test=TEST_A)]
    d = decide(audit, TEST_A, MODEL_3, "new architecture")
    assert d.previous == [audit[1]]
    assert d.look == 2


# --------------------------------------------------------------------------------------------
# audit log
# --------------------------------------------------------------------------------------------


def test_read_audit_of_missing_file_is_empty(tmp_path):
    assert read_audit(tmp_path / "lockbox" / "audit.jsonl") == []


def test_audit_round_trip_and_append_only(tmp_path):
    path = tmp_path / "lockbox" / "audit.jsonl"  # parent folder is created on demand
    first = entry(MODEL_1)
    append_audit(path, first)
    first_bytes = path.read_bytes()
    assert first_bytes.endswith(b"\n")
    assert first_bytes.count(b"\n") == 1
    assert json.loads(first_bytes) == first
    assert read_audit(path) == [first]

    second = entry(MODEL_2, look=2, reason="r1", opened_at="2025-02-02")
    append_audit(path, second)
    data = path.read_bytes()
    assert data.startswith(first_bytes)  # earlier line byte-identical
    assert data.count(b"\n") == 2
    assert read_audit(path) == [first, second]
    assert decide(read_audit(path), TEST_A, MODEL_2, None).recorded == second


def test_read_audit_skips_blank_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(entry(MODEL_1)) + "\n\n   \n" + json.dumps(entry(MODEL_2)) + "\n")
    assert [e["model_sha256"] for e in read_audit(path)] == [MODEL_1, MODEL_2]


def test_read_audit_corrupt_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    append_audit(path, entry(MODEL_1))
    with open(path, "a") as fh:
        fh.write('{"test_sha256": "abc", truncated\n')
    with pytest.raises(FoldwiseError) as err:
        read_audit(path)
    assert f"{path} line 2 is not valid JSON" in str(err.value)
    assert "git checkout" in str(err.value)


# --------------------------------------------------------------------------------------------
# bootstrap_scores
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=150)
    pred = np.where(rng.random(150) < 0.8, y, rng.integers(0, 3, size=150))
    losses = rng.exponential(0.4, size=150)
    return y, pred, losses


def scores(y, pred, losses, seed=0, resamples=200, confidence=0.95):
    return bootstrap_scores(y, pred, losses, resamples=resamples, confidence=confidence, seed=seed)


def test_bootstrap_point_values_match_sklearn(predictions):
    y, pred, losses = predictions
    s = scores(y, pred, losses)
    assert set(s) == {"acc", "f1", "loss"}
    assert s["acc"]["value"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert s["f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert s["loss"]["value"] == pytest.approx(losses.mean(), abs=1e-12)
    assert 0.7 < s["acc"]["value"] < 0.95  # the fixture is neither perfect nor random


def test_bootstrap_intervals_contain_the_point_estimate(predictions):
    y, pred, losses = predictions
    s = scores(y, pred, losses)
    for name in ("acc", "f1", "loss"):
        assert s[name]["ci_low"] < s[name]["value"] < s[name]["ci_high"], name
    assert s["acc"]["ci_low"] >= 0
    assert s["acc"]["ci_high"] <= 1
    # roughly the binomial standard error: half-width ~ 1.96 * sqrt(p(1-p)/n)
    p = s["acc"]["value"]
    half = (s["acc"]["ci_high"] - s["acc"]["ci_low"]) / 2
    assert half == pytest.approx(1.96 * np.sqrt(p * (1 - p) / len(y)), rel=0.35)


def test_bootstrap_confidence_widens_interval(predictions):
    y, pred, losses = predictions
    narrow = scores(y, pred, losses, confidence=0.5)
    wide = scores(y, pred, losses, confidence=0.99)
    for name in ("acc", "loss"):
        assert wide[name]["ci_high"] - wide[name]["ci_low"] > (
            narrow[name]["ci_high"] - narrow[name]["ci_low"]
        )


def test_bootstrap_is_deterministic_per_seed(predictions):
    y, pred, losses = predictions
    a, b = scores(y, pred, losses, seed=7), scores(y, pred, losses, seed=7)
    assert a == b
    c = scores(y, pred, losses, seed=8)
    assert c["acc"]["value"] == a["acc"]["value"]
    assert (c["acc"]["ci_low"], c["acc"]["ci_high"], c["loss"]["ci_low"]) != (
        a["acc"]["ci_low"],
        a["acc"]["ci_high"],
        a["loss"]["ci_low"],
    )


def test_bootstrap_perfect_predictions():
    y = np.array([0, 1, 2] * 20)
    losses = np.full(len(y), 0.01)
    s = scores(y, y.copy(), losses, resamples=100)
    # every resample scores 1.0: BCa is undefined there, so the percentile interval is used
    assert s["acc"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "interval": "percentile"}
    assert s["f1"]["value"] == 1.0
    assert s["loss"]["value"] == pytest.approx(0.01)
    assert s["loss"]["ci_low"] == pytest.approx(0.01)
    assert s["loss"]["ci_high"] == pytest.approx(0.01)


def test_bootstrap_single_row_has_no_interval():
    s = scores(np.array([1]), np.array([1]), np.array([0.2]))
    assert s["acc"]["value"] == 1.0
    assert s["loss"]["value"] == pytest.approx(0.2)
    for name in ("acc", "f1", "loss"):
        assert np.isnan(s[name]["ci_low"]) and np.isnan(s[name]["ci_high"])


def test_bootstrap_perfect_predictions_with_a_rare_class():
    y = np.array([0] * 15 + [1] * 4 + [2])
    s = scores(y, y.copy(), np.full(len(y), 0.1), resamples=200)
    # every resample scores 1.0: BCa is undefined there, so the percentile interval is used
    assert s["acc"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "interval": "percentile"}
    assert s["f1"]["value"] == 1.0
    assert s["f1"]["ci_low"] == 1.0


def test_cv_vs_test_gap_by_hand():
    from foldwise.lockbox.opening import cv_vs_test

    entry = {
        "cv": {"metric": "val_f1", "mean": 0.97, "ci_low": 0.96, "ci_high": 0.98, "method": "m"},
        "scores": {
            "f1": {"value": 0.95, "ci_low": 0.93, "ci_high": 0.97},
            "loss": {"value": 0.20, "ci_low": 0.15, "ci_high": 0.25},
        },
    }
    g = cv_vs_test(entry)
    assert g["gap"] == pytest.approx(0.02) and g["cv"]["ci_low"] == 0.96
    assert g["test"] == entry["scores"]["f1"]
    # for a loss, CV looked better when its loss was lower than the test loss
    entry["cv"] = {"metric": "val_loss", "mean": 0.12}
    assert cv_vs_test(entry)["gap"] == pytest.approx(0.08)


def test_bootstrap_interval_is_bca_and_matches_scipy(predictions):
    from scipy import stats

    y, pred, losses = predictions
    s = scores(y, pred, losses, seed=3)
    assert {v["interval"] for v in s.values()} == {"BCa"}
    ref = stats.bootstrap(
        (losses,), np.mean, n_resamples=200, confidence_level=0.95, method="BCa",
        random_state=np.random.default_rng(3),
    ).confidence_interval  # fmt: skip
    assert (s["loss"]["ci_low"], s["loss"]["ci_high"]) == pytest.approx((ref.low, ref.high))


def test_extra_scores_precision_recall_auc(predictions):
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    y, pred, losses = predictions
    s = bootstrap_scores(y, pred, losses, resamples=200, confidence=0.95, seed=0, extra=True)
    assert s["precision"]["value"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert s["recall"]["value"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert "auc" not in s  # three classes: no ROC-AUC
    rng = np.random.default_rng(1)
    yb = rng.integers(0, 2, 120)
    prob = np.clip(yb * 0.3 + rng.random(120) * 0.7, 0, 1)
    sb = bootstrap_scores(yb, (prob > 0.5).astype(int), np.ones(120), resamples=200,
                          confidence=0.95, seed=0, prob=prob, extra=True)  # fmt: skip
    assert sb["auc"]["value"] == pytest.approx(roc_auc_score(yb, prob))
    assert sb["auc"]["ci_low"] < sb["auc"]["value"] < sb["auc"]["ci_high"]


def test_confusion_counts_and_rows(tmp_path):
    from foldwise.lockbox.opening import confusion, write_confusion

    counts = confusion([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    assert counts == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    path = tmp_path / "c.csv"
    write_confusion(path, {"confusion": {"classes": ["a", "b", "c"], "counts": counts}})
    lines = path.read_text().splitlines()
    assert lines[0] == "actual,predicted" and len(lines) == 7
    assert lines.count("c,a") == 1 and lines.count("c,c") == 2
    write_confusion(path, {})  # a refused model leaves no stale matrix behind
    assert path.read_text() == "actual,predicted\n"
