"""GPU check: does a fold fit run, deterministically, on an accelerator — and is it worth it?

    python benchmarks/gpu_check.py [--epochs 20] [--out results.json]

Fits fold 0 of digits with the MLP and the CNN on CPU and on GPU (same machine),
twice on GPU to check determinism, and prints seconds per fit and the ratio.
Needs torch, pytorch-lightning, torchmetrics, scikit-learn, pandas, hydra-core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from foldwise import data, split  # noqa: E402
from foldwise.compose import compose_params  # noqa: E402
from foldwise.train import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    print(
        f"torch {torch.__version__} · cuda {gpu} · "
        f"{torch.cuda.get_device_name(0) if gpu else 'no GPU'} · threads {torch.get_num_threads()}"
    )
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if gpu else None,
        "epochs": args.epochs,
        "fits": [],
    }
    for model in ("mlp", "cnn"):
        cfg = compose_params(
            [
                f"model={model}",
                f"trainer.max_epochs={args.epochs}",
                "trainer.early_stopping.enabled=false",
            ],
            root=ROOT,
        )
        cfg = OmegaConf.create(OmegaConf.to_container(cfg))
        table, meta = data.prepare(cfg)
        res = split.split(table, cfg)
        dev = res.dev.set_index("row_id", drop=False)
        f = res.folds[0]
        train, val = dev.loc[f.train], dev.loc[f.val]
        times = {}
        for accel in ("cpu", "gpu") if gpu else ("cpu",):
            cfg.trainer.accelerator = accel
            fit(cfg, meta, train, val, epochs=1)  # warm-up (CUDA context, kernels)
            runs = []
            for _ in range(2):
                t = time.perf_counter()
                _, r = fit(cfg, meta, train, val)
                runs.append((time.perf_counter() - t, r))
            same = runs[0][1].metrics == runs[1][1].metrics and (
                runs[0][1].history == runs[1][1].history
            )
            secs = min(t for t, _ in runs)
            times[accel] = secs
            m = runs[0][1].metrics
            print(
                f"{model:4s} {accel}: {secs:.2f} s/fit ({args.epochs} epochs, "
                f"{1000 * secs / (args.epochs * -(-len(train) // 64)):.2f} ms/step) · "
                f"val_f1 {m['val_f1']:.4f} · deterministic across 2 fits: {same}"
            )
            report["fits"].append(
                {
                    "model": model,
                    "accelerator": accel,
                    "seconds": secs,
                    "val_f1": m["val_f1"],
                    "deterministic": same,
                }
            )
        if "gpu" in times:
            print(f"{model:4s} gpu/cpu time ratio: {times['gpu'] / times['cpu']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
