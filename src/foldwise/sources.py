"""Data that is not a table: a user's torch ``Dataset`` (``data=dataset``, by
``_target_``) and a folder of images in class folders (``data=image_folder``,
torchvision's ``ImageFolder`` layout).

Both become foldwise's canonical table at the prepare stage (:mod:`foldwise.data`): a
row per item, the item's values as float32 feature columns (an image flattened, its
``(C, H, W)`` in ``Meta.image_shape``), so every scheme, the lockbox, the manifests and
the engine work on them unchanged, and the split stage alone writes the lockbox's items
(only the test stage reads them). The whole dataset is read once, into memory.

Row ids: a ``Dataset``'s index; an image's id is a hash of its path within the folder
(``class/file``), and rows are ordered by it: renaming or moving the folder leaves the
split as it was, and an edited image keeps its row (its new pixels change the table,
so the manifests and the lockbox's integrity check see the edit).
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from foldwise.errors import FoldwiseError
from foldwise.files import repo_root

# data=dataset: the keys foldwise reads; every other data.* key is the factory's argument
DATASET_KEYS = ("name", "_target_", "task", "group_column", "time_column", "normalize")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _image_shape(shape: tuple[int, ...], what: str) -> list[int] | None:
    """``(C, H, W)`` of an item of ``shape``: 3-D as is, 2-D one channel, 1-D a table row."""
    if len(shape) == 3:
        return [int(v) for v in shape]
    if len(shape) == 2:
        return [1, int(shape[0]), int(shape[1])]
    if len(shape) == 1:
        return None
    raise FoldwiseError(
        f"{what} has an item of shape {list(shape)}: foldwise takes a vector (a table row), "
        "an image [H, W] or an image [C, H, W].",
        "return items (x, y) with x of one of those shapes.",
    )


def _instantiate(cfg: DictConfig) -> Any:
    """The ``Dataset`` ``data._target_`` returns, given the other ``data.*`` keys."""
    from foldwise.targets import resolve

    target = cfg.get("_target_")
    if not target or target == "???":
        raise FoldwiseError(
            "params: data=dataset needs data._target_, a function returning your Dataset.",
            "add -S data._target_=<package.module.function> (its arguments: -S +data.<name>=...).",
        )
    fn = resolve(str(target), "data._target_")
    kwargs = {str(k): v for k, v in cfg.items() if k not in DATASET_KEYS}
    try:
        ds = fn(**kwargs)
    except Exception as err:  # the user's code: anything
        raise FoldwiseError(
            f"data._target_={target} raised {type(err).__name__}: {err}",
            "fix the factory, or its arguments (the +data.* overrides).",
        ) from None
    return ds


def from_dataset(cfg: DictConfig) -> tuple:
    """``data._target_``'s ``Dataset``: features, labels, ids, groups/times, image shape."""
    ds = _instantiate(cfg)
    what = f"the Dataset of {cfg.get('_target_')}"
    try:
        n = len(ds)
        first = ds[0] if n else None
    except (TypeError, AttributeError, NotImplementedError) as err:
        raise FoldwiseError(
            f"{what} is not a map-style Dataset ({type(err).__name__}: {err}).",
            "return an object with __len__ and __getitem__ (e.g. a torch.utils.data.Dataset).",
        ) from None
    if not n:
        raise FoldwiseError(f"{what} is empty.", "return a Dataset with at least a few items.")
    if not (isinstance(first, tuple | list) and len(first) == 2):
        raise FoldwiseError(
            f"{what}'s items are not (x, y) pairs (item 0 is a {type(first).__name__}).",
            "return (features or image, label) from __getitem__, as a TensorDataset does.",
        )
    targets = getattr(ds, "targets", None)
    if targets is not None:  # torchvision's convention: the labels, one per item
        targets = list(np.asarray(targets).reshape(-1))
        if len(targets) != n:
            raise FoldwiseError(
                f"{what} has {n} items but {len(targets)} targets: its labels do not match "
                "its length.",
                "make .targets hold one label per item (or drop the attribute).",
            )
    shape = np.asarray(first[0]).shape
    image_shape = _image_shape(shape, what)
    rows = np.empty((n, int(np.prod(shape))), dtype=np.float32)
    ys: list[Any] = []
    for i in range(n):
        try:
            x, y = ds[i]
        except Exception as err:
            raise FoldwiseError(
                f"{what} raised {type(err).__name__} on item {i}: {err}",
                "fix the Dataset's __getitem__ for that item, or drop the item.",
            ) from None
        x = np.asarray(x, dtype=np.float32)
        if x.shape != shape:
            raise FoldwiseError(
                f"{what}'s items differ in shape: item 0 is {list(shape)}, item {i} is "
                f"{list(x.shape)}.",
                "give every item one shape (resize or pad images in the Dataset).",
            )
        rows[i] = x.reshape(-1)
        ys.append(y.item() if hasattr(y, "item") else y)
    labels = ys
    if targets is not None:
        differ = [i for i, (t, y) in enumerate(zip(targets, ys, strict=True)) if str(t) != str(y)]
        if differ:
            bad = differ[0]
            raise FoldwiseError(
                f"{what}'s .targets[{bad}] is {targets[bad]!r}, but item {bad} has label "
                f"{ys[bad]!r}.",
                "make .targets the labels the items carry.",
            )
    classes = getattr(ds, "classes", None)
    if classes is not None and all(isinstance(y, int | np.integer) for y in labels):
        names = [str(c) for c in classes]  # torchvision: class index -> name
        labels = [names[int(y)] for y in labels]
    extra = {}
    for kind in ("group", "time"):
        attr = cfg.get(f"{kind}_column")
        if attr is None:
            continue
        values = getattr(ds, str(attr), None)
        if values is None:
            raise FoldwiseError(
                f"data.{kind}_column={attr}, but {what} has no attribute {attr!r}.",
                f"give the Dataset a .{attr} holding each item's {kind}, or set "
                f"data.{kind}_column=null.",
            )
        values = pd.Series(np.asarray(values).reshape(-1))
        if len(values) != n:
            raise FoldwiseError(
                f"{what} has {n} items but {len(values)} {attr}.",
                f"make .{attr} hold one value per item (or drop the attribute).",
            )
        extra[kind] = values.astype(str) if kind == "group" else values
    features = pd.DataFrame(rows, columns=[f"x{i}" for i in range(rows.shape[1])], copy=False)
    return features, pd.Series(labels), pd.Series(np.arange(n)), extra, image_shape


def _folder(cfg: DictConfig) -> Path:
    path = Path(str(cfg.get("path") or "")).expanduser()
    if not path.is_absolute():
        path = repo_root() / path
    raw = repo_root() / "data" / "raw"
    if path.is_dir() and not path.resolve().is_relative_to(raw.resolve()):
        print(
            f"[prepare] note: {path} is outside data/raw/, so DVC will not notice when its "
            "images change; move it under data/raw/ (see data/raw/README.md).",
            file=sys.stderr,
        )
    if not path.is_dir():
        raise FoldwiseError(
            f"data.path: folder {path} does not exist"
            + (" (it is a file: a table is data=csv)" if path.is_file() else "")
            + ".",
            "point data.path at a folder holding one sub-folder of images per class, e.g. "
            "data/raw/images/cat/001.png (data/raw/ is what DVC watches).",
        )
    return path


def image_files(root: Path) -> dict[str, list[Path]]:
    """Class name → its image files (sorted), refusing a tree foldwise cannot read."""
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FoldwiseError(
            f"data.path: {root} holds no class folders.",
            "put each class's images in a sub-folder named after the class "
            "(e.g. images/cat/001.png, images/dog/002.png).",
        )
    out = {}
    for folder in classes:
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FoldwiseError(
                f"data.path: class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).",
                "add its images, or remove the empty folder (a class without rows cannot be "
                "learned or tested).",
            )
        out[folder.name] = files
    return out


def read_image(data: bytes, path: Path, size: list[int] | None, channels: int) -> np.ndarray:
    """One image as float32 ``[C, H, W]`` in [0, 1]: decoded, converted to ``channels``
    (1 grey, 3 RGB), resized to ``size`` ``[H, W]`` (bilinear, the whole image; no crop)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes now: a truncated file fails here, not later
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None:
                img = img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise FoldwiseError(
            f"image {path} cannot be read ({type(err).__name__}: {err}): unreadable or truncated.",
            "replace or remove the file (data/raw/ is under DVC: dvc repro re-reads it).",
        ) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def row_id(relative: str) -> int:
    """An image's row id: 63 bits of SHA-256 of its path within the folder (``class/file``,
    with ``/``), so the folder itself can move or be renamed."""
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") >> 1


def _image_settings(cfg: DictConfig) -> tuple[list[int] | None, int]:
    size = [int(v) for v in cfg.size] if cfg.get("size") is not None else None
    channels = int(cfg.get("channels") or 1)
    if channels not in (1, 3):
        raise FoldwiseError(
            f"params: data.channels must be 1 (grey) or 3 (RGB), got {channels}.",
            "-S data.channels=1 or -S data.channels=3.",
        )
    return size, channels


def _ordered(root: Path) -> list[tuple[int, Path, str]]:
    """(row id, file, class) of every image, in row-id order: the table's row order."""
    found = [(row_id(f.relative_to(root).as_posix()), f, label)
             for label, files in image_files(root).items() for f in files]  # fmt: skip
    return sorted(found, key=lambda r: r[0])


class ImageFolderRows:
    """``data.path``'s images as a map-style dataset, decoded on demand: item ``i`` is
    the table's row ``i`` (row-id order), ``(image [C, H, W], class name)``. What the
    engine streams (:class:`foldwise.engine.feed.Streamed`) when the images are not held
    in memory; module level, so DataLoader workers can pickle it."""

    def __init__(self, root: Path, size: list[int] | None, channels: int) -> None:
        self.size, self.channels = size, channels
        rows = _ordered(root)
        self.ids = np.array([i for i, _, _ in rows], dtype=np.int64)
        self.files = [f for _, f, _ in rows]
        self.targets = [c for _, _, c in rows]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        f = self.files[i]
        return read_image(f.read_bytes(), f, self.size, self.channels), self.targets[i]


def from_image_folder(cfg: DictConfig) -> tuple:
    """``data.path``'s class folders: features, labels, ids, no groups, image shape."""
    root = _folder(cfg)
    size, channels = _image_settings(cfg)
    images, labels, ids, seen = [], [], [], {}
    for rid, f, label in _ordered(root):
        data = f.read_bytes()
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            raise FoldwiseError(
                f"data.path: {seen[digest]} and {f} are the same image (identical bytes): "
                "one image would be two rows, possibly on both sides of a split.",
                "remove one of them.",
            )
        seen[digest] = f
        arr = read_image(data, f, size, channels)
        if images and arr.shape != images[0].shape:
            first = next(iter(seen.values()))
            raise FoldwiseError(
                f"data.path: images differ in size ({first}: {list(images[0].shape[1:])}, "
                f"{f}: {list(arr.shape[1:])}) and data.size is not set.",
                "resize them all on reading: -S data.size=[28,28] (height, width).",
            )
        images.append(arr)
        labels.append(label)
        ids.append(rid)
    stacked = np.stack(images)
    flat = stacked.reshape(len(images), -1)
    features = pd.DataFrame(flat, columns=[f"x{i}" for i in range(flat.shape[1])], copy=False)
    return (
        features,
        pd.Series(labels),
        pd.Series(np.asarray(ids, dtype=np.int64)),
        {},
        [int(v) for v in stacked.shape[1:]],
    )


def stream_rows(cfg: DictConfig, ids: np.ndarray) -> Any:
    """The rows ``ids`` (in that order) of ``data=image_folder`` or ``data=dataset`` as a
    map-style dataset read on demand (the engine's streamed rows), without reading the
    features the prepare stage tabled. Refuses rows the source no longer holds."""
    from torch.utils.data import Subset

    name = str(cfg.name)
    if name == "image_folder":
        size, channels = _image_settings(cfg)
        source = ImageFolderRows(_folder(cfg), size, channels)
        found = np.isin(ids, source.ids)
        pos = np.searchsorted(source.ids, ids)  # source.ids are sorted: each row's item
    elif name == "dataset":
        source = _instantiate(cfg)
        pos = np.asarray(ids, dtype=np.int64)
        found = (pos >= 0) & (pos < len(source))
    else:  # params refuse it first, naming the fix (config.sections.check_rows)
        raise ValueError(f"data={name} is a table: its rows cannot be streamed")
    if not found.all():
        raise FoldwiseError(
            f"data={name}: {int((~found).sum())} dev rows are no longer in the data "
            "(files removed or renamed, or a shorter Dataset) since the split stage.",
            "re-run the pipeline from the prepare stage: dvc repro.",
        )
    return Subset(source, pos.tolist())
