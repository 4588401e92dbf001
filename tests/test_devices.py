"""Several CUDA devices (``engine.devices``), tested without one: the device count is
mocked and the placement seam (``engine._placement``) maps ``cuda:k`` to the CPU, so every
device worker thread trains for real, on the CPU, in float64.

Checked: each stack goes to exactly one device, as the cost-balanced spread says; every
task's outcome equals the single-device run's whatever stacks and devices it lands on
(a property over random heterogeneous tasks); a stack that fails on one device is split
and retried there as on one device; ``on_done``/``on_epoch`` run on the calling thread;
a device list the machine cannot honour is refused before any work, naming the fix.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import test_stack_property as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foldwise import engine
from foldwise.engine.plan import spread, stack_cost
from foldwise.errors import FoldwiseError

N_DEVICES = 4
# Lightning sees the mocked CUDA and notes it is unused
pytestmark = pytest.mark.filterwarnings("ignore:GPU available but not used")


@pytest.fixture
def gpus(monkeypatch):
    """Four visible "GPUs"; device k's worker trains on the CPU. Returns {stack task keys:
    the worker thread that built it}."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: N_DEVICES)
    placed: dict[int | None, str] = {}

    def placement(index, accelerator):
        assert accelerator == "gpu"
        placed[index] = threading.current_thread().name
        return torch.device("cpu"), "cpu"

    monkeypatch.setattr(engine, "_placement", placement)
    built: dict[tuple[str, ...], str] = {}
    build = engine.build_stack

    def recording(tasks, *args, **kwargs):
        built[tuple(t.key for t in tasks)] = threading.current_thread().name
        return build(tasks, *args, **kwargs)

    monkeypatch.setattr(engine, "build_stack", recording)
    return built


def _digits_tasks(n: int, *, epochs: int = 2) -> list[engine.Task]:
    _, y, _ = sp.DATA["classification"]
    rng = np.random.default_rng(7)
    tasks = []
    for i in range(n):
        rows = np.sort(rng.choice(len(y), 80, replace=False))
        held = np.setdiff1d(np.arange(len(y)), rows)[:30]
        hidden = (4, 8)[i % 2]  # two architectures
        tasks.append(
            engine.Task(
                key=f"d{i}", model={"name": "mlp", "hidden": hidden, "depth": 1, "dropout": 0.2},
                hyper=engine.Hyper(0.01 * (1 + i), 0.0, 0.2, epochs, bool(i % 3), 0.25, 1),
                batch_size=16, seed=100 + i, train=rows, evals={"val": held},
            )
        )  # fmt: skip
    return tasks


def test_each_stack_trains_on_exactly_one_device_as_the_cost_balanced_spread_says(gpus):
    x, y, meta = sp.DATA["classification"]
    tasks = _digits_tasks(10)
    stacks = engine.plan(tasks, meta, max_models=2)
    main = threading.current_thread()
    seen = []

    def done(task, outcome):
        seen.append((task.key, threading.current_thread() is main))

    epochs = []
    outs = engine.train(
        tasks, x, y, meta, accelerator="gpu", precision=64, stacks=stacks, devices="auto",
        on_done=done, on_epoch=lambda n, info: epochs.append(threading.current_thread() is main),
    )  # fmt: skip
    # every stack built once, by one device's worker; the devices are those spread() chose
    sizes = engine.footprints(tasks, meta)
    costs = [stack_cost([tasks[i] for i in s], sizes) for s in stacks]
    share = spread(costs, N_DEVICES)
    assert sorted(i for s in share for i in s) == list(range(len(stacks)))
    for device, mine in enumerate(share):
        for s in mine:
            assert gpus[tuple(tasks[i].key for i in stacks[s])] == f"foldwise-cuda:{device}"
    assert len(gpus) == len(stacks)
    # callbacks on the calling thread, once per task
    assert sorted(k for k, _ in seen) == sorted(t.key for t in tasks)
    assert all(on_main for _, on_main in seen) and epochs and all(epochs)
    one = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    for t, a, b in zip(tasks, outs, one, strict=True):
        sp._assert_same(a, b, t.key)


@st.composite
def mixed(draw):
    """Tasks of two or three random heterogeneous stacks (test_stack_property's), of one
    kind of data, with unique keys, and a stack cap that splits them differently."""
    groups = [draw(sp.stacks()) for _ in range(draw(st.integers(2, 3)))]
    kind = groups[0][0]
    tasks = []
    for g, (k, ts) in enumerate(groups):
        if k != kind:
            continue
        for t in ts:
            t.key = f"g{g}-{t.key}"
            tasks.append(t)
    return kind, tasks, draw(st.sampled_from([None, 1, 2, 3])), draw(st.integers(2, N_DEVICES))


@settings(
    max_examples=5,  # each trains its tasks twice: ~2 s
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(drawn=mixed())
def test_a_models_result_never_depends_on_its_device(gpus, drawn):
    kind, tasks, cap, n = drawn
    x, y, meta = sp.DATA[kind]
    apart = engine.train(tasks, x, y, meta, accelerator="gpu", precision=64, max_models=cap,
                          devices=n)  # fmt: skip
    alone = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    for task, a, b in zip(tasks, apart, alone, strict=True):
        sp._assert_same(a, b, f"{kind} {task.model} cap={cap} devices={n}")


def test_a_failing_stack_is_split_and_retried_on_its_device(gpus):
    x, y, meta = sp.DATA["classification"]
    tasks = _digits_tasks(8)
    bad = tasks[2]
    bad.train = np.append(bad.train, len(y) + 5)  # a row that does not exist: IndexError
    outs = engine.train(tasks, x, y, meta, accelerator="gpu", precision=64, devices=[1, 3])
    assert [o.status for o in outs] == ["ok"] * 2 + ["failed"] + ["ok"] * 5
    assert "IndexError" in outs[2].error
    # the halves of the failed stack were built by the device worker that had it
    first = next(k for k in gpus if bad.key in k)
    retried = [k for k in gpus if set(k) < set(first)]
    assert retried and {gpus[k] for k in retried} == {gpus[first]}
    assert set(gpus.values()) <= {"foldwise-cuda:1", "foldwise-cuda:3"}
    good = [t for t in tasks if t is not bad]
    one = engine.train(good, x, y, meta, accelerator="cpu", precision=64)
    for t, b in zip(good, one, strict=True):
        sp._assert_same(outs[tasks.index(t)], b, t.key)


@pytest.mark.parametrize(
    ("devices", "said"),
    [
        ([0, 5], "device(s) [5] do not exist; 4 CUDA device(s) are visible"),
        (6, "device(s) [4, 5] do not exist"),
        ([1, 1], "names a device twice"),
        (0, "at least one device"),
        ("two", "must be auto, a number of devices or a list"),
        ([], "a list of CUDA device indices"),
    ],
)
def test_a_device_list_the_machine_lacks_is_refused_before_any_work(
    gpus, monkeypatch, devices, said
):
    x, y, meta = sp.DATA["classification"]

    def no_work(*_a, **_k):
        raise AssertionError("work started")

    monkeypatch.setattr(engine, "footprints", no_work)
    with pytest.raises(FoldwiseError, match=r"(?s)Fix: .*engine\.devices") as err:
        engine.train(_digits_tasks(2), x, y, meta, accelerator="gpu", devices=devices)
    assert said in str(err.value) and not gpus


def test_gpus_named_for_a_cpu_trainer_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        FoldwiseError, match=r"(?s)trainer runs on cpu.*Fix: .*engine\.devices=auto"
    ):
        engine.resolve_devices([0, 1], "auto")
    assert engine.resolve_devices("auto", "auto") is None  # auto on a CPU: the CPU
    assert engine.resolve_devices([0], "cpu") is None


def test_resolve_devices_reads_auto_counts_and_lists(gpus):
    assert engine.resolve_devices("auto", "gpu") == [0, 1, 2, 3]
    assert engine.resolve_devices(2, "auto") == [0, 1]
    assert engine.resolve_devices([3, 1], "gpu") == [3, 1]
    assert engine.resolve_devices(None, "gpu") is None  # the process's own device


@pytest.mark.parametrize("bad", [0, -1, "all", [0, 0], [], [0, -2], True, 1.5])
def test_params_refuse_a_malformed_device_setting(bad):
    from foldwise.params import _check_devices

    with pytest.raises(FoldwiseError, match=r"engine\.devices must be auto"):
        _check_devices(bad)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    costs=st.lists(st.floats(0.1, 100.0, allow_nan=False), min_size=1, max_size=7),
    n=st.integers(1, 3),
)
def test_spread_places_each_stack_once_within_a_third_of_the_best_balance(costs, n):
    share = spread(costs, n)
    assert sorted(i for s in share for i in s) == list(range(len(costs)))
    assert all(s == sorted(s) for s in share)  # each device keeps the plan's order
    worst = max(sum(costs[i] for i in s) for s in share)
    best = min(  # every assignment, by brute force
        max(sum(c for c, d in zip(costs, where, strict=True) if d == k) for k in range(n))
        for where in itertools.product(range(n), repeat=len(costs))
    )
    assert worst <= (4 / 3 - 1 / (3 * n)) * best + 1e-9  # Graham's bound for this greedy
