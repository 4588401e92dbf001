"""End to end: the reusable lockbox (lockbox.mode=thresholdout) through the real stages.

A tiny iris pipeline runs to its test stage in this process; then other models (the refit
bundle with shifted weights: a new fingerprint) query the same test set until the query
limit refuses, each answer checked against Thresholdout recomputed here from the key.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import IRIS, iris_csv, make_project, tiny_params
from lockbox_back_doors import refused

pytestmark = pytest.mark.slow

SETTINGS = ["selection.metric=val_acc", "lockbox.mode=thresholdout",
            "lockbox.thresholdout.budget=2", "lockbox.thresholdout.max_queries=2"]  # fmt: skip


def another_model(root, shift: float) -> None:
    """The refit bundle with its first bias shifted: another model to the lockbox."""
    import torch

    from foldwise.artifact import members_fingerprint

    path = root / "models/final/model.pt"
    bundle = torch.load(path, map_location="cpu", weights_only=False)
    state = bundle["state_dict"]
    name = next(k for k in state if k.endswith("bias"))
    state[name] = state[name] + shift
    bundle["fingerprint"] = members_fingerprint(
        [(state, bundle["scaler"])], bundle["config"], bundle.get("combine")
    )
    torch.save(bundle, path)


def expected_answer(root, entry: dict, asked: int, over: int) -> tuple[float, bool]:
    """Thresholdout's answer recomputed from its inputs: the model's test accuracy
    (scikit-learn, on the lockbox rows), its CV accuracy and the test set's key, with the
    Laplace draws taken straight from numpy (Dwork et al.'s rule, written out again)."""
    from sklearn.metrics import accuracy_score

    from foldwise.artifact import LoadedModel

    s = entry["thresholdout"]["settings"]
    key_file = root / f".foldwise/lockbox/thresholdout/{entry['test_sha256']}.key"
    key = int(key_file.read_text().strip(), 16)

    def lap(stream: int, index: int, scale: float) -> float:
        seq = np.random.SeedSequence(key, spawn_key=(stream, index))
        return float(np.random.default_rng(seq).laplace(0.0, scale))

    rows = LoadedModel(root / "models/final/model.pt").predict(
        pd.read_parquet(root / "data/lockbox/test.parquet")
    )
    holdout = accuracy_score(rows["y"], rows["pred"])
    train = json.loads((root / "models/final/info.json").read_text())["cv"]["mean"]
    t_hat = s["threshold"] + lap(0, over, 2 * s["sigma"])
    if abs(holdout - train) > t_hat + lap(1, asked, 4 * s["sigma"]):
        return float(np.clip(holdout + lap(2, asked, s["sigma"]), 0, 1)), True
    return train, False


def test_thresholdout_answers_within_its_budget_then_refuses(tmp_path, sqlite_uri):
    p = make_project(tmp_path, sqlite_uri, tiny_params([*IRIS, "data.drop=[site]", *SETTINGS]))
    iris_csv().to_csv(p.path / "data/raw/iris.csv", index=False)
    p.commit("iris")
    out = p.repro("prepare", "split", "sweep", "aggregate", "refit", "test").stdout

    def audit() -> list[dict]:
        return [json.loads(x) for x in (p.path / "lockbox/audit.jsonl").read_text().splitlines()]

    def metrics() -> dict:
        return json.loads((p.path / "results/test_metrics.json").read_text())

    (first,) = audit()
    t = first["thresholdout"]
    assert (t["query"], t["queries_left"]) == (1, 1)
    assert (t["answer"], t["over"]) == pytest.approx(expected_answer(p.path, first, 0, 0))
    # the answer is all the lockbox shows: no other score, no interval, no confusion matrix
    assert set(first["scores"]) == {"acc"} and first["scores"]["acc"]["ci_low"] is None
    assert "confusion" not in first
    assert (p.path / "results/test_confusion.csv").read_text() == "actual,predicted\n"
    doc = metrics()
    assert doc["mode"] == "thresholdout" and doc["test"]["acc"]["value"] == t["answer"]
    assert "Thresholdout answer #1: test_acc = " in out
    assert "Thresholdout guarantee (Dwork et al." in out
    assert "if the n = 30 test rows are i.i.d." in out
    key = p.path / f".foldwise/lockbox/thresholdout/{first['test_sha256']}.key"
    # the key stays out of the audit log (in git): with it, ξ could be taken off an answer
    assert key.is_file() and key.read_text().strip() not in json.dumps(first)

    # the report shows the answer (no interval: there is none to show)
    p.stage("report", in_process=True)
    assert f"{t['answer']:.4f}" in (p.path / "results/report.html").read_text()

    # the same model again: the recorded answer, no new query
    again = p.stage("test", in_process=True).stdout
    assert "reporting the recorded result (no new look)" in again and len(audit()) == 1

    another_model(p.path, 0.05)
    p.stage("test", in_process=True)
    second = audit()[-1]
    over = int(t["over"])
    assert second["thresholdout"]["query"] == 2
    assert (second["thresholdout"]["answer"], second["thresholdout"]["over"]) == pytest.approx(
        expected_answer(p.path, second, 1, over)
    )

    another_model(p.path, 0.1)
    proc = p.stage("test", check=False, in_process=True)
    refused(proc, "the Thresholdout query limit is reached: 2 of m = 2 queries answered",
            "lockbox.test_rows=new")  # fmt: skip
    assert len(audit()) == 2 and metrics()["status"] == "refused"

    # the budget is fixed at the first query: raising it now is refused too
    p.set_params(tiny_params([*IRIS, "data.drop=[site]", *SETTINGS,
                              "lockbox.thresholdout.max_queries=3"]))  # fmt: skip
    refused(p.stage("test", check=False, in_process=True),
            "max_queries: 2 at the first query, 3 now")  # fmt: skip
