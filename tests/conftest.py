"""Shared fixtures: tiny configs, throw-away project copies, a real MLflow server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

pytest_plugins = ["schedule"]  # tests/schedule.py: --dist loadgroup groups, longest first

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough to train a whole sweep in seconds on one CPU core.
TINY = [
    "split.n_splits=2",
    "trainer.max_epochs=3",
    "trainer.early_stopping.patience=2",
    "trainer.accelerator=cpu",
    "sweep.grid.model.hidden=[8,16]",
    "sweep.grid.optim.lr=[0.01]",
    "lockbox.bootstrap_resamples=200",
    "curves.bias_variance.models=4",
    # the curves over the grid's own widths: no extra stacks for wider networks
    "curves.validation.values=[8,16]",
    "curves.learning.fractions=[0.5,1.0]",
]


# A headless browser for the pages foldwise serves or writes (the report, the MLflow UI):
# no network, no first-run or background services, so a page must need nothing outside.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def tiny_params(extra: list[str] | None = None) -> DictConfig:
    from foldwise.compose import compose_params

    cfg = compose_params([*TINY, *(extra or [])], root=ROOT)
    return OmegaConf.create(OmegaConf.to_container(cfg))  # as the stages load params.yaml


def iris_csv():
    """scikit-learn's iris as a user table: 150 rows, 3 classes, a `site` group column
    (8 groups) and a `day` time column (3 rows a day, so cut-offs fall on ties)."""
    import numpy as np
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    df = bunch.frame.rename(columns={"target": "species"})
    rng = np.random.default_rng(0)
    df["site"] = [f"site{i % 8}" for i in range(len(df))]
    df["day"] = rng.permutation(len(df)) // 3  # 3 rows per day: ties at cut-offs
    return df


# TINY without its k-fold setting, on the iris table of iris_csv() (see data/raw there).
IRIS = [t for t in TINY if not t.startswith("split.")] + [
    "data=csv",
    "data.path=data/raw/iris.csv",
    "data.target=species",
]


def run_tree(uri: str, max_results: int = 5000) -> dict[str, list]:
    """The experiment's MLflow runs grouped by ``foldwise.run_type``."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("foldwise")
    by_type: dict[str, list] = {}
    for r in c.search_runs([exp.experiment_id], max_results=max_results):
        by_type.setdefault(r.data.tags.get("foldwise.run_type"), []).append(r)
    return by_type


def postgres_installed() -> bool:
    """Debian's PostgreSQL server programs are there (.ci/run installs them in CI)."""
    from foldwise.tracking.server import pg_bindir

    try:
        pg_bindir()
    except RuntimeError:
        return False
    return True


def git_env() -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": "foldwise tests",
        "GIT_AUTHOR_EMAIL": "tests@foldwise.invalid",
        "GIT_COMMITTER_NAME": "foldwise tests",
        "GIT_COMMITTER_EMAIL": "tests@foldwise.invalid",
    }


class Project:
    """A copy of the repository's tracked files in a temporary git repo."""

    def __init__(self, path: Path, tracking_uri: str):
        self.path = path
        self.env = {
            **os.environ,
            **git_env(),
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": tracking_uri,
            "DVC_NO_ANALYTICS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("CI", None)  # progress bars stay off anyway: stderr is not a TTY

    def set_params(self, cfg: DictConfig) -> None:
        OmegaConf.save(cfg, self.path / "params.yaml")

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(BIN / "dvc"), *args, check=check)

    def stage(
        self, name: str, *args: str, check: bool = True, in_process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``python pipelines/<name>.py args``: a process of its own, or (``in_process``)
        the same script run in this process by faultkit.stage, with this project's
        environment: the same exit code and output without a process start-up (torch,
        Lightning and MLflow imported again, ~5-8 s on 2 busy cores). For tests of what
        a stage does; a test of the command line itself keeps the process."""
        if not in_process:
            return self.run(sys.executable, f"pipelines/{name}.py", *args, check=check)
        from faultkit import stage

        env = {k: v for k, v in self.env.items() if k != "PATH"}
        ran = stage(self.path, name, *args, env=env)
        proc = subprocess.CompletedProcess([name, *args], ran.code, ran.out, ran.err)
        if check and ran.code != 0:
            raise AssertionError(
                f"{name} failed ({ran.code}):\n{ran.out[-4000:]}\n{ran.err[-4000:]}"
            )
        return proc

    def repro(self, *stages: str) -> subprocess.CompletedProcess[str]:
        """``stages`` (default: every stage of dvc.yaml, in its order) run in this process
        one after the other: what ``dvc repro`` runs on a fresh project, without a
        process start-up per stage (~5-8 s each). For tests of what the stages compute;
        DVC's own wiring (deps, params, persist, its lock) is test_pipeline_e2e's."""
        import yaml

        names = stages or tuple(yaml.safe_load((self.path / "dvc.yaml").read_text())["stages"])
        ran = [self.stage(name, in_process=True) for name in names]
        return subprocess.CompletedProcess(
            ["repro", *names], 0, "".join(r.stdout for r in ran), "".join(r.stderr for r in ran)
        )

    def commit(self, message: str = "snapshot") -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message, "--allow-empty")


def make_project(tmp: Path, tracking_uri: str, params: DictConfig) -> Project:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dest = tmp / "repo"
    for rel in files:
        generated = rel == "dvc.lock" or (
            rel.startswith(("data/", "results/", "models/", "lockbox/"))
            and not rel.startswith("data/raw/")
            and not rel.endswith(".gitignore")
        )
        if generated:  # left by a local run, not part of the project
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    project = Project(dest, tracking_uri)
    project.set_params(params)
    project.run("git", "init", "-q")
    project.commit("initial")
    return project


@pytest.fixture(autouse=True)
def _python_signal_handlers() -> None:
    """Each test starts with Python's own SIGINT and SIGTERM handlers. Lightning's graceful
    shutdown after an interrupted fit sets SIGINT to SIG_IGN and never puts it back, and a
    child process inherits an ignored signal: after an in-process interrupt anywhere in a
    test worker (a test or a session fixture; session fixtures are built before this
    one), a later test's Ctrl-C reached neither `dvc` nor the stage it ran (seen: a sweep
    that finished despite its SIGINT, another that trained on for 120 s)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (gunicorn) on 127.0.0.1 over SQLite, for the whole session."""
    from foldwise.tracking import local_server

    with local_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


@pytest.fixture(scope="session")
def fault_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the fault tests; each test logs to an experiment of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('fault-store') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def fault_template(tmp_path_factory: pytest.TempPathFactory, fault_store: str) -> Project:
    """A project (TINY params) with `prepare` and `split` done in-process, for the fault
    tests to copy (faultkit.clone) instead of preparing their own."""
    from faultkit import prepared

    return prepared(tmp_path_factory.mktemp("fault-template"), fault_store, tiny_params())
