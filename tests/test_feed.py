"""Streamed rows (engine/feed.py) compute what rows in memory compute.

The same random heterogeneous stacks as the stack property (tests/test_stack_property.py:
mixed hyperparameters, dropout including 0, epochs, row counts, bootstrap multiplicities,
loss weights, schedulers, standardisation kinds, both tasks), trained once on the rows as
one tensor and once through a ``DataLoader`` that loads each step's union of rows, must
agree in float64 to rounding: every per-epoch history value, metric and per-row
prediction. The streamed stack's dropout buffers are pre-filled with NaN, and its
scoring blocks are small, so a mis-mapped row (a model reading another model's row, or
a padded slot) shows as a different number.
"""

from __future__ import annotations

import json
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_stack_property import DATA, POISONS, _assert_same, poisoned_buffers, stacks

from foldwise import engine
from foldwise.engine import Streamed
from foldwise.transforms import standardise


class Rows:
    """A map-style dataset over ``x`` that counts what it is asked for."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i], self.y[i]


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(drawn=stacks(), block=st.sampled_from([7, 64, 4096]), cache=st.sampled_from([0, 0.01, 8]))
def test_streamed_rows_train_exactly_as_rows_in_memory(drawn, block, cache):
    kind, tasks = drawn
    x, y, meta = DATA[kind]
    for t in tasks:  # per-row predictions too, on the held-out rows
        t.predict = ("val",)
    # One thread for both runs: the same reductions in the same order (a thread count
    # shared with the other test worker can change between them and move a regression
    # loss by 1e-7 after 4 epochs; the same values must give the same numbers).
    with mock.patch.dict(os.environ, {"FOLDWISE_THREADS": "1"}):
        memory = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
        # cache: none, a few rows (full after the first steps), every row
        feed = Streamed(Rows(x, y), x.shape[1], block_rows=block, cache_mb=cache)
        with poisoned_buffers(POISONS[0]):
            streamed = engine.train(tasks, feed, y, meta, accelerator="cpu", precision=64)
    for task, a, b in zip(tasks, memory, streamed, strict=True):
        what = f"{kind} {task.model} {task.hyper} {task.normalize} rows={len(task.train)}"
        _assert_same(a, b, what)
        for name, rec in a.predictions.items():
            np.testing.assert_allclose(rec["loss"], b.predictions[name]["loss"],
                                       rtol=1e-6, atol=1e-6, err_msg=what)  # fmt: skip
            assert rec["pred"] == pytest.approx(b.predictions[name]["pred"], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("how", ["feature", "channel", "none"])
def test_streamed_statistics_equal_the_in_memory_ones(how):
    """One pass over blocks, with multiplicity, equals standardise(x[fit]) per task."""
    x, y, meta = DATA["classification"]
    rng = np.random.default_rng(3)
    x = x + rng.normal(0, 1e-3, x.shape) + 1e4  # a large offset: a naive one-pass var cancels
    x[:, 0] = 7.0  # a constant feature is scaled by 1
    fits = [rng.choice(len(x), k, replace=True) for k in (5, 40, 150)]
    feed = Streamed(Rows(x, y), x.shape[1], block_rows=16)
    got = feed.standardise(fits, how, meta.image_shape)
    for fit, (mean, scale) in zip(fits, got, strict=True):
        want_mean, want_scale = standardise(x[fit], how, meta.image_shape)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(scale, want_scale, rtol=1e-6)


def test_a_step_loads_only_the_union_of_its_models_rows():
    """Two models with the same rows: each row is read once per step, not once per model."""
    x, y, meta = DATA["classification"]
    rows = np.arange(64)
    hyper = engine.Hyper(1e-2, 0.0, 0.0, 1, False, 0.25, 1)
    tasks = [engine.Task(f"t{s}", {"name": "mlp", "hidden": 4, "depth": 1}, hyper, 16, s, rows)
             for s in range(4)]  # fmt: skip
    data = Rows(x, y)
    engine.train(tasks, Streamed(data, x.shape[1]), y, meta, accelerator="cpu", precision=64)
    # statistics: 64 rows; one epoch: 4 steps of the same 64 rows, permuted per model
    # (each step's union ≤ 64); final scoring of the fit rows: 64 (+ row 0, the padding)
    assert data.reads <= 64 + 4 * 64 + 65
    assert data.reads < 4 * (64 + 64 + 64)  # per model it would be 768
    # with a cache that holds them, every row is read once
    cached = Rows(x, y)
    feed = Streamed(cached, x.shape[1], cache_mb=1)
    engine.train(tasks, feed, y, meta, accelerator="cpu", precision=64)
    assert cached.reads == 64  # each fit row (row 0, the padding, is one of them)


@pytest.mark.slow
def test_the_sweep_stage_streams_an_image_folder_and_computes_what_it_computes_in_memory(
    tmp_path,
):
    """engine.rows=stream end to end: the sweep stage never reads the dev table's pixel
    columns (it decodes the images it needs, step by step), and every job's history and
    scores equal those of the same sweep with the rows in memory (float64). A table is
    refused for streaming before any work, naming the fix."""
    import json
    import shutil
    import sys

    from conftest import ROOT, make_project, tiny_params

    sys.path.insert(0, str(ROOT / "examples/shapes"))
    from draw import draw

    cfg = tiny_params(["data=image_folder", "data.path=data/raw/shapes", "model=cnn",
                       "sweep.grid.model.hidden=[4]", "sweep.grid.optim.lr=[0.01,0.05]",
                       "trainer.precision=64", "data.normalize=channel"])  # fmt: skip
    p = make_project(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", cfg)
    draw(p.path / "data/raw/shapes", per_class=12, size=12, classes=("circle", "cross", "ring"))
    p.repro("prepare", "split", "sweep")
    jobs = p.path / "results/sweep/jobs"
    memory = {f.name: json.loads(f.read_text()) for f in jobs.rglob("*.json")}
    assert memory
    # nothing to restore: neither the job cache nor the MLflow runs of the first sweep
    shutil.rmtree(p.path / "results/sweep")
    shutil.rmtree(p.path / ".foldwise/jobs")
    p.env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'streamed.db'}"
    cfg.engine.rows = "stream"
    p.set_params(cfg)
    from foldwise.fitting import train as fitting

    fitting.dev_inputs.cache_clear()
    from foldwise import sources

    with (
        mock.patch.object(fitting, "arrays", wraps=fitting.arrays) as read,
        mock.patch.object(sources, "stream_rows", wraps=sources.stream_rows) as streams,
    ):
        ran = p.repro("sweep")
    assert read.called and streams.called, ran.stdout[-3000:] + ran.stderr[-3000:]
    for (df,), _ in read.call_args_list:  # the dev table without its pixel columns
        assert not [c for c in df.columns if c.startswith("x")]
    streamed = {f.name: json.loads(f.read_text()) for f in jobs.rglob("*.json")}
    assert streamed.keys() == memory.keys()
    compared = 0
    for name, a in memory.items():
        b = streamed[name]
        if "metrics" not in a:
            continue
        compared += 1
        assert a["status"] == b["status"] == "ok", name
        for k, v in a["metrics"].items():
            assert b["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-9), (name, k)
        for k, v in a["history"].items():
            np.testing.assert_allclose(b["history"][k], v, rtol=1e-9, atol=1e-9, err_msg=name)
    assert compared == 2 * 2  # 2 configurations × 2 folds

    table = tiny_params(["engine.rows=stream"])
    p.set_params(table)
    out = p.stage("sweep", check=False, in_process=True)
    assert out.returncode != 0 and "engine.rows=stream" in out.stderr and "Fix:" in out.stderr


@pytest.mark.parametrize(
    ("extra", "said", "fix"),
    [
        (["engine.rows=stream"], "data=digits is a table", "-S engine.rows=memory"),
        (["engine.rows=disk"], "unknown engine.rows 'disk'", "memory, stream, auto"),
        (["engine.loader_workers=-1"], "loader_workers must be 0 or a positive", "=0"),
    ],
)
def test_stream_settings_are_refused_before_any_work_naming_the_fix(extra, said, fix):
    from conftest import tiny_params
    from foldwise import params as P
    from foldwise.errors import FoldwiseError

    with pytest.raises(FoldwiseError) as err:
        P.validate(tiny_params(extra))
    assert said in str(err.value) and fix in str(err.value)


def test_auto_streams_images_only_when_their_features_exceed_the_memory_budget(tmp_path):
    """engine.rows=auto: the dev features as float64 against engine.memory_mb; a table is
    never streamed (prepare holds it whole anyway)."""
    import pandas as pd
    from omegaconf import OmegaConf

    from foldwise import params as P
    from foldwise.fitting.train import rows_spec

    layout = P.Layout(tmp_path)
    layout.dev.parent.mkdir(parents=True)
    table = {"row_id": range(100), "target": 0, **{f"x{i}": 0.0 for i in range(98)}}
    pd.DataFrame(table).to_parquet(layout.dev)  # 100 rows × 100 columns × 8 bytes = 80 kB
    cfg = lambda rows, mb, name="image_folder": OmegaConf.create({  # noqa: E731
        "engine": {"rows": rows, "memory_mb": mb, "loader_workers": 2},
        "data": {"name": name, "path": "data/raw/x"}, "trainer": {"accelerator": "cpu"},
    })  # fmt: skip
    assert rows_spec(cfg("memory", 0.01), layout) == ""
    assert rows_spec(cfg("auto", 1), layout) == ""  # 80 kB fit in 1 MB
    spec = json.loads(rows_spec(cfg("auto", 0.05), layout))  # ... not in 50 kB
    assert spec["data"]["path"] == "data/raw/x" and spec["workers"] == 2
    assert spec["cache_mb"] == 0.025 and spec["pin"] is False
    assert rows_spec(cfg("stream", 4096), layout) != ""
    assert rows_spec(cfg("auto", 0.05, "digits"), layout) == ""


def test_streamed_rows_that_the_folder_no_longer_holds_are_refused(tmp_path):
    import sys

    from omegaconf import OmegaConf

    from conftest import ROOT
    from foldwise.errors import FoldwiseError
    from foldwise.sources import ImageFolderRows, stream_rows

    sys.path.insert(0, str(ROOT / "examples/shapes"))
    from draw import draw

    draw(tmp_path / "img", per_class=3, size=8, classes=("circle", "cross"))
    cfg = OmegaConf.create({"name": "image_folder", "path": str(tmp_path / "img")})
    ids = ImageFolderRows(tmp_path / "img", None, 1).ids
    rows = stream_rows(cfg, ids[::-1].copy())  # any order: the dev table's
    assert np.array_equal(rows[0][0], ImageFolderRows(tmp_path / "img", None, 1)[5][0])
    next((tmp_path / "img/cross").iterdir()).unlink()
    with pytest.raises(FoldwiseError, match="no longer in the data") as err:
        stream_rows(cfg, ids)
    assert "dvc repro" in str(err.value)


def test_the_time_estimates_probe_trains_on_streamed_rows():
    """The sweep's estimate (20+ models) probes the planned stack on the rows the sweep
    will read: streamed ones too (it once moved them to the device as an array)."""
    from foldwise.engine.estimate import probe

    x, y, meta = DATA["classification"]
    hyper = engine.Hyper(1e-2, 0.0, 0.2, 3, False, 0.25, 1)
    rows = np.arange(100)
    tasks = [engine.Task(f"t{s}", {"name": "mlp", "hidden": 4, "depth": 1, "dropout": 0.2},
                         hyper, 16, s, rows) for s in range(3)]  # fmt: skip
    got = probe(tasks, Streamed(Rows(x, y), x.shape[1], cache_mb=1), y, meta, epochs=3)
    assert got.models == 3 and got.full.step_seconds > 0
