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


def test_the_pace_is_measured_over_the_probe_with_the_epochs_as_trained(tmp_path):
    """A sweep's pace is its measured training time over what the probe predicts with
    each model's epochs as trained (computed here by hand from the stack formula); the
    next estimates of probed architectures scale by the median of the last five; each
    architecture's throughput (its probe × the pace) is kept per dev rows, and the median
    of its last sweeps stands in for the next probe; a sweep with a failed model records
    nothing."""
    from foldwise.results import Session
    from foldwise.sweep.estimate import (
        PACE_SWEEPS,
        pace_of,
        probe_doc,
        read_paces,
        record_pace,
        throughput_of,
    )

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")

    class Layout:
        root = tmp_path

    full, one = Timing(3, 0.004, 0.01, 0.02, 0.3), Timing(1, 0.002, 0.006, 0.01, 0.2)
    est = {
        "seconds": 99.0, "probes": [probe_doc(Probe(full, one))], "probe_keys": ["d:arch"],
        "probe_paced": [True], "tracking_seconds": 0.5, "prepare_seconds": 0.25,
        "stack_probes": [0, 0], "stack_steps": [7.0, 5.0], "stack_members": [[1, 2], [1]],
    }  # fmt: skip
    session = Session({"stacks": [["aaa-fold0", "aaa-fold1"], ["bbb-fold0"]], "estimate": est})
    ok = lambda e: {"status": "ok", "epochs_trained": e}  # noqa: E731
    results = {"aaa": [ok(6), ok(9)], "bbb": [ok(4)]}
    # by hand: per model 0.001 a step (3 models vs 1), the rest per step; likewise the end
    step_model = (0.004 - 0.002) / 2
    step = 0.004 - 3 * step_model
    end_model = (0.01 - 0.006) / 2
    end = 0.01 - 3 * end_model

    def stack(epochs, steps):
        return (0.3 + len(epochs) * 0.02 + steps * (step * max(epochs) + step_model * sum(epochs))
                + end * max(epochs) + end_model * sum(epochs))  # fmt: skip

    # the MLflow and set-up parts (0.5 + 0.25) are not the machine's pace
    hindsight = stack([6, 9, 9], 7.0) + stack([4], 5.0)
    assert record_pace(Layout, session, results, 0.75 + 2 * hindsight, "cpu") == pytest.approx(2)
    paces = read_paces(tmp_path, "cpu")
    assert paces["sweeps"] == [pytest.approx(2.0)] and read_paces(tmp_path, "gpu")["sweeps"] == []
    # the architecture's throughput: twice the probe's time for any stack
    kept = throughput_of(paces["archs"]["d:arch"])
    for epochs, steps in (([6, 9, 9], 7.0), ([3.0], 11.0)):
        assert kept.stack_seconds(epochs, steps, max(epochs)) == pytest.approx(
            2 * stack(epochs, steps)
        )
    results["bbb"] = [{"status": "failed"}]
    assert record_pace(Layout, session, results, 9.0, "cpu") is None
    assert record_pace(Layout, session, {"aaa": results["aaa"], "bbb": [None]}, 9, "cpu") is None
    results["bbb"] = [ok(4)]
    for k in range(1, 8):
        record_pace(Layout, session, results, 0.75 + k * hindsight, "cpu")
    paces = read_paces(tmp_path, "cpu")
    assert (
        paces["sweeps"] == pytest.approx([3, 4, 5, 6, 7])
        and len(paces["archs"]["d:arch"]) == PACE_SWEEPS
    )
    # the median of the last five throughputs (3..7 × the probe): 5 ×
    assert throughput_of(paces["archs"]["d:arch"]).stack_seconds([4.0], 5.0, 4.0) == (
        pytest.approx(5 * stack([4.0], 5.0))
    )
    assert pace_of(paces["sweeps"]) == 4.0  # the median 5, at most PACE_RANGE's 4
    assert pace_of([1.0, 2.0, 3.0]) == 2.0 and pace_of([0.1, 0.2]) == 0.5 and pace_of([]) == 1.0
    assert pace_of([1.0, 1.1, 9.0]) == 1.1  # one slow sweep does not move the median
    # a sweep timed from earlier throughputs adds no machine pace (it is not over a probe)
    est["probe_paced"] = [False]
    record_pace(Layout, session, results, 0.75 + hindsight, "cpu")
    assert read_paces(tmp_path, "cpu")["sweeps"] == pytest.approx([3, 4, 5, 6, 7])


def test_the_line_says_where_the_pace_came_from_and_when_the_machine_is_busy():
    from foldwise.sweep.plan import busy_note, throughput_basis

    probed = {"archs": 2, "archs_from_history": 0, "pace": 1.0, "pace_sweeps": 0}
    assert throughput_basis(probed) == "probed throughput"
    paced = {**probed, "pace": 1.4, "pace_sweeps": 3}
    assert throughput_basis(paced) == (
        "probed throughput × 1.4, this machine's pace in its last 3 sweeps"
    )
    one = {**paced, "pace_sweeps": 1}
    assert throughput_basis(one).endswith("its last sweep")
    mixed = {**paced, "archs_from_history": 1}
    assert throughput_basis(mixed).startswith(
        "throughput these rows trained at in earlier sweeps here for 1 of 2 architectures, "
        "probed throughput × 1.4"
    )
    assert throughput_basis({**probed, "archs_from_history": 2}) == (
        "throughput these rows trained at in earlier sweeps here"
    )
    assert busy_note({"load": 5.2, "cores": 2}) == (
        " · this machine is busy (load 5.2 on 2 cores): expect longer"
    )
    assert busy_note({"load": 1.9, "cores": 2}) == busy_note({"load": None, "cores": 2}) == ""


def test_up_to_is_said_only_of_a_bound_at_a_measured_pace():
    """Every model to max_epochs is an upper bound on the epochs; it is said ("up to")
    only when an earlier sweep here corrected the probe's quiet pace."""
    from foldwise.sweep.estimate import is_bound

    assert not is_bound({"upper_bound": True, "pace_sweeps": 0, "archs_from_history": 0})
    assert is_bound({"upper_bound": True, "pace_sweeps": 2, "archs_from_history": 0})
    assert is_bound({"upper_bound": True, "pace_sweeps": 0, "archs_from_history": 1})
    assert not is_bound({"upper_bound": False, "pace_sweeps": 3, "archs_from_history": 1})
