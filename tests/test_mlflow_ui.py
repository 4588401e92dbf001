"""The MLflow UI shows foldwise's experiment as model training: the runs table, not
MLflow 3's GenAI overview. The experiment carries MLflow's kind tag, and the link
`make ui` prints opens the runs view, checked in a real headless browser (Debian's
chromium through Playwright) against a real `mlflow server`, with a screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT
from foldwise import tracking

SCREENSHOT = ROOT / "test-output" / "mlflow-ui.png"


def test_the_experiment_is_tagged_model_training_also_when_an_older_foldwise_made_it(
    tmp_path: Path,
):
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    key, kind = tracking.EXPERIMENT_KIND
    new = tracking.experiment_id(c, "new")
    assert c.get_experiment(new).tags[key] == kind == "custom_model_development"
    old = c.create_experiment("old")  # as foldwise made it before the tag
    assert key not in c.get_experiment(old).tags
    assert tracking.experiment_id(c, "old") == old
    assert c.get_experiment(old).tags[key] == kind
    c.set_experiment_tag(old, key, "genai_development")  # the user's own choice stays
    tracking.experiment_id(c, "old")
    assert c.get_experiment(old).tags[key] == "genai_development"


def test_make_ui_links_the_experiments_runs_once_the_store_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # params.yaml's store: a MLFLOW_TRACKING_URI another test left in this process wins
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = "http://127.0.0.1:5000"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    OmegaConf.save({"tracking": {"experiment": "mine", "uri": uri}}, tmp_path / "params.yaml")
    assert tracking.ui_address(base, tmp_path) == base  # no store yet: none is created
    assert not (tmp_path / "mlflow.db").exists()
    exp = tracking.experiment_id(MlflowClient(uri), "mine")
    link = tracking.ui_address(base, tmp_path)
    assert link == f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning"


@pytest.mark.slow
def test_a_real_browser_opens_the_runs_table(mlflow_server: str):
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    c = MlflowClient(mlflow_server)
    exp = tracking.experiment_id(c, "ui-view")
    sweep = tracking.start_run(c, exp, "digits · stratified_kfold k=5 · 2 configs", "sweep")
    config = tracking.start_run(c, exp, "mlp hidden=32 lr=0.001", "config", parent=sweep)
    fold = tracking.start_run(c, exp, "mlp hidden=32 lr=0.001 · fold 0", "fold", parent=config)
    c.log_metric(fold, "val_f1", 0.97)
    for run in (fold, config, sweep):
        c.set_terminated(run)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:  # a fresh profile: nothing remembered from an earlier visit
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(tracking.ui_link(mlflow_server, exp), wait_until="load")
            table = page.get_by_text("digits · stratified_kfold k=5 · 2 configs")
            table.first.wait_for(timeout=60_000)
            runs_url, runs_text = page.url, page.locator("body").inner_text()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            page.goto(tracking.ui_link(mlflow_server, exp, config), wait_until="load")
            page.get_by_text("mlp hidden=32 lr=0.001").first.wait_for(timeout=60_000)
            run_text = page.locator("body").inner_text()
        finally:
            browser.close()
    print(f"screenshot: {SCREENSHOT}")
    # the runs table: its columns, the sweep row; none of the GenAI overview
    assert f"/experiments/{exp}/runs" in runs_url, runs_url
    assert "Run Name" in runs_text and "Created" in runs_text
    for genai in ("Detect Issues", "Token Usage", "Sessions"):
        assert genai not in runs_text, genai
    # a configuration run sits under the experiment's runs, not under "Evaluations"
    assert "Evaluations" not in run_text and "Model metrics" in run_text
    assert SCREENSHOT.stat().st_size > 20_000
