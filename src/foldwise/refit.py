"""Refit: train the selected configuration once more, on every dev row.

Epoch count: with early stopping, the median of the folds' best epochs (rounded
half up), since there is no held-out row left to stop on; with a fixed epoch count,
``trainer.max_epochs``. The test rows are not touched here.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from foldwise import artifact, headline
from foldwise.data import Meta
from foldwise.errors import FoldwiseError
from foldwise.files import flatten, read_json, write_json
from foldwise.fitting.configs import apply, config_hash, hyperparameters
from foldwise.params import Layout


def refit_epochs(cfg: DictConfig, fold_best_epochs: list[int]) -> int:
    if not cfg.trainer.early_stopping.enabled:
        return int(cfg.trainer.max_epochs)
    return max(1, math.floor(statistics.median(fold_best_epochs) + 0.5))


def selected_config(cfg: DictConfig, selection: dict[str, Any]) -> DictConfig:
    chosen = apply(cfg, selection["overrides"])
    if config_hash(chosen) != selection["config_hash"]:
        raise FoldwiseError(
            "results/selection.json was made with other hyperparameters than params.yaml "
            f"now gives ({selection['config_hash']} vs {config_hash(chosen)}).",
            "re-run the sweep and aggregate stages: dvc repro",
        )
    return chosen


def fold_ensemble_estimate(cfg: DictConfig, layout: Layout) -> tuple[dict | None, str | None]:
    """The honest CV estimate of a fold ensemble: nested CV's, when the nested stage ran
    with ``refit=fold_ensemble`` (each outer fold scored the average of the inner winner's
    inner-fold models); otherwise ``(None, why)``. Never the plain CV mean: every dev row
    trained K−1 of the K models it would be scored by."""
    nested = read_json(layout.nested_metrics) if layout.nested_metrics.is_file() else {}
    if nested.get("enabled") and nested.get("refit") == "fold_ensemble":
        st = nested["nested"]
        stats = {k: st.get(k) for k in ("mean", "se", "ci_low", "ci_high", "n")}
        return {"metric": nested["metric"], "method": "nested CV", **stats}, None
    return None, (
        "not available: every dev row trained K−1 of the fold ensemble's K models, so no dev "
        "row can score it; the plain CV mean is the single fold models' score, not the "
        "ensemble's. For an honest estimate: -S nested.enabled=true."
    )


def run(cfg: DictConfig, layout: Layout) -> dict[str, Any]:
    import mlflow

    from foldwise import pyfunc, tracking
    from foldwise.data import feature_columns
    from foldwise.ensemble import spec
    from foldwise.fitting.train import fit, fit_members
    from foldwise.fitting.train import headline as score_line

    selection = read_json(layout.selection)
    how = str((cfg.get("refit") or {}).get("name", "all_dev"))
    if selection.get("baseline"):
        check_baseline_refit(selection, how)
    meta = Meta.from_dict(read_json(layout.meta))
    dev = pd.read_parquet(layout.dev)
    cv = {"metric": selection["metric"], **selection["score"], "method": selection.get("method")}
    extra: dict[str, Any] = {}
    if selection.get("baseline"):
        res, fp, hyper = _baseline(cfg, selection, meta, dev, layout)
        chosen, epochs = OmegaConf.create(hyper), 0
    else:
        chosen = selected_config(cfg, selection)
        epochs = refit_epochs(chosen, selection["fold_best_epochs"])
        hyper = hyperparameters(chosen)
        bagged = spec(chosen)
        what = (
            f"{bagged['name']}, up to {bagged['n_estimators']} members" if bagged else "one model"
        )
        if how == "fold_ensemble":
            res, fp, extra = _fold_ensemble(cfg, chosen, selection, meta, dev, layout, what)
            cv = extra.pop("cv")
            epochs = res.best_epoch
        else:
            print(f"[refit] {selection['label']} on all {len(dev)} dev rows for {epochs} epochs "
                  f"({what})")  # fmt: skip
            if bagged:
                backbones, res, scalers, combine = fit_members(chosen, meta, dev, epochs=epochs)
                fp = artifact.save(layout.model_dir, backbones, scalers, meta, hyper, combine)
            else:
                backbone, res = fit(chosen, meta, dev, None, epochs=epochs)
                fp = artifact.save(layout.model_dir, backbone, res.scaler, meta, hyper)
    (layout.model_dir / "config.yaml").write_text(OmegaConf.to_yaml(chosen))

    c = tracking.client(cfg)
    run_id = tracking.start_run(
        c,
        selection["experiment_id"],
        f"refit {selection['label']}",
        "refit",
        {f"{tracking.TAG}config_hash": selection["config_hash"], f"{tracking.TAG}model_sha256": fp},
        parent=selection["sweep_run_id"],
    )
    dev_sha = read_json(layout.dev_manifest)["dev_sha256"]
    tracking.log_dataset(c, run_id, {"name": f"{cfg.data.name} dev", "digest": dev_sha[:12],
                                     "rows": len(dev), "context": "training",
                                     "manifest": "data/split/dev_manifest.json"})  # fmt: skip
    tracking.log(
        c,
        run_id,
        params={**flatten(hyper), "refit": how, "refit_epochs": epochs, "n_train": len(dev)},
        metrics=res.metrics,
        history=res.history,
        history_prefix="epoch/",
    )
    mlflow.set_tracking_uri(c.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        # The logged model is the whole bundle (scalers, members, how they combine) behind
        # MLflow's pyfunc: raw feature rows in, classes and probabilities (or values) out.
        raw = dev[feature_columns(dev)].head(5).set_axis(list(meta.feature_names), axis=1)
        logged = pyfunc.log(layout.model_dir / "model.pt", raw)
        mlflow.log_artifacts(str(layout.model_dir), artifact_path="bundle")
    info = {
        "cv": cv,  # the CV estimate the test stage sets beside the test result (or None)
        "refit": how,
        **extra,
        "model_sha256": fp,
        "config_hash": selection["config_hash"],
        "label": selection["label"],
        **({"baseline": selection["baseline"]} if selection.get("baseline") else {}),
        "epochs": epochs,
        "n_train": len(dev),
        "train_metrics": res.metrics,
        "mlflow_run_id": run_id,
        "mlflow_model_uri": logged.model_uri,  # what the test stage registers
        "sweep_run_id": selection["sweep_run_id"],
        "experiment_id": selection["experiment_id"],
    }
    write_json(layout.model_dir / "info.json", info)
    if extra.get("cv_unavailable"):
        print(f"[refit] CV estimate of the fold ensemble: {extra['cv_unavailable']}")
    elif how == "fold_ensemble":
        print(fold_ensemble_line(cv))
    print(
        f"[refit] saved {layout.model_dir.relative_to(layout.root)} (model sha256 {fp[:12]}), "
        f"{score_line(res.metrics, 'train')}; MLflow run {run_id}"
    )
    return info


def check_baseline_refit(selection: dict[str, Any], how: str) -> None:
    """A selected baseline is refit as one scikit-learn pipeline on every dev row: the
    fold ensemble of a network has no baseline counterpart. Refused before any work."""
    if how != "all_dev":
        raise FoldwiseError(
            f"the selection is a baseline ({selection['label']}), and refit={how} averages a "
            "network's fold models: a baseline is refit as one scikit-learn pipeline on every "
            "dev row.",
            "set refit=all_dev (-S refit=all_dev), or selection.baselines=false to select "
            "among the networks alone.",
        )


def _baseline(cfg: DictConfig, selection: dict[str, Any], meta: Meta, dev: pd.DataFrame,
              layout: Layout) -> tuple[Any, str, dict[str, Any]]:  # fmt: skip
    """A selected baseline (``selection.baselines=true``): its scikit-learn pipeline,
    exactly as the aggregate stage scored it on the resamples, fit on every dev row and
    saved as the bundle (:func:`foldwise.artifact.save_baseline`)."""
    from types import SimpleNamespace

    from foldwise.fitting.train import arrays
    from foldwise.methods import baselines

    name, task = selection["baseline"], "regression" if meta.regression else "classification"
    x, y = arrays(dev)
    print(f"[refit] {selection['label']} (a baseline: selection.baselines=true) on all "
          f"{len(dev)} dev rows")  # fmt: skip
    k = 0 if meta.regression else meta.n_classes
    model, metrics = baselines.fit_all(name, task, x, y, seed=int(cfg.seed), n_classes=k)
    config = {"baseline": name, "task": task, "seed": int(cfg.seed)}
    fp = artifact.save_baseline(layout.model_dir, model, meta, config)
    return SimpleNamespace(metrics=metrics, history={}), fp, config


def fold_ensemble_line(cv: dict[str, Any]) -> str:
    """The fold ensemble's CV estimate, at the precision its interval supports."""
    lo, hi = cv["ci_low"], cv["ci_high"]
    return (f"[refit] CV estimate of the fold ensemble ({cv['method']}): {cv['metric']} "
            f"{headline.near(cv['mean'], lo, hi)} {headline.interval(lo, hi)}")  # fmt: skip


def _fold_ensemble(cfg, chosen, selection, meta, dev, layout, what) -> tuple:
    """``refit=fold_ensemble``: the selected configuration's fold models, trained again
    exactly as the sweep trained them (checked: their fold scores against the sweep's),
    saved as one bundle that averages them."""
    from foldwise.fitting.train import fit_folds
    from foldwise.results import Session, collect
    from foldwise.split import load_folds

    folds = [r for r in load_folds(read_json(layout.folds)) if r.role == "resample"]
    dev = dev.sort_values("row_id", kind="stable").reset_index(drop=True)
    print(f"[refit] {selection['label']}: the fold ensemble of its {len(folds)} fold models "
          f"({what} each), trained again as the sweep trained them")  # fmt: skip
    fm = fit_folds(chosen, meta, dev, folds)
    combine = {"name": "fold_ensemble", "folds": len(folds),
               "members_per_fold": len(fm.nets) // len(folds)}  # fmt: skip
    fp = artifact.save(layout.model_dir, fm.nets, fm.scalers, meta, hyperparameters(chosen),
                       combine)  # fmt: skip
    res = fm.result
    swept = collect(Session(read_json(layout.sweep_dir / "session.json")),
                    layout.sweep_dir)[selection["config_hash"]]  # fmt: skip
    metric = selection["metric"]
    drift = max(abs(fm.fold_metrics[f.index][metric] - swept[f.index]["metrics"][metric])
                for f in folds)  # fmt: skip
    print(f"[refit] fold models vs the sweep's: max |Δ {metric}| = {drift:.2g} over "
          f"{len(folds)} folds")  # fmt: skip
    cv, why = fold_ensemble_estimate(cfg, layout)
    extra = {"cv": cv, "folds": len(folds), "fold_metrics": fm.fold_metrics,
             "max_fold_score_drift": drift, **({"cv_unavailable": why} if why else {})}  # fmt: skip
    return res, fp, extra
