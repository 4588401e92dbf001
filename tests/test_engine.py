"""The many-models engine: a stack trains each model exactly as if it were alone.

Equivalence is checked in float64 against ``tests/reference.py``, an independent plain
PyTorch + scikit-learn loop, and between a stack and the same tasks in stacks of one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)
from sklearn.model_selection import KFold, StratifiedKFold

from foldwise import engine
from foldwise.data import Meta
from foldwise.engine import Hyper, Task
from foldwise.engine.metrics import Counts, SquaredCounts, per_sample_loss
from reference import reference_fit

TOL = 1e-6


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(d.target), 360, replace=False))  # small: seconds, not minutes
    x, y = d.data[keep].astype(np.float64), d.target[keep].astype(np.int64)
    meta = Meta("digits", len(y), 64, [str(i) for i in range(10)],
                [f"x{i}" for i in range(64)], [1, 8, 8])  # fmt: skip
    folds = list(StratifiedKFold(2, shuffle=True, random_state=1).split(x, y))
    return x, y, meta, folds


def make_tasks(folds, model, grid, *, early=True, epochs=6, dropout=0.0, seed=3):
    tasks = []
    for lr, wd in grid:
        for k, (tr, va) in enumerate(folds):
            tasks.append(
                Task(
                    key=f"{lr}-{wd}-{k}",
                    model={**model, "dropout": dropout},
                    hyper=Hyper(lr, wd, dropout, epochs, early, 0.2, 2),
                    batch_size=32,
                    seed=seed + k,
                    train=tr,
                    evals={"val": va},
                )
            )
    return tasks


def assert_same(a: engine.Outcome, b: engine.Outcome, tol: float = TOL) -> None:
    assert a.status == b.status == "ok", (a.error, b.error)
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=0, atol=tol, err_msg=k)
    assert a.metrics.keys() == b.metrics.keys()
    for k in a.metrics:
        assert a.metrics[k] == pytest.approx(b.metrics[k], abs=tol), k
    assert (a.best_epoch, a.epochs_trained, a.n_train, a.n_val) == (
        b.best_epoch, b.epochs_trained, b.n_train, b.n_val)  # fmt: skip


MLP = {"name": "mlp", "hidden": 16, "depth": 2}
CNN = {"name": "cnn", "hidden": 4, "depth": 1}
GRID = [(0.01, 0.0), (0.003, 0.01), (0.03, 0.001)]  # differing lr and weight decay in one stack


@pytest.mark.parametrize("model", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("early", [True, False], ids=["early_stopping", "fixed_epochs"])
def test_stack_equals_independent_reference_in_float64(digits, model, early):
    x, y, meta, folds = digits
    tasks = make_tasks(folds, model, GRID, early=early, epochs=5 if early else 3)
    outs = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    if early:  # the test must exercise a stop before max_epochs somewhere, or it proves little
        tasks_long = make_tasks(folds, model, [(0.3, 0.0)], early=True, epochs=12)
        outs += engine.train(tasks_long, x, y, meta, accelerator="cpu", precision=64)
        tasks += tasks_long
        assert any(o.epochs_trained < 12 for o in outs[-2:])
    for task, out in zip(tasks, outs, strict=True):
        assert_same(out, reference_fit(task, x, y, meta))


def test_a_models_result_does_not_depend_on_its_stack_with_dropout(digits):
    x, y, meta, folds = digits
    tasks = make_tasks(folds, MLP, GRID, dropout=0.3, epochs=4)
    together = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    alone = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64, max_models=1)
    reversed_ = engine.train(tasks[::-1], x, y, meta, accelerator="cpu", precision=64)[::-1]
    for a, b, c in zip(together, alone, reversed_, strict=True):
        assert_same(a, b)
        assert_same(a, c)
    # dropout is really on: it changes the fit
    plain = engine.train(make_tasks(folds, MLP, GRID[:1], epochs=4), x, y, meta,
                         accelerator="cpu", precision=64)  # fmt: skip
    assert plain[0].history["train_loss"] != together[0].history["train_loss"]


def test_float32_cv_means_agree_with_one_at_a_time(digits):
    x, y, meta, folds = digits
    tasks = make_tasks(folds, MLP, GRID, epochs=5)
    stacked = engine.train(tasks, x, y, meta, accelerator="cpu", precision=32)
    single = engine.train(tasks, x, y, meta, accelerator="cpu", precision=32, max_models=1)
    for i in range(len(GRID)):
        a = np.mean([o.metrics["val_acc"] for o in stacked[2 * i : 2 * i + 2]])
        b = np.mean([o.metrics["val_acc"] for o in single[2 * i : 2 * i + 2]])
        assert abs(a - b) <= 0.005


def test_a_diverging_model_fails_alone_and_the_rest_of_its_stack_goes_on(digits):
    x, y, meta, folds = digits
    tasks = make_tasks(folds, MLP, [(0.01, 0.0), (1e38, 0.0)], epochs=3, early=False)
    outs = engine.train(tasks, x, y, meta, accelerator="cpu", precision=32)
    assert [o.status for o in outs] == ["ok", "ok", "failed", "failed"]
    assert "non-finite" in outs[2].error
    alone = engine.train(tasks[:2], x, y, meta, accelerator="cpu", precision=32)
    for a, b in zip(outs[:2], alone, strict=True):
        assert_same(a, b, tol=0)


def test_bootstrap_multiplicity_keeps_a_row_on_one_side_of_the_inner_split(digits):
    x, y, _, folds = digits
    rng = np.random.default_rng(0)
    draw = rng.choice(folds[0][0], len(folds[0][0]), replace=True)
    task = make_tasks([(draw, folds[0][1])], MLP, GRID[:1])[0]
    prep = engine.task.prepare(task, x, y)
    assert not set(prep.fit) & set(prep.inner)
    assert len(prep.fit) + sum(np.isin(draw, prep.inner)) == len(draw)  # multiplicity kept


def test_batched_metrics_equal_scikit_learn():
    gen = torch.Generator().manual_seed(0)
    m, b, c = 4, 50, 5
    logits = torch.randn(m, b, c, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c - 1, (m, b), generator=gen)  # class 4 never true: only predicted
    w = (torch.rand(m, b, generator=gen) > 0.3).double()
    counts = Counts.zeros(m, c, torch.device("cpu"))
    half = b // 2
    for s in (slice(0, half), slice(half, b)):  # accumulate over two chunks
        counts.add(per_sample_loss(logits[:, s], y[:, s]), logits[:, s], y[:, s], w[:, s])
    got = counts.compute()
    for i in range(m):
        keep = w[i].bool().numpy()
        yt, yp = y[i].numpy()[keep], logits[i].argmax(-1).numpy()[keep]
        assert got["acc"][i] == pytest.approx(accuracy_score(yt, yp), abs=1e-12)
        assert got["f1"][i] == pytest.approx(f1_score(yt, yp, average="macro"), abs=1e-12)
        ref = torch.nn.functional.cross_entropy(logits[i][keep], y[i][keep])
        assert got["loss"][i] == pytest.approx(float(ref), abs=1e-12)


def test_plan_groups_architectures_and_bounds_stacks_by_memory(digits):
    _, _, meta, folds = digits
    small = make_tasks(folds, MLP, GRID)  # 6 tasks
    wide = make_tasks(folds, {**MLP, "hidden": 64}, GRID[:1])  # 2 tasks
    tasks = small + wide
    assert engine.plan(tasks, meta) == [[0, 1, 2, 3, 4, 5], [6, 7]]
    assert engine.plan(tasks, meta, max_models=4) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    per_model = engine.footprints(tasks[:1], meta)[tasks[0].arch()].bytes(32, 4)
    tight = engine.plan(tasks, meta, memory_mb=2.5 * per_model / 2**20)
    assert all(len(s) <= 2 for s in tight) and sorted(i for s in tight for i in s) == list(range(8))
    assert engine.plan(small, meta, min_stacks=2) == [[0, 1, 2], [3, 4, 5]]
    mixed = make_tasks(folds, MLP, GRID[:1], dropout=0.0) + make_tasks(folds, MLP, GRID[:1],
                                                                       dropout=0.5)  # fmt: skip
    assert engine.plan(mixed, meta) == [[0, 1, 2, 3]]  # dropout rates share a stack
    # a bound on the parameters of a whole stack (engine.cpu_stack_params)
    params = engine.footprints(tasks[:1], meta)[tasks[0].arch()].params
    assert engine.plan(small, meta, max_params=3 * params) == [[0, 1, 2], [3, 4, 5]]


def test_refit_state_dict_reproduces_the_reported_metrics(digits):
    x, y, meta, folds = digits
    task = make_tasks(folds, MLP, GRID[:1])[0]
    out = engine.train([task], x, y, meta, accelerator="cpu", precision=64, keep_state=True)[0]
    from omegaconf import OmegaConf

    from foldwise.models import build_backbone

    net = build_backbone(OmegaConf.create(task.model), meta).double()
    net.load_state_dict(out.state_dict)
    net.eval()
    va = task.evals["val"]
    xs = (x[va] - np.asarray(out.scaler["mean"])) / np.asarray(out.scaler["scale"])
    pred = net(torch.tensor(xs)).argmax(1).numpy()
    assert out.metrics["val_acc"] == pytest.approx(accuracy_score(y[va], pred), abs=1e-12)
    assert math.isfinite(out.metrics["val_loss"])


def test_a_task_that_raises_fails_alone_and_its_stack_mates_are_retried(digits):
    x, y, meta, folds = digits
    tasks = make_tasks(folds, MLP, GRID[:2], epochs=2, early=False)  # 4 tasks, one stack
    bad = tasks[2]
    bad.train = np.append(bad.train, len(y) + 5)  # a row that does not exist
    outs = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    assert [o.status for o in outs] == ["ok", "ok", "failed", "ok"]
    assert "IndexError" in outs[2].error
    alone = engine.train([tasks[0]], x, y, meta, accelerator="cpu", precision=64)[0]
    assert_same(outs[0], alone)


def test_inner_split_too_small_to_stratify_is_not_stratified():
    """15 rows of 3 classes, 10 % inner: 2 inner rows cannot hold every class, so the
    split is plain (seeded) rather than an error (a learning curve's smallest subset)."""
    from foldwise.engine.task import prepare

    y = np.repeat([0, 1, 2], 5)
    x = np.random.default_rng(0).normal(size=(15, 4))
    task = engine.Task(
        key="t", model={"name": "mlp", "hidden": 4, "depth": 1, "dropout": 0.0},
        hyper=engine.Hyper(lr=0.01, weight_decay=0.0, dropout=0.0, max_epochs=2,
                           early_stopping=True, inner_fraction=0.1, patience=1),
        batch_size=4, seed=0, train=np.arange(15),
    )  # fmt: skip
    p = prepare(task, x, y)
    assert len(p.inner) == 2 and len(p.fit) == 13
    assert set(p.inner.tolist()).isdisjoint(p.fit.tolist())


# ------------------------------------------------------------------ regression
@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    meta = Meta("diabetes", len(y), 10, [], [f"x{i}" for i in range(10)], None,
                task="regression")  # fmt: skip
    folds = list(KFold(2, shuffle=True, random_state=1).split(x))
    return x.astype(np.float64), y.astype(np.float64), meta, folds


@pytest.mark.parametrize("early", [True, False], ids=["early_stopping", "fixed_epochs"])
def test_regression_stack_equals_independent_reference_in_float64(diabetes, early):
    x, y, meta, folds = diabetes
    tasks = make_tasks(folds, MLP, GRID, early=early, epochs=5 if early else 3)
    outs = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    for task, out in zip(tasks, outs, strict=True):
        assert set(out.metrics) == {f"{s}_{k}" for s in ("train", "val")
                                    for k in ("loss", "mse", "mae", "r2")}  # fmt: skip
        ref = reference_fit(task, x, y, meta)
        # MSE in the target's units (~3000): compare relative to its size
        assert out.history.keys() == ref.history.keys()
        for k in out.history:
            np.testing.assert_allclose(out.history[k], ref.history[k], rtol=1e-9, atol=1e-9,
                                       err_msg=k)  # fmt: skip
        for k in out.metrics:
            assert out.metrics[k] == pytest.approx(ref.metrics[k], rel=1e-9, abs=1e-9), k
        assert (out.best_epoch, out.epochs_trained) == (ref.best_epoch, ref.epochs_trained)


def test_regression_predictions_and_scaler_are_in_the_targets_units(diabetes):
    x, y, meta, folds = diabetes
    task = make_tasks(folds[:1], MLP, GRID[:1], epochs=4)[0]
    task.predict = ("val",)
    out = engine.train([task], x, y, meta, accelerator="cpu", precision=64)[0]
    pred = np.asarray(out.predictions["val"]["pred"])
    yv = y[folds[0][1]]
    assert out.metrics["val_r2"] == pytest.approx(r2_score(yv, pred), abs=1e-5)
    assert out.metrics["val_mae"] == pytest.approx(mean_absolute_error(yv, pred), rel=1e-5)
    # predictions are stored to 7 significant digits (float32 precision)
    losses = out.predictions["val"]["loss"]
    np.testing.assert_allclose(losses, (pred - yv) ** 2, rtol=1e-5, atol=1e-2)
    prep = engine.task.prepare(task, x, y, regression=True)
    assert out.scaler["y_mean"] == pytest.approx(y[prep.fit].mean())
    assert out.scaler["y_scale"] == pytest.approx(y[prep.fit].std())


def test_batched_regression_metrics_equal_scikit_learn():
    gen = torch.Generator().manual_seed(0)
    m, b = 3, 40
    pred = torch.randn(m, b, generator=gen, dtype=torch.float64) * 5
    y = torch.randn(m, b, generator=gen, dtype=torch.float64) * 5 + 1
    w = (torch.rand(m, b, generator=gen) > 0.3).double()
    counts = SquaredCounts.zeros(m, torch.device("cpu"))
    for s in (slice(0, 15), slice(15, b)):  # accumulated over chunks
        counts.add((pred[:, s] - y[:, s]) ** 2, pred[:, s], y[:, s], w[:, s])
    got = counts.compute()
    for i in range(m):
        keep = w[i].bool().numpy()
        yt, yp = y[i].numpy()[keep], pred[i].numpy()[keep]
        assert got["mse"][i] == pytest.approx(mean_squared_error(yt, yp), rel=1e-12)
        assert got["loss"][i] == got["mse"][i]
        assert got["mae"][i] == pytest.approx(mean_absolute_error(yt, yp), rel=1e-12)
        assert got["r2"][i] == pytest.approx(r2_score(yt, yp), rel=1e-9)


# ------------------------------------------------------------------ boosting's inputs
def test_row_weights_and_targets_equal_the_reference(digits, diabetes):
    """AdaBoost's sample weights and gradient boosting's residual targets: each model
    its own, in one stack with an ordinary model, as the reference loop computes them."""
    import dataclasses

    rng = np.random.default_rng(0)
    for x, y, meta, folds in (digits, diabetes):
        plain = make_tasks(folds, MLP, GRID[:2], epochs=3, early=False)
        w = rng.uniform(0.1, 3.0, len(y))
        tasks = [dataclasses.replace(plain[0], key="weighted", weights=w), plain[1]]
        if meta.regression:
            resid = y - rng.normal(y.mean(), 20, len(y))
            tasks.append(dataclasses.replace(plain[2], key="residuals", targets=resid,
                                             weights=w))  # fmt: skip
        outs = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
        for task, out in zip(tasks, outs, strict=True):
            ref = reference_fit(task, x, y, meta)
            for k in out.metrics:
                assert out.metrics[k] == pytest.approx(ref.metrics[k], rel=1e-9, abs=1e-9), k
        # the weights really change the fit
        unweighted = engine.train(plain[:1], x, y, meta, accelerator="cpu", precision=64)[0]
        assert unweighted.metrics["train_loss"] != outs[0].metrics["train_loss"]
