"""End to end: appending rows to a dataset whose lockbox was opened, and testing only on
them (issue 10). The other back doors: ``lockbox_back_doors``, run by ``test_pipeline_e2e``.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import IRIS, iris_csv, make_project, tiny_params
from lockbox_back_doors import refused

pytestmark = pytest.mark.slow


def test_appended_rows_can_be_tested_alone(tmp_path, sqlite_uri):
    """Split stage only (no training): an opening of iris' first 120 rows is recorded as
    the test stage records it; 30 appended rows may then be the whole test set."""
    from foldwise.lockbox import ledger
    from foldwise.lockbox.audit import authority
    from foldwise.params import Layout

    p = make_project(tmp_path, sqlite_uri, tiny_params([*IRIS, "data.drop=[site]"]))
    csv = p.path / "data/raw/iris.csv"
    iris = iris_csv()
    iris.iloc[:120].to_csv(csv, index=False)
    p.stage("prepare", in_process=True)
    p.stage("split", in_process=True)
    manifest = json.loads((p.path / "data/split/manifest.json").read_text())
    assert manifest["dataset"]["source"] == "file:data/raw/iris.csv#position"
    entry = {"opened_at": "2025-01-01T00:00:00+00:00", "test_sha256": manifest["test_sha256"],
             "model_sha256": "1" * 64, "label": "hidden=8", "n_test": manifest["n_test"],
             **ledger.opening_fields(None, Layout(p.path), manifest)}  # fmt: skip
    ledger.record(p.path, authority(p.path), entry)

    iris.to_csv(csv, index=False)  # 30 new rows appended: new table hash, same old row ids
    p.stage("prepare", in_process=True)
    split = p.stage("split", check=False, in_process=True)
    refused(split, "reuses rows of file:data/raw/iris.csv#position")
    p.set_params(tiny_params([*IRIS, "data.drop=[site]", "lockbox.test_rows=new"]))
    out = p.stage("split", in_process=True).stdout
    assert "by new_rows): 30 rows" in out
    test = pd.read_parquet(p.path / "data/lockbox/test.parquet")
    assert test["row_id"].tolist() == list(range(120, 150))
    again = json.loads((p.path / "data/split/manifest.json").read_text())
    assert again["reused_rows"] is None and again["n_dev"] == 120
    assert again["dataset"]["table_sha256"] != manifest["dataset"]["table_sha256"]
