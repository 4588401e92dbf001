"""Loading and checking ``params.yaml``, and where each stage reads and writes.

Every stage calls :func:`start` (:func:`load`, then its outputs checked writable)
first: it checks the *whole* configuration with cheap static rules — every key against
the keys ``conf/`` defines (a misspelled or ``+``-added key is refused, naming the
closest one), every value, and every value ``sweep.grid`` gives a key — so a typo in,
say, the lockbox section fails at the first stage instead of after a sweep.
Data-dependent checks (class counts, fold counts) happen in the modules that see the
data, still before anything is written.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from foldwise import scores
from foldwise.errors import FoldwiseError
from foldwise.files import check_writable, flatten, repo_root
from foldwise.split import schemes

DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes", "csv")
MODELS = ("mlp", "cnn")
# What the model builder (foldwise.models.build_backbone) reads under ``model``, for
# every built-in network. Checked against the code's keys, not conf/'s: a yaml file
# under conf/model/ must not be able to make an unread key look valid.
MODEL_KEYS = ("name", "hidden", "depth", "dropout")
SELECTION_RULES = ("best_mean", "one_se")
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")


@dataclass(frozen=True)
class Layout:
    """Every file a stage reads or writes, relative to the repo root (see dvc.yaml)."""

    root: Path

    @property
    def table(self) -> Path:
        return self.root / "data/prepared/table.parquet"

    @property
    def meta(self) -> Path:
        return self.root / "data/prepared/meta.json"

    @property
    def dev(self) -> Path:
        return self.root / "data/split/dev.parquet"

    @property
    def folds(self) -> Path:
        return self.root / "data/split/folds.json"

    @property
    def manifest(self) -> Path:
        return self.root / "data/split/manifest.json"

    @property
    def dev_manifest(self) -> Path:
        """The manifest's dev side (:func:`foldwise.split.dev_manifest`): what the stages
        before the test stage read, so that they never depend on the test rows' values."""
        return self.root / "data/split/dev_manifest.json"

    @property
    def test(self) -> Path:
        """The lockbox: read by the test stage and nothing else."""
        return self.root / "data/lockbox/test.parquet"

    @property
    def sweep_dir(self) -> Path:
        return self.root / "results/sweep"

    @property
    def cv_metrics(self) -> Path:
        return self.root / "results/cv_metrics.json"

    @property
    def cv_table(self) -> Path:
        return self.root / "results/cv_table.csv"

    @property
    def selection(self) -> Path:
        return self.root / "results/selection.json"

    @property
    def curves_dir(self) -> Path:
        return self.root / "results/curves"

    @property
    def nested_metrics(self) -> Path:
        return self.root / "results/nested.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "models/final"

    @property
    def test_metrics(self) -> Path:
        return self.root / "results/test_metrics.json"

    def headline(self, stage: str) -> Path:
        """A stage's DVC metrics file (:mod:`foldwise.headline`): cv, nested or test."""
        return self.root / f"results/metrics/{stage}.json"

    @property
    def test_confusion(self) -> Path:
        return self.root / "results/test_confusion.csv"

    @property
    def cv_confusion(self) -> Path:
        return self.root / "results/cv_confusion.csv"

    @property
    def ensembles(self) -> Path:
        """Score vs number of members of every ensemble configuration (DVC plot)."""
        return self.root / "results/ensembles.csv"

    @property
    def report(self) -> Path:
        """The self-contained HTML report of the run."""
        return self.root / "results/report.html"

    @property
    def audit_log(self) -> Path:
        """Every opening of the lockbox, one JSON line each; kept in git."""
        return self.root / "lockbox/audit.jsonl"

    def outputs(self, stage: str) -> list[Path]:
        """Every file ``stage`` writes (its DVC outs; the test stage's audit log too)."""
        return [self.root / rel for rel in OUTPUTS[stage]]


# What each stage writes, relative to the repo root (see dvc.yaml; a folder output is
# named by one file in it): checked writable before the stage reads any data.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "prepare": ("data/prepared/table.parquet", "data/prepared/meta.json"),
    "split": ("data/lockbox/test.parquet", "data/split/dev.parquet", "data/split/folds.json",
              "data/split/manifest.json", "data/split/dev_manifest.json"),
    "sweep": ("results/sweep/session.json", "results/sweep/jobs/job.json"),
    "aggregate": ("results/cv_metrics.json", "results/metrics/cv.json", "results/cv_table.csv",
                  "results/selection.json",
                  "results/cv_confusion.csv", "results/ensembles.csv"),
    "nested": ("results/nested.json", "results/metrics/nested.json"),
    "curves": ("results/curves/learning.csv",),
    "refit": ("models/final/model.pt",),
    "test": ("results/test_metrics.json", "results/metrics/test.json",
             "results/test_confusion.csv", "lockbox/audit.jsonl"),
    "report": ("results/report.html",),
}  # fmt: skip


def load(path: Path | None = None) -> DictConfig:
    """Load and validate ``params.yaml`` (default: the one at the repo root)."""
    path = path or repo_root() / "params.yaml"
    if not path.is_file():
        raise FoldwiseError(
            f"{path} not found.", "run from the foldwise checkout (where dvc.yaml lives)."
        )
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as err:  # a hand edit gone wrong
        raise FoldwiseError(
            f"{path.name} is not valid YAML ({str(err).splitlines()[0]}).",
            "fix the file, or regenerate it from conf/: make params (or dvc exp run -S ...).",
        ) from None
    if not isinstance(cfg, DictConfig):
        raise FoldwiseError(f"{path.name} does not hold a mapping of settings.",
                            "regenerate it from conf/: make params.")  # fmt: skip
    validate(cfg, conf_dir=path.parent / "conf")
    return cfg


def start(stage: str, root: Path | None = None) -> tuple[DictConfig, Layout]:
    """What every stage does first: the whole ``params.yaml`` checked (static rules),
    then every file the stage will write checked writable, before it reads any data."""
    layout = Layout(root or repo_root())
    cfg = load(layout.root / "params.yaml")
    check_writable(layout.outputs(stage), layout.root)
    return cfg, layout


def _need(cfg: DictConfig, key: str, hint: str) -> object:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        value = None
    if value is None:
        raise FoldwiseError(f"params: '{key}' is not set.", hint)
    return value


# Keys chosen through a Hydra config group: the fix is `-S data=digits`, not `data.name`.
GROUPS = {"data.name": "data", "split.scheme": "split", "model.name": "model",
          "selection.rule": "selection", "ensemble.name": "ensemble"}  # fmt: skip


def _one_of(value: object, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        override = GROUPS.get(key, key)
        raise FoldwiseError(
            f"params: unknown {key} {value!r}.",
            f"use one of: {', '.join(allowed)} (e.g. dvc exp run -S {override}={allowed[0]}).",
        )


def validate(cfg: DictConfig, *, grid: bool = True, conf_dir: Path | None = None) -> None:
    """Static checks of the whole configuration; raises :class:`FoldwiseError`.

    First every key against those ``conf/`` (``conf_dir``, default the repo's) defines,
    then every value; with ``grid``, every value ``sweep.grid`` gives each key too (each
    in a configuration of the grid), so a bad hyperparameter fails at the first stage,
    not when the sweep starts. The sweep checks each whole configuration (``grid=False``).
    """
    check_keys(cfg, conf_dir)
    _check_values(cfg)
    if grid:
        from foldwise import search

        _one_of(str(cfg.sweep.get("search") or "grid"), search.SEARCHES, "sweep.search")
        # sweep=optuna: sweep.space and sweep.optuna instead of a grid (foldwise.search).
        search.check(cfg) if search.enabled(cfg) else _check_grid(cfg)


def _check_values(cfg: DictConfig) -> None:
    name = _need(cfg, "data.name", "pick a dataset: -S data=digits")
    _one_of(name, DATASETS, "data.name")
    if name == "csv":
        hint = "dvc exp run -S data=csv -S data.path=my.csv -S data.target=label"
        _need(cfg, "data.path", hint)
        _need(cfg, "data.target", hint)
        sep = cfg.data.get("sep") or ","
        if not isinstance(sep, str) or (len(sep) != 1 and sep not in ("\\t", "tab")):
            raise FoldwiseError(
                f"params: data.sep must be one character (the CSV field separator), got {sep!r}.",
                "use e.g. -S \"data.sep=';'\" or -S \"data.sep='\\t'\" for tabs.",
            )

    frac = _need(cfg, "split.test_fraction", "e.g. split.test_fraction=0.2")
    if not isinstance(frac, int | float) or not 0 < frac < 1:
        raise FoldwiseError(
            f"params: split.test_fraction must be strictly between 0 and 1, got {frac!r}.",
            "use a fraction such as 0.2 (20 % of rows locked away as the test set).",
        )
    task = str(cfg.data.get("task") or "classification")
    _one_of(task, scores.TASKS, "data.task")
    from foldwise.data import TASK_OF

    if TASK_OF.get(name, task) != task:
        raise FoldwiseError(
            f"params: data={name} is a {TASK_OF[name]} dataset, but data.task={task}.",
            f"drop the data.task override (data={name} sets it).",
        )
    _need(cfg, "split.scheme", "e.g. split=stratified_kfold")
    scheme = schemes.validate(cfg.split)
    if task == "regression" and (scheme.stratified or cfg.split.get("stratify")):
        option = "split.stratify" if cfg.split.get("stratify") else f"split={scheme.name}"
        fix = (
            "-S split.stratify=false"
            if cfg.split.get("stratify")
            else f"-S split={scheme.name.replace('stratified_', '')}"
        )
        raise FoldwiseError(
            f"params: {option} stratifies by class, and stratification does not apply to "
            f"a regression target (data={name} has a numeric target).",
            f"use the unstratified scheme: {fix}.",
        )
    for kind in ("group", "time"):
        if cfg.data.get(f"{kind}_column") is not None and name != "csv":
            raise FoldwiseError(
                f"params: data.{kind}_column is set, but data={name} has no such column.",
                f"group and time columns come with your own table: -S data=csv ... "
                f"-S data.{kind}_column=<column>.",
            )
    if scheme.grouped and cfg.data.get("group_column") is None:
        raise FoldwiseError(
            f"params: split={scheme.name} needs groups, but data.group_column is not set.",
            "name the column holding each row's group: -S data.group_column=<column>.",
        )
    if scheme.temporal and cfg.data.get("time_column") is None:
        raise FoldwiseError(
            f"params: split={scheme.name} needs times, but data.time_column is not set.",
            "name the column holding each row's timestamp: -S data.time_column=<column>.",
        )
    metric = scores.selection_metric(cfg)
    allowed = [f"val_{s}" for s in scores.SCORES[task]]
    if metric not in allowed:
        raise FoldwiseError(
            f"params: selection.metric={metric} is not a {task} score.",
            f"use one of: {', '.join(allowed)} (or null: the task's default, "
            f"val_{scores.PRIMARY[task]}).",
        )
    bootstrap_metric = "val_mse" if task == "regression" else "val_acc"
    if scheme.kind == "bootstrap" and metric != bootstrap_metric:
        raise FoldwiseError(
            f"params: split=bootstrap estimates the prediction error (.632+), so it selects "
            f"on {bootstrap_metric}, not {metric}.",
            f"add -S selection.metric={bootstrap_metric} (the .632+ rule needs a per-row loss: "
            + ("squared error)." if task == "regression" else "0-1; macro-F1 has none)."),
        )

    _one_of(_need(cfg, "model.name", "e.g. model=mlp"), MODELS, "model.name")
    check_model_keys(cfg.model)
    if cfg.model.name == "cnn" and not cfg.data.get("image_shape"):
        raise FoldwiseError(
            f"params: model=cnn needs image data, but data '{name}' has no image_shape.",
            "use model=mlp for tables, or set data.image_shape=[channels,height,width].",
        )
    for key in ("model.hidden", "model.depth", "trainer.batch_size", "trainer.max_epochs"):
        value = _need(cfg, key, f"set {key} to a positive integer")
        least = 0 if key == "model.depth" and cfg.model.name == "mlp" else 1  # 0: linear
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            kind = "an integer >= 0 (0: a linear model)" if least == 0 else "a positive integer"
            raise FoldwiseError(
                f"params: {key} must be {kind}, got {value!r}"
                + (f" ({WHAT_IS_ZERO[key]})." if value == 0 and key in WHAT_IS_ZERO else "."),
                f"set {key} to {HYPER_EXAMPLE[key]} (e.g. -S {key}={HYPER_EXAMPLE[key]}).",
            )
    dropout = _need(cfg, "model.dropout", "e.g. model.dropout=0.1")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise FoldwiseError(
            f"params: model.dropout must be in [0, 1) (the share of units zeroed), got "
            f"{dropout!r}.",
            "use a fraction such as 0.1, or 0 for no dropout (e.g. -S model.dropout=0.1).",
        )
    _check_accelerator(cfg.trainer.get("accelerator", "auto"))
    if cfg.trainer.get("precision", 32) not in (32, 64):
        raise FoldwiseError(
            f"params: trainer.precision must be 32 or 64, got {cfg.trainer.precision!r}."
        )
    engine = cfg.get("engine") or {}
    cap = engine.get("max_models")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise FoldwiseError(
            f"params: engine.max_models must be a positive integer or null, got {cap!r}."
        )
    cpu_params = engine.get("cpu_stack_params")
    if cpu_params is not None and (
        not isinstance(cpu_params, int) or isinstance(cpu_params, bool) or cpu_params < 1
    ):
        raise FoldwiseError(
            f"params: engine.cpu_stack_params must be a positive integer or null, got "
            f"{cpu_params!r}."
        )
    mem = engine.get("memory_mb", 2048)
    if not isinstance(mem, int | float) or mem <= 0:
        raise FoldwiseError(f"params: engine.memory_mb must be a positive number, got {mem!r}.")
    lr = _need(cfg, "optim.lr", "e.g. optim.lr=0.001")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0:
        raise FoldwiseError(
            f"params: optim.lr must be a positive number (Adam's step size), got {lr!r}.",
            "use e.g. -S optim.lr=0.001 (typical: 1e-4 to 1e-2).",
        )
    wd = cfg.optim.get("weight_decay", 0.0)
    if isinstance(wd, bool) or not isinstance(wd, int | float) or wd < 0:
        raise FoldwiseError(
            f"params: optim.weight_decay must be a number >= 0, got {wd!r}.",
            "use 0 (none) or a small penalty such as -S optim.weight_decay=0.0001.",
        )
    es = cfg.trainer.early_stopping
    if es.enabled and not 0 < es.inner_fraction < 1:
        raise FoldwiseError(
            "params: trainer.early_stopping.inner_fraction must be in (0, 1), "
            f"got {es.inner_fraction!r}."
        )

    _check_launcher(cfg)
    _check_ensemble(cfg)
    _check_refit(cfg, scheme)

    _one_of(cfg.selection.rule, SELECTION_RULES, "selection.rule")
    diag = cfg.get("diagnosis") or {}
    bounded = ("r2",) if task == "regression" else ("f1", "acc")
    if scores.diagnosis_metric(cfg) not in bounded:
        raise FoldwiseError(
            f"params: diagnosis.metric must be {' or '.join(bounded)} for {task} "
            f"(or null), got {diag.metric!r}."
        )
    for key, value in diag.items():
        if key != "metric" and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise FoldwiseError(f"params: diagnosis.{key} must be a number >= 0, got {value!r}.")
    if int(diag.get("window", 5)) < 2:
        raise FoldwiseError("params: diagnosis.window must be at least 2 epochs.")
    rope = cfg.selection.get("rope", 0.01)
    if isinstance(rope, bool) or not isinstance(rope, int | float) or rope < 0:
        raise FoldwiseError(f"params: selection.rope must be a number >= 0, got {rope!r}.")
    if cfg.selection.get("complexity", "params") not in ("params", "grid"):
        raise FoldwiseError(
            f"params: selection.complexity must be params or grid, got "
            f"{cfg.selection.complexity!r}."
        )

    nested = cfg.get("nested") or {}
    if not isinstance(nested.get("enabled", False), bool):
        raise FoldwiseError(
            f"params: nested.enabled must be true or false, got {nested.enabled!r}."
        )
    if nested.get("enabled"):
        if scheme.kind not in ("folds", "repeated", "holdout") or scheme.grouped or scheme.temporal:
            raise FoldwiseError(
                f"params: nested CV uses the split's resamples as outer folds, and "
                f"split={scheme.name} is not supported there (exhaustive, bootstrap, grouped "
                "and temporal outer loops are not: the inner folds would ignore groups/time).",
                "use split=stratified_kfold, kfold, repeated_(stratified_)kfold, "
                "(stratified_)shuffle_split or holdout with nested.enabled=true.",
            )
        extra = {"test_fraction", "duplicates"} & set(nested.inner)
        if extra:
            raise FoldwiseError(
                f"params: nested.inner has {', '.join(sorted(extra))}, which only the lockbox "
                "split uses.",
                "remove it from nested.inner.",
            )
        inner = schemes.validate(nested.inner)
        if inner.kind not in ("folds", "repeated", "holdout") or inner.grouped or inner.temporal:
            raise FoldwiseError(
                f"params: nested.inner.scheme={inner.name} is not supported as the inner loop.",
                "use stratified_kfold, kfold, repeated_(stratified_)kfold, "
                "(stratified_)shuffle_split or holdout.",
            )

    curves = cfg.get("curves") or {}
    if curves:
        fr = list(curves.learning.fractions)
        if not fr or any(isinstance(f, bool) or not 0 < f <= 1 for f in fr):
            raise FoldwiseError(
                f"params: curves.learning.fractions must be fractions in (0, 1], got {fr!r}."
            )
        key = str(curves.validation.param)
        if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise FoldwiseError(
                f"params: curves.validation.param {key!r} is not a configuration key.",
                "use a hyperparameter such as model.hidden, model.depth, optim.weight_decay "
                "or trainer.max_epochs.",
            )
        if not list(curves.validation["values"]):
            raise FoldwiseError("params: curves.validation.values is empty.")
        bv = curves.get("bias_variance") or {}
        if bv.get("enabled"):
            m = bv.get("models")
            if not isinstance(m, int) or isinstance(m, bool) or m < 2:
                raise FoldwiseError(
                    f"params: curves.bias_variance.models must be an integer >= 2, got {m!r}."
                )
            ef = bv.get("eval_fraction")
            if isinstance(ef, bool) or not isinstance(ef, int | float) or not 0 < ef < 1:
                raise FoldwiseError(
                    f"params: curves.bias_variance.eval_fraction must be in (0, 1), got {ef!r}."
                )
        mf = curves.get("max_folds", 5)
        if not isinstance(mf, int) or isinstance(mf, bool) or mf < 2:
            raise FoldwiseError(f"params: curves.max_folds must be an integer >= 2, got {mf!r}.")

    runs = (cfg.get("tracking") or {}).get("max_fold_runs", 25)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 0:
        raise FoldwiseError(
            f"params: tracking.max_fold_runs must be an integer >= 0, got {runs!r}."
        )

    conf = cfg.lockbox.confidence
    if not 0 < conf < 1:
        raise FoldwiseError(f"params: lockbox.confidence must be in (0, 1), got {conf!r}.")
    if cfg.lockbox.bootstrap_resamples < 100:
        raise FoldwiseError("params: lockbox.bootstrap_resamples must be at least 100.")
    from foldwise.registry import check_name

    check_name(cfg.lockbox.get("registered_model"))
    test_rows = cfg.lockbox.get("test_rows", "all")
    if test_rows not in ("all", "new"):
        raise FoldwiseError(
            f"params: lockbox.test_rows must be all or new, got {test_rows!r}.",
            "all: draw the test set from every row; new: test only on rows no earlier "
            "opening has seen.",
        )


# The fix proposed for a bad integer hyperparameter, and what a 0 would mean.
HYPER_EXAMPLE = {"model.hidden": 64, "model.depth": 1, "trainer.batch_size": 64,
                 "trainer.max_epochs": 40}  # fmt: skip
WHAT_IS_ZERO = {
    "model.hidden": "a layer of width 0 has no units",
    "trainer.max_epochs": "0 epochs would leave every model untrained",
    "trainer.batch_size": "a batch of 0 rows",
}
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def accelerator_available(accelerator: str) -> bool:
    """Whether torch can use ``accelerator`` here (imports torch only when asked)."""
    if accelerator in ("auto", "cpu"):
        return True
    import torch

    if accelerator == "mps":
        return bool(torch.backends.mps.is_available())
    return bool(torch.cuda.is_available())


def check_model_keys(model: Any) -> None:
    """Refuse any key under ``model`` that the model builder does not read.

    ``_target_`` gets its own message: a user naming their own network must not get the
    built-in one trained and reported in its place."""
    given = [str(k) for k in model]  # a DictConfig or a dict
    extra = [k for k in given if k not in MODEL_KEYS]
    if not extra:
        return
    name = model.get("name")
    reads = ", ".join(f"model.{k}" for k in MODEL_KEYS)
    tunable = ", ".join(f"model.{k}" for k in MODEL_KEYS if k != "name")
    where = "the -S override that added it, or the conf/model/*.yaml file that sets it"
    if "_target_" in extra:
        others = ", ".join(f"model.{k}" for k in extra if k != "_target_")
        raise FoldwiseError(
            f"params: model._target_={model.get('_target_')!r} names a network of your own, "
            f"but foldwise builds only its own (model=mlp, model=cnn): the sweep would train "
            f"the built-in model={name} and report it as yours.",
            f"remove model._target_{f' and {others}' if others else ''} ({where}); cross-"
            f"validate a built-in network instead (-S model=mlp, tuning {tunable}).",
        )
    close = difflib.get_close_matches(extra[0], MODEL_KEYS, n=1, cutoff=0.7)
    raise FoldwiseError(
        f"params: model.{extra[0]} is not read by model={name} (it reads {reads}), so it "
        "would be silently ignored.",
        (f"did you mean model.{close[0]}? " if close else "")
        + f"Remove model.{extra[0]} ({where}).",
    )


def _check_accelerator(accelerator: object) -> None:
    """``trainer.accelerator``: a GPU asked for where there is none fails here, at the
    first stage, instead of when the sweep starts training."""
    _one_of(accelerator, ACCELERATORS, "trainer.accelerator")
    if not accelerator_available(str(accelerator)):
        import torch

        if accelerator == "mps":
            raise FoldwiseError(
                "params: trainer.accelerator=mps, but torch.backends.mps.is_available() is "
                "False on this machine.",
                "use -S trainer.accelerator=auto or cpu.",
            )
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise FoldwiseError(
            f"params: trainer.accelerator={accelerator}, but this machine has no usable CUDA "
            f"GPU (torch {torch.__version__}, {build}: torch.cuda.is_available() is False).",
            "use -S trainer.accelerator=auto (the GPU when there is one, else the CPU) or "
            "cpu; or run where a CUDA GPU and a CUDA build of torch are installed.",
        )


ENSEMBLES = ("none", "bagging", "adaboost", "gradient_boosting")


def _check_launcher(cfg: DictConfig) -> None:
    """``sweep.launcher``, ``sweep.n_jobs`` and the submitit jobs' ``sweep.submitit.*``."""
    sweep = cfg.sweep
    _one_of(sweep.launcher, LAUNCHERS, "sweep.launcher")

    def count(key: str, value: object, least: int, hint: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            kind = "a positive integer" if least else "an integer >= 0"
            raise FoldwiseError(f"params: {key} must be {kind}, got {value!r}.", hint)

    count("sweep.n_jobs", sweep.get("n_jobs", 1), 1, "e.g. -S sweep.n_jobs=4 (parallel workers).")
    sub = sweep.get("submitit") or {}
    for key, default, least, hint in (
        ("cpus_per_task", 1, 1, "CPU cores (and torch threads) per job, e.g. 4"),
        ("gpus_per_task", 0, 0, "0 for CPU jobs, 1 for trainer=gpu"),
        ("timeout_min", 60, 1, "minutes a job may run, e.g. 240"),
        ("array_parallelism", 256, 1, "SLURM array tasks running at once, e.g. 16"),
    ):
        count(f"sweep.submitit.{key}", sub.get(key, default), least,
              f"-S sweep.submitit.{key}=N: {hint}.")  # fmt: skip
    mem = sub.get("mem_gb")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int) or mem < 1):
        raise FoldwiseError(
            f"params: sweep.submitit.mem_gb must be a whole number of GB or null, got {mem!r}.",
            "e.g. -S sweep.submitit.mem_gb=8 (null: the cluster's default).",
        )
    part = sub.get("partition")
    if part is not None and (not isinstance(part, str) or not part.strip() or " " in part):
        raise FoldwiseError(
            f"params: sweep.submitit.partition must be a SLURM partition name or null, "
            f"got {part!r}.",
            "see `sinfo -s` for the cluster's partitions (null: its default).",
        )
    if (
        sweep.launcher == "submitit_slurm"
        and str(cfg.trainer.accelerator) in ("gpu", "cuda")
        and not sub.get("gpus_per_task")
    ):
        raise FoldwiseError(
            "params: trainer=gpu with sweep.launcher=submitit_slurm, but "
            "sweep.submitit.gpus_per_task is 0: the SLURM jobs would get no GPU.",
            "-S sweep.submitit.gpus_per_task=1 (or trainer.accelerator=cpu).",
        )


def _check_ensemble(cfg: DictConfig) -> None:
    """``ensemble.*``, in the base config and in every value ``sweep.grid`` gives it."""
    ens = cfg.get("ensemble")
    if ens is None:
        return
    swept = {k: v for k, v in grid_leaves(cfg).items() if k.startswith("ensemble.")}
    values: dict[str, list] = {f"ensemble.{k}": [v] for k, v in ens.items()}
    for key, vals in swept.items():
        if not isinstance(vals, str):
            values[key] = list(vals)
    task = str(cfg.data.get("task") or "classification")
    for name in values.get("ensemble.name", []):
        _one_of(name, ENSEMBLES, "ensemble.name")
        wrong = {"adaboost": "regression", "gradient_boosting": "classification"}.get(name)
        if wrong == task:
            other = "gradient_boosting" if name == "adaboost" else "adaboost"
            raise FoldwiseError(
                f"params: ensemble={name} boosts "
                + ("classifiers (SAMME)" if name == "adaboost" else "regressors (squared loss)")
                + f", and data={cfg.data.name} is a {task} task.",
                f"use ensemble={other} (or bagging) for {task}.",
            )
    for lr in values.get("ensemble.learning_rate", []):
        if isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0:
            raise FoldwiseError(
                f"params: ensemble.learning_rate must be a positive number, got {lr!r}."
            )
    for n in values.get("ensemble.n_estimators", []):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise FoldwiseError(
                f"params: ensemble.n_estimators must be a positive integer, got {n!r}.",
                "bagging needs members: e.g. -S ensemble.n_estimators=10.",
            )
    for f in values.get("ensemble.max_samples", []):
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
            raise FoldwiseError(
                f"params: ensemble.max_samples must be a fraction in (0, 1], got {f!r}.",
                "each member draws this share of its training rows (with replacement).",
            )


REFITS = ("all_dev", "fold_ensemble")
# Resampling kinds whose resamples are a handful of fold models worth averaging.
FOLD_ENSEMBLE_KINDS = ("folds", "repeated", "holdout")


def _check_refit(cfg: DictConfig, scheme: type) -> None:
    """``refit.name``; a fold ensemble needs few fold models, and averageable ones."""
    name = str((cfg.get("refit") or {}).get("name", "all_dev"))
    _one_of(name, REFITS, "refit.name")
    if name != "fold_ensemble":
        return
    if scheme.kind not in FOLD_ENSEMBLE_KINDS:
        raise FoldwiseError(
            f"params: refit=fold_ensemble averages the split's fold models, and "
            f"split={cfg.split.scheme} is {scheme.kind} resampling (one model per resample: "
            "hundreds of them).",
            "use a k-fold, repeated or holdout scheme, or refit=all_dev.",
        )
    names = [str(cfg.ensemble.name)] if cfg.get("ensemble") else []
    swept = grid_leaves(cfg).get("ensemble.name", [])
    names += [] if isinstance(swept, str) else [str(v) for v in swept]
    boosted = sorted({n for n in names if n in ("adaboost", "gradient_boosting")})
    if boosted:
        raise FoldwiseError(
            f"params: refit=fold_ensemble averages fold models' probabilities (or values), "
            f"and ensemble={boosted[0]} combines its learners by weighted votes (or sums) "
            "that foldwise does not average across folds.",
            "use refit=all_dev with boosting, or fold_ensemble with ensemble=none or bagging.",
        )


def grids(cfg: DictConfig) -> list[dict[str, object]]:
    """``sweep.grid`` as sub-grids, each dotted keys → values. A mapping is one grid; a
    list of mappings is the union of their grids (scikit-learn's ``ParameterGrid``), for
    search spaces that are not one product — e.g. single MLPs, bagged MLPs and boosted
    weak learners in one sweep (``conf/sweep/ensembles.yaml``)."""
    grid = cfg.sweep.get("grid")
    if grid is None and (cfg.sweep.get("search") or "grid") != "grid":
        return []  # sweep=optuna searches sweep.space instead (foldwise.search)
    grid = cfg.sweep.grid
    subs = list(grid) if OmegaConf.is_list(grid) or isinstance(grid, list | tuple) else [grid]
    out = []
    for i, sub in enumerate(subs):
        if not (OmegaConf.is_dict(sub) or isinstance(sub, dict)):
            raise FoldwiseError(
                f"params: sweep.grid[{i}] is {sub!r}, not a mapping of keys to value lists.",
                "write each grid of the list as keys with lists of values, e.g. "
                "{model: {hidden: [32, 64]}}.",
            )
        out.append({
            k: list(v) if OmegaConf.is_list(v) or isinstance(v, list | tuple) else v
            for k, v in flatten(sub).items()
        })  # fmt: skip
    return out


def grid_leaves(cfg: DictConfig) -> dict[str, object]:
    """The sweep's search space as dotted keys, in declaration order; for a list of
    grids, every key with every value any of them gives it."""
    subs = grids(cfg)
    if len(subs) == 1 and not OmegaConf.is_list(cfg.sweep.grid):
        return subs[0]
    out: dict[str, list] = {}
    for sub in subs:
        for k, v in sub.items():
            values = out.setdefault(k, [])
            values += [x for x in axis_values(k, v) if x not in values]
    return out


def axis_values(key: str, values: Any) -> list[Any]:
    """One ``sweep.grid`` entry's values: a list, or Hydra sweep syntax in a string
    (``range(16,129,16)``, ``choice(a,b)``, ``a,b``) expanded by Hydra's own parser."""
    if isinstance(values, str):
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        try:
            override = OverridesParser.create().parse_override(f"{key}={values}")
            if override.is_sweep_override():
                return list(override.sweep_iterator())
            return [override.value()]
        except HydraException as err:
            raise FoldwiseError(
                f"params: sweep.grid.{key}={values!r} is neither a list nor Hydra sweep syntax "
                f"({str(err).splitlines()[0]}).",
                f"give a list, e.g. sweep.grid.{key}=[1,2], or e.g. 'range(16,129,16)'.",
            ) from None
    if not isinstance(values, list | tuple):
        raise FoldwiseError(
            f"params: sweep.grid.{key} must be a list of values, got {values!r}.",
            f"write it as a list, e.g. -S 'sweep.grid.{key}=[{values}]' (or set {key} "
            "outside the grid if it is not swept).",
        )
    return list(values)


def _check_grid(cfg: DictConfig) -> None:
    """Every value of every ``sweep.grid`` key, each checked in a configuration of the
    grid: that value, and the first value of every other swept key (per grid of a list)."""
    _need(cfg, "sweep.grid", "declare a search space under sweep.grid")
    subs = grids(cfg)
    if not subs:
        raise FoldwiseError(
            "params: sweep.grid is an empty list.",
            "give at least one grid, e.g. -S 'sweep.grid.model.hidden=[32,64]'.",
        )
    for leaves in subs:
        _check_one_grid(cfg, leaves)


def _check_one_grid(cfg: DictConfig, leaves: dict[str, object]) -> None:
    if not leaves:
        raise FoldwiseError(
            "params: sweep.grid is empty.",
            "declare at least one hyperparameter, e.g. -S 'sweep.grid.model.hidden=[32,64]'.",
        )
    axes = {}
    for key, values in leaves.items():
        values = OmegaConf.to_container(values) if OmegaConf.is_config(values) else values
        axes[key] = axis_values(key, values)
        if not axes[key]:
            raise FoldwiseError(
                f"params: sweep.grid.{key} has no values: the search space has no points.",
                f"give it at least one value, e.g. -S 'sweep.grid.{key}="
                f"[{OmegaConf.select(cfg, key)}]', or remove it from sweep.grid.",
            )
    first = {k: v[0] for k, v in axes.items()}
    base = OmegaConf.to_container(cfg, resolve=True)

    def point(overrides: dict[str, Any]) -> DictConfig:
        out = OmegaConf.create(base)
        for k, v in overrides.items():
            OmegaConf.update(out, k, v, force_add=False)
        return out

    for key, values in axes.items():
        for value in values:
            try:  # the value alone, so that an error names the key it comes from
                _check_values(point({key: value}))
            except FoldwiseError:
                try:  # a point of the grid: refused only if the grid really has it
                    _check_values(point({**first, key: value}))
                except FoldwiseError as err:
                    problem = err.problem.removeprefix("params: ")
                    raise FoldwiseError(
                        f"params: sweep.grid.{key} value {value!r}: {problem}",
                        err.fix or f"remove {value!r} from sweep.grid.{key}.",
                    ) from None


# ------------------------------------------------------------------ which keys exist
# sweep.grid sweeps what defines one fit; the rest is fixed before (data, split) or
# after (selection, lockbox, ...) the sweep, or is how it runs (engine, sweep, tracking).
SWEEPABLE = ("model.", "optim.", "trainer.", "ensemble.", "seed")


@dataclass(frozen=True)
class Keys:
    """The settings ``conf/`` defines: leaf keys and the sections above them."""

    leaves: frozenset[str]
    sections: frozenset[str]

    def closest(self, key: str, among: Iterable[str] | None = None) -> str | None:
        pool = sorted(self.leaves if among is None else among)
        last = key.rsplit(".", 1)[-1]
        same_name = [k for k in pool if k.rsplit(".", 1)[-1] == last]  # model.lr -> optim.lr
        if len(same_name) == 1:
            return same_name[0]
        match = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
        return match[0] if match else None


@functools.lru_cache(maxsize=8)
def known_keys(conf_dir: Path) -> Keys | None:
    """Every key of every option of every config group in ``conf_dir`` (e.g. all split
    schemes' options, all ensembles' keys), plus the primary config's own keys; None when
    there is no ``conf/`` to learn them from. ``nested.inner`` takes any split option."""
    primary = conf_dir / "config.yaml"
    if not primary.is_file():
        return None
    leaves: set[str] = set()
    sections: set[str] = set()

    def add(tree: dict, prefix: str) -> None:
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                sections.add(f"{prefix}{k}")
                add(v, f"{prefix}{k}.")
            else:
                leaves.add(f"{prefix}{k}")

    top = OmegaConf.to_container(OmegaConf.load(primary))
    add({k: v for k, v in top.items() if k != "defaults"}, "")
    for group in sorted(d for d in conf_dir.iterdir() if d.is_dir()):
        sections.add(group.name)
        for option in sorted(group.glob("*.yaml")):
            tree = OmegaConf.to_container(OmegaConf.load(option))
            add({k: v for k, v in (tree or {}).items() if k != "defaults"}, f"{group.name}.")
    split = {k.removeprefix("split.") for k in leaves if k.startswith("split.")}
    leaves |= {f"nested.inner.{k}" for k in split}
    # The grid is a search space over other keys, checked on its own.
    # (So is sweep=optuna's sweep.space: foldwise.search checks its keys.)
    leaves = {k for k in leaves if not k.startswith(("sweep.grid.", "sweep.space."))}
    leaves |= {"sweep.grid", "sweep.space"}
    sections = {s for s in sections if not s.startswith(("sweep.grid", "sweep.space"))}
    return Keys(frozenset(leaves), frozenset(sections))


def _unknown(key: str, keys: Keys, where: str, among: Iterable[str] | None = None) -> None:
    close = keys.closest(key, among)
    steps = [f"did you mean {where}{close}?"] if close else []
    if not where:  # sweep.grid keys need '+': the grid of conf/ lacks them
        steps.append(
            f"Set existing keys without '+' (e.g. -S {close or 'model.hidden'}=...); '+' adds "
            "a key conf/ does not have."
        )
    steps.append(
        f"Remove {where}{key} from params.yaml (regenerate it: make params, or dvc exp run "
        "without that override)."
    )
    raise FoldwiseError(
        f"params: {where}{key} is not a foldwise setting: conf/ defines no such key, so no "
        "code reads it and it would be silently ignored.",
        " ".join(steps),
    )


def check_keys(cfg: DictConfig, conf_dir: Path | None = None) -> None:
    """Refuse keys that ``conf/`` does not define, in the config and in ``sweep.grid``,
    naming the closest valid key (``+model.hiden=64`` would otherwise be kept silently)."""
    # The project's conf/, else the one this foldwise ships with (a source checkout).
    for folder in (conf_dir or repo_root() / "conf", Path(__file__).resolve().parents[2] / "conf"):
        keys = known_keys(folder.resolve())
        if keys is not None:
            break
    else:  # an installed foldwise and no conf/: nothing to compare with
        return
    tree = OmegaConf.to_container(cfg, resolve=False)
    if "_target_" in (tree.get("model") or {}):  # a user's own network: its own message
        check_model_keys(tree["model"])
    for key in flatten(tree):
        if key.startswith(("sweep.grid.", "sweep.space.")) or key in keys.leaves:
            continue
        above = [p for p in _prefixes(key) if p in keys.leaves]
        if above:
            raise FoldwiseError(
                f"params: {above[0]} must be a single value, but params.yaml gives it "
                f"sub-keys ({key}).",
                f"set {above[0]} itself, e.g. -S {above[0]}=<value>.",
            )
        if key in keys.sections:
            raise FoldwiseError(
                f"params: {key} is a section of settings, but params.yaml gives it one value.",
                "set its keys instead: "
                + ", ".join(sorted(k for k in keys.leaves if k.startswith(f"{key}.")))
                + ".",
            )
        _unknown(key, keys, "")
    grid = (tree.get("sweep") or {}).get("grid")
    subs = grid if isinstance(grid, list) else [grid]
    sweepable = {k for k in keys.leaves if k.startswith(SWEEPABLE)}
    for key in (k for sub in subs if isinstance(sub, dict) for k in flatten(sub)):
        if key in sweepable:
            continue
        if key in keys.leaves:
            section = key.split(".", 1)[0]
            raise FoldwiseError(
                f"params: sweep.grid sweeps {key}, but {section} settings are the same for "
                "every configuration of a sweep (each configuration is one fit: "
                "model.*, optim.*, trainer.*, ensemble.*, seed).",
                f"set {key} outside the grid (-S {key}=...) and compare runs with dvc exp.",
            )
        _unknown(key, keys, "sweep.grid.", sweepable)


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
