"""The sweep's time estimate: its model of a stack's time, and the epochs it assumes.

Its agreement with a measured sweep is a bound in tests/test_schemes_e2e.py and a table
in benchmarks/bench_estimate.py (docs/schemes.md); here, the arithmetic it rests on.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foldwise import engine
from foldwise.engine.estimate import Probe, Timing, probe
from foldwise.results import task_name
from foldwise.sweep.estimate import epochs_key, record_epochs, stack_epochs


def simulated(epochs: list[int], steps: int, step, end, fit: float, setup: float) -> float:
    """A stack trained epoch by epoch: every epoch, each step and the epoch's end cost
    what they cost with the models still training (those whose epochs are not done)."""
    total = fit + len(epochs) * setup
    for k in range(1, max(epochs) + 1):
        active = sum(e >= k for e in epochs)
        total += steps * step(active) + end(active)
    return total


@settings(max_examples=200, deadline=None)
@given(
    epochs=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    probed=st.integers(2, 40),
    steps=st.integers(1, 50),
    costs=st.tuples(*[st.floats(0, 0.01)] * 4),
    fit=st.floats(0, 1),
    setup=st.floats(0, 0.01),
)
def test_a_stack_trains_until_its_longest_model_stops(epochs, probed, steps, costs, fit, setup):
    """Models that stop early leave the stack, but its per-step cost (Python, Lightning,
    kernel launches) is paid until the last one stops: the closed form, from a probe at
    two stack sizes, equals the epoch-by-epoch sum when a step's cost is linear in the
    models training. (Charging the mean epochs only read 0.55-0.8× on 5-fold digits.)"""
    a, b, c, d = costs  # per step, per model-step, per epoch end, per model's epoch end

    def timing(n: int) -> Timing:
        return Timing(n, a + b * n, c + d * n, setup, fit)

    p = Probe(timing(probed), timing(1))
    want = simulated(epochs, steps, lambda m: a + b * m, lambda m: c + d * m, fit, setup)
    got = p.stack_seconds([float(e) for e in epochs], float(steps), float(max(epochs)))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_a_stack_of_one_is_all_per_stack_cost():
    t = Timing(1, 0.002, 0.01, 0.005, 0.1)
    assert Probe(t, t).stack_seconds([7.0], 10.0, 7.0) == pytest.approx(
        0.1 + 0.005 + 7 * (10 * 0.002 + 0.01)
    )


def test_noise_that_makes_the_larger_stack_read_faster_costs_nothing_per_model():
    """A burst of other work during the stack of one can make it read slower than the
    whole stack; the per-model part is then 0, never negative."""
    p = Probe(Timing(10, 0.002, 0.004, 0, 0), Timing(1, 0.003, 0.005, 0, 0))
    assert p.stack_seconds([5.0] * 10, 4.0, 5.0) == pytest.approx(5 * (4 * 0.002 + 0.004))


def test_a_stack_that_read_slower_than_its_models_one_at_a_time_is_read_as_that():
    """A burst of other work over the whole stack's probe (its step read 100× a stack of
    one's, the estimate 19× the measured time): stacking is never slower than training
    the models one at a time, so that is the most the stack is charged."""
    one = Timing(1, 0.001, 0.002, 0, 0)
    p = Probe(Timing(10, 0.262, 0.5, 0, 0), one)
    alone = Probe(one, one).stack_seconds([5.0], 4.0, 5.0)
    assert p.stack_seconds([5.0] * 10, 4.0, 5.0) == pytest.approx(10 * alone)


def task(cfg_hash: str, fold: int, *, max_epochs: int = 40, early: bool = True) -> engine.Task:
    hyper = engine.Hyper(1e-2, 0.0, 0.0, max_epochs, early, 0.2, 5)
    model = {"name": "mlp", "hidden": 4, "depth": 1, "dropout": 0.0}
    return engine.Task(task_name(cfg_hash, fold), model, hyper, 16, fold, np.arange(50))


def test_earlier_fits_count_on_the_same_rows_only(tmp_path):
    """Epoch counts are remembered per (dev rows, configuration): a configuration that
    stopped at epoch 12 on iris says nothing of digits (max_epochs there, a bound)."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")

    class Layout:
        root = tmp_path

    fits = [{"status": "ok", "epochs_trained": e} for e in (8, 12, 10)]
    record_epochs(Layout, {"aaa": [*fits, None], "bbb": [{"status": "failed"}]}, "iris")
    from foldwise.files import read_json
    from foldwise.sweep.estimate import epochs_index

    known = read_json(epochs_index(tmp_path))
    assert known == {epochs_key("iris", "aaa"): {"mean": 10.0, "max": 12, "n": 3}}
    stack = [task("aaa", 0), task("aaa", 1), task("ccc", 0, max_epochs=30)]
    assert stack_epochs(stack, known, "iris") == ([10.0, 10.0, 30], 30, 2, True)
    assert stack_epochs(stack[:2], known, "iris") == ([10.0, 10.0], 12, 2, False)
    assert stack_epochs(stack[:2], known, "digits") == ([40, 40], 40, 0, True)
    # without early stopping every model trains max_epochs: exact, not a bound
    fixed = [task("aaa", 0, early=False)]
    assert stack_epochs(fixed, known, "iris") == ([40], 40, 0, False)


def test_the_probe_times_the_stack_and_a_stack_of_one():
    from test_stack_property import DATA

    x, y, meta = DATA["classification"]
    hyper = engine.Hyper(1e-2, 0.0, 0.2, 3, False, 0.25, 1)
    rows = np.arange(100)
    tasks = [engine.Task(f"t{s}", {"name": "mlp", "hidden": 4, "depth": 1, "dropout": 0.2},
                         hyper, 16, s, rows) for s in range(3)]  # fmt: skip
    got = probe(tasks, x, y, meta, epochs=3)
    assert (got.full.models, got.one.models) == (3, 1)
    for t in (got.full, got.one):
        assert t.step_seconds > 0 and t.epoch_end_seconds > 0 and t.fit_seconds >= 0
