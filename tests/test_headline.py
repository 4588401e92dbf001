"""The DVC metrics (foldwise.headline) and the sweep's MLflow run name: what a row of
`dvc exp show` and a line of the MLflow UI say about an experiment."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from foldwise import headline
from foldwise.params import Layout
from foldwise.sweep.plan import sweep_name


def test_the_cv_headline_names_the_selected_values_by_their_short_names():
    doc = headline.cv(
        "val_f1", {"mean": 0.976449, "se": 0.00401},
        {"model.hidden": 128, "optim.lr": 0.001, "ensemble.name": "bagging"},
    )  # fmt: skip
    assert doc == {"cv": {"val_f1": 0.9764, "se": 0.004}, "hidden": 128, "lr": 0.001,
                   "name": "bagging"}  # fmt: skip
    # two swept keys with one last part keep their full names
    clash = headline.cv("val_f1", {"mean": 0.9}, {"model.dropout": 0.1, "optim.dropout": 0.2})
    assert clash["model.dropout"] == 0.1 and clash["optim.dropout"] == 0.2
    assert set(headline.cv("val_f1", {"mean": 0.9}, {})) == {"cv"}  # nothing was swept


def _opened(layout: Layout, config: str, split_key: str) -> None:
    layout.test_metrics.parent.mkdir(parents=True, exist_ok=True)
    layout.test_metrics.write_text(json.dumps({"config": config, "split_key": split_key}))
    headline.write(layout.headline("test"), {"test": {"f1": 0.98, "look": 1}})


def test_a_test_headline_about_another_model_is_dropped_by_the_new_selection(tmp_path):
    layout = Layout(tmp_path)
    _opened(layout, "abc", "split1")
    assert not headline.drop_stale_test(layout, "abc", "split1")  # the same model: kept
    assert layout.headline("test").is_file()
    assert headline.drop_stale_test(layout, "abc", "split2")  # other dev rows
    assert not layout.headline("test").exists()
    assert layout.test_metrics.is_file()  # the detailed record stays
    _opened(layout, "abc", "split1")
    assert headline.drop_stale_test(layout, "def", "split1")  # another configuration
    assert not layout.headline("test").exists()
    assert not headline.drop_stale_test(layout, "def", "split1")  # nothing left to drop


def test_the_sweep_run_name_says_data_scheme_size_and_grid():
    cfg = OmegaConf.create({"data": {"name": "digits"}, "sweep": {"grid": {}}})
    k = {"scheme": "stratified_kfold", "n_splits": 5}
    assert sweep_name(cfg, k, 4) == "digits · stratified_kfold k=5 · 4 configs"
    boot = {"scheme": "bootstrap", "n_splits": 200}
    assert sweep_name(cfg, boot, 1) == "digits · bootstrap 200 resamples · 1 config"
    cfg.sweep = {"search": "optuna", "optuna": {"n_trials": 20}}  # trials are asked later
    assert sweep_name(cfg, k, 0) == "digits · stratified_kfold k=5 · optuna 20 trials"
