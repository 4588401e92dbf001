"""The `nested` stage: nested cross-validation of the whole sweep-and-select procedure.

Opt-in (``nested.enabled``); disabled, the stage writes ``{"enabled": false}`` and
imports nothing heavy. Enabled, for each outer fold (the split stage's resamples) it
trains every configuration of ``sweep.grid`` on the ``nested.inner`` folds of the
outer-training rows, selects with ``selection.rule``/``selection.metric``, refits the
winner on the outer-training rows (epochs as the refit stage chooses them) and scores
the outer validation rows. All inner models go to the many-models engine in one call,
so models of one architecture train stacked across configurations, inner folds *and*
outer folds; the refits are a second call. Every finished model is cached in
``.foldwise/jobs/`` under a key of everything that changes it, so an interrupted run
resumes. The summary is :func:`foldwise.methods.nested.summarize`. The lockbox is
never read.

With ``refit=fold_ensemble`` the procedure being estimated ends in the average of the
winner's fold models, so each outer fold scores the average of the inner winner's
inner-fold models (which also predict the outer validation rows) and nothing is refit:
the refit stage reports this nested estimate as the fold ensemble's CV estimate.

MLflow: a ``nested`` run under the sweep run, with one ``outer_fold`` run per outer
fold beneath it (the winner, its outer scores, and the inner results as a table
artifact).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from foldwise import headline, scores
from foldwise.errors import FoldwiseError
from foldwise.files import code_version, no_nan, read_json, sha256_json, write_json
from foldwise.methods import nested as method
from foldwise.params import Layout


def disabled(layout: Layout) -> dict[str, Any]:
    doc = {"enabled": False}
    write_json(layout.nested_metrics, doc)
    headline.write(layout.headline("nested"), headline.nested(doc))
    print("[nested] off (enable with -S nested.enabled=true; see docs/nested.md)")
    return doc


def run(cfg: DictConfig, layout: Layout) -> dict[str, Any]:
    if not cfg.nested.enabled:
        return disabled(layout)
    import pandas as pd

    from foldwise.aggregate import higher_is_better, select, summarize_config
    from foldwise.data import Meta
    from foldwise.ensemble import bagging
    from foldwise.fitting.configs import apply, config_hash, split_key
    from foldwise.fitting.train import arrays, make_task, train_cached
    from foldwise.progress import Progress, default_every
    from foldwise.refit import refit_epochs
    from foldwise.results import Session, collect, job_cache
    from foldwise.split import load_folds
    from foldwise.split.schemes import make_scheme

    t0 = time.perf_counter()
    manifest = read_json(layout.dev_manifest)
    if manifest["kind"] not in method.OUTER_KINDS:
        raise FoldwiseError(
            f"nested CV uses the split's resamples as outer folds, but split={manifest['scheme']} "
            f"is {manifest['kind']} resampling ({manifest['n_splits']} resamples).",
            "use a k-fold, repeated or holdout scheme for the outer loop (e.g. -S "
            "split=stratified_kfold).",
        )
    session = Session(read_json(layout.sweep_dir / "session.json"))
    selection = read_json(layout.selection)
    metric, rule = scores.selection_metric(cfg), str(cfg.selection.rule)
    inner_scheme = make_scheme(cfg.nested.inner, int(cfg.seed))
    dev = pd.read_parquet(layout.dev)  # row-id order
    dev_ids = dev["row_id"].to_numpy()
    x, y = arrays(dev)
    meta = Meta.from_dict(read_json(layout.meta))
    pos = lambda ids: np.searchsorted(dev_ids, np.asarray(ids))  # noqa: E731
    outer = [r for r in load_folds(read_json(layout.folds)) if r.role == "resample"]

    full = {}
    for conf in session.configs:
        full[conf["hash"]] = apply(cfg, conf["overrides"])
        if config_hash(full[conf["hash"]]) != conf["hash"]:
            raise FoldwiseError(
                "params.yaml gives other configurations than the sweep trained.",
                "re-run the sweep first: dvc repro",
            )
    # refit=fold_ensemble: the procedure ends in the average of the inner winner's inner-fold
    # models, so those models also predict the outer validation rows (and no refit runs).
    fold_ensemble = str((cfg.get("refit") or {}).get("name", "all_dev")) == "fold_ensemble"
    base = {
        **({"fold_ensemble": 1} if fold_ensemble else {}),
        "nested": 1,
        "split": split_key(manifest),
        "inner": OmegaConf.to_container(cfg.nested.inner, resolve=True),
        "seed": int(cfg.seed),
        "code": code_version(),
    }
    key = lambda **parts: sha256_json({**base, **parts})[:16]  # noqa: E731

    # ---- inner: every configuration × inner fold × outer fold, one engine call
    inner_sets = {o.index: method.inner_resamples(o, dev_ids, y, inner_scheme) for o in outer}
    tasks, keys, done = [], [], {}
    for o in outer:
        for conf in session.configs:
            for r in inner_sets[o.index]:
                k = key(config=conf["hash"], outer=o.index, inner=r.index)
                cached = job_cache(layout.root, k)
                if cached.is_file():
                    done[k] = read_json(cached)
                    continue
                where = f"outer {o.index} inner {r.index}"
                task = make_task(full[conf["hash"]], k, pos(r.train), {"val": pos(r.val)},
                                 label=f"{conf['label']} · {where}")  # fmt: skip
                if fold_ensemble:
                    task = dataclasses.replace(task, finals={"outer": pos(o.val)},
                                               predict=("outer",), proba=True)  # fmt: skip
                tasks.append(task)
                keys.append((o.index, conf, r.index))
    n_inner = len(outer) * len(session.configs) * len(inner_sets[outer[0].index])
    print(
        f"[nested] {len(outer)} outer folds × {len(session.configs)} configurations × "
        f"{len(inner_sets[outer[0].index])} inner folds ({inner_scheme.describe()}) = {n_inner} "
        f"inner models + "
        + (
            "the winner's inner-fold ensemble per outer fold (refit=fold_ensemble)"
            if fold_ensemble
            else f"{len(outer)} refits"
        )
        + f"; {n_inner - len(tasks)} inner models cached",
        flush=True,
    )
    progress = Progress(total=n_inner, done=n_inner - len(tasks), every=default_every())
    train_cached(tasks, x, y, meta, cfg, layout, done, progress, "inner")

    # ---- select per outer fold, refit the winner on the outer-training rows
    results: dict[int, dict[str, list]] = {}
    refits, refit_keys, chosen = [], [], {}
    for o in outer:
        per_conf = {
            conf["hash"]: [
                done.get(key(config=conf["hash"], outer=o.index, inner=r.index))
                for r in inner_sets[o.index]
            ]
            for conf in session.configs
        }
        results[o.index] = per_conf
        summaries = [
            summarize_config(conf, i, per_conf[conf["hash"]], kind="folds")
            for i, conf in enumerate(session.configs)
        ]
        win = select(summaries, metric, rule)
        chosen[o.index] = win
        if fold_ensemble:
            continue
        epochs = refit_epochs(full[win.hash], win.best_epochs)
        k = key(config=win.hash, outer=o.index, refit=epochs)
        if job_cache(layout.root, k).is_file():
            done[k] = read_json(job_cache(layout.root, k))
        else:
            label = f"{win.label} · outer {o.index}"
            refits.append(make_task(full[win.hash], k, pos(o.train), {"val": pos(o.val)},
                                    epochs=epochs, label=label))  # fmt: skip
        refit_keys.append((o.index, k))
    progress = Progress(total=len(outer), done=len(outer) - len(refits), every=default_every())
    train_cached(refits, x, y, meta, cfg, layout, done, progress, "refit")

    outer_results = []
    if fold_ensemble:
        task_kind = "regression" if meta.regression else "classification"
        for o in outer:
            win = chosen[o.index]
            inner = results[o.index][win.hash]
            if any(r is None or r["status"] != "ok" for r in inner):
                raise FoldwiseError(f"an inner model of {win.label} in outer fold {o.index} "
                                    "failed; its fold ensemble cannot be scored.")  # fmt: skip
            fold_preds = [np.asarray(r["predictions"]["outer"]["pred" if meta.regression
                                                           else "proba"], dtype=float)
                          for r in inner]  # fmt: skip
            averaged = bagging.average(fold_preds)
            scored = bagging.scores_of(task_kind, y[pos(o.val)], averaged)
            outer_results.append({"fold": o.index, "winner": win.hash, "label": win.label,
                                  "metrics": {f"val_{k}": v for k, v in scored.items()},
                                  "inner": win.stats[metric]})  # fmt: skip
    for o_index, k in refit_keys:
        r = done[k]
        if r["status"] != "ok":
            raise FoldwiseError(f"the refit of outer fold {o_index} failed: {r.get('error')}.")
        win = chosen[o_index]
        outer_results.append({"fold": o_index, "winner": win.hash, "label": win.label,
                              "metrics": r["metrics"], "inner": win.stats[metric]})  # fmt: skip

    plain_rows = collect(session, layout.sweep_dir)[selection["config_hash"]]
    plain = [
        plain_rows[o.index]["metrics"][metric] if plain_rows[o.index] else float("nan")
        for o in outer
    ]
    report = method.summarize(outer_results, plain, metric)
    report["enabled"] = True
    report["refit"] = "fold_ensemble" if fold_ensemble else "all_dev"
    report["selected"] = selection["label"]
    report["higher_is_better"] = higher_is_better(metric)
    report["mlflow_run_id"] = _track(cfg, selection, outer_results, results, session, report)
    write_json(layout.nested_metrics, no_nan(report))
    headline.write(layout.headline("nested"), headline.nested(no_nan(report)))
    _print(report, metric, time.perf_counter() - t0)
    return report


def _track(cfg, selection, outer_results, inner, session, report) -> str:
    """A ``nested`` run under the sweep run, an ``outer_fold`` run per outer fold."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from foldwise import tracking

    c = tracking.client(cfg)
    metric = report["metric"]
    run = tracking.start_run(
        c, selection["experiment_id"], "nested CV", "nested",
        {f"{tracking.TAG}selected_label": selection["label"]}, parent=selection["sweep_run_id"],
    )  # fmt: skip
    flat = {
        f"{part}_{metric}_{stat}": v
        for part in ("nested", "plain", "optimism")
        for stat, v in report[part].items()
        if stat != "n" and v == v
    }
    tracking.log(c, run, params={"outer_folds": len(outer_results),
                                 **{f"inner.{k}": v for k, v in cfg.nested.inner.items()}},
                 metrics=flat, tags={f"{tracking.TAG}winners": report["winners"]})  # fmt: skip
    labels = {conf["hash"]: conf["label"] for conf in session.configs}
    for o in outer_results:
        child = tracking.start_run(
            c, selection["experiment_id"], f"outer fold {o['fold']}", "outer_fold",
            {f"{tracking.TAG}winner": o["label"], f"{tracking.TAG}fold": o["fold"]}, parent=run,
        )  # fmt: skip
        tracking.log(c, child, params={"winner": o["label"], "winner_hash": o["winner"]},
                     metrics={f"outer_{k}": v for k, v in o["metrics"].items()})  # fmt: skip
        rows = [
            {
                "config": h,
                "label": labels[h],
                "inner_fold": j,
                "status": r["status"] if r else "missing",
                **(r["metrics"] if r else {}),
            }
            for h, rs in inner[o["fold"]].items()
            for j, r in enumerate(rs)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"inner_outer{o['fold']}.csv"
            pd.DataFrame(rows).to_csv(path, index=False)
            c.log_artifact(child, str(path), artifact_path="inner")
        c.set_terminated(child, "FINISHED")
    c.set_terminated(run, "FINISHED")
    return run


def _print(report: dict[str, Any], metric: str, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Nested cross-validation ({metric}), outer folds = the split's resamples")
    for col in ("outer fold", "inner winner", f"outer {metric}", f"plain CV {metric} (selected)"):
        t.add_column(col, justify="left" if col == "inner winner" else "right")
    for row in fold_rows(report, metric):
        t.add_row(*row)
    Console(width=120).print(t)
    for line in summary_lines(report):
        print(line)
    wins = ", ".join(f"{k} ×{v}" for k, v in report["winners"].items())
    print(f"[nested] inner winners: {wins} · {seconds:.1f} s")


def fold_rows(report: dict[str, Any], metric: str) -> list[tuple[str, str, str, str]]:
    """The outer folds' table: each fold's score at the precision of its column's
    estimate (the nested estimate's, the plain CV's standard error): a fold's score is
    one term of that mean, and digits its mean cannot resolve say nothing."""
    nested_se, plain_se = report["nested"].get("se"), report["plain"].get("se")
    return [
        (str(o["fold"]), o["winner"], headline.fixed(o[metric], nested_se),
         headline.fixed(o["plain"], plain_se))
        for o in report["outer"]
    ]  # fmt: skip


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The nested estimate, the plain CV's and the optimism: ``mean ± se`` and the 95 %
    interval at the precision the standard error supports."""

    def line(name: str, st: dict) -> str:
        se = st.get("se")
        half = se if headline.decimals(se) is not None else headline.half_width(
            st.get("ci_low"), st.get("ci_high"))  # fmt: skip
        lo, hi = (headline.fixed(st.get(k), half) for k in ("ci_low", "ci_high"))
        value = (
            f"{headline.plus_minus(st['mean'], se)} (se)"
            if headline.decimals(se) is not None
            else headline.fixed(st["mean"], half)
        )
        return f"[nested] {name}: {value}, 95% CI [{lo}, {hi}]"

    plain = f"plain CV of the selection ({report['selected']})"
    return [
        line("nested estimate", report["nested"]),
        line(plain, report["plain"]),
        line("optimism of plain CV (plain − nested)", report["optimism"]),
    ]
