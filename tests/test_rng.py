"""The counter-based generator (foldwise.engine.rng): it computes its specification
(reimplemented in NumPy in tests/reference.py), its uniforms are uniform (KS), draws of
different models, steps and counters are independent (chi-square on pairs, correlation),
and a model's draws never depend on its stack (size, position, stack-mates)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from foldwise import engine
from foldwise.data import Meta
from foldwise.engine import Hyper, Task, rng
from foldwise.engine.stack import DropoutMasks, Stack
from reference import batch_order, spec_bits

SEEDS = st.integers(0, 2**64 - 1)
WORD = st.integers(0, 2**32 - 1)
# Statistical tests run on fixed draws (the same every run): the bar is a p-value that
# a sound generator fails once in 10**4 runs, while a broken one fails by orders of
# magnitude (see the mutations in the report: p < 1e-30).
ALPHA = 1e-4


def _bits(seeds: list[int], words: tuple[int, ...], counters: np.ndarray) -> np.ndarray:
    a, b = rng.keys(rng.split_seeds(seeds), *words)
    c = torch.from_numpy(np.asarray(counters, dtype=np.int32))
    return rng.unsigned(rng.bits(a.view(-1, 1), b.view(-1, 1), c)).numpy()


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    seeds=st.lists(SEEDS, min_size=1, max_size=5),
    words=st.lists(WORD, min_size=1, max_size=4),
    top=st.integers(1, 2**31 - 64),
)
def test_bits_are_the_specification_computed_independently(seeds, words, top):
    """Torch's int32 words (wrapping products and sums, masked shifts) equal the spec in
    NumPy's unsigned integers, for any seed up to 2**64 and counters up to 2**31, for
    each model of a stack."""
    counters = np.r_[np.arange(32), top + np.arange(32)]
    got = _bits(seeds, tuple(words), counters)
    for m, s in enumerate(seeds):
        np.testing.assert_array_equal(got[m], spec_bits(s, tuple(words), counters))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(seeds=st.lists(SEEDS, min_size=2, max_size=6), epoch=st.integers(0, 999))
def test_a_models_draws_do_not_depend_on_its_stack(seeds, epoch):
    """Draws of the whole stack = each model alone = the stack reversed."""
    counters = np.arange(257)
    together = _bits(seeds, (rng.DROPOUT, epoch), counters)
    reverse = _bits(seeds[::-1], (rng.DROPOUT, epoch), counters)[::-1]
    np.testing.assert_array_equal(together, reverse)
    for m, s in enumerate(seeds):
        np.testing.assert_array_equal(together[m], _bits([s], (rng.DROPOUT, epoch), counters)[0])
    lengths = torch.tensor([(s % 40) + 1 for s in seeds])
    orders = rng.orders(rng.split_seeds(seeds), epoch, lengths).numpy()
    for m, (s, n) in enumerate(zip(seeds, lengths.tolist(), strict=True)):
        np.testing.assert_array_equal(orders[m, :n], batch_order(s, epoch, n))
        assert sorted(orders[m, :n]) == list(range(n))  # a permutation, padding after it


def _uniform(seeds, words, counters) -> np.ndarray:
    a, b = rng.keys(rng.split_seeds(seeds), *words)
    c = torch.from_numpy(np.asarray(counters, dtype=np.int32))
    return rng.uniform(a.view(-1, 1), b.view(-1, 1), c).numpy()


def test_uniforms_are_uniform_along_counters_and_across_seeds():
    # one model's 2**17 counters; and counter 0 of 2**14 consecutive seeds (the seeds a
    # sweep gives its folds: seed + k)
    along = _uniform([12345], (rng.DROPOUT, 0, 0, 0), np.arange(2**17))[0]
    across = _uniform(list(range(2**14)), (rng.DROPOUT, 3, 7, 0), [0])[:, 0]
    for u in (along, across):
        assert stats.kstest(u, "uniform").pvalue > ALPHA
    f32 = rng.uniform(*rng.keys(rng.split_seeds([9]), 1), torch.arange(2**16, dtype=torch.int32),
                      torch.float32)  # fmt: skip
    assert f32.dtype == torch.float32 and float(f32.min()) >= 0 and float(f32.max()) < 1
    assert stats.kstest(f32.double().numpy(), "uniform").pvalue > ALPHA


def _pairs_independent(u: np.ndarray, v: np.ndarray) -> None:
    """Chi-square of the 16 × 16 table of (u, v) cells, and their correlation."""
    table = np.histogram2d(u, v, bins=16, range=[[0, 1], [0, 1]])[0]
    assert stats.chi2_contingency(table).pvalue > ALPHA
    assert stats.pearsonr(u, v).pvalue > ALPHA


def test_draws_are_independent_across_models_steps_and_counters():
    n = 2**15
    counters = np.arange(n)
    # neighbouring seeds (folds of one configuration), seeds 2**32 apart (the high word)
    for pair in ([7, 8], [7, 7 + 2**32]):
        u = _uniform(pair, (rng.DROPOUT, 0, 0, 0), counters)
        _pairs_independent(u[0], u[1])
    # one model, consecutive steps, consecutive epochs, consecutive layers
    for w0, w1 in [((0, 5, 0), (0, 6, 0)), ((0, 5, 0), (1, 5, 0)), ((0, 5, 0), (0, 5, 1))]:
        u0 = _uniform([42], (rng.DROPOUT, *w0), counters)[0]
        u1 = _uniform([42], (rng.DROPOUT, *w1), counters)[0]
        _pairs_independent(u0, u1)
    # dropout and batch order of one model and epoch: different streams
    _pairs_independent(
        _uniform([42], (rng.DROPOUT, 0), counters)[0], _uniform([42], (rng.ORDER, 0), counters)[0]
    )
    # neighbouring counters of one draw (serial pairs)
    u = _uniform([3], (rng.DROPOUT, 0, 0, 0), np.arange(2 * n))[0]
    _pairs_independent(u[0::2], u[1::2])


def _stack(rates: list[float]) -> Stack:
    meta = Meta("t", 50, 6, ["a", "b"], [f"x{i}" for i in range(6)], None)
    net = lambda p: engine._build(  # noqa: E731
        Task("k", {"name": "mlp", "hidden": 16, "depth": 2, "dropout": p},
             Hyper(0.01, 0, p, 1, False, 0.2, 1), 8, 0, np.arange(4)), meta)  # fmt: skip
    return Stack([net(p) for p in rates], (6,))


def test_dropout_masks_are_the_spec_thresholded_and_keep_1_minus_p():
    rates, seeds, batch = [0.0, 0.1, 0.5, 0.5], [3, 4, 5, 2**40 + 5], 64
    masks = DropoutMasks(_stack(rates), seeds, batch, "cpu", torch.float64)
    kept = {m: [] for m in range(4)}
    for epoch in range(3):
        masks.epoch(epoch, 4)
        for step in range(4):
            out = masks.draw(step)
            for li, mask in enumerate(out.values()):
                for m, (p, s) in enumerate(zip(rates, seeds, strict=True)):
                    units = spec_bits(s, (rng.DROPOUT, epoch, step, li), np.arange(batch * 16))
                    want = units < round((1 - p) * 2**32)
                    np.testing.assert_array_equal(mask[m].numpy().ravel() > 0, want)
                    assert set(np.unique(mask[m].numpy())) <= {0.0, 1 / (1 - p)}
                    kept[m].append(want)
    assert all(np.concatenate(kept[0]))  # p = 0: every unit
    for m in (1, 2, 3):  # the keep rate is 1 - p (binomial test)
        k = np.concatenate(kept[m])
        assert stats.binomtest(int(k.sum()), k.size, 1 - rates[m]).pvalue > ALPHA
    # the two p = 0.5 models (seeds 5 and 2**40 + 5: the same low word) draw differently
    assert not np.array_equal(np.concatenate(kept[2]), np.concatenate(kept[3]))


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1]])
def test_a_models_dropout_masks_do_not_depend_on_its_stack(order):
    rates, seeds = [0.2, 0.5, 0.3], [11, 12, 13]
    alone = {}
    for m in range(3):
        one = DropoutMasks(_stack([rates[m]]), [seeds[m]], 8, "cpu", torch.float32)
        one.epoch(2, 3)
        alone[m] = one.draw(1)
    stack = DropoutMasks(_stack([rates[m] for m in order]), [seeds[m] for m in order], 8, "cpu",
                         torch.float32)  # fmt: skip
    stack.epoch(2, 3)
    got = stack.draw(1)
    for k, m in enumerate(order):
        for name in got:
            assert torch.equal(got[name][k], alone[m][name][0])
