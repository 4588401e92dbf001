"""Fit diagnosis: no better than chance, underfitting, overfitting or a good fit.

Evidence, per fold, from the per-epoch training and validation curves (the validation
rows never train or stop anything) and the final scores of the returned model:

- ``train_score`` / ``val_score``: the returned model's final score (``diagnosis.metric``,
  macro-F1 by default) on its training rows and on the validation rows; ``gap`` their
  difference.
- ``still_improving``: training ran to ``max_epochs`` and the validation loss of the last
  ``window`` epochs still fell (least-squares slope below ``−improving_slope`` per epoch)
  — more epochs would likely help.
- ``val_rise``: how far the validation loss ended above its minimum, relative to that
  minimum (``(last − min) / min``), and ``gap_growth``: how much the loss gap
  (validation − training loss) grew from the epoch of that minimum to the end.

- ``chance``: what the fold's validation predictions score when shuffled against its
  validation labels — the expected score of predictions that carry no information about
  the labels (closed form: ``Σ_c n_c·m_c/n²`` for accuracy, ``mean_c 2·n_c·m_c/(n·(n_c+m_c))``
  for macro-F1 with n_c true and m_c predicted rows of class c, ``1 − (1/n)ΣᵢΣⱼ(yⱼ−ŷᵢ)²/
  Σ(y−ȳ)²`` for R²), and a permutation test of the mean validation score over folds
  against it (labels shuffled within each fold, 999 times, seeded).

Train and validation scores and their gap are means over folds — the numbers of the
leaderboard's ``train_*`` and ``gap_*`` columns, so a sentence never contradicts them;
the curve evidence is the median over folds (robust to one odd fold). Rules, in order
(thresholds in ``conf/diagnosis/default.yaml``):

0. **no better than chance** — the permutation test cannot tell the mean validation
   score from shuffled labels' (p ≥ 0.05): whatever the curves say, the model has
   learnt nothing about the labels that generalizes (pure-noise labels, a leak-free
   target the features cannot predict, a constant predictor).
1. **overfitting** — ``val_rise ≥ overfit_rise`` and ``gap_growth ≥ overfit_gap_growth``:
   validation loss climbs after its minimum while the gap widens (memorising noise).
   With early stopping on, the returned model is the one at the minimum: the verdict
   then describes the training run the rule stopped, and the evidence names the epoch.
2. **underfitting** — training and validation scores both below ``poor_score`` with a
   gap below ``small_gap`` (too little capacity), or at least ``improving_share`` of the
   folds were still improving at ``max_epochs`` (too little training).
3. **good fit** otherwise — better than chance, by the margin the reason states.

Then the verdict is made relative (:func:`relative`, in the aggregate stage) to the
baselines scored on the same folds (:mod:`foldwise.methods.baselines`) and to the sweep's
larger configurations (more parameters), each paired fold by fold with the Nadeau–Bengio
corrected t-test: under rule 2's fixed ``poor_score``, when no reference scores more than
``selection.rope`` higher, low scores are the noise floor of the features, not a lack of
capacity, and the verdict is a good fit; when one does, "underfitting" stands and the
reason names it and says whether it is significantly better (p < 0.05: more capacity or
another model family helps) or not (too few resamples to tell). Every reason says how
the configuration stands against the best baseline (worse than, no better than, not
distinguishable from, ahead of) and ends by naming the evidence it used.

Results without stored validation predictions (hand-made ones) skip rule 0.

For regression the "loss" above is ``1 − R²`` (the MSE over the scored rows' variance):
the MSE itself has the target's units, so absolute thresholds such as ``improving_slope``
would mean nothing; ``1 − R²`` is unit-free and on the scale cross-entropy thresholds
were chosen for. ``diagnosis.metric`` is then ``r2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from foldwise.methods.compare import Comparison

DEFAULTS: dict[str, float] = {
    "poor_score": 0.8,
    "small_gap": 0.05,
    "improving_slope": 0.001,
    "improving_share": 0.5,
    "window": 5,
    "overfit_rise": 0.1,
    "overfit_gap_growth": 0.05,
}


# Permutations of each fold's validation labels for the chance test, and its level.
PERMUTATIONS = 999
CHANCE_ALPHA = 0.05


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # "no better than chance" | "overfitting" | "underfitting" | "good fit"
    reason: str  # the rule that fired, in words, with its numbers
    train_score: float  # means over folds
    val_score: float
    gap: float  # mean over folds of train − validation score
    chance_score: float  # mean over folds of the shuffled-labels expectation (NaN: none)
    chance_p: float  # permutation p-value of val_score against chance (NaN: none)
    val_rise: float  # the curve evidence below: medians over folds
    gap_growth: float
    min_epoch: float  # epoch of the validation-loss minimum
    still_improving: float  # share of folds
    rule: str = ""  # which rule fired: chance, overfit, poor_score, improving, good

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _slope(values: Sequence[float]) -> float:
    y = np.asarray(values, dtype=float)
    if len(y) < 2:
        return 0.0
    x = np.arange(len(y), dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def chance_score(y: np.ndarray, pred: np.ndarray, metric: str) -> float:
    """Expected ``metric`` of ``pred`` against a uniformly random permutation of ``y``
    (closed forms in the module doc); NaN for a metric without one."""
    y, pred = np.asarray(y), np.asarray(pred)
    n = len(y)
    if metric == "r2":
        y, pred = y.astype(float), pred.astype(float)
        ss_tot = float(((y - y.mean()) ** 2).sum())
        if n < 2 or ss_tot == 0:
            return float("nan")
        # (1/n) Σᵢ Σⱼ (yⱼ − ŷᵢ)², expanded: O(n), not an n × n matrix
        expected_res = (y**2).sum() - 2 * y.sum() * pred.sum() / n + (pred**2).sum()
        return 1 - expected_res / ss_tot
    if metric not in ("acc", "f1"):
        return float("nan")
    labels = np.union1d(y, pred)  # scikit-learn's macro label set: classes in y or pred
    n_true = np.array([(y == c).sum() for c in labels], dtype=float)
    n_pred = np.array([(pred == c).sum() for c in labels], dtype=float)
    if metric == "acc":
        return float((n_true * n_pred).sum() / n**2)
    return float(np.mean(2 * n_true * n_pred / (n * (n_true + n_pred))))


def permuted_scores(y: np.ndarray, pred: np.ndarray, metric: str, perms: np.ndarray) -> np.ndarray:
    """``metric`` of ``pred`` against ``y[perms[b]]`` for each row b of ``perms``
    (vectorised macro-F1, accuracy or R²: scikit-learn's definitions)."""
    y, pred = np.asarray(y), np.asarray(pred)
    yp = y[perms]
    if metric == "r2":
        y, yp, pred = y.astype(float), yp.astype(float), pred.astype(float)
        ss_tot = ((y - y.mean()) ** 2).sum()
        return 1 - ((yp - pred[None, :]) ** 2).sum(axis=1) / ss_tot
    if metric == "acc":
        return (yp == pred[None, :]).mean(axis=1)
    f1 = []
    for c in np.union1d(y, pred):
        tp = (yp[:, pred == c] == c).sum(axis=1)  # only rows predicted c can be hits
        f1.append(2 * tp / ((y == c).sum() + (pred == c).sum()))
    return np.mean(f1, axis=0)


def chance_evidence(results: Sequence[dict], metric: str, seed: int = 0) -> tuple[float, float]:
    """(mean chance score over folds, permutation p-value of the mean validation score).

    Each fold's labels are shuffled within the fold (its predictions were made by a model
    that never trained on them, so under "the predictions carry no information about the
    labels" every shuffle is as likely as the real order); the statistic is the mean
    over folds. (NaN, NaN) when a result has no stored predictions or the metric has no
    shuffled-labels score."""
    preds = [r.get("predictions", {}).get("val") for r in results]
    if metric not in ("acc", "f1", "r2") or any(p is None for p in preds):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    chance, observed, null = [], [], np.zeros(PERMUTATIONS)
    for p in preds:
        y, pred = np.asarray(p["true"]), np.asarray(p["pred"])
        chance.append(chance_score(y, pred, metric))
        identity = np.arange(len(y))[None, :]
        observed.append(float(permuted_scores(y, pred, metric, identity)[0]))
        perms = rng.permuted(np.tile(np.arange(len(y), dtype=np.int32), (PERMUTATIONS, 1)), axis=1)
        # scored a few million cells at a time: a 10,000-row fold is not a 10⁷ float array
        for part in np.array_split(np.arange(PERMUTATIONS), -(-perms.size // 2_000_000)):
            null[part] += permuted_scores(y, pred, metric, perms[part])
    if not np.all(np.isfinite(chance)):
        return float("nan"), float("nan")
    t, null = float(np.mean(observed)), null / len(preds)
    # ≥ with a rounding allowance: a constant predictor ties every shuffle (p = 1)
    p_value = (1 + int((null >= t - 1e-12).sum())) / (PERMUTATIONS + 1)
    return float(np.mean(chance)), float(p_value)


def fold_evidence(result: dict, metric: str, max_epochs: int, rules: dict) -> dict[str, float]:
    """One fold's evidence from its result dict (``metrics`` and ``history``)."""
    h, m = result["history"], result["metrics"]
    if "val_r2" in h:  # regression: unit-free 1 − R² (see the module doc)
        train_loss = 1 - np.asarray(h["train_r2"], dtype=float)
        val_loss = 1 - np.asarray(h["val_r2"], dtype=float)
    else:
        train_loss = np.asarray(h["train_loss"], dtype=float)
        val_loss = np.asarray(h["val_loss"], dtype=float)
    k = int(np.argmin(val_loss))
    window = int(rules["window"])
    ran_out = int(result.get("epochs_trained", len(val_loss))) >= max_epochs
    improving = ran_out and _slope(val_loss[-window:]) < -float(rules["improving_slope"])
    lo = float(val_loss[k])
    return {
        "train_score": float(m[f"train_{metric}"]),
        "val_score": float(m[f"val_{metric}"]),
        "val_rise": float((val_loss[-1] - lo) / lo) if lo > 0 else 0.0,
        "gap_growth": float((val_loss[-1] - train_loss[-1]) - (val_loss[k] - train_loss[k])),
        "min_epoch": float(k + 1),
        "still_improving": float(improving),
    }


def diagnose(
    results: Sequence[dict],
    *,
    metric: str = "f1",
    max_epochs: int,
    rules: dict | None = None,
    seed: int = 0,
) -> Diagnosis:
    """The verdict for one configuration from its folds' results (see the module doc)."""
    r = {**DEFAULTS, **(rules or {})}
    ev = [fold_evidence(x, metric, max_epochs, r) for x in results]
    med = {k: float(np.median([e[k] for e in ev])) for k in ev[0]}
    train = float(np.mean([e["train_score"] for e in ev]))
    val = float(np.mean([e["val_score"] for e in ev]))
    gap = float(np.mean([e["train_score"] - e["val_score"] for e in ev]))
    chance, p = chance_evidence(results, metric, seed)
    share = float(np.mean([e["still_improving"] for e in ev]))
    common = dict(
        train_score=train, val_score=val, gap=gap, chance_score=chance, chance_p=p,
        val_rise=med["val_rise"], gap_growth=med["gap_growth"], min_epoch=med["min_epoch"],
        still_improving=share,
    )  # fmt: skip
    k = len(ev)
    scores = (
        f"train {metric} {train:.3f}, validation {val:.3f} (means over {k} folds; "
        f"train − validation gap {gap:+.3f})"
    )
    versus = (
        "" if p != p else
        f"; validation {metric} {val:.3f} vs {chance:.3f} for its predictions shuffled "
        f"against the labels (permutation p = {p:.3f})"
    )  # fmt: skip
    if p == p and p >= CHANCE_ALPHA:
        reason = (
            f"validation {metric} {val:.3f} is not distinguishable from {chance:.3f}, the "
            f"score of its predictions shuffled against the labels (permutation p = {p:.3f}, "
            f"{k} folds): the model learnt nothing about the labels that generalizes; "
            f"{scores}"
        )
        return Diagnosis("no better than chance", reason, **common, rule="chance")
    if med["val_rise"] >= r["overfit_rise"] and med["gap_growth"] >= r["overfit_gap_growth"]:
        reason = (
            f"in the median fold, validation loss ends {med['val_rise']:.0%} above its "
            f"minimum (epoch {med['min_epoch']:.0f}) while the loss gap grew by "
            f"{med['gap_growth']:.3f}; {scores}{versus}"
        )
        return Diagnosis("overfitting", reason, **common, rule="overfit")
    if train < r["poor_score"] and val < r["poor_score"] and gap < r["small_gap"]:
        reason = f"{scores}: both below {r['poor_score']:g} with a gap under {r['small_gap']:g}"
        return Diagnosis("underfitting", reason + versus, **common, rule="poor_score")
    if share >= r["improving_share"]:
        reason = (
            f"{share:.0%} of folds were still improving at max_epochs={max_epochs} "
            f"(validation loss falling over the last epochs); {scores}{versus}"
        )
        return Diagnosis("underfitting", reason, **common, rule="improving")
    reason = (
        f"{scores}; validation loss ends {med['val_rise']:.0%} above its minimum in the "
        f"median fold{versus}"
    )
    return Diagnosis("good fit", reason, **common, rule="good")


@dataclass(frozen=True)
class Reference:
    """A model the diagnosed configuration is held against, on the same folds."""

    label: str
    kind: str  # "baseline" or "larger configuration"
    score: float  # its mean validation score
    versus: Comparison  # the reference against the diagnosed one: positive = reference better


def relative(
    d: Diagnosis,
    metric: str,
    refs: Sequence[Reference],
    *,
    rope: float = 0.01,
    alpha: float = 0.05,
) -> Diagnosis:
    """``d`` held against baselines and larger configurations (see the module doc).

    Rule 2's fixed-threshold "underfitting" becomes a good fit (the noise floor) only when
    no reference scores more than ``rope`` higher; it stands, saying which reference
    scores higher and whether significantly (corrected p < ``alpha``), otherwise. Every
    verdict but "no better than chance" then says how it stands against the best
    baseline, and the reason ends with the evidence used."""
    if d.verdict == "no better than chance":
        return d
    kinds = sorted({r.kind for r in refs})
    used = "curves, chance test" + "".join(f", {k}s" for k in kinds)
    if not refs:
        return replace(d, reason=f"{d.reason} [evidence: {used}; no baseline or larger "
                                 "configuration to compare with]")  # fmt: skip
    ahead = sorted((r for r in refs if r.versus.mean > rope), key=lambda r: -r.versus.mean)
    better = [r for r in ahead if r.versus.p_value < alpha]
    verdict, reason, named = d.verdict, d.reason, None
    if d.rule == "poor_score":
        if not ahead:
            verdict = "good fit"
            reason = (
                f"validation {metric} {d.val_score:.3f} is low, but no baseline or larger "
                f"configuration scores more than {rope:g} higher ({_listed(refs)}): the noise "
                f"floor of these features, not a lack of capacity; {reason}"
            )
        elif better:
            named = better[0]
            reason = (
                f"{reason}; {named.label} ({named.kind}) does better: {named.score:.3f} "
                f"({_diff(named)}): more capacity or another model family helps"
            )
        else:
            named = ahead[0]
            reason = (
                f"{reason}; {named.label} ({named.kind}) scores higher, {named.score:.3f} "
                f"({_diff(named)}), though not significantly: too few resamples to tell a "
                "lack of capacity from the noise floor"
            )
    bases = [r for r in refs if r.kind == "baseline"]
    top = max(bases, key=lambda r: r.versus.mean, default=None)  # the closest or a better
    if top is not None and top is not named:
        if top in better:
            word = "worse than"
        elif top.versus.mean >= -rope:
            word = "no better than"
        elif top.versus.p_value < alpha:
            word = "ahead of the best baseline,"
        else:
            word = "not distinguishable from the best baseline,"
        reason += f"; {word} {top.label} ({top.score:.3f}, {_diff(top)})"
    return replace(d, verdict=verdict, reason=f"{reason} [evidence: {used}]")


def _diff(r: Reference) -> str:
    return f"difference {r.versus.mean:+.3f}, corrected p = {r.versus.p_value:.3f}"


def _listed(refs: Sequence[Reference]) -> str:
    return ", ".join(f"{r.label} {r.score:.3f}" for r in refs)
