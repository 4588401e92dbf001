"""Leakage invariance: the test rows' feature values cannot reach anything before the
test stage. Editing them (a user CSV, real DVC) leaves every pre-test artifact
byte-identical, and `dvc repro` re-runs only the stages that hash the test rows."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from conftest import IRIS, ROOT, iris_csv, make_project
from foldwise.compose import compose_params

pytestmark = pytest.mark.slow

OVERRIDES = [
    *IRIS,
    "split=stratified_kfold",
    "split.n_splits=2",
    "nested.enabled=true",
    "nested.inner.n_splits=2",
    "curves.learning.fractions=[0.5,1.0]",
    "curves.validation.values=[8]",
    "curves.bias_variance.models=2",
]
PRE_TEST = ("data/split", "results", "models/final")


def digests(root) -> dict[str, str]:
    out = {}
    for top in PRE_TEST:
        for f in sorted((root / top).rglob("*")):
            if f.is_file():
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_test_row_values_reach_nothing_before_the_test_stage(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    project = make_project(tmp_path, uri, compose_params(OVERRIDES, root=ROOT))
    raw = iris_csv().drop(columns=["site", "day"])
    raw.to_csv(project.path / "data/raw/iris.csv", index=False)
    project.commit("iris")
    project.dvc("repro", "refit")  # everything before the lockbox opens
    before = digests(project.path)
    before_manifest = json.loads((project.path / "data/split/manifest.json").read_text())
    assert any(k.startswith("results/sweep/jobs/") for k in before)
    assert "models/final/model.pt" in before and "results/nested.json" in before

    # the test rows' features change (row id = CSV row position here)
    test_ids = pd.read_parquet(project.path / "data/lockbox/test.parquet")["row_id"]
    features = [c for c in raw.columns if c != "species"]
    raw.loc[test_ids, features] = np.random.default_rng(0).normal(size=(len(test_ids), 4))
    raw.to_csv(project.path / "data/raw/iris.csv", index=False)

    out = project.dvc("repro", "refit").stdout
    ran = {s for s in ("prepare", "split", "sweep", "aggregate", "nested", "curves", "refit")
           if f"Running stage '{s}'" in out}  # fmt: skip
    assert ran == {"prepare", "split"}  # the two stages that read the test rows' values
    after = digests(project.path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == ["data/split/manifest.json"]  # its test_sha256; dev side identical
    # ...while the lockbox does hold the new values, under the same row ids
    test = pd.read_parquet(project.path / "data/lockbox/test.parquet").set_index("row_id")
    new = raw.loc[test_ids, features[0]].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(test.loc[test_ids, "x0"].to_numpy(), new)
    manifest = json.loads((project.path / "data/split/manifest.json").read_text())
    assert manifest["test_sha256"] != before_manifest["test_sha256"]
    assert manifest["dev_sha256"] == before_manifest["dev_sha256"]
    status = project.dvc("status").stdout
    assert "test:" in status and "sweep:" not in status  # only the test stage is out of date
