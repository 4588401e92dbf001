"""The configuration schema: every setting foldwise reads, with its type and default.

``conf/`` is the menu (Hydra config groups, composed into ``params.yaml``); this module is
what the code reads. The known-key list behind "did you mean" (:mod:`.keys`), the type
check of every value (:func:`type_errors`) and the option table of docs/configuration.md (``make
options``) all come from it, so a yaml file under ``conf/`` cannot make a key valid that
no code reads. A key whose options differ by config group (``split.*`` by scheme,
``data.*`` by dataset, ``ensemble.*`` by ensemble) is listed once, with the options that
use it; the groups' own checks (:mod:`foldwise.split.schemes`, :mod:`.sections`) say which
scheme takes which option. ``tests/test_structure.py`` checks that ``conf/`` and this
schema hold the same keys.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from foldwise.errors import FoldwiseError

# One line of help per key, in the field's metadata: the option table of docs/configuration.md.
_help = lambda text: {"help": text}  # noqa: E731


@dataclass
class Data:
    name: str = field(
        default="digits",
        metadata=_help(
            "dataset: digits, breast_cancer, wine, iris, diabetes, csv (your table), "
            "image_folder or dataset (your torch Dataset)"
        ),
    )
    task: str = field(
        default="classification",
        metadata=_help("classification or regression (set by the dataset; csv: yours)"),
    )
    image_shape: list[int] | None = field(
        default=None, metadata=_help("[channels, height, width] of image rows (model=cnn needs it)")
    )
    group_column: str | None = field(
        default=None, metadata=_help("csv: rows sharing a value stay together (grouped schemes)")
    )
    time_column: str | None = field(
        default=None,
        metadata=_help("csv: timestamps (temporal schemes; the lockbox is the latest period)"),
    )
    path: str | None = field(
        default=None, metadata=_help("csv: the table (.csv or .parquet), e.g. data/raw/my.csv")
    )
    target: str | None = field(
        default=None, metadata=_help("csv: the column holding the label (or the value)")
    )
    id_column: str | None = field(
        default=None, metadata=_help("csv: a unique integer id column kept as the row id")
    )
    drop: list[str] = field(default_factory=list, metadata=_help("csv: columns to ignore"))
    sep: str = field(default=",", metadata=_help("csv: the field separator (',', ';', '|', '\\t')"))
    _target_: str | None = field(
        default=None,
        metadata=_help(
            "dataset: a function returning your torch Dataset of (x, y); the other data.* "
            "keys are its arguments"
        ),
    )
    size: list[int] | None = field(
        default=None,
        metadata=_help("image_folder: resize every image to [height, width] (null: one size)"),
    )
    channels: int = field(default=1, metadata=_help("image_folder: 1 (grey) or 3 (RGB)"))
    normalize: str | dict = field(
        default="feature",
        metadata=_help(
            "standardise inputs per feature, per image channel (channel) or not (none), or "
            "your transform ({_target_: ...}); fit on each model's training rows"
        ),
    )


@dataclass
class Split:
    scheme: str = field(
        default="stratified_kfold",
        metadata=_help("resampling scheme of the dev rows (conf/split/: 15 schemes)"),
    )
    test_fraction: float = field(
        default=0.2, metadata=_help("share of rows locked away as the test set")
    )
    duplicates: str = field(
        default="warn", metadata=_help("rows repeated across the lockbox: warn or error")
    )
    n_splits: int | None = field(
        default=5, metadata=_help("folds (k-fold schemes), or resamples (shuffle-split)")
    )
    shuffle: bool | None = field(
        default=True, metadata=_help("shuffle before cutting folds (k-fold schemes)")
    )
    n_repeats: int | None = field(default=None, metadata=_help("repetitions (repeated k-fold)"))
    val_fraction: float | None = field(
        default=None, metadata=_help("validation share (holdout, shuffle-split)")
    )
    stratify: bool | None = field(default=None, metadata=_help("holdout: stratify by class"))
    p: int | None = field(
        default=None, metadata=_help("rows / groups left out (leave-p-out, leave-p-groups-out)")
    )
    sample: int | None = field(
        default=None, metadata=_help("leave-p-out: sample this many of the C(n, p) splits")
    )
    max_splits: int | None = field(
        default=None, metadata=_help("exhaustive schemes: refuse above this many resamples")
    )
    n_resamples: int | None = field(default=None, metadata=_help("bootstrap: resamples (B)"))
    gap: int | None = field(
        default=None, metadata=_help("time series: rows skipped between train and validation")
    )
    max_train_size: int | None = field(
        default=None, metadata=_help("time series: at most this many training rows")
    )
    val_size: int | None = field(
        default=None, metadata=_help("time series: rows per validation fold")
    )


@dataclass
class Model:
    name: str = field(default="mlp", metadata=_help("mlp (tables) or cnn (images)"))
    _target_: str | None = field(
        default=None,
        metadata=_help(
            "your own nn.Module class or factory (model=module); the other model.* keys "
            "are its arguments (docs/models.md)"
        ),
    )
    hidden: int = field(
        default=64, metadata=_help("units per hidden layer (cnn: channels of the first block)")
    )
    depth: int = field(
        default=1, metadata=_help("hidden layers (cnn: conv blocks); mlp 0 is a linear model")
    )
    dropout: float = field(
        default=0.1, metadata=_help("share of units zeroed in training, in [0, 1)")
    )


@dataclass
class Optim:
    name: str = field(
        default="adam", metadata=_help("adam or sgd (both stacked: lr and weight decay per model)")
    )
    _target_: str | None = field(
        default=None,
        metadata=_help(
            "any torch optimizer class (optim=torch; one model at a time unless Adam or SGD); "
            "the other optim.* keys are its arguments"
        ),
    )
    lr: float = field(default=0.001, metadata=_help("learning rate"))
    weight_decay: float = field(default=0.0, metadata=_help("L2 penalty"))
    momentum: float = field(default=0.9, metadata=_help("sgd: momentum, in [0, 1)"))
    nesterov: bool = field(default=False, metadata=_help("sgd: Nesterov momentum"))


@dataclass
class Scheduler:
    _target_: str | None = field(
        default=None,
        metadata=_help(
            "a torch.optim.lr_scheduler class (null: constant lr); the other scheduler.* "
            "keys are its arguments (T_max, total_steps: from the training if left out)"
        ),
    )
    interval: str = field(
        default="epoch", metadata=_help("step the scheduler every epoch or every step")
    )
    monitor: str = field(
        default="inner_loss",
        metadata=_help("ReduceLROnPlateau reads inner_loss (early-stopping rows) or train_loss"),
    )


@dataclass
class EarlyStopping:
    enabled: bool = field(default=True, metadata=_help("stop on an inner validation split"))
    inner_fraction: float = field(
        default=0.15, metadata=_help("share of each training fold held out for it")
    )
    patience: int = field(default=5, metadata=_help("epochs without improvement before stopping"))


@dataclass
class Trainer:
    max_epochs: int = field(default=40, metadata=_help("epochs at most"))
    batch_size: int = field(default=64, metadata=_help("rows per step"))
    accelerator: str = field(default="auto", metadata=_help("auto, cpu, gpu (cuda) or mps"))
    precision: int = field(default=32, metadata=_help("32 or 64 (float64: exact comparisons)"))
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)


@dataclass
class Engine:
    stack: bool = field(
        default=True,
        metadata=_help("train models that share an architecture as one stacked network"),
    )
    max_models: int | None = field(
        default=None, metadata=_help("models per stack at most (null: no limit)")
    )
    memory_mb: float = field(
        default=2048, metadata=_help("memory a stack may use (on a GPU: each device's budget)")
    )
    cpu_stack_params: int | None = field(
        default=5_000_000, metadata=_help("on a CPU, parameters per stack at most")
    )
    rows: str = field(
        default="memory",
        metadata=_help(
            "memory (every dev row in one tensor), stream (images or a Dataset read per "
            "step through a DataLoader: data larger than memory) or auto (stream when the "
            "dev rows' features exceed memory_mb)"
        ),
    )
    loader_workers: int = field(
        default=0, metadata=_help("rows=stream: DataLoader processes (0: in the training process)")
    )
    devices: str | int | list[int] = field(
        default="auto",
        metadata=_help(
            "CUDA devices stacks spread over, one worker thread each: auto (every visible "
            "GPU), N (the first N) or a list of indices, e.g. [0,2]"
        ),
    )


@dataclass
class Ensemble:
    name: str = field(
        default="none", metadata=_help("none, bagging, adaboost or gradient_boosting")
    )
    n_estimators: int = field(default=10, metadata=_help("members (bagging) or rounds (boosting)"))
    max_samples: float = field(
        default=1.0, metadata=_help("bagging: bootstrap sample size, as a share of the rows")
    )
    learning_rate: float = field(default=1.0, metadata=_help("boosting: shrinkage of each round"))


@dataclass
class Submitit:
    partition: str | None = field(
        default=None, metadata=_help("SLURM partition (null: the cluster's default)")
    )
    cpus_per_task: int = field(
        default=1, metadata=_help("CPU cores per job, and its torch threads")
    )
    gpus_per_task: int = field(default=0, metadata=_help("SLURM GPUs per job"))
    mem_gb: float | None = field(default=None, metadata=_help("memory per job in GB"))
    timeout_min: int = field(
        default=60, metadata=_help("a job still running after this is stopped")
    )
    array_parallelism: int = field(default=256, metadata=_help("SLURM array tasks running at once"))


@dataclass
class Optuna:
    n_trials: int = field(
        default=20, metadata=_help("trials in all (a re-run continues the study)")
    )
    sampler: str = field(default="tpe", metadata=_help("tpe, random or grid"))
    pruner: str = field(
        default="wilcoxon", metadata=_help("wilcoxon (prune a clearly worse trial) or none")
    )
    p_threshold: float = field(default=0.1, metadata=_help("the pruner's one-sided p-value"))
    n_startup_steps: int = field(default=2, metadata=_help("folds before a trial may be pruned"))
    n_startup_trials: int = field(default=5, metadata=_help("random trials before TPE"))
    folds_per_step: int = field(default=1, metadata=_help("folds trained between pruning checks"))
    storage: str | None = field(
        default=None, metadata=_help("RDB URL (null: SQLite in .foldwise/)")
    )
    study_name: str | None = field(
        default=None, metadata=_help("null: derived from the sweep's identity")
    )


@dataclass
class Sweep:
    grid: Any = field(
        default=None, metadata=_help("the search space (one grid or a list of grids)")
    )
    launcher: str = field(
        default="basic", metadata=_help("basic, joblib, submitit_local or submitit_slurm")
    )
    n_jobs: int = field(default=2, metadata=_help("parallel workers (joblib, submitit_*)"))
    max_failures: int = field(
        default=0, metadata=_help("failed jobs tolerated before the stage fails")
    )
    submitit: Submitit = field(default_factory=Submitit)
    search: str | None = field(default=None, metadata=_help("grid (default) or optuna"))
    space: Any = field(default=None, metadata=_help("sweep=optuna: the dimensions searched"))
    optuna: Optuna = field(default_factory=Optuna)


@dataclass
class Selection:
    rule: str = field(default="best_mean", metadata=_help("best_mean or one_se"))
    metric: str | None = field(
        default=None, metadata=_help("val_<score> selected on (null: the task's default)")
    )
    complexity: str = field(default="params", metadata=_help("one_se: what makes a model simpler"))
    rope: float = field(
        default=0.01, metadata=_help("region of practical equivalence of the Bayesian comparison")
    )
    interval: str = field(
        default="scheme",
        metadata=_help(
            "the selected configuration's interval: scheme (the resampling scheme's) or ncv "
            "(Bates, Hastie & Tibshirani's nested CV: K(K−1)/2 more models)"
        ),
    )
    ncv_repeats: int = field(
        default=1,
        metadata=_help("interval=ncv: K-fold partitions (the split's, then fresh ones)"),
    )
    baselines: bool = field(
        default=False,
        metadata=_help(
            "true: a baseline may be selected when it scores best under the rule "
            "(refit=all_dev); false: baselines are shown, never selected"
        ),
    )


@dataclass
class Diagnosis:
    metric: str | None = field(
        default=None, metadata=_help("score the fit verdict reads (null: the selection's)")
    )
    window: int = field(default=5, metadata=_help("last epochs the verdict looks at"))
    poor_score: float = field(default=0.8, metadata=_help("below this, underfitting"))
    small_gap: float = field(default=0.05, metadata=_help("train-validation gap counted as small"))
    overfit_gap_growth: float = field(
        default=0.05, metadata=_help("gap growth counted as overfitting")
    )
    overfit_rise: float = field(
        default=0.1, metadata=_help("validation loss rise counted as overfitting")
    )
    improving_slope: float = field(
        default=0.001, metadata=_help("per-epoch gain counted as still improving")
    )
    improving_share: float = field(
        default=0.5, metadata=_help("share of models still improving for the verdict")
    )


@dataclass
class NestedInner:
    scheme: str = field(
        default="stratified_kfold",
        metadata=_help("the inner resampling scheme (any split option below it)"),
    )


@dataclass
class Nested:
    enabled: bool = field(default=False, metadata=_help("run nested cross-validation"))
    inner: NestedInner = field(default_factory=NestedInner)


@dataclass
class Refit:
    name: str = field(default="all_dev", metadata=_help("all_dev (one model) or fold_ensemble"))


@dataclass
class LearningCurve:
    enabled: bool = field(default=True, metadata=_help("the learning curve"))
    fractions: list[float] = field(
        default_factory=lambda: [0.1, 0.25, 0.5, 0.75, 1.0], metadata=_help("training shares")
    )


@dataclass
class ValidationCurve:
    enabled: bool = field(default=True, metadata=_help("the validation curve"))
    param: str = field(default="model.hidden", metadata=_help("the hyperparameter varied"))
    values: list[Any] = field(
        default_factory=lambda: [8, 32, 128, 512], metadata=_help("its values")
    )


@dataclass
class BiasVariance:
    enabled: bool = field(default=True, metadata=_help("the bias-variance decomposition"))
    models: int = field(default=20, metadata=_help("bootstrap-trained models per setting"))
    eval_fraction: float = field(default=0.3, metadata=_help("dev rows held out to score them"))
    ensembles: bool = field(default=True, metadata=_help("also for the ensembles"))


@dataclass
class Curves:
    max_folds: int = field(default=5, metadata=_help("folds each curve point trains"))
    learning: LearningCurve = field(default_factory=LearningCurve)
    validation: ValidationCurve = field(default_factory=ValidationCurve)
    bias_variance: BiasVariance = field(default_factory=BiasVariance)


@dataclass
class Thresholdout:
    budget: int = field(default=5, metadata=_help("B: over-threshold answers per test set"))
    max_queries: int = field(default=20, metadata=_help("m: models answered per test set"))
    tolerance: float = field(
        default=0.05, metadata=_help("τ: the accuracy error the guarantee bounds")
    )
    beta: float = field(default=0.05, metadata=_help("β: the guarantee's failure probability"))
    threshold: float | None = field(default=None, metadata=_help("T (null: the theorem's 3τ/4)"))
    sigma: float | None = field(
        default=None, metadata=_help("σ, the Laplace noise rate (null: τ/(96 ln(4m/β)))")
    )


@dataclass
class Lockbox:
    mode: str = field(
        default="once",
        metadata=_help("once: one look per model; thresholdout: a reusable lockbox"),
    )
    thresholdout: Thresholdout = field(default_factory=Thresholdout)
    confidence: float = field(
        default=0.95, metadata=_help("level of the test score's bootstrap interval")
    )
    bootstrap_resamples: int = field(default=1000, metadata=_help("resamples of that interval"))
    override_reason: str | None = field(
        default=None, metadata=_help("knowingly test a different model on an opened test set")
    )
    reuse_rows_reason: str | None = field(
        default=None, metadata=_help("knowingly test on rows an opening has seen")
    )
    test_rows: str = field(
        default="all", metadata=_help("all, or new: only rows no opening has seen")
    )
    registered_model: str | None = field(
        default=None, metadata=_help("MLflow model name (null: foldwise-<data.name>)")
    )


@dataclass
class Tracking:
    uri: str | None = field(
        default=None,
        metadata=_help("MLflow store (null: sqlite ./mlflow.db, or MLFLOW_TRACKING_URI)"),
    )
    experiment: str = field(default="foldwise", metadata=_help("MLflow experiment"))
    max_fold_runs: int = field(
        default=25, metadata=_help("at most this many folds get their own run")
    )


@dataclass
class Config:
    seed: int = field(
        default=42, metadata=_help("the split, the folds, weight init and batch order")
    )
    data: Data = field(default_factory=Data)
    split: Split = field(default_factory=Split)
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    scheduler: Scheduler = field(default_factory=Scheduler)
    ensemble: Ensemble = field(default_factory=Ensemble)
    trainer: Trainer = field(default_factory=Trainer)
    engine: Engine = field(default_factory=Engine)
    sweep: Sweep = field(default_factory=Sweep)
    selection: Selection = field(default_factory=Selection)
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    nested: Nested = field(default_factory=Nested)
    refit: Refit = field(default_factory=Refit)
    curves: Curves = field(default_factory=Curves)
    lockbox: Lockbox = field(default_factory=Lockbox)
    tracking: Tracking = field(default_factory=Tracking)
    baselines: list[str] = field(
        default_factory=lambda: ["dummy", "linear", "hgb"],
        metadata=_help(
            "scikit-learn models scored on the same resamples (selectable only with "
            "selection.baselines=true): dummy, linear, hgb ([] for none)"
        ),
    )


# Free-form values: the search space's grammar is checked on its own (.grid, .space).
FREE = ("sweep.grid", "sweep.space")


@dataclass(frozen=True)
class Option:
    key: str
    type: Any
    default: Any
    help: str


def options(cls: type = Config, prefix: str = "") -> list[Option]:
    """Every leaf setting of the schema, in order: dotted key, type, default, help."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key, kind = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += options(kind, f"{key}.")
            continue
        factory = f.default_factory
        default = factory() if factory is not dataclasses.MISSING else f.default
        out.append(Option(key, kind, default, f.metadata.get("help", "")))
    return out


def sections(cls: type = Config, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += [f"{prefix}{f.name}", *sections(hints[f.name], f"{prefix}{f.name}.")]
    return out


@functools.lru_cache(maxsize=1)
def _by_key() -> dict[str, Option]:
    """The schema's settings by key, built once: every grid point is type-checked."""
    return {o.key: o for o in options()}


def _allowed(kind: Any) -> tuple[type, ...] | None:
    """The Python types a value of ``kind`` may have (None: anything)."""
    if kind is Any:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        parts = [_allowed(a) for a in typing.get_args(kind)]
        return None if any(p is None for p in parts) else tuple(t for p in parts for t in p)
    if origin is list:
        return (list, tuple)
    if kind is float:
        return (int, float)  # YAML writes 1 for 1.0
    if kind is type(None):
        return (type(None),)
    return (kind,)


def type_errors(values: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value, expected type) for each value of ``values`` (dotted keys) whose type
    the schema does not allow. Unknown keys are :mod:`.keys`' business."""
    kinds = {key: o.type for key, o in _by_key().items()}
    bad = []
    for key, value in values.items():
        kind = kinds.get(key)
        allowed = _allowed(kind) if kind is not None else None
        if allowed is None:
            continue
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(
            value, allowed
        ):  # True is an int in Python
            bad.append((key, value, kind))
    return bad


_WORDS = {
    int: "a whole number",
    float: "a number",
    str: "text",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}


def describe(kind: Any) -> str:
    """``int | None`` → ``a whole number or null``: what a value of ``kind`` looks like."""
    args = (
        typing.get_args(kind)
        if typing.get_origin(kind) in (typing.Union, types.UnionType)
        else (kind,)
    )
    return " or ".join(_WORDS.get(typing.get_origin(a) or a, str(a)) for a in args)


def _numeric(value: Any) -> bool:
    """A string that reads as a number ('64'): a quoted override, most likely."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def check_types(values: dict[str, Any]) -> None:
    """Raise :class:`FoldwiseError` for the first value (dotted keys) of a type the schema
    does not allow, naming the key, the type and the default."""
    for key, value, kind in type_errors(values):
        if isinstance(value, str) and (value == "???" or value.startswith("${")):
            continue  # a required value not yet set, an interpolation: checked elsewhere
        default = _by_key()[key].default
        example = (
            "null"
            if default is None
            else str(default).lower()
            if isinstance(default, bool)
            else default
        )
        raise FoldwiseError(
            f"params: {key} must be {describe(kind)}, got {value!r}.",
            f"e.g. -S {key}={example} (its default)"
            + ("; a number in quotes is text." if _numeric(value) else "."),
        )


if __name__ == "__main__":  # make options: the table of every setting (docs/configuration.md)
    print("| setting | type | default | what it is |\n|---|---|---|---|")
    for o in options():
        default = "—" if o.key in FREE else "null" if o.default is None else o.default
        print(f"| `{o.key}` | {describe(o.type)} | `{default}` | {o.help} |")
