"""Images from a folder, side by side (issue 19). Prints a table, asserts nothing.

    make bench-images
    .venv/bin/python benchmarks/bench_images.py [--per-class 200] [--epochs 5] [--reps 1]

The example image set (examples/shapes/draw.py: 10 classes of drawn shapes, 28×28 grey
PNG files, drawn into a temporary folder), the built-in CNN (model=cnn, hidden 8, one
block, dropout 0.1), 3 learning rates × 5 stratified folds = 15 models, fixed epochs,
batch 64, inputs standardised per channel on each fold's training rows:

  read          data=image_folder's prepare step: every file decoded into the table
  stacked       foldwise's engine on the table in memory, the 15 models in one stack
  one-at-a-time the same engine, stacks of one (engine=one_at_a_time)
  loader        the engine with streamed rows (engine/feed.py): no table; every step
                decodes the union of the stack's next rows from the PNG files through
                a DataLoader (--workers processes, prefetch 2), no cache
  loader+cache  the same, decoded rows kept up to 1,024 MB (cache_mb; the pipeline
                keeps up to half of engine.memory_mb): a set that fits is decoded once
  loader+c 1×1  the same, stacks of one
  lightning     what a user writes by hand: a Dataset that decodes the PNG files, a
                shuffled DataLoader per fold (2 workers), one pl.Trainer per
                (configuration, fold), the same network

Each contender runs in a process of its own (spawned), so its peak RSS is its own.
Columns: wall seconds of training (the read is its own row), images per second (all
models: training images × epochs × models / wall), seconds to the end of the first
epoch, peak RSS of the process. Runs alternate within each repetition; medians.

``--rss-scale 10`` then draws 10× the images and runs the loader-fed stack for one epoch
on both sets, without and with the cache: without, its peak RSS should barely grow (the
loader holds blocks, not the data); with, by at most the cache's bound.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LRS = [0.001, 0.003, 0.01]
BATCH = 64
MODEL = {"name": "cnn", "hidden": 8, "depth": 1, "dropout": 0.1}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _table(folder: str):
    from omegaconf import OmegaConf

    from foldwise.data import Meta
    from foldwise.sources import from_image_folder

    t = time.perf_counter()
    features, labels, _, _, shape = from_image_folder(OmegaConf.create({"path": folder}))
    read = time.perf_counter() - t
    classes = sorted(set(labels))
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    x = features.to_numpy()
    meta = Meta("shapes", len(y), x.shape[1], classes, list(features.columns), shape)
    return x, y, meta, read


def _folds(y):
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y))


def _streamed(folder: str, workers: int, cache_mb: float):
    import numpy as np

    from foldwise.data import Meta
    from foldwise.engine import Streamed
    from foldwise.sources import ImageFolderRows

    rows = ImageFolderRows(Path(folder), None, 1)
    classes = sorted(set(rows.targets))
    y = np.array([classes.index(c) for c in rows.targets])
    shape = [int(v) for v in rows[0][0].shape]
    n_features = int(np.prod(shape))
    meta = Meta("shapes", len(y), n_features, classes, [f"x{i}" for i in range(n_features)],
                shape)  # fmt: skip
    return Streamed(rows, n_features, workers=workers, cache_mb=cache_mb), y, meta, 0.0


def run_engine(folder: str, epochs: int, max_models: int | None, stream: tuple | None, q) -> None:
    import numpy as np
    import torch

    from foldwise import engine, threads

    torch.set_num_threads(threads.cores())
    if stream is None:  # the table in memory
        x, y, meta, read = _table(folder)
    else:  # (workers, cache_mb)
        x, y, meta, read = _streamed(folder, *stream)
    tasks = [
        engine.Task(
            key=f"{i}-{k}",
            model=MODEL,
            hyper=engine.Hyper(lr, 0.0, 0.1, epochs, False, 0.2, epochs),
            batch_size=BATCH,
            seed=1000 * i + k,
            train=tr,
            evals={"val": va},
            normalize="channel",
        )
        for i, lr in enumerate(LRS)
        for k, (tr, va) in enumerate(_folds(y))
    ]
    first: list[float] = []
    t = time.perf_counter()

    def on_epoch(_n, _info) -> None:
        if not first:
            first.append(time.perf_counter() - t)

    out = engine.train(
        tasks, x, y, meta, accelerator="cpu", max_models=max_models, on_epoch=on_epoch
    )
    wall = time.perf_counter() - t
    assert all(o.status == "ok" for o in out), [o.error for o in out if o.error]
    seen = sum(len(task.train) for task in tasks) * epochs
    acc = float(np.mean([o.metrics["val_acc"] for o in out]))
    q.put((wall, seen / wall, first[0], _rss_mb(), acc, read))


class Files:
    """The user's Dataset: decodes a PNG file per item (module level: DataLoader workers
    pickle it)."""

    def __init__(self, files, y, idx, mean, std):
        self.files, self.y, self.idx, self.mean, self.std = files, y, idx, mean, std

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        import numpy as np
        import torch
        from PIL import Image

        f = self.files[self.idx[i]]
        px = np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255
        return torch.from_numpy((px[None] - self.mean) / self.std), int(self.y[self.idx[i]])


def _lit(lr: float, n_classes: int):
    import pytorch_lightning as pl
    import torch

    from foldwise.models import CNN

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = CNN((1, 28, 28), n_classes, hidden=8, depth=1, dropout=0.1)

        def forward(self, x):
            return self.net(x.flatten(1))

        def training_step(self, batch, _):
            x, t = batch
            return torch.nn.functional.cross_entropy(self(x), t)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    return Lit()


def run_lightning(folder: str, epochs: int, q) -> None:
    import logging
    import warnings

    import numpy as np
    import pytorch_lightning as pl
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader

    from foldwise import threads
    from foldwise.sources import image_files

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads.cores())
    pairs = [(f, c) for c, fs in image_files(Path(folder)).items() for f in fs]
    classes = sorted({c for _, c in pairs})
    files = [f for f, _ in pairs]
    y = np.array([classes.index(c) for _, c in pairs])

    first: list[float] = []

    class First(pl.Callback):
        def on_train_epoch_end(self, *_):
            if not first:
                first.append(time.perf_counter() - t)

    t = time.perf_counter()
    accs, seen = [], 0
    for i, lr in enumerate(LRS):
        for k, (tr, va) in enumerate(_folds(y)):
            # per-channel statistics of the fold's training images (one pass over them)
            px = np.stack([np.asarray(Image.open(files[j]).convert("L"), np.float32) / 255
                           for j in tr])  # fmt: skip
            mean, std = float(px.mean()), float(px.std())
            pl.seed_everything(1000 * i + k, verbose=False)
            model = _lit(lr, len(classes))
            loader = DataLoader(Files(files, y, tr, mean, std), batch_size=BATCH, shuffle=True,
                                num_workers=2, persistent_workers=True)  # fmt: skip
            trainer = pl.Trainer(
                max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[First()],
            )  # fmt: skip
            trainer.fit(model, loader)
            with torch.no_grad():
                held = Files(files, y, va, mean, std)
                xv = torch.stack([held[j][0] for j in range(len(va))])
                accs.append(float((model.eval()(xv).argmax(1).numpy() == y[va]).mean()))
            seen += len(tr) * epochs
    wall = time.perf_counter() - t
    q.put((wall, seen / wall, first[0], _rss_mb(), float(np.mean(accs)), 0.0))


def _in_process(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:  # a child that died raises here instead of leaving the queue empty
        try:
            out = q.get(timeout=5)
            break
        except Exception:  # queue.Empty
            if not p.is_alive():
                raise RuntimeError(
                    f"{target.__name__} exited ({p.exitcode}) without a result"
                ) from None
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="loader processes (streamed rows)")
    ap.add_argument("--rss-scale", type=int, default=10, help="0: skip the RSS comparison")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "examples/shapes"))
    from draw import draw

    cached = (args.workers, 1024)
    with tempfile.TemporaryDirectory() as tmp:
        n = draw(Path(tmp), args.per_class, 28)
        runners = {
            "stacked": lambda: _in_process(run_engine, tmp, args.epochs, None, None),
            "one-at-a-time": lambda: _in_process(run_engine, tmp, args.epochs, 1, None),
            "loader": lambda: _in_process(run_engine, tmp, args.epochs, None, (args.workers, 0)),
            "loader+cache": lambda: _in_process(run_engine, tmp, args.epochs, None, cached),
            "loader+c 1×1": lambda: _in_process(run_engine, tmp, args.epochs, 1, cached),
            "lightning": lambda: _in_process(run_lightning, tmp, args.epochs),
        }
        rows: dict[str, list[tuple]] = {r: [] for r in runners}
        for rep in range(args.reps):
            for name, run in runners.items():
                rows[name].append(run())
                print(f"  rep {rep + 1}/{args.reps} {name}: {rows[name][-1][0]:.1f} s", flush=True)
    med = {name: [statistics.median(col) for col in zip(*rs, strict=True)]
           for name, rs in rows.items()}  # fmt: skip
    print(f"\n{n} drawn 28×28 images, 10 classes; model=cnn, {len(LRS)} configs × 5 folds = "
          f"{len(LRS) * 5} models, {args.epochs} epochs; medians of {args.reps}")  # fmt: skip
    print(f"reading the folder into the table (prepare): {med['stacked'][5]:.1f} s")
    head = (f"{'contender':<15}{'wall s':>8}{'images/s':>10}{'1st epoch s':>13}"
            f"{'peak RSS MB':>13}{'÷lightning':>12}{'val acc':>9}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for name, (wall, ips, first, rss, acc, _) in med.items():
        print(f"{name:<15}{wall:>8.1f}{ips:>10.0f}{first:>13.1f}{rss:>13.0f}"
              f"{med['lightning'][0] / wall:>12.2f}{acc:>9.3f}")  # fmt: skip
    print("÷lightning: how many times faster than the hand-written loop (>1: faster).")
    for name in ("loader", "loader+cache"):
        ratio = med[name][0] / med["stacked"][0]
        print(f"{name} stacked ÷ in-memory stacked (wall): {ratio:.2f}×")
    if args.rss_scale:
        sizes = {}
        for scale in (1, args.rss_scale):
            with tempfile.TemporaryDirectory() as tmp:
                n_s = draw(Path(tmp), args.per_class * scale, 28)
                sizes[n_s] = [_in_process(run_engine, tmp, 1, None, (args.workers, c))[3]
                              for c in (0, 1024)]  # fmt: skip
        (n1, a), (n2, b) = sizes.items()
        for k, what in enumerate(("no cache", "cache ≤ 1,024 MB")):
            print(f"peak RSS, loader-fed stack, 1 epoch, {what}: {n1} images {a[k]:.0f} "
                  f"MB, {n2} images {b[k]:.0f} MB: ×{b[k] / a[k]:.2f} for ×{n2 / n1:.0f} "
                  "the rows")  # fmt: skip


if __name__ == "__main__":
    main()
