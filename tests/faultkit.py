"""Helpers of the fault tests: a prepared project to copy, stages run in-process, MLflow.

Importing torch, Lightning and MLflow takes a stage process ~5-8 s on 2 busy cores;
running a stage script in the test process (``runpy``, exactly as ``python
pipelines/<stage>.py`` runs it, exit code included) skips that, so only the tests that
need a process of their own (kill -9, signals, DVC's lock) start one.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from conftest import Project, make_project


@dataclass
class Ran:
    code: int
    out: str
    err: str


def stage(root: Path, name: str, *args: str, env: dict[str, str] | None = None) -> Ran:
    """``python pipelines/<name>.py args`` (or ``python -m foldwise.<name>`` when ``name``
    is ``-m foldwise.x``) in this process, in ``root``; its exit code and output."""
    from foldwise.sweep import jobs
    from foldwise.tracking import pending

    jobs.reset_progress()
    pending.Durable._down_since, pending.Durable.last_error = None, ""
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_argv, old_env = os.getcwd(), sys.argv, dict(os.environ)
    # Lightning ignores SIGINT after an interrupt; processes this one starts later inherit
    # the disposition, so put both handlers back afterwards.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    os.environ.update(env or {})
    os.chdir(root)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if name.startswith("-m "):
                sys.argv = [name[3:], *args]
                runpy.run_module(name[3:], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [f"pipelines/{name}.py", *args]
                runpy.run_path(str(root / "pipelines" / f"{name}.py"), run_name="__main__")
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        os.chdir(old_cwd)
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    return Ran(code, out.getvalue(), err.getvalue())


def prepared(tmp: Path, uri: str, params: DictConfig) -> Project:
    """A project copy with ``prepare`` and ``split`` done (in-process)."""
    p = make_project(tmp, uri, params)
    for name in ("prepare", "split"):
        ran = stage(p.path, name, env={"MLFLOW_TRACKING_URI": uri})
        assert ran.code == 0, ran.err
    p.commit("prepared")
    return p


def clone(template: Project, dest: Path, uri: str, params: DictConfig | None = None) -> Project:
    """A copy of a prepared project (git history included) using tracking ``uri``."""
    shutil.copytree(template.path, dest, symlinks=True)
    p = Project(dest, uri)
    if params is not None:
        p.set_params(params)
    return p


def jobs(p: Project) -> dict[str, dict]:
    import json

    return {
        f.name: json.loads(f.read_text())
        for f in sorted((p.path / "results/sweep/jobs").glob("*.json"))
    }


def runs(uri: str, experiment: str) -> dict[str, list]:
    """The experiment's runs by ``foldwise.run_type``."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    out: dict[str, list] = {}
    for r in c.search_runs([exp.experiment_id], max_results=5000):
        out.setdefault(r.data.tags.get("foldwise.run_type"), []).append(r)
    return out
