"""Loading and checking ``params.yaml``, and where each stage reads and writes.

Every stage calls :func:`load` first: it checks the *whole* configuration with
cheap static rules, so a typo in, say, the lockbox section fails at the first
stage instead of after a sweep. Data-dependent checks (class counts, fold counts)
happen in the modules that see the data, still before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from foldwise import scores
from foldwise.errors import FoldwiseError
from foldwise.files import flatten, repo_root
from foldwise.split import schemes

DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes", "csv")
MODELS = ("mlp", "cnn")
SELECTION_RULES = ("best_mean", "one_se")
LAUNCHERS = ("basic", "joblib")


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


def load(path: Path | None = None) -> DictConfig:
    """Load and validate ``params.yaml`` (default: the one at the repo root)."""
    path = path or repo_root() / "params.yaml"
    if not path.is_file():
        raise FoldwiseError(
            f"{path} not found.", "run from the foldwise checkout (where dvc.yaml lives)."
        )
    cfg = OmegaConf.load(path)
    validate(cfg)
    return cfg


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


def validate(cfg: DictConfig) -> None:
    """Static checks of the whole configuration; raises :class:`FoldwiseError`."""
    name = _need(cfg, "data.name", "pick a dataset: -S data=digits")
    _one_of(name, DATASETS, "data.name")
    if name == "csv":
        hint = "dvc exp run -S data=csv -S data.path=my.csv -S data.target=label"
        _need(cfg, "data.path", hint)
        _need(cfg, "data.target", hint)

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
            raise FoldwiseError(f"params: {key} must be {kind}, got {value!r}.")
    dropout = _need(cfg, "model.dropout", "e.g. model.dropout=0.1")
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise FoldwiseError(f"params: model.dropout must be in [0, 1), got {dropout!r}.")
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
    if not isinstance(lr, int | float) or lr <= 0:
        raise FoldwiseError(f"params: optim.lr must be a positive number, got {lr!r}.")
    es = cfg.trainer.early_stopping
    if es.enabled and not 0 < es.inner_fraction < 1:
        raise FoldwiseError(
            "params: trainer.early_stopping.inner_fraction must be in (0, 1), "
            f"got {es.inner_fraction!r}."
        )

    grid = _need(cfg, "sweep.grid", "declare a search space under sweep.grid")
    if not isinstance(grid, DictConfig) or not flatten(grid):
        raise FoldwiseError(
            "params: sweep.grid is empty.",
            "declare at least one hyperparameter, e.g. sweep.grid.model.hidden=[32,64].",
        )
    for key, values in flatten(grid).items():
        if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise FoldwiseError(
                f"params: sweep.grid sweeps '{key}', which is not a configuration key.",
                "sweep only keys that exist, e.g. model.hidden or optim.lr.",
            )
        if not isinstance(values, str) and len(values) == 0:
            raise FoldwiseError(f"params: sweep.grid.{key} has no values.")
    _one_of(cfg.sweep.launcher, LAUNCHERS, "sweep.launcher")
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
    test_rows = cfg.lockbox.get("test_rows", "all")
    if test_rows not in ("all", "new"):
        raise FoldwiseError(
            f"params: lockbox.test_rows must be all or new, got {test_rows!r}.",
            "all: draw the test set from every row; new: test only on rows no earlier "
            "opening has seen.",
        )


ENSEMBLES = ("none", "bagging", "adaboost", "gradient_boosting")


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


def grid_leaves(cfg: DictConfig) -> dict[str, object]:
    """The sweep's search space as dotted keys, in declaration order."""
    return {k: (v if isinstance(v, str) else list(v)) for k, v in flatten(cfg.sweep.grid).items()}
