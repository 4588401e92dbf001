"""Checks of the settings around a fit: the data source (``data.*``: which dataset, an
image folder's or a table's own settings), the launcher (``sweep.launcher``,
``sweep.n_jobs``, ``sweep.submitit``), the ensemble (``ensemble.*``, also inside
``sweep.grid``) and the refit (``refit.name`` against the resampling scheme)."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from foldwise.config.grid import grid_leaves
from foldwise.config.rules import need, one_of
from foldwise.errors import FoldwiseError

LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")
ENSEMBLES = ("none", "bagging", "adaboost", "gradient_boosting")


def check_launcher(cfg: DictConfig) -> None:
    """``sweep.launcher``, ``sweep.n_jobs`` and the submitit jobs' ``sweep.submitit.*``."""
    sweep = cfg.sweep
    one_of(sweep.launcher, LAUNCHERS, "sweep.launcher")

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


def check_ensemble(cfg: DictConfig) -> None:
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
        one_of(name, ENSEMBLES, "ensemble.name")
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


def check_refit(cfg: DictConfig, scheme: type) -> None:
    """``refit.name``; a fold ensemble needs few fold models, and averageable ones."""
    name = str((cfg.get("refit") or {}).get("name", "all_dev"))
    one_of(name, REFITS, "refit.name")
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


DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes", "csv", "image_folder", "dataset")
NORMALIZE = ("feature", "channel", "none")


def check_rows(cfg: DictConfig) -> None:
    """engine.rows and engine.loader_workers, before any work."""
    engine = cfg.get("engine") or {}
    rows = engine.get("rows", "memory")
    one_of(rows, ("memory", "stream", "auto"), "engine.rows")
    workers = engine.get("loader_workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise FoldwiseError(
            f"params: engine.loader_workers must be 0 or a positive integer, got {workers!r}.",
            "-S engine.loader_workers=0 (decode in the training process) or e.g. 4.",
        )
    name = str(cfg.data.get("name")) if cfg.get("data") is not None else ""
    if rows == "stream" and name not in ("image_folder", "dataset"):
        raise FoldwiseError(
            f"params: engine.rows=stream reads images or a Dataset on demand; data={name} is "
            "a table, which the prepare stage reads whole.",
            "-S engine.rows=memory (or auto), or use data=image_folder / data=dataset.",
        )


def check_data(cfg: DictConfig) -> str:
    """The ``data`` section's source and its own settings; returns ``data.name``."""
    name = need(cfg, "data.name", "pick a dataset: -S data=digits")
    one_of(name, DATASETS, "data.name")
    if isinstance(cfg.data.get("normalize"), Mapping):  # the user's: it must import and build
        from foldwise import transforms  # torch: only for a user's transform

        transforms.build(transforms.spec_of(cfg.data.normalize))
    else:
        one_of(str(cfg.data.get("normalize") or "feature"), NORMALIZE, "data.normalize")
    if cfg.data.get("normalize") == "channel" and not (
        cfg.data.get("image_shape") or name in ("image_folder", "dataset")
    ):
        raise FoldwiseError(
            f"params: data.normalize=channel standardises image channels, but data={name} "
            "holds no images.",
            "-S data.normalize=feature (each feature its own mean and spread).",
        )
    if name == "image_folder":
        need(cfg, "data.path", "dvc exp run -S data=image_folder -S data.path=data/raw/images")
        if cfg.data.get("channels", 1) not in (1, 3):
            raise FoldwiseError(
                f"params: data.channels must be 1 (grey) or 3 (RGB), got {cfg.data.channels!r}.",
                "-S data.channels=1 or -S data.channels=3.",
            )
        size = cfg.data.get("size")
        if size is not None and (len(size) != 2 or any(int(v) < 1 for v in size)):
            raise FoldwiseError(
                f"params: data.size must be [height, width] in pixels, got {list(size)}.",
                "e.g. -S 'data.size=[28,28]', or null to keep the images' own size.",
            )
    if name == "csv":
        hint = "dvc exp run -S data=csv -S data.path=my.csv -S data.target=label"
        need(cfg, "data.path", hint)
        need(cfg, "data.target", hint)
        sep = cfg.data.get("sep") or ","
        if not isinstance(sep, str) or (len(sep) != 1 and sep not in ("\\t", "tab")):
            raise FoldwiseError(
                f"params: data.sep must be one character (the CSV field separator), got {sep!r}.",
                "use e.g. -S \"data.sep=';'\" or -S \"data.sep='\\t'\" for tabs.",
            )
    return name
