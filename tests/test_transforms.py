"""The user's preprocessing (``data.normalize._target_``, foldwise/transforms.py): fit
per model on that model's fit rows only, applied to every batch it sees, saved with the
refit model, refused naming the fix when it cannot work.

The equivalence is a property over the stack property's random heterogeneous stacks
(mixed hyperparameters, dropout including 0, epochs, bootstrap multiplicities, loss
weights, schedulers, MLP/CNN/user networks, both tasks): a model trained in a stack with
its transform computes what a stack of one computes on rows transformed beforehand
(by a transform fit, independently, on that model's fit rows) with no standardisation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from test_stack_property import DATA, POISONS, _assert_same, poisoned_buffers, stacks

from foldwise import engine, transforms
from foldwise.engine import Streamed
from foldwise.engine.task import prepare
from foldwise.errors import FoldwiseError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples/own_data"))
from mytransforms import RobustScale  # the example a user copies (docs/data.md)

SPEC = {"_target_": "mytransforms.RobustScale", "low": 0.2, "high": 0.8}


def _fit_rows(task: engine.Task, x, y, regression: bool = False) -> np.ndarray:
    """The rows the engine fits ``task`` on (its inner split drawn as the engine draws it)."""
    plain = engine.Task(**{**task.__dict__, "normalize": "none"})
    return prepare(plain, x, y, regression=regression).fit


def _quantile_scale(xf: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """RobustScale's state, computed independently (numpy's linear quantiles)."""
    lo, mid, hi = np.quantile(xf, [low, 0.5, high], axis=0)
    spread = hi - lo
    return mid, np.where(spread > 0, spread, 1.0)


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(drawn=stacks())
def test_a_stacked_models_transform_is_its_own_fit_on_its_own_fit_rows(drawn):
    kind, tasks = drawn
    x, y, meta = DATA[kind]
    for t in tasks:
        t.normalize = SPEC
        t.predict = ("val",)
    with mock.patch.dict(os.environ, {"FOLDWISE_THREADS": "1"}), poisoned_buffers(POISONS[0]):
        stacked = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    for task, got in zip(tasks, stacked, strict=True):
        fit = _fit_rows(task, x, y, meta.regression)
        centre, spread = _quantile_scale(x[fit], SPEC["low"], SPEC["high"])
        what = f"{kind} {task.model} {task.hyper} rows={len(task.train)}"
        if got.status == "ok":
            state = got.scaler["transform"]
            np.testing.assert_allclose(state.centre_.numpy(), centre, rtol=1e-12, err_msg=what)
            np.testing.assert_allclose(state.spread_.numpy(), spread, rtol=1e-12, err_msg=what)
        # the same model alone, on rows transformed beforehand, not standardised
        alone = engine.Task(**{**task.__dict__, "normalize": "none"})
        xt = (x - centre) / spread
        with mock.patch.dict(os.environ, {"FOLDWISE_THREADS": "1"}):
            (want,) = engine.train([alone], xt, y, meta, accelerator="cpu", precision=64)
        _assert_same(got, want, what)
        if got.status == "ok":
            a, b = got.predictions["val"]["loss"], want.predictions["val"]["loss"]
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=what)


def test_a_transform_sees_only_its_models_fit_rows_and_nothing_else_moves_it():
    """The rows a transform is fit on are exactly the model's fit rows (with a bootstrap
    row's multiplicity), never its early-stopping or validation rows; replacing every
    other row with noise leaves each fitted state unchanged."""
    x, y, meta = DATA["classification"]
    rng = np.random.default_rng(0)
    hyper = engine.Hyper(1e-2, 0.0, 0.1, 2, True, 0.25, 1)
    tasks = [
        engine.Task(f"t{s}", {"name": "mlp", "hidden": 4, "depth": 1}, hyper, 16, s,
                    np.sort(rng.choice(100, 80, replace=s % 2 == 1)),
                    evals={"val": np.arange(100, 150)}, normalize=SPEC)
        for s in range(3)
    ]  # fmt: skip
    seen: list[np.ndarray] = []
    real_fit = RobustScale.fit

    def recording(self, dataset, train_indices):
        seen.append(np.sort(np.asarray(train_indices)))
        return real_fit(self, dataset, train_indices)

    with mock.patch.object(RobustScale, "fit", recording):
        first = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    fits = [np.sort(_fit_rows(t, x, y)) for t in tasks]
    assert len(seen) == len(tasks)
    for got, want, t in zip(seen, fits, tasks, strict=True):
        np.testing.assert_array_equal(got, want)
        assert not set(got) & set(t.evals["val"])
    noisy = x.copy()
    others = np.setdiff1d(np.arange(len(x)), np.concatenate(fits))
    noisy[others] = rng.normal(0, 100, (len(others), x.shape[1]))
    second = engine.train(tasks, noisy, y, meta, accelerator="cpu", precision=64)
    for a, b in zip(first, second, strict=True):
        for attr in ("centre_", "spread_"):
            first_state, second_state = a.scaler["transform"], b.scaler["transform"]
            assert torch.equal(getattr(first_state, attr), getattr(second_state, attr))


def test_streamed_rows_fit_and_apply_the_transform_as_rows_in_memory():
    kind = "classification"
    x, y, meta = DATA[kind]
    hyper = engine.Hyper(5e-2, 1e-4, 0.2, 3, False, 0.25, 1)
    tasks = [engine.Task(f"t{s}", {"name": "cnn", "hidden": 4, "depth": 1}, hyper, 16, s,
                         np.arange(s, 120), evals={"val": np.arange(120, 150)},
                         normalize=SPEC, predict=("val",))
             for s in range(3)]  # fmt: skip

    class Items:
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i], y[i]

    with mock.patch.dict(os.environ, {"FOLDWISE_THREADS": "1"}):
        memory = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
        streamed = engine.train(tasks, Streamed(Items(), x.shape[1], block_rows=16), y, meta,
                                accelerator="cpu", precision=64)  # fmt: skip
    for t, a, b in zip(tasks, memory, streamed, strict=True):
        _assert_same(a, b, t.key)


def test_the_built_in_standardisation_is_a_transform_of_the_same_contract():
    """Standardize.fit(dataset, train_indices): scikit-learn's StandardScaler per feature,
    one mean and spread per image channel; applying it is (x - mean) / scale."""
    from sklearn.preprocessing import StandardScaler

    x, y, meta = DATA["classification"]
    rows = transforms.Rows(x, y, meta.image_shape)
    fit = np.random.default_rng(1).choice(len(x), 90)
    per_feature = transforms.Standardize("feature").fit(rows, fit)
    ref = StandardScaler().fit(x[fit].astype(np.float32))
    batch = torch.as_tensor(x[:5]).reshape(5, *meta.image_shape)
    want = (x[:5] - ref.mean_) / ref.scale_
    np.testing.assert_allclose(per_feature(batch).reshape(5, -1).numpy(), want, rtol=1e-5)
    per_channel = transforms.Standardize("channel", meta.image_shape).fit(rows, fit)
    pixels = x[fit].ravel()
    np.testing.assert_allclose(per_channel.mean_.numpy(), pixels.mean(), rtol=1e-12)
    np.testing.assert_allclose(per_channel.scale_.numpy(), pixels.std(), rtol=1e-12)


class NoFit:
    def __call__(self, x):
        return x


class FitRaises:
    def fit(self, dataset, train_indices):
        raise KeyError("no such column")

    def __call__(self, x):
        return x


class Shrinks:
    def fit(self, dataset, train_indices):
        return self

    def __call__(self, x):
        return x[:, :1]


class Divides:
    def fit(self, dataset, train_indices):
        self.zero = 0.0
        return self

    def __call__(self, x):
        return x / self.zero


@pytest.mark.parametrize(
    "spec, said, fix",
    [
        ({"_target_": f"{__name__}.NoFit"}, "is not a transform", "fit(dataset, train_indices)"),
        ({"_target_": f"{__name__}.FitRaises"}, "raised KeyError", "fix the transform's fit"),
        ({"_target_": f"{__name__}.Shrinks"}, "into (2, 1)", "of the input's shape"),
        ({"_target_": f"{__name__}.Divides"}, "NaN or infinite", "zero spread"),
        ({"_target_": "mytransforms.RobustScale", "lo": 0.1}, "takes no argument lo", "low"),
        ({"_target_": "mytransforms.RobustScale", "low": 0.9}, "raised ValueError", "arguments"),
        ({"_target_": "mytransforms.RobustScal"}, "has no 'RobustScal'", "RobustScale"),
        ({"low": 0.1}, "without _target_", "_target_"),
    ],
)
def test_a_broken_transform_is_refused_before_training_naming_the_fix(spec, said, fix):
    x, y, meta = DATA["regression"]
    task = engine.Task("t", {"name": "mlp", "hidden": 4, "depth": 1},
                       engine.Hyper(1e-2, 0.0, 0.0, 1, False, 0.25, 1), 16, 0, np.arange(50),
                       normalize=spec)  # fmt: skip
    with pytest.raises(FoldwiseError) as err:
        engine.build_stack([task], x, y, meta, torch.device("cpu"), torch.float64)
    assert said in err.value.problem and fix in err.value.fix, (err.value.problem, err.value.fix)


def test_the_settings_check_imports_and_builds_the_users_transform():
    from conftest import tiny_params
    from foldwise.config.sections import check_data

    ok = tiny_params(["data=diabetes", "data.normalize={_target_: mytransforms.RobustScale}"])
    assert check_data(ok) == "diabetes"
    bad = tiny_params(["data=diabetes", "data.normalize={_target_: mytransforms.Robust}"])
    with pytest.raises(FoldwiseError, match="has no 'Robust'"):
        check_data(bad)


def test_the_saved_model_applies_its_fitted_transform(tmp_path):
    """The refit's bundle carries the transform as fitted on the refit's rows (and its
    source): the loaded model scores raw rows as the network on transformed rows does."""
    from conftest import tiny_params
    from foldwise import artifact
    from foldwise.data import feature_columns
    from foldwise.data import prepare as prepare_table
    from foldwise.fitting.train import fit

    robust = "{_target_: mytransforms.RobustScale, low: 0.1, high: 0.9}"
    cfg = tiny_params(["data=iris", "trainer.max_epochs=5", "model.hidden=8",
                       f"data.normalize={robust}"])  # fmt: skip
    table, meta = prepare_table(cfg)
    net, res = fit(cfg, meta, table)
    state = res.scaler["transform"]
    assert isinstance(state, RobustScale) and (state.low, state.high) == (0.1, 0.9)
    config = {"model": dict(cfg.model), "normalize": transforms.spec_of(cfg.data.normalize)}
    artifact.save(tmp_path, net, res.scaler, meta, config)
    loaded = artifact.LoadedModel(tmp_path / "model.pt")
    x = table[feature_columns(table)].to_numpy(dtype=np.float64)
    want = net.double()(torch.from_numpy((x - state.centre_.numpy()) / state.spread_.numpy()))
    got = loaded.outputs(x)
    np.testing.assert_allclose(got["proba"], want.softmax(1).detach().numpy(), rtol=1e-10)
    # a different fitted state is a different model: the fingerprint says so
    state.centre_ = state.centre_ + 1
    other = tmp_path / "other"
    assert artifact.save(other, net, res.scaler, meta, config) != loaded.fingerprint
