"""The `curves` stage: learning and validation curves of the selected configuration.

Both train on the split's folds (dev rows only; the lockbox is never read) through the
many-models engine — all curve models of one architecture in one stack — with every
model cached in ``.foldwise/jobs/`` like the sweep's. See
:mod:`foldwise.methods.curves` for what is trained and how it is summarised.

Writes ``results/curves/{learning,validation}.csv`` (per x value: mean, std and t
band over folds, for training and validation scores; DVC plots), the per-fold rows
``*_folds.csv``, PNG figures of both, and logs them to MLflow as a ``curves`` run under
the sweep run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from foldwise.errors import FoldwiseError
from foldwise.files import code_version, read_json, sha256_json, write_json
from foldwise.methods import curves as method
from foldwise.params import Layout

# Kinds of resampling whose resamples are folds worth drawing curves over.
CURVE_KINDS = ("folds", "repeated", "holdout")
METRICS = ("train_f1", "val_f1", "train_loss", "val_loss", "train_acc", "val_acc")


def run(cfg: DictConfig, layout: Layout) -> dict[str, Any]:
    from foldwise.data import Meta
    from foldwise.progress import Progress, default_every
    from foldwise.refit import selected_config
    from foldwise.results import job_cache
    from foldwise.split import load_folds
    from foldwise.sweep import apply, config_hash, split_key
    from foldwise.train import arrays, make_task, train_cached

    out_dir = layout.curves_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_json(layout.manifest)
    if manifest["kind"] not in CURVE_KINDS:
        doc = {"skipped": f"split={manifest['scheme']} has no folds to draw curves over"}
        write_json(out_dir / "summary.json", doc)
        for name in ("learning", "validation"):  # keep the declared plot files valid
            pd.DataFrame(columns=["x"]).to_csv(out_dir / f"{name}.csv", index=False)
        print(f"[curves] skipped: {doc['skipped']} (use a k-fold scheme for curves)")
        return doc
    selection = read_json(layout.selection)
    chosen = selected_config(cfg, selection)
    c = cfg.curves
    dev = pd.read_parquet(layout.dev)
    dev_ids = dev["row_id"].to_numpy()
    x, y = arrays(dev)
    meta = Meta.from_dict(read_json(layout.meta))
    folds = [r for r in load_folds(read_json(layout.folds)) if r.role == "resample"]
    folds = folds[: int(c.max_folds)]
    pos = lambda ids: np.searchsorted(dev_ids, np.asarray(ids))  # noqa: E731
    base = {"curves": 1, "split": split_key(manifest), "code": code_version()}
    key = lambda **parts: sha256_json({**base, **parts})[:16]  # noqa: E731

    plan: list[tuple[str, float, int, Any]] = []  # (curve, x, fold, task)
    fractions = [float(f) for f in c.learning.fractions]
    if c.learning.enabled:
        h = config_hash(chosen)
        for f in folds:
            subsets = method.nested_subsets(f.train, fractions, int(cfg.seed) + f.index)
            for frac, rows in zip(fractions, subsets, strict=True):
                k = key(curve="learning", config=h, fold=f.index, fraction=frac)
                task = make_task(chosen, k, pos(rows), {"val": pos(f.val)},
                                 label=f"learning {frac:.0%} · fold {f.index}")  # fmt: skip
                plan.append(("learning", frac, f.index, task))
    param = str(c.validation.param)
    if c.validation.enabled:
        for value in c.validation["values"]:
            varied = apply(chosen, {param: value})
            h = config_hash(varied)
            for f in folds:
                k = key(curve="validation", config=h, fold=f.index)
                task = make_task(varied, k, pos(f.train), {"val": pos(f.val)},
                                 label=f"{param}={value} · fold {f.index}")  # fmt: skip
                plan.append(("validation", value, f.index, task))
    done: dict[str, dict] = {}
    todo = []
    for _, _, _, task in plan:
        cached = job_cache(layout.root, task.key)
        if cached.is_file():
            done[task.key] = read_json(cached)
        else:
            todo.append(task)
    print(f"[curves] {len(plan)} models ({len(plan) - len(todo)} cached) over {len(folds)} folds "
          f"for {selection['label']}", flush=True)  # fmt: skip
    progress = Progress(total=len(plan), done=len(plan) - len(todo), every=default_every())
    train_cached(todo, x, y, meta, cfg, layout, done, progress, "curve")

    rows = {"learning": [], "validation": []}
    for curve, xv, fold, task in plan:
        r = done[task.key]
        if r["status"] != "ok":
            raise FoldwiseError(f"a {curve}-curve model failed ({task.label}): {r.get('error')}")
        rows[curve].append({"x": xv, "fold": fold, "n_train": r["n_train"],
                            **{m: r["metrics"][m] for m in METRICS}})  # fmt: skip
    summary: dict[str, Any] = {"config": selection["label"], "folds": len(folds)}
    figures = {}
    for curve, data in rows.items():
        table = pd.DataFrame(data, columns=["x", "fold", "n_train", *METRICS])
        table.to_csv(out_dir / f"{curve}_folds.csv", index=False)
        summ = method.summarize_curve(table, "x", [*METRICS, "n_train"]) if data else table
        summ.to_csv(out_dir / f"{curve}.csv", index=False)
        if data:
            figures[curve] = _figure(summ, curve, param, selection, chosen)
            figures[curve].savefig(out_dir / f"{curve}.png", dpi=110)
    if rows["validation"]:
        summary["validation"] = {"param": param, "chosen": _get(chosen, param)}
    summary["mlflow_run_id"] = _track(cfg, selection, out_dir, figures)
    write_json(out_dir / "summary.json", summary)
    for curve in figures:
        print(f"[curves] {curve} curve: {(out_dir / f'{curve}.png').relative_to(layout.root)}")
    return summary


def _get(cfg: DictConfig, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key)


def _figure(summ: pd.DataFrame, curve: str, param: str, selection: dict, chosen: DictConfig):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = summ["n_train_mean"] if curve == "learning" else summ["x"].astype(str)
    for name, colour in (("train_f1", "tab:blue"), ("val_f1", "tab:orange")):
        ax.plot(xs, summ[f"{name}_mean"], marker="o", color=colour,
                label=name.replace("_", " "))  # fmt: skip
        ax.fill_between(xs, summ[f"{name}_low"], summ[f"{name}_high"], color=colour, alpha=0.2)
    if curve == "learning":
        ax.set_xlabel("training rows (nested subsets of each fold's training rows)")
        ax.set_title(f"Learning curve: {selection['label']}")
    else:
        chosen_value = str(_get(chosen, param))
        if chosen_value in list(xs):
            ax.axvline(list(xs).index(chosen_value), color="grey", linestyle="--",
                       label=f"selected {param}={chosen_value}")  # fmt: skip
        ax.set_xlabel(param)
        ax.set_title(f"Validation curve over {param}")
    ax.set_ylabel("macro-F1 (mean, 95% t band over folds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _track(cfg: DictConfig, selection: dict, out_dir: Path, figures: dict) -> str:
    from foldwise import tracking

    c = tracking.client(cfg)
    run = tracking.start_run(
        c, selection["experiment_id"], f"curves {selection['label']}", "curves",
        {f"{tracking.TAG}config_hash": selection["config_hash"]}, parent=selection["sweep_run_id"],
    )  # fmt: skip
    for name, fig in figures.items():
        c.log_figure(run, fig, f"curves/{name}.png")
    for csv in sorted(out_dir.glob("*.csv")):
        c.log_artifact(run, str(csv), artifact_path="curves")
    c.set_terminated(run, "FINISHED")
    return run
