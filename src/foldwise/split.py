"""The lockbox split and the cross-validation folds over the dev rows.

Order matters: the test set is carved out first (stratified, seeded), and the CV
scheme only ever sees the remaining *dev* rows. Folds are stored as row ids, not
positions, so they stay meaningful whatever order a table is read in.

Each CV scheme is a small class behind one contract (``check`` then ``split``), so
new schemes (grouped, repeated, time-series, leave-p-out, ...) slot in by adding a
class to :data:`SCHEMES`. They wrap scikit-learn's splitters; nothing is re-implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from sklearn.model_selection import BaseCrossValidator, KFold, StratifiedKFold, train_test_split

from foldwise.errors import FoldwiseError
from foldwise.files import sha256_json, sha256_table


@dataclass(frozen=True)
class Fold:
    index: int
    train: list[int]  # row ids
    val: list[int]  # row ids


class CVScheme:
    """A cross-validation scheme over the dev rows: ``check`` then ``split``."""

    name: ClassVar[str]

    def __init__(self, n_splits: int, shuffle: bool, seed: int) -> None:
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.seed = seed

    def splitter(self) -> BaseCrossValidator:
        raise NotImplementedError

    def check(self, y: np.ndarray, class_names: list[str] | None = None) -> None:
        """Raise :class:`FoldwiseError` if the scheme can't split these labels."""
        if self.n_splits > len(y):
            raise FoldwiseError(
                f"split.n_splits={self.n_splits} is larger than the {len(y)} dev rows.",
                f"use at most {len(y)} folds (n_splits = number of dev rows is leave-one-out).",
            )

    def split(
        self, row_ids: np.ndarray, y: np.ndarray, class_names: list[str] | None = None
    ) -> list[Fold]:
        self.check(y, class_names)
        splitter = self.splitter()
        return [
            Fold(i, sorted(row_ids[tr].tolist()), sorted(row_ids[va].tolist()))
            for i, (tr, va) in enumerate(splitter.split(np.zeros(len(y)), y))
        ]


class KFoldScheme(CVScheme):
    """k folds (contiguous, or shuffled with the seed), ignoring the labels (sklearn's KFold)."""

    name = "kfold"

    def splitter(self) -> BaseCrossValidator:
        return KFold(self.n_splits, shuffle=self.shuffle, random_state=self._rs())

    def _rs(self) -> int | None:
        return self.seed if self.shuffle else None


class StratifiedKFoldScheme(KFoldScheme):
    """k folds that keep each class's share (:class:`sklearn.model_selection.StratifiedKFold`)."""

    name = "stratified_kfold"

    def splitter(self) -> BaseCrossValidator:
        return StratifiedKFold(self.n_splits, shuffle=self.shuffle, random_state=self._rs())

    def check(self, y: np.ndarray, class_names: list[str] | None = None) -> None:
        super().check(y)
        classes, counts = np.unique(y, return_counts=True)
        small = {
            _name(c, class_names): int(n)
            for c, n in zip(classes, counts, strict=True)
            if n < self.n_splits
        }
        if small:
            raise FoldwiseError(
                f"stratified {self.n_splits}-fold CV needs every class to have at least "
                f"{self.n_splits} dev rows; these classes have fewer (class: rows): {small}.",
                f"lower split.n_splits to {min(counts)} or less, collect more rows of those "
                "classes, or use split=kfold.",
            )


SCHEMES: dict[str, type[CVScheme]] = {s.name: s for s in (KFoldScheme, StratifiedKFoldScheme)}


def make_scheme(cfg: DictConfig) -> CVScheme:
    return SCHEMES[cfg.split.scheme](
        int(cfg.split.n_splits), bool(cfg.split.shuffle), int(cfg.seed)
    )


@dataclass(frozen=True)
class SplitResult:
    dev: pd.DataFrame
    test: pd.DataFrame
    folds: list[Fold]
    folds_doc: dict  # what folds.json holds
    manifest: dict


def _name(code: int, class_names: list[str] | None) -> str | int:
    """A class's original label for messages (the table stores codes 0..C-1)."""
    return class_names[int(code)] if class_names else int(code)


def holdout(
    table: pd.DataFrame, test_fraction: float, seed: int, class_names: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified, seeded holdout: ``(dev, test)``."""
    y = table["target"].to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        lonely = [_name(c, class_names) for c, n in zip(classes, counts, strict=True) if n < 2]
        raise FoldwiseError(
            f"classes {lonely} have a single row; a stratified test set needs 2+ per class.",
            "drop those classes or collect more rows.",
        )
    n_test = int(np.ceil(test_fraction * len(y)))
    if n_test < len(classes) or len(y) - n_test < len(classes):
        raise FoldwiseError(
            f"split.test_fraction={test_fraction} gives {n_test} test rows out of {len(y)}; "
            f"a stratified split of {len(classes)} classes needs at least {len(classes)} rows "
            "on each side.",
            "choose a test_fraction that leaves at least one row per class in test and dev.",
        )
    dev, test = train_test_split(table, test_size=test_fraction, stratify=y, random_state=seed)
    return dev.sort_values("row_id").reset_index(drop=True), test.sort_values("row_id").reset_index(
        drop=True
    )


def split(
    table: pd.DataFrame, cfg: DictConfig, class_names: list[str] | None = None
) -> SplitResult:
    """Holdout then CV folds; everything is checked before anything is returned.

    ``class_names`` (the original labels, see :class:`foldwise.data.Meta`) only make
    error messages speak the user's labels instead of codes.
    """
    scheme = make_scheme(cfg)
    dev, test = holdout(table, float(cfg.split.test_fraction), int(cfg.seed), class_names)
    folds = scheme.split(dev["row_id"].to_numpy(), dev["target"].to_numpy(), class_names)
    folds_doc = {
        "scheme": scheme.name,
        "n_splits": len(folds),
        "folds": [{"fold": f.index, "train": f.train, "val": f.val} for f in folds],
    }
    manifest = {
        "scheme": scheme.name,
        "n_splits": len(folds),
        "shuffle": scheme.shuffle,
        "seed": int(cfg.seed),
        "test_fraction": float(cfg.split.test_fraction),
        "n_dev": len(dev),
        "n_test": len(test),
        "dev_sha256": sha256_table(dev),
        "test_sha256": sha256_table(test),
        "folds_sha256": sha256_json(folds_doc),
    }
    return SplitResult(dev=dev, test=test, folds=folds, folds_doc=folds_doc, manifest=manifest)


def load_folds(doc: dict) -> list[Fold]:
    return [Fold(int(f["fold"]), list(f["train"]), list(f["val"])) for f in doc["folds"]]
