"""Where a sweep's time goes. Prints ratios, asserts nothing.

    make bench            # or: .venv/bin/python benchmarks/bench_sweep.py [--folds 5]

1. per-job cost when jobs share a process (Hydra's basic launcher, what foldwise
   does) vs. a fresh Python process per job (what a naive per-fold script pays);
2. MLflow: one learning curve sent with foldwise's batched logging vs. one
   ``log_metric`` request per value, on SQLite and on a local ``mlflow server``;
3. one model through foldwise's engine (a stack of one in a Lightning loop) vs. a plain
   PyTorch loop on the same tiny MLP: the per-step overhead that stacking amortises.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from foldwise import data, split  # noqa: E402
from foldwise.compose import compose_params  # noqa: E402
from foldwise.tracking import local_server  # noqa: E402

OVERRIDES = [
    "trainer.max_epochs=5",
    "trainer.early_stopping.enabled=false",
    "trainer.accelerator=cpu",
]

ONE_JOB = """
import sys
from pathlib import Path
sys.path.insert(0, {src!r})
from omegaconf import OmegaConf
from foldwise import data, split
from foldwise.compose import compose_params
from foldwise.fitting.train import fit
cfg = compose_params({ov!r}, root=Path({root!r}))
cfg = OmegaConf.create(OmegaConf.to_container(cfg))
table, meta = data.prepare(cfg); res = split.split(table, cfg)
dev = res.dev.set_index("row_id", drop=False); f = res.folds[{fold}]
fit(cfg, meta, dev.loc[f.train], dev.loc[f.val])
"""


def bench_processes(folds: int) -> None:
    from foldwise.fitting.train import fit

    cfg = OmegaConf.create(OmegaConf.to_container(compose_params(OVERRIDES, root=ROOT)))
    table, meta = data.prepare(cfg)
    res = split.split(table, cfg)
    dev = res.dev.set_index("row_id", drop=False)
    fit(cfg, meta, dev.loc[res.folds[0].train], dev.loc[res.folds[0].val])
    t = time.perf_counter()
    for f in res.folds[:folds]:
        fit(cfg, meta, dev.loc[f.train], dev.loc[f.val])
    shared = (time.perf_counter() - t) / folds
    t = time.perf_counter()
    for i in range(folds):
        code = ONE_JOB.format(src=str(ROOT / "src"), ov=OVERRIDES, root=str(ROOT), fold=i)
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    fresh = (time.perf_counter() - t) / folds
    print(
        f"[1] per job, {folds} folds of digits, 5 epochs: shared process {shared:.2f} s · "
        f"fresh process {fresh:.2f} s · ratio fresh/shared = {fresh / shared:.1f}x"
    )


def bench_logging(uri: str, label: str, epochs: int = 40) -> None:
    from mlflow import MlflowClient

    from foldwise import tracking

    c = MlflowClient(uri)
    exp = tracking.experiment_id(c, "bench")
    names = ["train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1", "inner_loss"]
    history = {n: [1.0 / (e + 1) for e in range(epochs)] for n in names}
    run = c.create_run(exp).info.run_id
    t = time.perf_counter()
    tracking.log(c, run, history=history, history_prefix="epoch/")
    batched = time.perf_counter() - t
    run = c.create_run(exp).info.run_id
    t = time.perf_counter()
    for n, values in history.items():
        for step, v in enumerate(values, start=1):
            c.log_metric(run, f"epoch/{n}", v, step=step)
    single = time.perf_counter() - t
    n = epochs * len(names)
    print(
        f"[2] {label}: {n} values · one request per value {single:.3f} s · batched "
        f"{batched:.3f} s · ratio = {single / batched:.0f}x"
    )


def bench_lightning(steps_epochs: int = 10) -> None:
    import torch

    from foldwise.fitting.train import fit
    from foldwise.models import build_backbone

    cfg = OmegaConf.create(
        OmegaConf.to_container(
            compose_params(
                [
                    "trainer.max_epochs=10",
                    "trainer.early_stopping.enabled=false",
                    "trainer.accelerator=cpu",
                ],
                root=ROOT,
            )
        )
    )
    table, meta = data.prepare(cfg)
    res = split.split(table, cfg)
    dev = res.dev.set_index("row_id", drop=False)
    f = res.folds[0]
    train = dev.loc[f.train]
    fit(cfg, meta, train, None, epochs=1)  # warm-up
    t = time.perf_counter()
    fit(cfg, meta, train, None, epochs=steps_epochs)
    light = time.perf_counter() - t
    x = torch.tensor(train[[c for c in train.columns if c.startswith("x")]].to_numpy())
    y = torch.tensor(train["target"].to_numpy())
    net = build_backbone(cfg.model, meta)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    bs = int(cfg.trainer.batch_size)
    steps = 0
    t = time.perf_counter()
    for _ in range(steps_epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), bs):
            idx = perm[i : i + bs]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    plain = time.perf_counter() - t
    print(
        f"[3] {steps} steps: engine, one model {light:.2f} s · plain loop {plain:.2f} s · "
        f"ratio = {light / plain:.1f}x · overhead {1000 * (light - plain) / steps:.2f} ms/step"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--no-server", action="store_true")
    args = ap.parse_args()
    bench_processes(args.folds)
    with tempfile.TemporaryDirectory() as tmp:
        bench_logging(f"sqlite:///{tmp}/bench.db", "SQLite")
        if not args.no_server:
            with local_server(Path(tmp) / "server") as uri:
                bench_logging(uri, "mlflow server (gunicorn)")
    bench_lightning()


if __name__ == "__main__":
    main()
