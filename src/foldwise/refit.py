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
import torch
from omegaconf import DictConfig, OmegaConf

from foldwise import artifact
from foldwise.data import Meta
from foldwise.errors import FoldwiseError
from foldwise.files import flatten, read_json, write_json
from foldwise.params import Layout
from foldwise.sweep import apply, config_hash, hyperparameters


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


def run(cfg: DictConfig, layout: Layout) -> dict[str, Any]:
    import mlflow

    from foldwise import tracking
    from foldwise.ensemble import spec
    from foldwise.train import fit, fit_members, headline

    selection = read_json(layout.selection)
    chosen = selected_config(cfg, selection)
    meta = Meta.from_dict(read_json(layout.meta))
    dev = pd.read_parquet(layout.dev)
    epochs = refit_epochs(chosen, selection["fold_best_epochs"])
    bagged = spec(chosen)
    what = f"{bagged['name']}, up to {bagged['n_estimators']} members" if bagged else "one model"
    print(f"[refit] {selection['label']} on all {len(dev)} dev rows for {epochs} epochs ({what})")
    hyper = hyperparameters(chosen)
    if bagged:
        backbones, res, scalers, combine = fit_members(chosen, meta, dev, epochs=epochs)
        fp = artifact.save(layout.model_dir, backbones, scalers, meta, hyper, combine)
        backbone, res.scaler = backbones[0], scalers[0]
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
    tracking.log(
        c,
        run_id,
        params={**flatten(hyper), "refit_epochs": epochs, "n_train": len(dev)},
        metrics=res.metrics,
        history=res.history,
        history_prefix="epoch/",
    )
    mlflow.set_tracking_uri(c.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        if not bagged:  # an ensemble has no single torch module: its bundle is the model
            # pip_requirements given explicitly: inferring them imports and probes the env.
            example = artifact.LoadedModel.scale(dev.head(2), res.scaler)[0].numpy()
            mlflow.pytorch.log_model(
                backbone,
                name="model",
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__}"],
            )
        mlflow.log_artifacts(str(layout.model_dir), artifact_path="bundle")
    cv = {"metric": selection["metric"], **selection["score"], "method": selection.get("method")}
    info = {
        "cv": cv,  # the CV estimate the test stage sets beside the test result
        "model_sha256": fp,
        "config_hash": selection["config_hash"],
        "label": selection["label"],
        "epochs": epochs,
        "n_train": len(dev),
        "train_metrics": res.metrics,
        "mlflow_run_id": run_id,
        "sweep_run_id": selection["sweep_run_id"],
        "experiment_id": selection["experiment_id"],
    }
    write_json(layout.model_dir / "info.json", info)
    print(
        f"[refit] saved {layout.model_dir.relative_to(layout.root)} (model sha256 {fp[:12]}), "
        f"{headline(res.metrics, 'train')}; MLflow run {run_id}"
    )
    return info
