"""Optimizers: Adam and SGD stacked (torch's arithmetic, model by model), any
torch optimizer by ``optim._target_`` (one model at a time), and an ``optim.name`` that
foldwise does not train refused instead of silently training Adam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_own_model import _digits

from conftest import tiny_params
from foldwise import engine
from foldwise import params as P
from foldwise.engine import Hyper, Task
from foldwise.engine.optim import BatchedAdam, BatchedSGD, kind
from foldwise.errors import FoldwiseError


def _same_as_torch(batched, reference, masks: list[list[bool]]) -> None:
    """Step a batched optimizer over 3 stacked models (``batched(params, lrs, wds)``) and
    ``reference(params, lr, wd)`` (torch's own) over each model alone, the models sitting
    out the steps ``masks`` says (inactive: their state must not move); the parameters
    must stay equal. Each model has tensors of three ranks (per-model scalars broadcast
    against each)."""
    gen = torch.Generator().manual_seed(0)
    lrs, wds = [0.1, 0.01, 0.3], [0.0, 0.1, 0.01]
    shapes = [(3, 4, 2), (3, 5), (3, 2, 3, 2)]
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    stacked = [torch.nn.Parameter(t.clone()) for t in init]
    opt = batched(stacked, lrs, wds)
    singles = [[torch.nn.Parameter(t[i].clone()) for t in init] for i in range(3)]
    refs = [reference(p, lr, wd) for p, lr, wd in zip(singles, lrs, wds, strict=True)]
    for mask in masks:
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        for p, g in zip(stacked, grads, strict=True):
            p.grad = g.clone()
        opt.step(torch.tensor(mask))
        for i, (ps, o) in enumerate(zip(singles, refs, strict=True)):
            if mask[i]:
                for p, g in zip(ps, grads, strict=True):
                    p.grad = g[i].clone()
                o.step()
    for i in range(3):
        for p, q in zip(stacked, singles[i], strict=True):
            torch.testing.assert_close(p.data[i], q.data, rtol=0, atol=1e-12)


MASKS = st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=6)


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(masks=MASKS, foreach=st.booleans())
def test_batched_adam_equals_torch_adam_model_by_model(masks, foreach):
    """Both update paths: tensor by tensor (the CPU's) and torch._foreach (CUDA's)."""
    _same_as_torch(lambda ps, lrs, wds: BatchedAdam(ps, lrs, wds, foreach=foreach),
                   lambda ps, lr, wd: torch.optim.Adam(ps, lr=lr, weight_decay=wd),
                   [[True] * 3, *masks])  # fmt: skip


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    dampening=st.sampled_from([0.0, 0.3]),
    nesterov=st.booleans(),
    masks=MASKS,
)
def test_batched_sgd_equals_torch_sgd_model_by_model(momentum, dampening, nesterov, masks):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False  # torch.optim.SGD refuses these
    kw = {"momentum": momentum, "dampening": dampening, "nesterov": nesterov}
    _same_as_torch(
        lambda ps, lrs, wds: BatchedSGD(ps, lrs, wds, **kw),
        lambda ps, lr, wd: torch.optim.SGD(ps, lr=lr, weight_decay=wd, **kw),
        masks,
    )


def _tasks(optim: dict, n: int) -> list[Task]:
    rng = np.random.default_rng(3)
    out = []
    for i, (lr, rows) in enumerate([(0.01, 120), (0.05, 40), (0.003, 90)]):
        train = np.sort(rng.choice(n, rows, replace=False))
        out.append(Task(
            key=f"t{i}", model={"name": "mlp", "hidden": 8, "depth": 1, "dropout": 0.1},
            hyper=Hyper(lr, 1e-3 * i, 0.1, 4, i != 1, 0.25, 2), batch_size=16, seed=7 + i,
            train=train, evals={"val": np.setdiff1d(np.arange(n), train)[:30]}, optim=optim,
        ))  # fmt: skip
    return out


@pytest.mark.parametrize(
    "optim",
    [{"name": "sgd", "momentum": 0.9, "nesterov": True}, {"name": "sgd", "momentum": 0.0},
     {"_target_": "torch.optim.SGD", "momentum": 0.5}],
    ids=["sgd-nesterov", "sgd-plain", "torch-sgd-target"],
)  # fmt: skip
def test_sgd_stacks_and_each_model_trains_as_alone(optim):
    x, y, meta = _digits()
    tasks = _tasks(optim, len(y))
    assert engine.plan(tasks, meta) == [[0, 1, 2]]
    sizes = set()
    together = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64,
                            on_epoch=lambda _n, info: sizes.add(info.n_models))  # fmt: skip
    assert sizes == {3}
    alone = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64, max_models=1)
    for a, b in zip(together, alone, strict=True):
        assert a.status == b.status == "ok"
        for k in a.history:
            np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-9, atol=1e-9)
    adam = engine.train(_tasks({}, len(y)), x, y, meta, accelerator="cpu", precision=64)
    assert adam[0].history["train_loss"] != together[0].history["train_loss"]  # not Adam


def test_any_torch_optimizer_trains_one_model_at_a_time_with_its_own_arithmetic(capsys):
    x, y, meta = _digits()
    optim = {"_target_": "torch.optim.AdamW", "betas": [0.9, 0.95]}
    tasks = _tasks(optim, len(y))
    assert kind(optim) == ("torch.optim.AdamW", {"betas": [0.9, 0.95]})
    assert engine.plan(tasks, meta) == [[0], [1], [2]]
    out = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    assert all(o.status == "ok" for o in out)
    said = capsys.readouterr().out
    assert said.count("optimizer torch.optim.AdamW is not stacked") == 1


@pytest.mark.parametrize(
    ("extra", "said", "fix"),
    [
        (["optim.name=rmsprop"], "unknown optim.name", "adam, sgd"),
        (["optim.name=adam", "+optim.momentum=0.9"], "optim.momentum is read by optim=sgd only",
         "-S optim=sgd"),
        (["optim=sgd", "optim.momentum=1.5"], "optim.momentum must be in [0, 1)", "0.9"),
        (["optim=sgd", "optim.momentum=0", "optim.nesterov=true"], "nesterov needs a momentum",
         "optim.nesterov=false"),
        (["optim=torch"], "optim=torch needs optim._target_", "torch.optim.AdamW"),
        (["optim=torch", "optim._target_=torch.optim.AdamX"], "has no 'AdamX'",
         "did you mean torch.optim.Adam"),
        (["optim=torch", "optim._target_=torch.nn.Linear"], "not a torch.optim.Optimizer",
         "torch.optim.AdamW"),
        (["optim=torch", "optim._target_=torch.optim.AdamW", "+optim.beta=[0.9,0.95]"],
         "optim.beta is not an argument of torch.optim.AdamW", "did you mean optim.betas"),
        (["+optim._target_=torch.optim.AdamW"], "added on top of optim=adam", "-S optim=torch"),
    ],
    ids=["unknown-name", "momentum-with-adam", "momentum-range", "nesterov-no-momentum",
         "no-target", "misspelt-class", "not-an-optimizer", "misspelt-kwarg", "on-top"],
)  # fmt: skip
def test_optimizer_settings_are_refused_naming_the_fix(extra, said, fix):
    with pytest.raises(FoldwiseError) as err:
        P.validate(tiny_params(extra))
    assert said in str(err.value) and fix in str(err.value.fix)


def test_optimizer_settings_that_train():
    P.validate(tiny_params(["optim=sgd", "sweep.grid.optim.lr=[0.01,0.1]"]))
    adamw = ["optim=torch", "optim._target_=torch.optim.AdamW", "+optim.betas=[0.9,0.95]"]
    P.validate(tiny_params([*adamw, "+sweep.grid.optim.eps=[1e-8,1e-6]"]))


# ------------------------------------------------------------------ lr schedulers
LR = "torch.optim.lr_scheduler."
SCHEDULES = {
    "step-epoch": {"_target_": LR + "StepLR", "step_size": 1, "gamma": 0.5},
    "cosine-step": {"_target_": LR + "CosineAnnealingLR", "interval": "step"},
    "plateau": {"_target_": LR + "ReduceLROnPlateau", "factor": 0.5, "patience": 0,
                "threshold": 0.5},
    "onecycle": {"_target_": LR + "OneCycleLR", "max_lr": 0.05, "interval": "step"},
}  # fmt: skip


@pytest.mark.parametrize("sched", list(SCHEDULES.values()), ids=list(SCHEDULES))
def test_a_scheduled_stack_trains_as_torchs_optimizer_with_the_scheduler_on_it(sched, capsys):
    """Stacked: BatchedAdam, each model's scheduler on a stand-in optimizer, its lr copied.
    Reference: torch.optim.Adam itself (amsgrad=False makes it unstacked), the scheduler
    attached to it, one model at a time. Every per-epoch number must agree."""
    x, y, meta = _digits()
    stacked = _tasks({}, len(y))
    torch_own = _tasks({"_target_": "torch.optim.Adam", "amsgrad": False}, len(y))
    for t in (*stacked, *torch_own):
        t.scheduler = sched
    moves_momentum = "OneCycleLR" in sched["_target_"]
    assert engine.plan(stacked, meta) == ([[0], [1], [2]] if moves_momentum else [[0, 1, 2]])
    a = engine.train(stacked, x, y, meta, accelerator="cpu", precision=64)
    b = engine.train(torch_own, x, y, meta, accelerator="cpu", precision=64)
    for one, other in zip(a, b, strict=True):
        assert one.status == other.status == "ok"
        assert one.history.keys() == other.history.keys() and "lr" in one.history
        for k in one.history:
            np.testing.assert_allclose(one.history[k], other.history[k], rtol=1e-9, atol=1e-12)
    lrs = [o.history["lr"] for o in a]
    if "StepLR" in sched["_target_"]:  # the closed form: lr × 0.5 per epoch
        for t, lr in zip(stacked, lrs, strict=True):
            np.testing.assert_allclose(lr, [t.hyper.lr * 0.5**e for e in range(len(lr))])
    if "Plateau" in sched["_target_"]:  # a 50 % improvement is rarely met: it must cut
        assert any(lr[-1] < lr[0] for lr in lrs)
    said = capsys.readouterr().out
    assert ("moves the momentum too" in said) == moves_momentum
    constant = engine.train(_tasks({}, len(y)), x, y, meta, accelerator="cpu", precision=64)
    assert "lr" not in constant[0].history
    assert constant[0].history["train_loss"] != a[0].history["train_loss"]


@pytest.mark.parametrize(
    ("extra", "said", "fix"),
    [
        (["scheduler=torch"], "scheduler=torch needs scheduler._target_", "ExponentialLR"),
        (["scheduler=torch", f"scheduler._target_={LR}StepLr"], "has no 'StepLr'",
         f"did you mean {LR}StepLR"),
        (["scheduler=torch", "scheduler._target_=torch.optim.Adam"],
         "is not a torch lr scheduler class", "CosineAnnealingLR"),
        (["scheduler=step", "+scheduler.gama=0.5"], "scheduler.gama is not an argument",
         "did you mean scheduler.gamma"),
        (["scheduler=step", "scheduler.step_size=0"],
         "StepLR refuses its arguments (scheduler.step_size=0, scheduler.gamma=0.5)",
         "scheduler.* values"),
        (["+scheduler.T_max=5"], "none is selected", "-S scheduler=cosine"),
        (["scheduler=cosine", "scheduler.interval=batch"], "epoch or step",
         "scheduler.interval=epoch"),
        (["scheduler=plateau", "scheduler.monitor=val_loss"], "validation fold must not",
         "inner_loss"),
        (["scheduler=plateau", "scheduler.interval=step"], "cannot step every batch",
         "interval=epoch"),
        (["scheduler=step", "+sweep.grid.scheduler.step_size=[5,0]"], "ZeroDivisionError",
         "scheduler.* values"),
        (["scheduler=torch", f"scheduler._target_={LR}ExponentialLR", "+scheduler.gamma=-1"],
         "sets the learning rate to -0.01", "scheduler.* values"),
    ],
    ids=["no-target", "misspelt-class", "not-a-scheduler", "misspelt-kwarg", "bad-value",
         "kwarg-without-scheduler", "interval", "monitor-val", "plateau-per-step",
         "bad-grid-value", "negative-lr"],
)  # fmt: skip
def test_scheduler_settings_are_refused_naming_the_fix(extra, said, fix):
    with pytest.raises(FoldwiseError) as err:
        P.validate(tiny_params(extra))
    assert said in str(err.value) and fix in str(err.value.fix)


@pytest.mark.parametrize("option", ["none", "cosine", "step", "plateau"])
def test_every_scheduler_option_of_conf_validates(option):
    P.validate(tiny_params([f"scheduler={option}"]))


def test_scheduler_settings_that_train_and_what_they_change():
    from foldwise.fitting.configs import config_hash
    from foldwise.fitting.train import make_task

    plain = tiny_params([])
    cosine = tiny_params(["scheduler=cosine", "+sweep.grid.scheduler.eta_min=[0.0,1e-5]"])
    for cfg in (cosine, tiny_params(["scheduler=plateau"]),
                tiny_params(["scheduler=torch", f"scheduler._target_={LR}ExponentialLR",
                             "+scheduler.gamma=0.9", "scheduler.interval=step"])):  # fmt: skip
        P.validate(cfg)
    assert make_task(plain, "k", np.arange(3)).scheduler == {}
    task = make_task(cosine, "k", np.arange(3))
    assert task.scheduler["_target_"] == LR + "CosineAnnealingLR"
    # no scheduler: the job key of every existing result stays; one: a new key
    assert config_hash(plain) == config_hash(tiny_params(["scheduler=none"]))
    assert config_hash(plain) != config_hash(cosine)
