"""Draw an image-folder dataset: 10 classes of simple shapes, procedurally, nothing
downloaded. Each image is a grey ``size``×``size`` PNG with the shape at a random
position and scale, a random stroke, and pixel noise, saved as
``<out>/<class>/<index>.png`` (torchvision's ImageFolder layout, foldwise's
``data=image_folder``)::

    python examples/shapes/draw.py --out data/raw/shapes --per-class 30
    dvc exp run -S data=image_folder -S data.path=data/raw/shapes -S model=cnn

It is also the DVC stage ``examples/shapes/dvc.yaml:draw`` (settings in
``examples/shapes/params.yaml``), upstream of ``prepare``. The same seed draws the same
files, byte for byte.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross", "ring", "diamond", "plus", "hline",
           "vline", "star")  # fmt: skip


def _polygon(cx: float, cy: float, r: float, n: int, turn: float, inner: float = 1.0):
    pts = []
    for k in range(n * (2 if inner < 1 else 1)):
        rad = r if inner >= 1 or k % 2 == 0 else r * inner
        a = turn + 2 * math.pi * k / (n * (2 if inner < 1 else 1))
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def draw_one(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of class ``name``: jittered position, scale, stroke and noise."""
    scale = 4  # drawn large, then shrunk: smooth edges
    big = size * scale
    img = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.38) * big
    cx, cy = rng.uniform(r + 2, big - r - 2, size=2)
    w = int(rng.integers(2, 5) * scale)
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "circle":
        d.ellipse(box, fill=255)
    elif name == "ring":
        d.ellipse(box, outline=255, width=w)
    elif name == "square":
        d.rectangle(box, fill=255)
    elif name == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, -math.pi / 2), fill=255)
    elif name == "diamond":
        d.polygon(_polygon(cx, cy, r, 4, 0.0), fill=255)
    elif name == "star":
        d.polygon(_polygon(cx, cy, r, 5, -math.pi / 2, inner=0.45), fill=255)
    elif name == "cross":
        d.line((cx - r, cy - r, cx + r, cy + r), fill=255, width=w)
        d.line((cx - r, cy + r, cx + r, cy - r), fill=255, width=w)
    elif name == "plus":
        d.line((cx - r, cy, cx + r, cy), fill=255, width=w)
        d.line((cx, cy - r, cx, cy + r), fill=255, width=w)
    elif name == "hline":
        d.line((cx - r, cy, cx + r, cy), fill=255, width=w)
    elif name == "vline":
        d.line((cx, cy - r, cx, cy + r), fill=255, width=w)
    else:
        raise ValueError(f"unknown shape {name!r}")
    small = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    noisy = small + rng.normal(0, 20, small.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="L")


def draw(out: Path, per_class: int, size: int = 28, seed: int = 0,
         classes: tuple[str, ...] = CLASSES) -> int:  # fmt: skip
    """Write ``per_class`` images of each class under ``out``; returns the file count."""
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_one(name, size, rng).save(folder / f"{i:05d}.png", optimize=False)
    return per_class * len(classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, help="a YAML file of these settings (the DVC stage's)")
    ap.add_argument("--out", type=Path, default=Path("data/raw/shapes"))
    ap.add_argument("--per-class", type=int, default=2000, help="images per class")
    ap.add_argument("--size", type=int, default=28, help="pixels per side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classes", type=int, default=len(CLASSES), help="the first N classes")
    first, _ = ap.parse_known_args()
    if first.params:  # the file's values are the defaults; flags still override them
        ap.set_defaults(**yaml.safe_load(first.params.read_text()))
    a = ap.parse_args()
    if not 2 <= a.classes <= len(CLASSES):
        ap.error(f"--classes must be 2 to {len(CLASSES)}")
    if a.out.exists():  # a redraw replaces the folder: no image of an earlier draw lingers
        shutil.rmtree(a.out)
    n = draw(a.out, a.per_class, a.size, a.seed, CLASSES[: a.classes])
    print(f"wrote {n} images of {a.classes} classes to {a.out}")


if __name__ == "__main__":
    main()
