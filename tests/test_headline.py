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


def test_a_test_headline_about_another_model_says_not_opened_after_a_new_selection(tmp_path):
    layout = Layout(tmp_path)
    not_opened = {"test": {"status": "not opened"}}
    _opened(layout, "abc", "split1")
    assert not headline.mark_stale_test(layout, "abc", "split1")  # the same model: kept
    assert json.loads(layout.headline("test").read_text())["test"]["f1"] == 0.98
    assert headline.mark_stale_test(layout, "abc", "split2")  # other dev rows
    assert json.loads(layout.headline("test").read_text()) == not_opened
    assert layout.test_metrics.is_file()  # the detailed record stays
    _opened(layout, "abc", "split1")
    assert headline.mark_stale_test(layout, "def", "split1")  # another configuration
    assert json.loads(layout.headline("test").read_text()) == not_opened
    assert not headline.mark_stale_test(layout, "def", "split1")  # already says so


def test_an_aggregate_only_run_leaves_every_dvc_metrics_file_loadable(tmp_path):
    # `dvc exp run aggregate` never runs nested or test: DVC warned "failed to load some
    # metrics" for their missing headlines. The test stage's still says nothing opened.
    layout = Layout(tmp_path)
    assert headline.mark_stale_test(layout, "abc", "split1")
    assert headline.fill_nested(layout)
    assert json.loads(layout.headline("test").read_text()) == {"test": {"status": "not opened"}}
    assert json.loads(layout.headline("nested").read_text()) == {}
    headline.write(layout.headline("nested"), {"nested": {"val_f1": 0.9}})
    assert not headline.fill_nested(layout)  # the nested stage's own stays
    assert not layout.test_metrics.exists()  # nothing of the lockbox is touched


def test_the_sweep_run_name_says_data_scheme_size_and_grid():
    cfg = OmegaConf.create({"data": {"name": "digits"}, "sweep": {"grid": {}}})
    k = {"scheme": "stratified_kfold", "n_splits": 5}
    assert sweep_name(cfg, k, 4) == "digits · stratified_kfold k=5 · 4 configs"
    boot = {"scheme": "bootstrap", "n_splits": 200}
    assert sweep_name(cfg, boot, 1) == "digits · bootstrap 200 resamples · 1 config"
    cfg.sweep = {"search": "optuna", "optuna": {"n_trials": 20}}  # trials are asked later
    assert sweep_name(cfg, k, 0) == "digits · stratified_kfold k=5 · optuna 20 trials"
