"""The `curves` stage: learning and validation curves of the selected configuration.

Both train on the split's folds (dev rows only; the lockbox is never read) through the
many-models engine — all curve models of one architecture in one stack — with every
model cached in ``.foldwise/jobs/`` like the sweep's. See
:mod:`foldwise.methods.curves` for what is trained and how it is summarised.

Writes ``results/curves/{learning,validation}.csv`` (per x value: mean, std and t
band over folds, for training and validation scores; DVC plots read the ``*_score_*``
columns: macro-F1, or R² for regression), the per-fold rows
``*_folds.csv``, PNG figures of both, and logs them to MLflow as a ``curves`` run under
the sweep run.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from foldwise import scores
from foldwise.errors import FoldwiseError
from foldwise.files import code_version, read_json, sha256_json, write_json
from foldwise.methods import bias_variance
from foldwise.methods import curves as method
from foldwise.params import Layout

# Kinds of resampling whose resamples are folds worth drawing curves over.
CURVE_KINDS = ("folds", "repeated", "holdout")


def metrics_for(regression: bool) -> tuple[str, ...]:
    names = scores.SCORES["regression" if regression else "classification"]
    return tuple(f"{side}_{s}" for s in names for side in ("train", "val"))


def plotted(regression: bool) -> str:
    """The bounded, higher-is-better score the curves draw (also as ``*_score``)."""
    return "r2" if regression else "f1"


def _skip(out_dir: Any, why: str, hint: str) -> dict[str, Any]:
    """No curves: ``summary.json`` says why, and the plot files stay valid (headers)."""
    doc = {"skipped": why}
    write_json(out_dir / "summary.json", doc)
    for name in (
        "learning",
        "validation",
        "bias_variance",
        "bias_variance_bagging",
        "bias_variance_boosting",
    ):  # keep the plot files valid
        pd.DataFrame(columns=["x"]).to_csv(out_dir / f"{name}.csv", index=False)
    print(f"[curves] skipped: {why} ({hint})")
    return doc


def run(cfg: DictConfig, layout: Layout) -> dict[str, Any]:
    from foldwise.data import Meta
    from foldwise.fitting.configs import apply, config_hash, split_key
    from foldwise.fitting.train import arrays, make_task, train_cached
    from foldwise.progress import Progress, default_every
    from foldwise.refit import selected_config
    from foldwise.results import job_cache
    from foldwise.split import load_folds

    out_dir = layout.curves_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_json(layout.dev_manifest)
    selection = read_json(layout.selection)
    if selection.get("baseline"):
        return _skip(out_dir, f"the selection is a baseline ({selection['label']}), which has "
                     "no network hyperparameters or epochs to draw curves over",
                     "select among the networks: selection.baselines=false")  # fmt: skip
    if manifest["kind"] not in CURVE_KINDS:
        return _skip(out_dir, f"split={manifest['scheme']} has no folds to draw curves over",
                     "use a k-fold scheme for curves")  # fmt: skip
    chosen = selected_config(cfg, selection)
    c = cfg.curves
    dev = pd.read_parquet(layout.dev)
    dev_ids = dev["row_id"].to_numpy()
    x, y = arrays(dev)
    meta = Meta.from_dict(read_json(layout.meta))
    metrics, score = metrics_for(meta.regression), plotted(meta.regression)
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
    bv = c.get("bias_variance") or {}
    if bv.get("enabled"):
        from sklearn.model_selection import train_test_split

        frac = float(bv.eval_fraction)
        train_part, eval_part = train_test_split(
            dev_ids, test_size=frac, stratify=None if meta.regression else y,
            random_state=int(cfg.seed),
        )  # fmt: skip
        draws_rows = [np.random.default_rng([int(cfg.seed), b]).choice(train_part, len(train_part))
                      for b in range(int(bv.models))]  # fmt: skip

        def bv_tasks(curve: str, xv: Any, conf: DictConfig, what: str, staged: bool = False):
            h = config_hash(conf)
            for b, draw in enumerate(draws_rows):
                k = key(curve="bias_variance", config=h, draw=b, eval_fraction=frac,
                        **({"staged": 1} if staged else {}))  # fmt: skip
                task = make_task(conf, k, pos(draw), {"val": pos(eval_part)}, predict=("val",),
                                 label=f"bias-variance {what} · draw {b}")  # fmt: skip
                plan.append((curve, xv, b, dataclasses.replace(task, staged=staged)))

        for value in c.validation["values"]:
            bv_tasks("bias_variance", value, apply(chosen, {param: value}), f"{param}={value}")
        y_eval = y[pos(eval_part)]
        if bv.get("ensembles", True):  # per ensemble kind in the sweep: terms vs members
            for kind, (label, full) in ensemble_representatives(cfg, layout).items():
                bv_tasks("ensemble_bv", kind, full, label, staged=True)
                if kind == "bagging":  # the same network alone: what bagging starts from
                    single = apply(full, {"ensemble.name": "none"})
                    bv_tasks("ensemble_single", kind, single, f"{label} · single")
    done: dict[str, dict] = {}
    todo: dict[str, Any] = {}  # by key: a curve may share a model with another
    for _, _, _, task in plan:
        cached = job_cache(layout.root, task.key)
        if cached.is_file():
            done[task.key] = read_json(cached)
        else:
            todo[task.key] = task
    n_models = len({task.key for *_, task in plan})
    print(f"[curves] {n_models} models ({n_models - len(todo)} cached) over {len(folds)} folds "
          f"for {selection['label']}", flush=True)  # fmt: skip
    progress = Progress(total=n_models, done=n_models - len(todo), every=default_every())
    train_cached(list(todo.values()), x, y, meta, cfg, layout, done, progress, "curve")

    rows: dict[str, list] = {"learning": [], "validation": []}
    draws: dict[Any, list] = {}
    staged_draws: dict[str, list] = {}  # ensemble kind -> per draw, [B stages][rows]
    single_draws: dict[str, list] = {}  # bagging -> per draw, its network alone
    for curve, xv, fold, task in plan:
        r = done[task.key]
        if r["status"] != "ok":
            raise FoldwiseError(f"a {curve}-curve model failed ({task.label}): {r.get('error')}")
        if curve == "bias_variance":
            draws.setdefault(xv, []).append(r["predictions"]["val"]["pred"])
            continue
        if curve == "ensemble_bv":
            staged_draws.setdefault(xv, []).append(r["predictions"]["val"]["staged"])
            continue
        if curve == "ensemble_single":
            single_draws.setdefault(xv, []).append(r["predictions"]["val"]["pred"])
            continue
        rows[curve].append({"x": xv, "fold": fold, "n_train": r["n_train"],
                            **{m: r["metrics"][m] for m in metrics}})  # fmt: skip
    summary: dict[str, Any] = {"config": selection["label"], "folds": len(folds)}
    figures = {}
    for curve, data in rows.items():
        table = pd.DataFrame(data, columns=["x", "fold", "n_train", *metrics])
        table.to_csv(out_dir / f"{curve}_folds.csv", index=False)
        summ = method.summarize_curve(table, "x", [*metrics, "n_train"]) if data else table
        if data:  # the plotted score again under a task-neutral name, for dvc.yaml's plots
            for side, stat in itertools.product(("train", "val"), ("mean", "std", "low", "high")):
                summ[f"{side}_score_{stat}"] = summ[f"{side}_{score}_{stat}"]
        summ.to_csv(out_dir / f"{curve}.csv", index=False)
        if data:
            figures[curve] = _figure(summ, curve, param, selection, chosen, score)
            figures[curve].savefig(out_dir / f"{curve}.png", dpi=110)
    if rows["validation"]:
        summary["validation"] = {"param": param, "chosen": _get(chosen, param)}
    if draws:
        decompose = bias_variance.squared if meta.regression else bias_variance.zero_one
        table = pd.DataFrame(
            [{"x": xv, **decompose(np.array(p), y_eval).to_dict()} for xv, p in draws.items()]
        ).drop(columns="noise")
        table.to_csv(out_dir / "bias_variance.csv", index=False)
        figures["bias_variance"] = _bv_figure(table, param, chosen, meta.regression)
        figures["bias_variance"].savefig(out_dir / "bias_variance.png", dpi=110)
        summary["bias_variance"] = {
            "param": param, "models_per_value": int(bv.models), "eval_rows": len(y_eval),
            "loss": "squared" if meta.regression else "0-1",
            "rows": table.to_dict(orient="records"),
        }  # fmt: skip
    reps = {kind: label for kind, (label, _) in ensemble_representatives(cfg, layout).items()}
    for kind in ENSEMBLE_KINDS:
        path = out_dir / f"bias_variance_{kind}.csv"
        if kind not in staged_draws:  # no such ensemble in the sweep: a valid, empty plot
            pd.DataFrame(columns=["members"]).to_csv(path, index=False)
            continue
        decompose = bias_variance.squared if meta.regression else bias_variance.zero_one
        table = ensemble_bias_variance(staged_draws[kind], single_draws.get(kind), y_eval,
                                       decompose)  # fmt: skip
        table.to_csv(path, index=False)
        figures[f"bias_variance_{kind}"] = _ens_bv_figure(table, kind, reps[kind],
                                                          meta.regression)  # fmt: skip
        figures[f"bias_variance_{kind}"].savefig(out_dir / f"bias_variance_{kind}.png", dpi=110)
        summary[f"bias_variance_{kind}"] = {
            "config": reps[kind], "models_per_point": int(bv.models),
            "rows": table.to_dict(orient="records"),
        }  # fmt: skip
    summary["mlflow_run_id"] = _track(cfg, selection, out_dir, figures)
    write_json(out_dir / "summary.json", summary)
    for curve in figures:
        print(f"[curves] {curve} curve: {(out_dir / f'{curve}.png').relative_to(layout.root)}")
    return summary


# Ensemble kinds whose bias–variance the curves stage draws against the number of members.
ENSEMBLE_KINDS = {"bagging": ("bagging",), "boosting": ("adaboost", "gradient_boosting")}


def ensemble_representatives(cfg: DictConfig, layout: Layout) -> dict[str, tuple[str, Any]]:
    """Per ensemble kind in the sweep, its best-ranked complete configuration:
    ``kind -> (label, composed config)`` (none when the sweep has no ensemble)."""
    from foldwise.fitting.configs import apply
    from foldwise.results import Session

    if not layout.cv_table.is_file():
        return {}
    table = pd.read_csv(layout.cv_table)
    session = Session(read_json(layout.sweep_dir / "session.json"))
    out: dict[str, tuple[str, Any]] = {}
    for _, row in table.sort_values("rank", na_position="last").iterrows():
        conf = session.config(row["config"])
        if not bool(row["complete"]) or conf is None:  # None: a baseline (no network)
            continue
        full = apply(cfg, conf["overrides"])
        name = str(full.ensemble.name) if full.get("ensemble") else "none"
        for kind, names in ENSEMBLE_KINDS.items():
            if name in names and kind not in out:
                out[kind] = (conf["label"], full)
    return out


def ensemble_bias_variance(
    staged: list[list[list]], single: list[list] | None, y: np.ndarray, decompose: Any
) -> pd.DataFrame:
    """Bias–variance of the ensemble of its first b members, b = 1..B, from ``staged``
    (per draw: [B][rows] predictions); with ``single`` (per draw: the network alone),
    that model's terms as ``single_*`` columns beside every row."""
    n_stages = min(len(s) for s in staged)  # boosting may stop early on some draws
    rows = []
    for b in range(n_stages):
        d = decompose(np.array([s[b] for s in staged]), y).to_dict()
        rows.append({"members": b + 1, **{k: v for k, v in d.items() if k != "noise"}})
    table = pd.DataFrame(rows)
    if single:
        d = decompose(np.array(single), y).to_dict()
        for k in ("expected_loss", "bias", "variance", "net_variance"):
            table[f"single_{k}"] = d[k]
    return table


def _get(cfg: DictConfig, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key)


def _figure(
    summ: pd.DataFrame, curve: str, param: str, selection: dict, chosen: DictConfig, score: str
):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = summ["n_train_mean"] if curve == "learning" else summ["x"].astype(str)
    for name, colour in ((f"train_{score}", "tab:blue"), (f"val_{score}", "tab:orange")):
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
    ax.set_ylabel(f"{scores.NAMES[score]} (mean, 95% t band over folds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _bv_figure(table: pd.DataFrame, param: str, chosen: DictConfig, regression: bool):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = table["x"].astype(str)
    lines = (
        (("expected_loss", "k-o"), ("bias", "C3-s"), ("variance", "C0-^"))
        if regression
        else (("expected_loss", "k-o"), ("bias", "C3-s"), ("net_variance", "C0-^"),
              ("variance", "C0:"))
    )  # fmt: skip
    for col, style in lines:
        label = "bias²" if regression and col == "bias" else col.replace("_", " ")
        ax.plot(xs, table[col], style, label=label)
    chosen_value = str(_get(chosen, param))
    if chosen_value in list(xs):
        ax.axvline(list(xs).index(chosen_value), color="grey", linestyle="--",
                   label=f"selected {param}={chosen_value}")  # fmt: skip
    ax.set_xlabel(param)
    if regression:
        ax.set_ylabel("squared error on the evaluation part")
        ax.set_title("Bias–variance trade-off (squared loss: bias² + variance)")
    else:
        ax.set_ylabel("0-1 loss on the evaluation part")
        ax.set_title("Bias–variance trade-off (Domingos 0-1 decomposition)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _ens_bv_figure(table: pd.DataFrame, kind: str, label: str, regression: bool):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    var = "variance" if regression else "net_variance"
    bias_name = "bias²" if regression else "bias"
    ax.plot(table["members"], table["expected_loss"], "k-o", label="expected loss")
    ax.plot(table["members"], table["bias"], "C3-s", label=bias_name)
    ax.plot(table["members"], table[var], "C0-^", label=var.replace("_", " "))
    if "single_bias" in table.columns:  # bagging: where its network alone stands
        ax.axhline(table["single_bias"].iloc[0], color="C3", ls=":", label=f"{bias_name}, single")
        ax.axhline(table[f"single_{var}"].iloc[0], color="C0", ls=":",
                   label=f"{var.replace('_', ' ')}, single")  # fmt: skip
    ax.set_xlabel("members (the ensemble of the first b)" if kind == "bagging"
                  else "boosting rounds")  # fmt: skip
    ax.set_ylabel(("squared error" if regression else "0-1 loss") + " on the evaluation part")
    ax.set_title(f"Bias–variance vs {'members' if kind == 'bagging' else 'rounds'}: {label}",
                 fontsize="small")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
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
