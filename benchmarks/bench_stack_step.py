"""The stacked step's parts, before and after issue 20 (counter-based randomness, a
_foreach Adam), and W16 training beside a hand-written stacked loop. Prints tables,
asserts nothing.

    .venv/bin/python benchmarks/bench_stack_step.py [--reps 5] [--base DIR] [--compile]

[1] per step: every model's dropout masks — one NumPy PCG64 generator per model (before)
    against the counter-based hash over the stack (foldwise.engine.rng);
[2] per epoch: every model's batch order — torch.randperm per model (before) against
    rng.orders over the stack;
[3] per step: BatchedAdam — one op per parameter tensor per pass (before, copied below)
    against one torch._foreach op per pass; with --compile also torch.compile of it
    (compile time printed apart);
[4] W16 training (80 MLPs, digits, 5 stratified folds of the dev rows, 4 lr × 4 weight
    decays, hidden 128, dropout 0.1, batch 64, 30 epochs, scored on the fold's val rows
    every epoch) in one process: foldwise's engine against a hand-written stacked loop
    (the same arithmetic with no per-model guarantees: one global generator for
    dropout, no Lightning, no early-stopping or scheduler bookkeeping). With ``--base``
    (a ``src/`` folder of another checkout, e.g. from ``git archive``) the engine is also
    timed from there, alternated with this tree's, each in a fresh process. ``syncs/step``:
    the calls per training step that would make the host wait for a CUDA device
    (tests/syncs.py), counted in a separate one-epoch run of the same tasks.

Each line: the median of ``--reps`` alternated repetitions, and the ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from foldwise.engine import rng  # noqa: E402
from foldwise.engine.optim import BatchedAdam, Moving  # noqa: E402


def timed(fns: dict[str, Callable[[], object]], reps: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each function, alternated within each repetition."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(inner):
                f()
            out[k].append((time.perf_counter() - t) / inner)
    return {k: statistics.median(v) for k, v in out.items()}


def line(label: str, times: dict[str, float]) -> None:
    (k0, t0), *rest = times.items()
    parts = [f"{k} {1e3 * t:.2f} ms" for k, t in times.items()]
    ratios = " · ".join(f"{k0} ÷ {k} = {t0 / t:.2f}" for k, t in rest)
    print(f"  {label:<28}{' · '.join(parts)} · {ratios}")


def bench_dropout(reps: int) -> None:
    print("[1] dropout masks per step, every model (float32, p = 0.1)")
    for m, b, h in [(80, 64, 128), (320, 64, 128), (1280, 64, 64)]:
        gens = [np.random.Generator(np.random.PCG64(s)) for s in range(m)]
        buf = torch.ones(m, b, h)
        arr = buf.numpy()

        def before(gens=gens, buf=buf, arr=arr, m=m):
            for i in range(m):
                gens[i].random(out=arr[i], dtype=np.float32)
            return torch.where(buf >= 0.1, 1 / 0.9, 0.0)

        seeds = rng.split_seeds(list(range(m)))
        a, bb = rng.keys(seeds, rng.DROPOUT, 0, torch.arange(8).view(1, -1))
        counters = torch.arange(b * h, dtype=torch.int32).view(b, h)
        work = torch.empty(m, b, h, dtype=torch.int32)
        tmp = torch.empty_like(work)
        thr = rng.threshold(torch.full((m,), 0.1)).view(-1, 1, 1)

        def after(a=a, bb=bb, counters=counters, work=work, tmp=tmp, thr=thr):
            key = a[:, 3].view(-1, 1, 1), bb[:, 3].view(-1, 1, 1)
            x = rng.bits(*key, counters, out=work, tmp=tmp)  # as DropoutMasks.draw
            return torch.where(x.bitwise_xor_(rng.SIGN) <= thr, 1 / 0.9, 0.0)

        line(f"M={m} [{b}×{h}]", timed({"per-model": before, "hash": after}, reps, 20))


def bench_orders(reps: int) -> None:
    print("[2] batch orders per epoch, every model (1,150 fit rows each)")
    for m in (80, 320, 1280):
        gens = [torch.Generator().manual_seed(s) for s in range(m)]
        lengths = torch.full((m,), 1150)
        seeds = rng.split_seeds(list(range(m)))

        def before(gens=gens):
            return [torch.randperm(1150, generator=g) for g in gens]

        def after(seeds=seeds, lengths=lengths):
            return rng.orders(seeds, 3, lengths)

        line(f"M={m}", timed({"randperm": before, "hash": after}, reps, 5))


class LoopAdam(BatchedAdam):
    """BatchedAdam as it was before the _foreach update: each pass, one op per tensor."""

    @torch.no_grad()
    def step(self, active=None, closure=None):  # type: ignore[override]
        idx = None if active is None or bool(active.all()) else active.nonzero().flatten()
        b1, b2 = self.defaults["betas"]
        eps = self.defaults["eps"]
        sel = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))
        steps = sel(self.steps) + 1
        lr, wd = sel(self.lr), sel(self.weight_decay)
        dtype = self.param_groups[0]["params"][0].dtype
        step_size = (lr / (1 - b1**steps)).to(dtype)
        bc2_sqrt = (1 - b2**steps).sqrt().to(dtype)
        any_wd = bool((wd != 0).any())
        wd = wd.to(dtype)
        for p in self.param_groups[0]["params"]:
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            shape = (-1,) + (1,) * (p.dim() - 1)
            param, grad = sel(p), sel(p.grad)
            m, v = sel(state["exp_avg"]), sel(state["exp_avg_sq"])
            if any_wd:
                grad = grad.addcmul(wd.view(shape), param)
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = v.sqrt().div_(bc2_sqrt.view(shape)).add_(eps)
            param.addcdiv_(m * step_size.view(shape), denom, value=-1.0)
            if idx is not None:
                p.index_copy_(0, idx, param)
                state["exp_avg"].index_copy_(0, idx, m)
                state["exp_avg_sq"].index_copy_(0, idx, v)
        if idx is None:
            self.steps += 1
        else:
            self.steps.index_copy_(0, idx, steps)


def bench_adam(reps: int, compile_: bool) -> None:
    print("[3] BatchedAdam step (MLP 64→h→10, per-model lr and weight decay, float32)")
    for m, h, depth in [(80, 128, 1), (80, 128, 3), (1280, 64, 1)]:
        dims = [64] + [h] * depth + [10]
        shapes = [s for a, b in itertools.pairwise(dims) for s in ((m, b, a), (m, b))]
        opts = {}
        for name, cls in (("loop", LoopAdam), ("foreach", BatchedAdam)):
            ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
            for p in ps:
                p.grad = torch.randn(p.shape)
            opts[name] = cls(ps, [1e-3] * m, [1e-4] * m)
        half = torch.arange(m) % 2 == 0
        fns = {k: (lambda o=o: o.step()) for k, o in opts.items()}
        if compile_:
            ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
            for p in ps:
                p.grad = torch.randn(p.shape)
            c = BatchedAdam(ps, [1e-3] * m, [1e-4] * m)
            step = torch.compile(BatchedAdam.step.__wrapped__)  # the undecorated update
            t = time.perf_counter()
            with torch.no_grad():
                step(c)
            print(f"  (torch.compile: first call {time.perf_counter() - t:.1f} s)")
            fns["compiled"] = lambda c=c, step=step: step(c)
        line(f"M={m} depth {depth} all", timed(fns, reps, 20))
        # the engine's optimizer is told the moving models (host and device) by the loop
        moving = Moving.of(half, m)
        part = {"loop": lambda o=opts["loop"], h=half: o.step(h),
                "foreach": lambda o=opts["foreach"], mv=moving: o.step(mv)}  # fmt: skip
        line(f"M={m} depth {depth} half", timed(part, reps, 20))


W16 = """
import json, sys, time
sys.path.insert(0, {src!r})
import numpy as np, torch
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold, train_test_split
from foldwise import engine
from foldwise.data import Meta
from foldwise.engine import Hyper, Task
d = load_digits()
x, y = d.data.astype(np.float32), d.target.astype(np.int64)
dev, _ = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(dev, y[dev]))
meta = Meta("digits", len(y), 64, [str(i) for i in range(10)], [f"x{{i}}" for i in range(64)],
            None)
tasks = [Task(f"{{lr}}-{{wd}}-{{k}}", {{"name": "mlp", "hidden": 128, "depth": 1, "dropout": 0.1}},
              Hyper(lr, wd, 0.1, 30, False, 0.2, 1), 64, 1000 * k + 7,
              np.sort(dev[tr]), {{"val": np.sort(dev[va])}})
         for lr in (0.001, 0.003, 0.01, 0.03) for wd in (0.0, 1e-5, 1e-4, 1e-3)
         for k, (tr, va) in enumerate(folds)]
t = time.perf_counter()
out = engine.train(tasks, x, y, meta, accelerator="cpu")
secs = time.perf_counter() - t
acc = np.mean([o.metrics["val_acc"] for o in out])
# host syncs per training step, in a one-epoch run (the counter slows what it watches)
import dataclasses
sys.path.insert(0, {tests!r})
from syncs import HostSyncs
from foldwise.engine import loop
step, count = loop.StackTrainer.training_step, [0, 0]
def counted(self, batch, batch_idx):
    with HostSyncs() as h:
        out = step(self, batch, batch_idx)
    count[0] += 1
    count[1] += len(h.calls)
    return out
loop.StackTrainer.training_step = counted
one = [dataclasses.replace(t, hyper=dataclasses.replace(t.hyper, max_epochs=1)) for t in tasks]
engine.train(one, x, y, meta, accelerator="cpu")
print("RESULT " + json.dumps({{"seconds": secs, "acc": float(acc), "syncs": count[1] / count[0]}}))
"""

HAND = """
import json, sys, time
import numpy as np, torch
from torch.nn import functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler
d = load_digits()
x, y = d.data.astype(np.float32), d.target.astype(np.int64)
dev, _ = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(dev, y[dev]))
grid = [(lr, wd) for lr in (0.001, 0.003, 0.01, 0.03) for wd in (0.0, 1e-5, 1e-4, 1e-3)]
torch.set_num_threads({threads})
t = time.perf_counter()
torch.manual_seed(0)
M, H, B, E = 80, 128, 64, 30
fits = [np.sort(dev[tr]) for _ in grid for tr, _ in folds]
vals = [np.sort(dev[va]) for _ in grid for _, va in folds]
lr = torch.tensor([g[0] for g in grid for _ in folds])
wd = torch.tensor([g[1] for g in grid for _ in folds])
# each model standardised by its own fit rows: xs[m] is every row on model m's scale
xs = torch.stack([torch.from_numpy(StandardScaler().fit(x[f]).transform(x).astype(np.float32))
                  for f in fits])
yt = torch.from_numpy(y)
flat, offs = xs.view(-1, 64), torch.arange(M).view(-1, 1) * len(y)  # row i of model m
def init(a, b):
    bound = 1 / a ** 0.5
    return (torch.rand(M, b, a) * 2 - 1) * bound, (torch.rand(M, b) * 2 - 1) * bound
ws = [torch.nn.Parameter(t) for t in (*init(64, H), *init(H, 10))]
ms = [torch.zeros_like(w) for w in ws]; vs = [torch.zeros_like(w) for w in ws]
def forward(xb, drop):
    h = torch.relu(torch.baddbmm(ws[1].unsqueeze(1), xb, ws[0].transpose(1, 2)))
    if drop:
        h = h * (torch.rand(h.shape) >= 0.1) / 0.9
    return torch.baddbmm(ws[3].unsqueeze(1), h, ws[2].transpose(1, 2))
n = max(len(f) for f in fits); steps = -(-n // B)
gens = [torch.Generator().manual_seed(m) for m in range(M)]
view = lambda t, w: t.view(-1, *([1] * (w.dim() - 1)))
k = 0
for epoch in range(E):
    idx = torch.zeros(M, steps * B, dtype=torch.long); wt = torch.zeros(M, steps * B)
    for m, f in enumerate(fits):
        idx[m, :len(f)] = torch.from_numpy(f)[torch.randperm(len(f), generator=gens[m])]
        wt[m, :len(f)] = 1
    for s in range(steps):
        i, w = idx[:, s * B:(s + 1) * B], wt[:, s * B:(s + 1) * B]
        out = forward(flat[i + offs], True)
        loss = (F.cross_entropy(out.flatten(0, 1), yt[i].flatten(), reduction="none").view(M, B)
                * w).sum(1) / w.sum(1)
        for p in ws:
            p.grad = None
        loss.sum().backward()
        k += 1
        with torch.no_grad():
            gs = torch._foreach_addcmul([p.grad for p in ws], [view(wd, p) for p in ws], ws)
            torch._foreach_lerp_(ms, gs, 0.1)
            torch._foreach_mul_(vs, 0.999); torch._foreach_addcmul_(vs, gs, gs, value=0.001)
            den = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(vs),
                                                        (1 - 0.999 ** k) ** 0.5), 1e-8)
            torch._foreach_addcdiv_(ws, torch._foreach_mul(ms, [view(lr / (1 - 0.9 ** k), p)
                                                                for p in ws]), den, value=-1)
    with torch.no_grad():  # every model scored on its val rows each epoch
        vi = torch.stack([torch.from_numpy(v[:min(map(len, vals))]) for v in vals])
        pred = forward(flat[vi + offs], False).argmax(-1)
        acc = (pred == yt[vi]).float().mean(1)
secs = time.perf_counter() - t
print("RESULT " + json.dumps({{"seconds": secs, "acc": float(acc.mean())}}))
"""


def run(code: str, threads: int) -> dict:
    env = {**os.environ, "FOLDWISE_THREADS": str(threads)}  # the engine's torch threads
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env=env)  # fmt: skip
    return json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def bench_w16(reps: int, base: str | None, threads: int) -> None:
    print(f"[4] W16 training, 80 models, one process each, {threads} torch threads")
    runners = {
        "hand-written stacked": HAND.format(threads=threads),
        "engine (this tree)": W16.format(src=str(ROOT / "src"), tests=str(ROOT / "tests")),
    }
    if base:
        runners["engine (base)"] = W16.format(src=str(Path(base).resolve()),
                                              tests=str(ROOT / "tests"))  # fmt: skip
    rows: dict[str, list[dict]] = {k: [] for k in runners}
    for rep in range(reps):
        for k, code in runners.items():
            rows[k].append(run(code, threads))
            print(f"    rep {rep + 1}/{reps} {k}: {rows[k][-1]['seconds']:.1f} s", flush=True)
    hand = statistics.median(r["seconds"] for r in rows["hand-written stacked"])
    for k, rs in rows.items():
        s = statistics.median(r["seconds"] for r in rs)
        acc = statistics.median(r["acc"] for r in rs)
        syncs = f"  syncs/step {rs[0]['syncs']:.1f}" if "syncs" in rs[0] else ""
        print(f"  {k:<22}{s:>7.1f} s  ÷ hand-written {s / hand:.2f}  mean val acc {acc:.3f}"
              + syncs)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--w16-reps", type=int, default=3)
    ap.add_argument("--base", help="src/ of another checkout to time the engine from too")
    ap.add_argument("--compile", action="store_true", help="also torch.compile the Adam update")
    # one thread each: on a shared 2-core machine two threads spin against other work
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["parts", "w16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.only != "w16":
        bench_dropout(args.reps)
        bench_orders(args.reps)
        bench_adam(args.reps, args.compile)
    if args.only != "parts":
        bench_w16(args.w16_reps, args.base, args.threads)


if __name__ == "__main__":
    main()
