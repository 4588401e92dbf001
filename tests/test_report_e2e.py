"""The report of a real tiny pipeline run: previewed before the lockbox opens (`make
report`'s command), written by `dvc repro`, logged to MLflow, and rendered by a real
headless browser (Debian's chromium through Playwright) without errors."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from mlflow import MlflowClient

from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, Project, make_project, tiny_params
from foldwise import headline

# one worker under `pytest -n` (--dist loadgroup): the module fixture is built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report_e2e")]

SCREENSHOT = ROOT / "test-output" / "report.png"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, str, str]:
    """One tiny pipeline: the report previewed before the test stage, then `dvc repro`."""
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    p = make_project(tmp, uri, tiny_params())
    p.dvc("repro", "aggregate", "nested", "curves")
    preview = p.stage("report").stdout
    page = (p.path / "results/report.html").read_text()
    assert f"[report] {(p.path / 'results/report.html').resolve().as_uri()}" in preview
    return p, page, uri


def test_preview_before_the_lockbox_then_the_stage_after_it(run):
    p, before, uri = run
    assert "has not been opened for this selection" in before
    assert "bootstrap interval" not in before

    out = p.dvc("repro").stdout
    assert "Running stage 'test'" in out and "Running stage 'report'" in out
    assert out.index("Running stage 'test'") < out.index("Running stage 'report'")
    page = (p.path / "results/report.html").read_text()
    test = json.loads((p.path / "results/test_metrics.json").read_text())
    assert "has not been opened" not in page
    # to the precision of the test interval (foldwise.headline's one rule)
    f1, g = test["test"]["f1"], test["cv_vs_test"]
    half = (f1["ci_high"] - f1["ci_low"]) / 2
    assert headline.fixed(f1["value"], half) in page
    half = (g["test"]["ci_high"] - g["test"]["ci_low"]) / 2
    assert f"gap {headline.fixed(g['gap'], half, sign=True)}" in page
    assert "http://" not in page and "https://" not in page
    # an image per figure: per-fold scores, learning, validation, bias-variance, CV vs test
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 5
    assert "Running stage" not in p.dvc("repro").stdout  # the report is a normal output

    selection = json.loads((p.path / "results/selection.json").read_text())
    arts = MlflowClient(uri).list_artifacts(selection["sweep_run_id"], "report")
    assert [a.path for a in arts] == ["report/report.html"]


def test_a_real_browser_renders_it_without_errors(run):
    p, _, _ = run
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    path = p.path / "results/report.html"
    if "has not been opened" in path.read_text():  # run alone: open the lockbox first
        p.dvc("repro")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
            )
            headings = page.locator("h2").all_inner_texts()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {SCREENSHOT}")
    assert errors == []
    assert len(images) == 5
    assert all(complete and width > 0 for _, complete, width in images), images
    # the page itself and its data: images; nothing from a network
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert "Test set (the lockbox)" in headings and "Leaderboard" in headings
    assert SCREENSHOT.stat().st_size > 50_000
    shutil.copyfile(path, SCREENSHOT.with_suffix(".html"))  # what the screenshot shows
