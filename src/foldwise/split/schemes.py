"""Resampling schemes: dev rows (+ labels, groups, times) → resamples.

One small class per scheme behind one contract, after scikit-learn's
``model_selection/_split.py``: ``count`` says how many resamples a scheme would make
(so an exhaustive scheme can refuse *before* enumerating), ``check`` rejects data it
cannot split, ``split`` returns :class:`Resample` objects holding row ids. Every scheme
wraps scikit-learn's splitter where one exists (``splitter()``); assignments equal what
that splitter yields for the same seed and dev-row order (tested per scheme). Only the
bootstrap and sampled leave-p-out draw their own rows, from a seeded NumPy generator.

(Over 600 lines on purpose: fifteen small classes read as one catalogue, like
scikit-learn's ``_split.py``; splitting it would scatter the one contract.)

Each scheme also says which *kind* of resampling it is, since that decides the honest
summary (see :mod:`foldwise.methods.resampling`):

- ``folds``: disjoint validation sets covering the dev rows (k-fold family, LOGO) or
  a forward chain (time series): mean ± t-interval over folds.
- ``repeated``: overlapping random resamples (repeated k-fold, shuffle-split):
  Nadeau–Bengio corrected interval.
- ``holdout``: one split: the estimate and a bootstrap interval over its validation rows.
- ``exhaustive``: leave-one-out / leave-p-out / leave-p-groups-out: predictions pooled
  over all resamples; no interval (no unbiased variance estimator exists).
- ``bootstrap``: out-of-bag scores and the .632 / .632+ estimates.

Schemes that read their options validate them in ``validate`` (static, before any
data is read); :data:`SCHEMES` maps each config name to its class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from foldwise.errors import FoldwiseError


@dataclass(frozen=True)
class Resample:
    """One resample: the model trains on ``train`` and is scored on ``val`` (row ids).

    ``train`` may repeat a row (bootstrap draws). ``role`` is ``"resample"`` except for
    the bootstrap's ``"apparent"`` fit (all dev rows, scored on themselves), which the
    .632 estimators need and which is never averaged with the others.
    """

    index: int
    train: list[int]
    val: list[int]
    role: str = "resample"


# ----------------------------------------------------------------------- options
def _int(key: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise FoldwiseError(f"params: split.{key} must be an integer >= {low}, got {value!r}.")


def _fraction(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise FoldwiseError(f"params: split.{key} must be strictly between 0 and 1, got {value!r}.")


def _bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise FoldwiseError(f"params: split.{key} must be true or false, got {value!r}.")


# Shared by every scheme: how the lockbox is carved and how duplicates are treated.
COMMON = {"scheme": None, "test_fraction": 0.2, "duplicates": "warn"}


class Scheme:
    """Base class: ``validate`` (static) → ``count`` → ``check`` → ``split``."""

    name: ClassVar[str]
    kind: ClassVar[str] = "folds"
    grouped: ClassVar[bool] = False  # needs data.group_column
    temporal: ClassVar[bool] = False  # needs data.time_column; rows in time order
    stratified: ClassVar[bool] = False
    randomized: ClassVar[bool] = False  # draws at random (from the seed) without a shuffle option
    # option -> default; ``validate`` checks every key a config gives.
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, opts: dict[str, Any], seed: int) -> None:
        self.opts = {**self.options, **{k: opts[k] for k in self.options if k in opts}}
        self.seed = int(seed)

    def __getattr__(self, key: str) -> Any:
        opts = self.__dict__.get("opts", {})
        if key in opts:
            return opts[key]
        raise AttributeError(key)

    # -- static ------------------------------------------------------------------
    @classmethod
    def validate(cls, opts: dict[str, Any]) -> None:
        unknown = sorted(set(opts) - set(cls.options) - set(COMMON))
        if unknown:
            known = ", ".join(sorted(cls.options)) or "none besides test_fraction"
            raise FoldwiseError(
                f"params: split={cls.name} has no option {', '.join(unknown)}.",
                f"its options are: {known}. Did you mean another scheme? (see conf/split/)",
            )
        merged = {**cls.options, **opts}
        for key, value in merged.items():
            if key in ("n_splits",):
                _int(key, value, 2)
            elif key in ("n_repeats", "p", "max_splits", "n_resamples"):
                _int(key, value, 1)
            elif key == "gap":
                _int(key, value, 0)
            elif key in ("max_train_size", "val_size", "sample") and value is not None:
                _int(key, value, 1)
            elif key == "val_fraction":
                _fraction(key, value)
            elif key in ("shuffle", "stratify"):
                _bool(key, value)

    # -- data --------------------------------------------------------------------
    def count(self, n: int, groups: np.ndarray | None = None) -> int:
        """How many resamples ``split`` would return for ``n`` dev rows."""
        return int(self.opts["n_splits"])

    def check(
        self, y: np.ndarray, groups: np.ndarray | None, class_names: list[str] | None = None
    ) -> None:
        """Raise :class:`FoldwiseError` if the scheme cannot split these rows."""
        if self.grouped and groups is None:
            raise FoldwiseError(
                f"split={self.name} needs groups, but the data has no group column.",
                "set data.group_column to the column naming each row's group (patient, "
                "subject, site, ...), or choose an ungrouped scheme such as split=kfold.",
            )

    def splitter(self):  # -> a scikit-learn cross-validator
        raise NotImplementedError

    def positions(
        self, y: np.ndarray, groups: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train, val) positions into the dev rows, in the splitter's order."""
        x = np.zeros((len(y), 1))
        # Only grouped splitters get the groups (the others would warn that they ignore them).
        g = groups if self.grouped else None
        return [(tr, va) for tr, va in self.splitter().split(x, y, g)]

    def split(
        self,
        row_ids: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        class_names: list[str] | None = None,
    ) -> list[Resample]:
        """Resamples of the dev rows ``row_ids`` (in the order the scheme expects)."""
        self.check(y, groups, class_names)
        return [
            Resample(i, sorted(row_ids[tr].tolist()), sorted(row_ids[va].tolist()))
            for i, (tr, va) in enumerate(self.positions(y, groups))
        ]

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.opts.items())
        return f"{self.name}({shown})" if shown else self.name


def _too_many_folds(k: int, n: int, what: str = "dev rows") -> FoldwiseError:
    if n < 2:
        return FoldwiseError(
            f"split.n_splits={k} is larger than the {n} {what}: cross-validation needs at "
            f"least 2 {what}.",
            "collect more rows (or groups), or lower split.test_fraction so that more stay "
            "in the dev set.",
        )
    return FoldwiseError(
        f"split.n_splits={k} is larger than the {n} {what}: a fold would have no validation rows.",
        f"use at most {n} folds (-S split.n_splits={n}; or split=leave_one_out), or collect "
        "more rows.",
    )


def _small_classes(k: int, y: np.ndarray, class_names: list[str] | None, fix: str) -> None:
    classes, counts = np.unique(y, return_counts=True)
    small = {_name(c, class_names): int(n) for c, n in zip(classes, counts, strict=True) if n < k}
    if small:
        lower = f"lower split.n_splits to {min(counts)} or less, " if min(counts) >= 2 else ""
        raise FoldwiseError(
            f"stratified {k}-fold CV needs every class to have at least {k} dev rows; these "
            f"classes have fewer (class: rows): {small}.",
            f"{lower}collect more rows of those classes, or use {fix}.",
        )


def _name(code: int, class_names: list[str] | None) -> str | int:
    """A class's original label for messages (the table stores codes 0..C-1)."""
    return class_names[int(code)] if class_names else int(code)


def _n_groups(groups: np.ndarray | None) -> int:
    return 0 if groups is None else len(np.unique(groups))


# ------------------------------------------------------------------ k-fold family
class KFoldScheme(Scheme):
    """k folds (contiguous, or shuffled with the seed), ignoring labels: ``KFold``."""

    name = "kfold"
    options: ClassVar[dict[str, Any]] = {"n_splits": 5, "shuffle": True}

    def _rs(self) -> int | None:
        return self.seed if self.shuffle else None

    def splitter(self):
        from sklearn.model_selection import KFold

        return KFold(self.n_splits, shuffle=self.shuffle, random_state=self._rs())

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        if self.n_splits > len(y):
            raise _too_many_folds(self.n_splits, len(y))


class StratifiedKFoldScheme(KFoldScheme):
    """k folds that keep each class's share: ``StratifiedKFold``."""

    name = "stratified_kfold"
    stratified = True

    def splitter(self):
        from sklearn.model_selection import StratifiedKFold

        return StratifiedKFold(self.n_splits, shuffle=self.shuffle, random_state=self._rs())

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        _small_classes(self.n_splits, y, class_names, "split=kfold")


class GroupKFoldScheme(KFoldScheme):
    """k folds of whole groups (no group in both train and validation): ``GroupKFold``."""

    name = "group_kfold"
    grouped = True
    options: ClassVar[dict[str, Any]] = {"n_splits": 5, "shuffle": False}

    def splitter(self):
        from sklearn.model_selection import GroupKFold

        return GroupKFold(self.n_splits, shuffle=self.shuffle, random_state=self._rs())

    def check(self, y, groups, class_names=None) -> None:
        Scheme.check(self, y, groups, class_names)
        if self.n_splits > _n_groups(groups):
            raise _too_many_folds(self.n_splits, _n_groups(groups), "groups in the dev rows")


class StratifiedGroupKFoldScheme(GroupKFoldScheme):
    """Group folds that keep class shares as well as groups allow: ``StratifiedGroupKFold``."""

    name = "stratified_group_kfold"
    stratified = True
    options: ClassVar[dict[str, Any]] = {"n_splits": 5, "shuffle": True}

    def splitter(self):
        from sklearn.model_selection import StratifiedGroupKFold

        return StratifiedGroupKFold(self.n_splits, shuffle=self.shuffle, random_state=self._rs())


class LeaveOneGroupOutScheme(Scheme):
    """One resample per group, validated on that group: ``LeaveOneGroupOut``."""

    name = "leave_one_group_out"
    grouped = True
    options: ClassVar[dict[str, Any]] = {"max_splits": 1000}

    def count(self, n, groups=None) -> int:
        return _n_groups(groups)

    def splitter(self):
        from sklearn.model_selection import LeaveOneGroupOut

        return LeaveOneGroupOut()

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        if _n_groups(groups) < 2:
            raise FoldwiseError("split=leave_one_group_out needs 2 or more groups in the dev rows.")
        _cap(self, self.count(len(y), groups), "groups", "split=group_kfold")


class LeavePGroupsOutScheme(LeaveOneGroupOutScheme):
    """Every set of p groups held out once: ``LeavePGroupsOut`` (C(G, p) resamples)."""

    name = "leave_p_groups_out"
    kind = "exhaustive"
    options: ClassVar[dict[str, Any]] = {"p": 2, "max_splits": 1000}

    def count(self, n, groups=None) -> int:
        return math.comb(_n_groups(groups), self.p)

    def splitter(self):
        from sklearn.model_selection import LeavePGroupsOut

        return LeavePGroupsOut(self.p)

    def check(self, y, groups, class_names=None) -> None:
        Scheme.check(self, y, groups, class_names)
        if self.p >= _n_groups(groups):
            raise FoldwiseError(
                f"split.p={self.p} leaves no training group: the dev rows have "
                f"{_n_groups(groups)} groups.",
                "use a smaller p.",
            )
        _cap(self, self.count(len(y), groups), f"C(groups, {self.p})", "split=group_kfold")


# --------------------------------------------------------------- repeated / random
class RepeatedKFoldScheme(KFoldScheme):
    """k-fold repeated with different shuffles: ``RepeatedKFold`` (n_splits × n_repeats)."""

    name = "repeated_kfold"
    randomized = True
    kind = "repeated"
    options: ClassVar[dict[str, Any]] = {"n_splits": 5, "n_repeats": 3}

    def count(self, n, groups=None) -> int:
        return self.n_splits * self.n_repeats

    def splitter(self):
        from sklearn.model_selection import RepeatedKFold

        return RepeatedKFold(n_splits=self.n_splits, n_repeats=self.n_repeats,
                             random_state=self.seed)  # fmt: skip


class RepeatedStratifiedKFoldScheme(RepeatedKFoldScheme):
    """Stratified k-fold repeated with different shuffles: ``RepeatedStratifiedKFold``."""

    name = "repeated_stratified_kfold"
    stratified = True

    def splitter(self):
        from sklearn.model_selection import RepeatedStratifiedKFold

        return RepeatedStratifiedKFold(n_splits=self.n_splits, n_repeats=self.n_repeats,
                                       random_state=self.seed)  # fmt: skip

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        _small_classes(self.n_splits, y, class_names, "split=repeated_kfold")


class ShuffleSplitScheme(Scheme):
    """Repeated random sub-sampling (Monte-Carlo CV): ``ShuffleSplit``."""

    name = "shuffle_split"
    randomized = True
    kind = "repeated"
    options: ClassVar[dict[str, Any]] = {"n_splits": 10, "val_fraction": 0.2}

    def splitter(self):
        from sklearn.model_selection import ShuffleSplit

        return ShuffleSplit(self.n_splits, test_size=self.val_fraction, random_state=self.seed)

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        n_val = math.ceil(self.val_fraction * len(y))
        if n_val < 1 or len(y) - n_val < 1:
            raise FoldwiseError(
                f"split.val_fraction={self.val_fraction} of {len(y)} dev rows leaves an empty "
                "side.",
                "choose a fraction that leaves rows to train on and to validate on.",
            )


class StratifiedShuffleSplitScheme(ShuffleSplitScheme):
    """Repeated random sub-sampling keeping class shares: ``StratifiedShuffleSplit``."""

    name = "stratified_shuffle_split"
    stratified = True

    def splitter(self):
        from sklearn.model_selection import StratifiedShuffleSplit

        return StratifiedShuffleSplit(self.n_splits, test_size=self.val_fraction,
                                      random_state=self.seed)  # fmt: skip

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        _stratifiable(y, math.ceil(self.val_fraction * len(y)), class_names)


def stratify_blockers(
    y: np.ndarray, n_side: int, class_names: list[str] | None = None
) -> tuple[list, bool]:
    """What stops a stratified split of ``y`` with ``n_side`` rows on one side: the
    classes with a single row, and whether either side is too small to hold a row of
    every class. Callers word the error for what they split."""
    classes, counts = np.unique(y, return_counts=True)
    lonely = [_name(c, class_names) for c, n in zip(classes, counts, strict=True) if n < 2]
    return lonely, min(n_side, len(y) - n_side) < len(classes)


def _stratifiable(y: np.ndarray, n_val: int, class_names: list[str] | None) -> None:
    lonely, too_small = stratify_blockers(y, n_val, class_names)
    classes = np.unique(y)
    if lonely:
        raise FoldwiseError(
            f"dev classes {lonely} have a single row; a stratified split needs 2+ per class.",
            "use split.stratify=false / an unstratified scheme, or collect more rows.",
        )
    if too_small:
        raise FoldwiseError(
            f"split.val_fraction gives {n_val} validation rows of {len(y)}; a stratified split "
            f"of {len(classes)} classes needs at least {len(classes)} on each side.",
            "choose a val_fraction that leaves a row of every class on both sides.",
        )


class HoldoutScheme(Scheme):
    """A single train/validation split (``train_test_split``; stratified by default)."""

    name = "holdout"
    randomized = True
    kind = "holdout"
    options: ClassVar[dict[str, Any]] = {"val_fraction": 0.2, "stratify": True}

    def count(self, n, groups=None) -> int:
        return 1

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        n_val = math.ceil(self.val_fraction * len(y))
        if self.stratify:
            _stratifiable(y, n_val, class_names)
        elif n_val < 1 or len(y) - n_val < 1:
            raise FoldwiseError(f"split.val_fraction={self.val_fraction} leaves an empty side.")

    def splitter(self):
        # train_test_split is StratifiedShuffleSplit / ShuffleSplit with one split.
        from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

        cls = StratifiedShuffleSplit if self.stratify else ShuffleSplit
        return cls(1, test_size=self.val_fraction, random_state=self.seed)


class TimeSeriesScheme(Scheme):
    """Forward-chaining folds over rows in time order: ``TimeSeriesSplit``.

    Each validation block comes after its training rows; ``gap`` rows between them are
    dropped (for targets that look ahead), ``max_train_size`` gives a sliding window,
    ``val_size`` fixes each validation block's length.
    """

    name = "time_series"
    temporal = True
    options: ClassVar[dict[str, Any]] = {
        "n_splits": 5, "gap": 0, "max_train_size": None, "val_size": None,
    }  # fmt: skip

    def splitter(self):
        from sklearn.model_selection import TimeSeriesSplit

        return TimeSeriesSplit(self.n_splits, max_train_size=self.max_train_size,
                               test_size=self.val_size, gap=self.gap)  # fmt: skip

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        val = self.val_size or len(y) // (self.n_splits + 1)
        if len(y) - self.gap - val * self.n_splits < 1 or val < 1:
            raise FoldwiseError(
                f"split=time_series with n_splits={self.n_splits}, gap={self.gap} and "
                f"val_size={self.val_size} does not fit in {len(y)} dev rows.",
                "use fewer splits, a smaller gap or a smaller val_size.",
            )


# ---------------------------------------------------------------------- exhaustive
def _cap(scheme: Scheme, count: int, what: str, alternative: str) -> None:
    if count > scheme.max_splits:
        extra = (
            f" split.sample=<m> trains m seeded random leave-{scheme.p}-out splits instead;"
            if scheme.name == "leave_p_out"
            else ""
        )
        shown = f"{count:,}" if count < 10**12 else f"about {float(count):.2e}"
        raise FoldwiseError(
            f"split={scheme.name} would make {shown} resamples ({what}), above "
            f"split.max_splits={scheme.max_splits:,}: one model per resample and configuration.",
            f"raise split.max_splits if you mean it;{extra} or use {alternative} "
            "(k-fold has far lower cost for a slightly pessimistic estimate).",
        )


class LeaveOneOutScheme(Scheme):
    """Every dev row validated alone by a model trained on all others: ``LeaveOneOut``."""

    name = "leave_one_out"
    kind = "exhaustive"
    options: ClassVar[dict[str, Any]] = {"max_splits": 2000}

    def count(self, n, groups=None) -> int:
        return n

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        _cap(self, len(y), "one per dev row", "split=stratified_kfold")

    def splitter(self):
        from sklearn.model_selection import LeaveOneOut

        return LeaveOneOut()


class LeavePOutScheme(Scheme):
    """Every set of p dev rows validated once: ``LeavePOut`` (C(n, p) resamples).

    With ``sample=m``, m distinct p-row validation sets drawn at random (seeded)
    instead of all C(n, p).
    """

    name = "leave_p_out"
    kind = "exhaustive"
    options: ClassVar[dict[str, Any]] = {"p": 2, "max_splits": 2000, "sample": None}

    def count(self, n, groups=None) -> int:
        total = math.comb(n, self.p)
        return total if self.sample is None else min(self.sample, total)

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        if self.p >= len(y):
            raise FoldwiseError(f"split.p={self.p} leaves no training rows of {len(y)}.")
        _cap(self, self.count(len(y)), f"C({len(y)}, {self.p})", "split=stratified_kfold")

    def splitter(self):
        from sklearn.model_selection import LeavePOut

        return LeavePOut(self.p)

    def positions(self, y, groups):
        if self.sample is None:
            return super().positions(y, groups)
        n, rng, seen, out = len(y), np.random.default_rng(self.seed), set(), []
        everyone = np.arange(n)
        while len(out) < self.count(n):
            val = np.sort(rng.choice(n, self.p, replace=False))
            if tuple(val) not in seen:
                seen.add(tuple(val))
                out.append((np.setdiff1d(everyone, val), val))
        return out


# ----------------------------------------------------------------------- bootstrap
class BootstrapScheme(Scheme):
    """B draws of n dev rows with replacement; each model is scored on its out-of-bag rows.

    No scikit-learn splitter draws with replacement, so the draws come from
    ``numpy.random.default_rng(seed).integers(0, n, n)``, once per resample. One more
    resample, role ``apparent``, trains on all dev rows and scores them: the apparent
    error the .632 estimators need.
    """

    name = "bootstrap"
    randomized = True
    kind = "bootstrap"
    options: ClassVar[dict[str, Any]] = {"n_resamples": 50}

    def count(self, n, groups=None) -> int:
        return self.n_resamples + 1

    def check(self, y, groups, class_names=None) -> None:
        super().check(y, groups, class_names)
        if len(y) < 3:
            raise FoldwiseError(f"split=bootstrap needs at least 3 dev rows, got {len(y)}.")

    def positions(self, y, groups):
        n, rng = len(y), np.random.default_rng(self.seed)
        out = []
        while len(out) < self.n_resamples:
            draw = np.sort(rng.integers(0, n, n))
            oob = np.setdiff1d(np.arange(n), draw)
            if len(oob):  # a draw containing every row has nothing to score (tiny n only)
                out.append((draw, oob))
        return out

    def split(self, row_ids, y, groups=None, class_names=None) -> list[Resample]:
        self.check(y, groups, class_names)
        out = [
            Resample(i, row_ids[tr].tolist(), sorted(row_ids[va].tolist()))
            for i, (tr, va) in enumerate(self.positions(y, groups))
        ]
        everyone = sorted(row_ids.tolist())
        return [*out, Resample(len(out), everyone, everyone, role="apparent")]


SCHEMES: dict[str, type[Scheme]] = {
    s.name: s
    for s in (
        KFoldScheme,
        StratifiedKFoldScheme,
        GroupKFoldScheme,
        StratifiedGroupKFoldScheme,
        LeaveOneGroupOutScheme,
        LeavePGroupsOutScheme,
        RepeatedKFoldScheme,
        RepeatedStratifiedKFoldScheme,
        ShuffleSplitScheme,
        StratifiedShuffleSplitScheme,
        HoldoutScheme,
        TimeSeriesScheme,
        LeaveOneOutScheme,
        LeavePOutScheme,
        BootstrapScheme,
    )
}


def scheme_options(split_cfg: Any) -> dict[str, Any]:
    """The ``split`` section as a plain dict (DictConfig or dict)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(split_cfg, DictConfig):
        return OmegaConf.to_container(split_cfg, resolve=True)  # type: ignore[return-value]
    return dict(split_cfg)


def validate(split_cfg: Any) -> type[Scheme]:
    """Static checks of the ``split`` section; returns the scheme class."""
    opts = scheme_options(split_cfg)
    name = opts.get("scheme")
    if name not in SCHEMES:
        raise FoldwiseError(
            f"params: unknown split.scheme {name!r}.",
            f"use one of: {', '.join(SCHEMES)} (e.g. dvc exp run -S split=group_kfold).",
        )
    cls = SCHEMES[name]
    cls.validate({k: v for k, v in opts.items() if k not in COMMON})
    if opts.get("duplicates", "warn") not in ("warn", "error"):
        raise FoldwiseError(
            f"params: split.duplicates must be warn or error, got {opts['duplicates']!r}."
        )
    return cls


def make_scheme(split_cfg: Any, seed: int) -> Scheme:
    cls = validate(split_cfg)
    return cls(scheme_options(split_cfg), seed)
