"""Queued DVC experiments (`dvc exp run --queue`, `dvc queue start -j 2`) and a DVC remote.

Two experiments that select different models run at once: the lockbox opens once, for the
first to reach it, and refuses the other. `dvc exp show` rows say what each chose, and an
experiment that stopped at aggregate has no test scores of its baseline's model. `dvc
push` to a local-path remote, then `dvc pull` in a fresh clone, gives back the data, the
sweep's results and the model, with the pipeline up to date.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import BIN, TINY, Project, make_project, tiny_params
from foldwise.files import sha256_file

pytestmark = pytest.mark.slow

# TINY as `-S` overrides (with hydra.enabled, DVC composes params.yaml from conf/ again);
# no curves: they are scheme- and queue-independent, covered by the pipeline e2e.
NO_CURVES = [f"curves.{c}.enabled=false" for c in ("learning", "validation", "bias_variance")]
SET = [a for o in [*TINY, *NO_CURVES] for a in ("-S", o)]


def rows(p) -> dict[str, dict]:
    """`dvc exp show --json`: experiment name → {error, metrics by file}; the baseline
    commit's row as "baseline" (the workspace's is left out: it is the last run's)."""
    out = {}
    for commit in json.loads(p.dvc("exp", "show", "--json").stdout):
        exps = [r for e in commit.get("experiments") or [] for r in e["revs"]]
        named = [("baseline", commit)] if commit["rev"] != "workspace" else []
        for name, row in named + [(r["name"], r) for r in exps]:
            data = row.get("data") or {}
            metrics = {k: v.get("data") for k, v in (data.get("metrics") or {}).items()}
            out[name] = {"error": row.get("error"), "metrics": metrics}
    return out


def wait_for_queue(p, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = p.dvc("queue", "status").stdout
        if "Running" not in status and "Queued" not in status:
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish:\n{status}")


def test_queued_experiments_keep_the_lockbox_rules_and_a_remote_restores_them(tmp_path, sqlite_uri):
    p = make_project(tmp_path, sqlite_uri, tiny_params())
    remote = tmp_path / "remote"
    p.dvc("remote", "add", "-d", "store", str(remote))
    # The baseline's shared stages first, as docs/servers.md says: two workers that both
    # run a stage (here the example's draw, then prepare and split) race on DVC's run-cache
    # entry for it (treeverse/dvc#10673; seen: "No such file … .dvc/cache/runs/…tmp").
    p.dvc("repro", "split")
    p.commit("a local-path DVC remote, the baseline's data")

    # Two experiments with different grids, hence different selected models, at once.
    for name, hidden in (("h8", 8), ("h16", 16)):
        p.dvc(
            "exp", "run", "--queue", "-n", name, *SET, "-S", f"sweep.grid.model.hidden=[{hidden}]"
        )
    # The workers are detached daemons that keep the stage's stdout open: no pipes here.
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    start = [str(BIN / "dvc"), "queue", "start", "-j", "2"]
    subprocess.run(start, cwd=p.path, env=p.env, check=True, timeout=120, **quiet)
    try:
        status = wait_for_queue(p)
    finally:  # idle workers wait for more: stop what the test started
        p.dvc("queue", "stop", "--kill", check=False)
    assert status.count("Success") == 1 and status.count("Failed") == 1, status
    audit = (p.path / "lockbox/audit.jsonl").read_text().splitlines()
    assert len(audit) == 1  # one opening across both: the shared audit log, locked
    opened = json.loads(audit[0])["label"]
    winner, loser = ("h8", "h16") if "hidden=8" in opened else ("h16", "h8")
    log = p.dvc("queue", "logs", loser).stdout
    assert "was already opened for another model" in log, log

    shown = rows(p)
    assert shown[loser]["error"]  # the failed experiment is shown as failed
    won = shown[winner]["metrics"]
    chose = won["results/metrics/cv.json"]
    assert (chose["hidden"], chose["lr"]) == (8 if winner == "h8" else 16, 0.01)
    assert won["results/metrics/test.json"]["test"]["look"] == 1

    # The winner becomes the baseline. The remote holds its data, the sweep's results and
    # the model: a fresh clone pulls them, and its pipeline is up to date.
    p.dvc("exp", "apply", winner)
    p.commit("the tested model")
    p.dvc("push")
    clone = Project(tmp_path / "clone", sqlite_uri)
    subprocess.run(["git", "clone", "-q", str(p.path), str(clone.path)], check=True)
    clone.dvc("pull")
    for rel in ("models/final/model.pt", "data/split/dev.parquet", "data/lockbox/test.parquet",
                "results/sweep/session.json", "results/selection.json"):  # fmt: skip
        assert sha256_file(clone.path / rel) == sha256_file(p.path / rel), rel
    assert "up to date" in clone.dvc("status").stdout

    # An experiment that stops at aggregate with the other grid shows its own selection
    # and no test scores of the (new) baseline's model.
    other = 16 if winner == "h8" else 8
    p.dvc(
        "exp", "run", "aggregate", "-n", "explore", *SET, "-S", f"sweep.grid.model.hidden=[{other}]"
    )
    shown = rows(p)
    explore = shown["explore"]["metrics"]
    assert explore["results/metrics/cv.json"]["hidden"] == other
    # not the baseline's test.*, and a file DVC can load (no "failed to load some metrics")
    assert explore["results/metrics/test.json"] == {"test": {"status": "not opened"}}
    assert shown["baseline"]["metrics"]["results/metrics/test.json"]["test"]["look"] == 1
