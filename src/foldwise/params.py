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

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from foldwise import scores
from foldwise.config import schema, sections
from foldwise.config import space as search_space
from foldwise.config.grid import check_grid
from foldwise.config.keys import check_keys, check_model_keys, check_optim_kwargs
from foldwise.config.rules import need, one_of
from foldwise.errors import FoldwiseError
from foldwise.files import check_writable, flatten, repo_root
from foldwise.split import schemes

DATASETS = sections.DATASETS
MODELS = ("mlp", "cnn")
SELECTION_RULES = ("best_mean", "one_se")
SELECTION_INTERVALS = ("scheme", "ncv")


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
    validate(cfg)
    return cfg


def start(stage: str, root: Path | None = None) -> tuple[DictConfig, Layout]:
    """What every stage does first: the whole ``params.yaml`` checked (static rules),
    then every file the stage will write checked writable, before it reads any data."""
    layout = Layout(root or repo_root())
    cfg = load(layout.root / "params.yaml")
    check_writable(layout.outputs(stage), layout.root)
    return cfg, layout


def validate(cfg: DictConfig, *, grid: bool = True) -> None:
    """Static checks of the whole configuration; raises :class:`FoldwiseError`.

    First every key against the schema (:mod:`foldwise.config.schema`: what the code
    reads), then every value and its type; with ``grid``, every value ``sweep.grid``
    gives each key too (each in a configuration of the grid), so a bad hyperparameter
    fails at the first stage, not when the sweep starts. The sweep checks each whole
    configuration (``grid=False``).
    """
    _check_interpolations(cfg)
    check_keys(cfg)
    _check_values(cfg)
    if grid:
        one_of(str(cfg.sweep.get("search") or "grid"), search_space.SEARCHES, "sweep.search")
        # sweep=optuna: sweep.space and sweep.optuna instead of a grid (foldwise.sweep.trials).
        if search_space.enabled(cfg):
            search_space.check(cfg, _check_values)
        else:
            check_grid(cfg, _check_values)


def _check_interpolations(cfg: DictConfig) -> None:
    """Every ``${...}`` resolves: a misspelt key or ``${foldwise:<name>}`` fails here,
    naming the setting, not inside a stage."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as err:
        cause = str(err).splitlines()[0]
        raise FoldwiseError(
            f"params: {err.full_key or 'a setting'} does not resolve: {cause}",
            "fix the ${...} (a setting's dotted key, or ${foldwise:<name>} with a name "
            "from docs/models.md, Your own model).",
        ) from None


OPTIMIZERS = ("adam", "sgd")


def _check_optim(optim: DictConfig) -> None:
    """``optim.name`` is one foldwise trains (another would silently train Adam), and
    every key is one the optimizer reads; ``optim._target_`` names a torch optimizer."""
    if optim.get("_target_"):
        check_optim_kwargs(optim)
        return
    name = str(optim.get("name", "adam"))
    one_of(name, OPTIMIZERS, "optim.name")
    sgd_only = [k for k in ("momentum", "nesterov") if k in optim]
    if name == "adam" and sgd_only:
        raise FoldwiseError(
            f"params: optim.{sgd_only[0]} is read by optim=sgd only; Adam would ignore it.",
            f"-S optim=sgd for SGD with momentum, or remove optim.{sgd_only[0]}.",
        )
    momentum = optim.get("momentum", 0.0)
    if name == "sgd" and (
        isinstance(momentum, bool) or not isinstance(momentum, int | float)
        or not 0 <= momentum < 1
    ):  # fmt: skip
        raise FoldwiseError(
            f"params: optim.momentum must be in [0, 1), got {momentum!r}.",
            "e.g. -S optim.momentum=0.9 (0: plain SGD).",
        )
    if name == "sgd" and optim.get("nesterov") and not momentum:
        raise FoldwiseError(
            "params: optim.nesterov needs a momentum > 0 (torch.optim.SGD refuses it).",
            "-S optim.momentum=0.9, or -S optim.nesterov=false.",
        )


def _check_values(cfg: DictConfig) -> None:
    # Types first, from the schema: the range checks below compare values, and a string
    # where a number belongs would otherwise end in a TypeError.
    values = flatten(OmegaConf.to_container(cfg, resolve=False))
    for section in ("model", "optim", "scheduler", "data"):  # a _target_'s arguments
        if cfg.get(section) is not None and cfg[section].get("_target_"):
            values = {k: v for k, v in values.items() if not k.startswith(f"{section}.")}
    schema.check_types(values)
    name = sections.check_data(cfg)
    sections.check_rows(cfg)

    frac = need(cfg, "split.test_fraction", "e.g. split.test_fraction=0.2")
    if not isinstance(frac, int | float) or not 0 < frac < 1:
        raise FoldwiseError(
            f"params: split.test_fraction must be strictly between 0 and 1, got {frac!r}.",
            "use a fraction such as 0.2 (20 % of rows locked away as the test set).",
        )
    task = str(cfg.data.get("task") or "classification")
    one_of(task, scores.TASKS, "data.task")
    from foldwise.data import TASK_OF

    if TASK_OF.get(name, task) != task:
        raise FoldwiseError(
            f"params: data={name} is a {TASK_OF[name]} dataset, but data.task={task}.",
            f"drop the data.task override (data={name} sets it).",
        )
    need(cfg, "split.scheme", "e.g. split=stratified_kfold")
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
        if cfg.data.get(f"{kind}_column") is not None and name not in ("csv", "dataset"):
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

    own = bool(cfg.model.get("_target_"))  # the user's network: its kwargs are its own
    if not own:
        one_of(need(cfg, "model.name", "e.g. model=mlp"), MODELS, "model.name")
    check_model_keys(cfg.model)
    # image_folder reads images; a Dataset's items may be images (its shape decides)
    images = cfg.data.get("image_shape") or name in ("image_folder", "dataset")
    if not own and cfg.model.name == "cnn" and not images:
        raise FoldwiseError(
            f"params: model=cnn needs image data, but data '{name}' has no image_shape.",
            "use model=mlp for tables, or set data.image_shape=[channels,height,width].",
        )
    hyper_ints = ("trainer.batch_size", "trainer.max_epochs")
    for key in hyper_ints if own else ("model.hidden", "model.depth", *hyper_ints):
        value = need(cfg, key, f"set {key} to a positive integer")
        least = 0 if key == "model.depth" and cfg.model.name == "mlp" else 1  # 0: linear
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            kind = "an integer >= 0 (0: a linear model)" if least == 0 else "a positive integer"
            raise FoldwiseError(
                f"params: {key} must be {kind}, got {value!r}"
                + (f" ({WHAT_IS_ZERO[key]})." if value == 0 and key in WHAT_IS_ZERO else "."),
                f"set {key} to {HYPER_EXAMPLE[key]} (e.g. -S {key}={HYPER_EXAMPLE[key]}).",
            )
    dropout = cfg.model.get("dropout", 0.0) if own else need(cfg, "model.dropout", "e.g. 0.1")
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
    _check_devices(engine.get("devices", "auto"))
    lr = need(cfg, "optim.lr", "e.g. optim.lr=0.001")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0:
        raise FoldwiseError(
            f"params: optim.lr must be a positive number (the step size), got {lr!r}.",
            "use e.g. -S optim.lr=0.001 (typical: 1e-4 to 1e-2).",
        )
    wd = cfg.optim.get("weight_decay", 0.0)
    if isinstance(wd, bool) or not isinstance(wd, int | float) or wd < 0:
        raise FoldwiseError(
            f"params: optim.weight_decay must be a number >= 0, got {wd!r}.",
            "use 0 (none) or a small penalty such as -S optim.weight_decay=0.0001.",
        )
    _check_optim(cfg.optim)
    es = cfg.trainer.early_stopping
    if es.enabled and not 0 < es.inner_fraction < 1:
        raise FoldwiseError(
            "params: trainer.early_stopping.inner_fraction must be in (0, 1), "
            f"got {es.inner_fraction!r}."
        )

    sections.check_launcher(cfg)
    sections.check_ensemble(cfg)
    sections.check_refit(cfg, scheme)

    one_of(cfg.selection.rule, SELECTION_RULES, "selection.rule")
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

    bases = cfg.get("baselines") or []
    if isinstance(bases, str) or any(str(b) not in scores.BASELINES for b in bases):
        raise FoldwiseError(
            f"params: baselines must be a list of {', '.join(scores.BASELINES)}, got {bases!r}.",
            "e.g. baselines=[dummy,linear] or baselines=[] for none.",
        )
    check_interval(cfg, scheme)

    nested = cfg.get("nested") or {}
    if not isinstance(nested.get("enabled", False), bool):
        raise FoldwiseError(
            f"params: nested.enabled must be true or false, got {nested.enabled!r}."
        )
    check_selectable_baselines(cfg)
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
            own = [f"model.{k}" for k in cfg.model if k != "_target_"]
            target = cfg.model.get("_target_")
            if target and key.startswith("model."):
                from foldwise import models

                takes, _ = models.accepts(models.resolve(str(target)))
                if key.split(".", 1)[1] in takes:
                    raise FoldwiseError(
                        f"params: curves.validation.param is {key}, which {target} takes but "
                        "the config does not set (the curves vary it around its value).",
                        f"-S +{key}=<value>.",
                    )
            if target:  # the default (model.hidden) is the built-ins'
                raise FoldwiseError(
                    f"params: curves.validation.param is {key}, which {cfg.model._target_} "
                    "does not take: the validation and bias-variance curves vary one of "
                    "your network's arguments.",
                    f"-S curves.validation.param={(own or ['model.<argument>'])[0]} -S "
                    "'curves.validation.values=[...]' (or optim.weight_decay), or turn the "
                    "curves off: -S curves.validation.enabled=false "
                    "-S curves.bias_variance.enabled=false.",
                )
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
            raise FoldwiseError(
                f"params: curves.max_folds must be an integer >= 2, got {mf!r}.",
                "e.g. -S curves.max_folds=5 (folds each curve point trains).",
            )

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
    check_registered_model(cfg.lockbox.get("registered_model"))
    test_rows = cfg.lockbox.get("test_rows", "all")
    if test_rows not in ("all", "new"):
        raise FoldwiseError(
            f"params: lockbox.test_rows must be all or new, got {test_rows!r}.",
            "all: draw the test set from every row; new: test only on rows no earlier "
            "opening has seen.",
        )
    _check_thresholdout(cfg, task, metric)


def _check_thresholdout(cfg: DictConfig, task: str, metric: str) -> None:
    """``lockbox.mode`` and, for ``thresholdout``, its settings: a test set's budget is
    fixed at its first query, so a bad one must fail before any training."""
    mode = str(cfg.lockbox.get("mode", "once"))
    one_of(mode, ("once", "thresholdout"), "lockbox.mode")
    if mode != "thresholdout":
        return
    if task != "classification" or metric != "val_acc":
        raise FoldwiseError(
            f"params: lockbox.mode=thresholdout answers a model's test accuracy beside its CV "
            f"accuracy, but this {task} run selects on {metric}. Thresholdout's guarantee is "
            "for means of [0, 1]-valued row scores: accuracy is one; F1, loss and the "
            "regression scores are not.",
            "-S selection.metric=val_acc (classification), or -S lockbox.mode=once.",
        )
    t = cfg.lockbox.thresholdout
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if not whole(t.budget) or t.budget < 1:
        raise FoldwiseError(
            f"params: lockbox.thresholdout.budget must be a whole number >= 1, got {t.budget!r}.",
            "e.g. -S lockbox.thresholdout.budget=5 (over-threshold answers per test set).",
        )
    if not whole(t.max_queries) or t.max_queries < t.budget:
        raise FoldwiseError(
            f"params: lockbox.thresholdout.max_queries must be a whole number >= budget "
            f"({t.budget}), got {t.max_queries!r} (the theorem takes m >= B).",
            f"e.g. -S lockbox.thresholdout.max_queries={max(20, t.budget)}.",
        )
    for key in ("tolerance", "beta"):
        v = t[key]
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < 1:
            raise FoldwiseError(
                f"params: lockbox.thresholdout.{key} must be in (0, 1), got {v!r}.",
                f"e.g. -S lockbox.thresholdout.{key}=0.05.",
            )
    for key in ("threshold", "sigma"):
        v = t.get(key)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v <= 0):
            raise FoldwiseError(
                f"params: lockbox.thresholdout.{key} must be a number > 0 or null, got {v!r}.",
                f"null: the theorem's value from tolerance, beta and max_queries "
                f"(-S lockbox.thresholdout.{key}=null).",
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


# Conservative: MLflow names may hold more, but "/", ":" and "@" break models:/ URIs.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}")


def check_registered_model(value: object) -> None:
    """``lockbox.registered_model``: null (→ ``foldwise-<data.name>``) or a plain name."""
    if value is None:
        return
    if not isinstance(value, str) or not MODEL_NAME.fullmatch(value):
        raise FoldwiseError(
            f"params: lockbox.registered_model must be a model name (letters, digits, '.', "
            f"'_', '-'), got {value!r}.",
            "e.g. dvc exp run -S lockbox.registered_model=churn-mlp, or null for "
            "foldwise-<data.name>.",
        )


def _check_devices(devices: object) -> None:
    """``engine.devices``'s form (whether this machine has those GPUs is checked when
    training starts: :func:`foldwise.engine.resolve_devices`)."""
    from omegaconf import ListConfig

    if isinstance(devices, ListConfig):
        devices = list(devices)
    ok = (
        devices == "auto"
        or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1)
        or (
            isinstance(devices, list)
            and bool(devices)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices)
            and len(set(devices)) == len(devices)
        )
    )
    if not ok:
        raise FoldwiseError(
            f"params: engine.devices must be auto, a number of GPUs (1 or more) or a list "
            f"of distinct GPU indices, got {devices!r}.",
            "-S engine.devices=auto (every visible GPU), engine.devices=2 or "
            "'engine.devices=[0,2]'.",
        )


def _check_accelerator(accelerator: object) -> None:
    """``trainer.accelerator``: a GPU asked for where there is none fails here, at the
    first stage, instead of when the sweep starts training."""
    one_of(accelerator, ACCELERATORS, "trainer.accelerator")
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


def check_selectable_baselines(cfg: DictConfig) -> None:
    """``selection.baselines``: refused before anything trains where a selected baseline
    could not be estimated honestly. Nested CV's inner loops select among the networks
    alone: its estimate would be of another procedure than this selection."""
    allow = cfg.selection.get("baselines", False)
    if not isinstance(allow, bool):
        raise FoldwiseError(f"params: selection.baselines must be true or false, got {allow!r}.")
    if allow and (cfg.get("nested") or {}).get("enabled"):
        raise FoldwiseError(
            "params: selection.baselines=true lets a baseline be selected, but nested CV "
            "(nested.enabled=true) selects among the networks alone in its inner loops, so "
            "its estimate would not be of this selection.",
            "set selection.baselines=false, or nested.enabled=false.",
        )


def check_interval(cfg: DictConfig, scheme: type[schemes.Scheme]) -> None:
    """``selection.interval`` / ``ncv_repeats``: refused before the sweep trains anything
    when the nested-CV interval could not be computed at the aggregate stage."""
    interval = cfg.selection.get("interval", "scheme")
    one_of(interval, SELECTION_INTERVALS, "selection.interval")
    repeats = cfg.selection.get("ncv_repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise FoldwiseError(
            f"params: selection.ncv_repeats must be an integer >= 1, got {repeats!r}."
        )
    if interval != "ncv":
        return
    metric = scores.selection_metric(cfg)
    if metric not in scores.PER_ROW_SCORES:
        raise FoldwiseError(
            f"params: selection.interval=ncv needs a score that is a mean over rows; {metric} "
            "is not (F1 and R² are ratios over a whole fold).",
            f"set selection.metric to one of {', '.join(scores.PER_ROW_SCORES)}, or "
            "selection.interval=scheme.",
        )
    if scheme.kind != "folds" or scheme.temporal:
        raise FoldwiseError(
            f"params: selection.interval=ncv needs K disjoint folds, and split={scheme.name} "
            f"is {scheme.kind} resampling{' in time order' if scheme.temporal else ''}.",
            "use a k-fold scheme (e.g. -S split=stratified_kfold), or selection.interval=scheme.",
        )
    k = cfg.split.get("n_splits")
    if k is not None and int(k) < 3:
        raise FoldwiseError(
            f"params: selection.interval=ncv needs split.n_splits >= 3 (its pair models train "
            f"on K − 2 folds), got {k}.",
            "-S split.n_splits=5",
        )
    if repeats > 1 and cfg.split.get("shuffle") is False:
        raise FoldwiseError(
            "params: selection.ncv_repeats > 1 needs fresh folds, and split.shuffle=false cuts "
            "the same folds every time.",
            "set split.shuffle=true, or selection.ncv_repeats=1.",
        )
