"""``selection.interval=ncv``: train the nested-CV models of the selected configuration.

Bates, Hastie & Tibshirani's (2023) interval (:mod:`foldwise.methods.ncv`) needs, per
K-fold partition of the dev rows, the K fold models (the sweep's own, for the split's
folds) and one model per pair of folds {j, k}, fit on the other K − 2 folds and scored
on both. This module builds those pair models (and, for ``selection.ncv_repeats`` > 1,
the fold and pair models of fresh partitions drawn by the same scheme with other
seeds) as engine tasks of the selected configuration: they train stacked, and each
finished model is cached in ``.foldwise/jobs/`` under a key of everything that changes
it, so an interrupted aggregate stage resumes. Called by :func:`foldwise.aggregate.run`;
the lockbox is never read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from foldwise.errors import FoldwiseError
from foldwise.files import code_version, read_json, sha256_json
from foldwise.methods import ncv as method

# Seeds of the extra partitions: seed + OFFSET·r (far from the seeds a user steps through).
OFFSET = 7919


def partitions(cfg: DictConfig, layout: Any, inputs: Any) -> list[list[np.ndarray]]:
    """Each repetition's K folds as row positions into ``inputs``: the split's own folds
    first, then ``selection.ncv_repeats − 1`` fresh ones from the same scheme."""
    import pandas as pd

    from foldwise.split import dev_order
    from foldwise.split.schemes import make_scheme

    first = [inputs.folds[k][1] for k in sorted(inputs.folds)]
    n = len(inputs.row_ids)
    covered = np.sort(np.concatenate(first))
    if len(first) < 3 or len(covered) != n or np.any(covered != np.arange(n)):
        raise FoldwiseError(
            "selection.interval=ncv needs the split's folds to cut the dev rows into "
            f"K >= 3 disjoint folds (got {len(first)} resamples that do not).",
            "use a k-fold scheme with split.n_splits >= 3 (e.g. -S split=stratified_kfold).",
        )
    out = [first]
    repeats = int(cfg.selection.get("ncv_repeats", 1))
    if repeats > 1:
        dev = pd.read_parquet(layout.dev).set_index("row_id", drop=False)
        pos = dev.index.get_indexer
        for r in range(1, repeats):
            scheme = make_scheme(cfg.split, int(cfg.seed) + OFFSET * r)
            order = dev_order(dev.reset_index(drop=True), scheme)
            groups = order["group"].to_numpy() if "group" in order.columns else None
            cut = scheme.split(order["row_id"].to_numpy(), order["target"].to_numpy(), groups)
            folds = [pos(np.asarray(c.val)) for c in cut if c.role == "resample"]
            if {tuple(sorted(f)) for f in folds} == {tuple(sorted(f)) for f in first}:
                raise FoldwiseError(
                    "selection.ncv_repeats > 1 needs fresh folds, but the split scheme "
                    "cuts the same folds whatever the seed (split.shuffle is false).",
                    "set split.shuffle=true, or selection.ncv_repeats=1.",
                )
            out.append(folds)
    return out


def run(
    cfg: DictConfig, layout: Any, config: dict, fold_results: list[dict | None], metric: str
) -> dict[str, Any]:
    """The interval for ``config`` (a session configuration: hash, label, overrides),
    whose sweep results per fold are ``fold_results``; trains what the cache lacks."""
    from foldwise.fitting.configs import apply, split_key
    from foldwise.fitting.train import dev_inputs, make_task, rows_spec, train_cached
    from foldwise.progress import Progress, default_every
    from foldwise.results import job_cache

    method.check_metric(metric)
    inputs = dev_inputs(str(layout.root), rows_spec(cfg, layout))
    y = inputs.y
    parts = partitions(cfg, layout, inputs)
    full = apply(cfg, config["overrides"])
    base = {
        "ncv": 1,
        "config": config["hash"],
        "split": split_key(read_json(layout.dev_manifest)),
        "scheme": OmegaConf.to_container(cfg.split, resolve=True),
        "seed": int(cfg.seed),
        "code": code_version(),
    }
    key = lambda **p: sha256_json({**base, **p})[:16]  # noqa: E731

    everything = np.arange(len(y))
    tasks, done, wanted = [], {}, []
    for r, folds in enumerate(parts):
        k = len(folds)
        fits = [((j,), f"fold {j}") for j in range(k)] if r else []  # rep 0: the sweep's
        fits += [((i, j), f"folds {i}+{j}") for i in range(k) for j in range(i + 1, k)]
        for left_out, what in fits:
            name = key(rep=r, out=list(left_out))
            wanted.append(name)
            cached = job_cache(layout.root, name)
            if cached.is_file():
                done[name] = read_json(cached)
                continue
            held = np.concatenate([folds[j] for j in left_out])
            train = np.setdiff1d(everything, held)
            finals = {f"f{j}": folds[j] for j in left_out}
            task = make_task(full, name, train, {}, label=f"{config['label']} · ncv {r} {what}")
            tasks.append(dataclasses.replace(task, finals=finals, predict=tuple(finals)))
    n = len(wanted)
    print(f"[aggregate] nested-CV interval ({method.REFERENCE}): {len(parts)} partition(s) × "
          f"{len(parts[0])} folds = {n} more models of {config['label']}; "
          f"{n - len(tasks)} cached", flush=True)  # fmt: skip
    progress = Progress(total=n, done=n - len(tasks), every=default_every())
    train_cached(tasks, inputs.x, y, inputs.meta, cfg, layout, done, progress, "ncv")

    failed = [name for name in wanted if done.get(name, {}).get("status") != "ok"]
    if failed or any(r is None or r.get("status") != "ok" for r in fold_results):
        raise FoldwiseError(
            f"{len(failed)} of the nested-CV models (or a fold of the selected configuration) "
            "failed, so the interval cannot be computed.",
            "re-run the stage (dvc repro aggregate): it trains only the missing models; "
            "or use selection.interval=scheme.",
        )
    reps = []
    for r, folds in enumerate(parts):
        k = len(folds)
        losses = lambda rec, rows: method.row_losses(rec, y[rows], metric)  # noqa: E731
        if r == 0:  # the sweep's fold models: their rows in this fold's order
            outer = []
            for j, res in enumerate(fold_results):
                rec = res["predictions"]["val"]
                at = {row: i for i, row in enumerate(rec["row"])}
                order = [at[row] for row in inputs.row_ids[folds[j]]]
                mine = {f: [rec[f][i] for i in order] for f in ("pred", "loss")}
                outer.append(losses(mine, folds[j]))
        else:
            outer = [
                losses(done[key(rep=r, out=[j])]["predictions"][f"f{j}"], folds[j])
                for j in range(k)
            ]
        inner = {}
        for i in range(k):
            for j in range(i + 1, k):
                pred = done[key(rep=r, out=[i, j])]["predictions"]
                inner[(i, j)] = losses(pred[f"f{i}"], folds[i])
                inner[(j, i)] = losses(pred[f"f{j}"], folds[j])
        reps.append(method.Repetition(outer, inner))
    iv = method.interval(reps, confidence=0.95)
    return {"metric": metric, "config": config["hash"], "label": config["label"],
            "models": n, **iv.to_dict()}  # fmt: skip
