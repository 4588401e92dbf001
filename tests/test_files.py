"""Result files get the mode a plain ``open()`` would give them (issue 22: mkstemp made
them 0600, unreadable to a shared server's other users or a CI artifact reader)."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from foldwise.files import atomic_write_text, write_json, write_table


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"a": 1})
        write_table(tmp_path / "c.parquet", pd.DataFrame({"a": [1]}))
        with open(tmp_path / "plain", "w") as fh:  # what a normal write gives
            fh.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.txt", "b.json", "c.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_the_resume_hint_repeats_the_dvc_command_typed_never_a_plain_repro(monkeypatch):
    """Ctrl-C in `dvc repro aggregate` must not advise `dvc repro`: that would refit and
    open the lockbox (issue 22)."""
    from foldwise.errors import dvc_command, resume_hint

    venv_dvc = ["/x/.venv/bin/python", "/x/.venv/bin/dvc", "repro", "aggregate"]
    assert dvc_command([["python", "pipelines/sweep.py"], ["/bin/sh", "-c", "python x"],
                        venv_dvc]) == "dvc repro aggregate"  # fmt: skip
    exp = ["dvc", "exp", "run", "-S", "sweep.grid.model.hidden=[8, 16]"]
    assert dvc_command([exp]) == "dvc exp run -S 'sweep.grid.model.hidden=[8, 16]'"
    monkeypatch.setenv("DVC_STAGE", "sweep")
    assert resume_hint(["pipelines/sweep.py"], [venv_dvc]) == "run `dvc repro aggregate` again"
    # the typed command unknown: the stage itself, never the whole pipeline
    assert (
        resume_hint(["pipelines/sweep.py"], []) == "run `dvc repro sweep` again (up to this stage)"
    )
    monkeypatch.delenv("DVC_STAGE")
    assert resume_hint(["pipelines/sweep.py"], []) == "run `python pipelines/sweep.py` again"


@pytest.mark.parametrize(("given", "want"), [(None, "false"), ("true", "true")])
def test_mlflow_progress_bars_stay_out_of_logs_unless_asked_for(given, want):
    """Off a terminal (a DVC stage, CI, `foldwise predict > out`), MLflow's artifact
    progress bars are noise in the log (issue 22); a user's own setting wins."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    if given is not None:
        env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = given
    code = ("import os, foldwise.tracking; "
            "print(os.environ.get('MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == want, out.stderr
