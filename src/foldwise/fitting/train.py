"""From a configuration to engine tasks, and the one-model convenience the refit uses.

:func:`make_task` reads the hyperparameters of a composed configuration (``model``,
``optim``, ``trainer``, ``seed``) into a :class:`~foldwise.engine.Task`: the one place
where config keys meet the engine. :func:`fit` trains one model on a table through
the engine (a stack of one) and returns the network itself.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from foldwise import engine, transforms
from foldwise import params as P
from foldwise.data import STRUCTURE, Meta, feature_columns
from foldwise.ensemble import spec as ensemble_spec
from foldwise.files import read_json
from foldwise.models import build_backbone
from foldwise.split import load_folds


def _float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A trained state in float32; integer buffers (BatchNorm's batch count) stay integers."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _number(value: Any) -> float:
    """``model.dropout`` as a number; a user's network may have none, or another kind."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _scheduler(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.scheduler`` when one is selected, else {} (a constant lr)."""
    sched = cfg.get("scheduler")
    if sched is None or not sched.get("_target_"):
        return {}
    return OmegaConf.to_container(sched, resolve=True)


def make_task(
    cfg: DictConfig,
    key: str,
    train: np.ndarray,
    evals: Mapping[str, np.ndarray] | None = None,
    *,
    epochs: int | None = None,
    label: str = "",
    predict: tuple[str, ...] = (),
) -> engine.Task:
    """An engine task for ``cfg``; ``epochs`` forces a fixed count without early stopping."""
    tr, es = cfg.trainer, cfg.trainer.early_stopping
    return engine.Task(
        key=key,
        model=OmegaConf.to_container(cfg.model, resolve=True),
        hyper=engine.Hyper(
            lr=float(cfg.optim.lr),
            weight_decay=float(cfg.optim.weight_decay),
            dropout=_number(cfg.model.get("dropout")),
            max_epochs=int(epochs or tr.max_epochs),
            early_stopping=bool(es.enabled) and epochs is None,
            inner_fraction=float(es.inner_fraction),
            patience=int(es.patience),
        ),
        batch_size=int(tr.batch_size),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=_scheduler(cfg),
        normalize=transforms.spec_of(cfg.data.get("normalize")),
        seed=int(cfg.seed),
        train=np.asarray(train, dtype=np.int64),
        evals={k: np.asarray(v, dtype=np.int64) for k, v in (evals or {}).items()},
        label=label,
        predict=predict,
        ensemble=ensemble_spec(cfg),
    )


def arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Raw features (float64) and class codes (a float64 regression target) of a
    canonical table, in row order."""
    x = df[feature_columns(df)].to_numpy(dtype=np.float64)
    target = df["target"]
    kind = np.float64 if target.dtype.kind == "f" else np.int64
    return x, target.to_numpy(dtype=kind, copy=True)


def headline(metrics: dict[str, float], side: str = "val") -> str:
    """The score a progress line shows: macro-F1, or R² for regression."""
    for k in (f"{side}_f1", f"{side}_r2"):
        if k in metrics:
            return f"{k} {metrics[k]:.4f}"
    return ""


@dataclass
class FitResult:
    """What a fit produced, besides the model itself."""

    metrics: dict[str, float]
    history: dict[str, list[float]]
    best_epoch: int
    epochs_trained: int
    n_train: int
    n_val: int
    scaler: dict[str, list[float]] = field(default_factory=dict)


def fit(
    cfg: DictConfig,
    meta: Meta,
    train: pd.DataFrame,
    val: pd.DataFrame | None = None,
    *,
    epochs: int | None = None,
) -> tuple[torch.nn.Module, FitResult]:
    """Train ``cfg``'s model on ``train`` (scored on ``val`` if given); a stack of one.

    Raises ``RuntimeError`` if the fit failed (e.g. its loss became non-finite).
    """
    table = train if val is None else pd.concat([train, val])
    x, y = arrays(table)
    n = len(train)
    evals = {} if val is None else {"val": np.arange(n, len(table))}
    task = make_task(cfg, "fit", np.arange(n), evals, epochs=epochs)
    out = engine.train(
        [task],
        x,
        y,
        meta,
        accelerator=str(cfg.trainer.accelerator),
        precision=int(cfg.trainer.get("precision", 32)),
        keep_state=True,
    )[0]
    if out.status != "ok":
        raise RuntimeError(f"training failed: {out.error}")
    net = build_backbone(cfg.model, meta)
    net.load_state_dict(_float32(out.state_dict))
    return net.eval(), FitResult(
        metrics=out.metrics,
        history=out.history,
        best_epoch=out.best_epoch,
        epochs_trained=out.epochs_trained,
        n_train=out.n_train,
        n_val=out.n_val,
        scaler=out.scaler,
    )


def train_cached(tasks, x, y, meta, cfg, layout, done, progress, what: str) -> None:
    """Train ``tasks`` (stacked by the engine's planner); each result goes into ``done``
    (by task key) and, when it succeeded, into the job cache ``.foldwise/jobs/<key>.json``,
    so a method that builds its own tasks (nested CV, curves) resumes after an interruption.
    """
    from foldwise import ensemble
    from foldwise.files import write_json
    from foldwise.fitting.configs import engine_settings
    from foldwise.results import job_cache

    if not tasks:
        return
    settings = engine_settings(cfg)
    accelerator = str(cfg.trainer.accelerator)
    stacks = ensemble.plan(tasks, meta, accelerator=accelerator, **settings)

    def on_done(task, outcome) -> None:
        result = outcome.result()
        result.pop("history", None)  # the nested report needs final scores only
        done[task.key] = result
        if outcome.status == "ok":
            write_json(job_cache(layout.root, task.key), result)
            progress.finished(task.label, what, headline(outcome.metrics))
        else:
            progress.skipped()

    def on_epoch(number: int, info) -> None:
        progress.epoch(number, len(stacks), info.epoch, info.max_epochs, info.work_epochs,
                       info.seconds, info.remaining, info.active)  # fmt: skip

    ensemble.train(
        tasks, x, y, meta, accelerator=accelerator, precision=settings["precision"],
        stacks=stacks, devices=settings["devices"], on_done=on_done, on_epoch=on_epoch,
    )  # fmt: skip


def fit_members(
    cfg: DictConfig, meta: Meta, train: pd.DataFrame, *, epochs: int | None = None
) -> tuple[list[torch.nn.Module], FitResult, list[dict], dict]:
    """Train ``cfg``'s ensemble on ``train`` (bagging: its members in one stack; boosting:
    round by round). Returns the member networks, the ensemble's result (scores of its
    predictions on ``train``, out-of-bag scores, staged curves), each member's scaler and
    how members combine (``{"name": ..., "alphas": [...], "f0": ...}``)."""
    from foldwise import ensemble

    x, y = arrays(train)
    parent = make_task(cfg, "fit", np.arange(len(train)), epochs=epochs)
    kw = dict(accelerator=str(cfg.trainer.accelerator),
              precision=int(cfg.trainer.get("precision", 32)), keep_state=True)  # fmt: skip
    name = parent.ensemble["name"]
    if name in ensemble.BOOSTING:
        (b,) = ensemble.boost([parent], x, y, meta, **kw)
        if b.outcome.status != "ok":
            raise RuntimeError(f"training failed: {b.outcome.error}")
        outs, both = b.learners, b.outcome
        combine = {"name": name, "alphas": b.alphas, "f0": b.f0}
    else:
        members = ensemble.expand(parent)
        outs = engine.train(members, x, y, meta, **kw)
        failed = [o.error for o in outs if o.status != "ok"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(outs)} members failed: {failed[0]}")
        both = ensemble.combine(parent, members, outs, y, meta.regression)
        combine = {"name": name}
    nets = []
    for o in outs:
        net = build_backbone(cfg.model, meta)
        net.load_state_dict(_float32(o.state_dict))
        nets.append(net.eval())
    res = FitResult(
        metrics=both.metrics, history=both.history, best_epoch=both.best_epoch,
        epochs_trained=both.epochs_trained, n_train=both.n_train, n_val=0,
    )  # fmt: skip
    return nets, res, [o.scaler for o in outs], combine


@dataclass
class FoldModels:
    """The selected configuration's fold models, trained again for ``refit=fold_ensemble``."""

    nets: list[torch.nn.Module]  # every fold's members, fold by fold
    scalers: list[dict]
    result: FitResult  # the fold ensemble's scores on every dev row (apparent)
    fold_metrics: dict[int, dict[str, float]]  # each fold model's scores on its fold


def fit_folds(cfg: DictConfig, meta: Meta, dev: pd.DataFrame, folds: list) -> FoldModels:
    """Train ``cfg`` on each fold's training rows exactly as the sweep did (the same
    tasks: rows, seed, early stopping on inner rows of the fold's training part), all in
    one engine call, and keep their weights. ``dev`` is in row-id order; ``folds`` are
    the split's resamples (:class:`foldwise.split.Resample`)."""
    import dataclasses

    from foldwise import ensemble

    x, y = arrays(dev)
    pos = lambda ids: np.searchsorted(dev["row_id"].to_numpy(), np.asarray(ids))  # noqa: E731
    everyone = np.arange(len(dev))
    parents = []
    for f in folds:
        task = make_task(cfg, f"fold{f.index}", pos(f.train), {"val": pos(f.val)})
        parents.append(
            dataclasses.replace(task, finals={"dev": everyone}, predict=("val", "dev"), proba=True)
        )
    members = {p.key: ensemble.expand(p) for p in parents}
    flat = [m for p in parents for m in members[p.key]]
    accelerator, precision = str(cfg.trainer.accelerator), int(cfg.trainer.get("precision", 32))
    outs = engine.train(flat, x, y, meta, accelerator=accelerator, precision=precision,
                        keep_state=True)  # fmt: skip
    failed = [o.error for o in outs if o.status != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(outs)} fold models failed: {failed[0]}")
    by_key = dict(zip((m.key for m in flat), outs, strict=True))
    fold_metrics, dev_preds = {}, []
    for f, p in zip(folds, parents, strict=True):
        ms = members[p.key]
        both = ensemble.combine(p, ms, [by_key[m.key] for m in ms], y, meta.regression)
        fold_metrics[f.index] = {k: v for k, v in both.metrics.items() if k.startswith("val_")}
        d = both.predictions["dev"]
        dev_preds.append(np.asarray(d["pred"] if meta.regression else d["proba"], dtype=float))
    from foldwise.ensemble import bagging

    task = "regression" if meta.regression else "classification"
    apparent = bagging.scores_of(task, y, bagging.average(dev_preds))
    nets = []
    for o in outs:
        net = build_backbone(cfg.model, meta)
        net.load_state_dict(_float32(o.state_dict))
        nets.append(net.eval())
    res = FitResult(
        metrics={f"train_{k}": v for k, v in apparent.items()}, history={},
        best_epoch=round(float(np.median([o.best_epoch for o in outs]))),
        epochs_trained=max(o.epochs_trained for o in outs), n_train=len(dev), n_val=0,
    )  # fmt: skip
    return FoldModels(nets, [o.scaler for o in outs], res, fold_metrics)


@dataclass
class Inputs:
    """Dev rows as engine arrays (or streamed: ``engine.rows``), and each fold's rows as
    positions into them."""

    x: np.ndarray | engine.Streamed
    y: np.ndarray
    folds: dict[int, tuple[np.ndarray, np.ndarray]]
    meta: Meta
    row_ids: np.ndarray  # dev row id at each position


def rows_spec(cfg: DictConfig, layout: P.Layout) -> str:
    """How :func:`dev_inputs` holds the dev features, as a cache key: ``""`` in memory,
    else the JSON of the streamed source (``engine.rows``; ``auto`` streams images or a
    Dataset when the dev features, as float64, would exceed ``engine.memory_mb``)."""
    import json

    import pyarrow.parquet as pq

    e = cfg.engine
    mode, name = str(e.get("rows", "memory")), str(cfg.data.name)
    if mode == "memory" or name not in ("image_folder", "dataset"):
        return ""  # a table: the prepare stage holds it whole anyway (refused for stream)
    if mode == "auto":
        meta = pq.read_metadata(layout.dev)
        if meta.num_rows * meta.num_columns * 8 <= float(e.memory_mb) * 2**20:
            return ""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    pin = engine.device_for(str(cfg.trainer.accelerator)) == "gpu"  # pinned: async copies
    spec = {"data": data, "workers": int(e.get("loader_workers", 0)), "pin": pin,
            "cache_mb": float(e.memory_mb) / 2}  # fmt: skip
    return json.dumps(spec, sort_keys=True)


@functools.lru_cache(maxsize=2)
def dev_inputs(root: str, rows: str = "") -> Inputs:
    """Read once per process however many stacks it runs. ``rows`` (:func:`rows_spec`):
    the features are then not read from the table but streamed from the source."""
    import json

    layout = P.Layout(Path(root))
    if rows:
        import pyarrow.parquet as pq

        names = pq.read_schema(layout.dev).names
        dev = pd.read_parquet(layout.dev, columns=[c for c in names if c in STRUCTURE])
    else:
        dev = pd.read_parquet(layout.dev)
    dev = dev.set_index("row_id", drop=False)
    pos = lambda ids: dev.index.get_indexer(ids)  # noqa: E731
    folds = {f.index: (pos(f.train), pos(f.val)) for f in load_folds(read_json(layout.folds))}
    meta = Meta.from_dict(read_json(layout.meta))
    x, y = arrays(dev)
    if rows:
        from foldwise.sources import stream_rows

        spec = json.loads(rows)
        source = stream_rows(OmegaConf.create(spec["data"]), dev["row_id"].to_numpy())
        x = engine.Streamed(source, meta.n_features, workers=spec["workers"], float32=True,
                            pin_memory=spec["pin"], cache_mb=spec["cache_mb"])  # fmt: skip
    return Inputs(x, y, folds, meta, dev["row_id"].to_numpy())
