"""The `report` stage: one self-contained HTML page per pipeline run.

It reads what the other stages wrote (:mod:`foldwise.report.inputs`), works out what
the page says (:mod:`foldwise.report.context`, figures from :mod:`foldwise.report.figures`),
renders it with the Jinja2 templates in ``templates/`` (:mod:`foldwise.report.html`), writes
``results/report.html`` atomically, logs it to MLflow on the sweep run and prints its
``file://`` address. It never reads the lockbox: the test result comes from
``results/test_metrics.json``, and only when that file is an opening for the current
selection. Run without DVC (``make report``) it previews the CV-only report before the
lockbox is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foldwise.params import Layout
from foldwise.report.html import render
from foldwise.report.inputs import Inputs, read

__all__ = ["Inputs", "read", "render", "run"]


def run(cfg: Any, layout: Layout) -> Path:
    from foldwise.files import atomic_write_text

    inputs = read(layout)
    path = layout.report
    atomic_write_text(path, render(inputs))
    run_id = _track(cfg, inputs.selection, path)
    print(f"[report] {path.resolve().as_uri()}")
    if run_id:
        print(f"[report] logged to MLflow: artifact report/{path.name} of sweep run {run_id}")
    return path


def _track(cfg: Any, selection: dict[str, Any], path: Path) -> str | None:
    """Attach the page to the sweep run, where the configuration and fold runs hang."""
    from foldwise import tracking

    run_id = selection.get("sweep_run_id")
    c = tracking.client(cfg)
    if not tracking.run_exists(c, run_id):
        print(f"[report] the sweep run {run_id} is not in the MLflow store; not logged there.")
        return None
    c.log_artifact(run_id, str(path), artifact_path="report")
    return run_id
