"""A reusable lockbox (``lockbox.mode=thresholdout``): Thresholdout, Dwork et al. 2015.

C. Dwork, V. Feldman, M. Hardt, T. Pitassi, O. Reingold, A. Roth, "The reusable holdout:
Preserving validity in adaptive data analysis", Science 349(6248):636–638 (2015); the
algorithm and its guarantee are restated in "Guilt-free data reuse", CACM 60(4) (2017),
Figure 1 and Theorem 9. Given a training set S_t, a holdout S_h, a threshold T, a noise
rate σ and a budget B:

1. draw γ ~ Lap(2σ) and set T̂ = T + γ;
2. for each query φ (a function from a row to [0, 1]):
   if B < 1, answer ⊥ (refuse); else draw η ~ Lap(4σ) and
   * if |E_{S_h}[φ] − E_{S_t}[φ]| > T̂ + η: draw ξ ~ Lap(σ) and a new γ ~ Lap(2σ),
     B ← B − 1, T̂ ← T + γ, and answer E_{S_h}[φ] + ξ;
   * otherwise answer E_{S_t}[φ].

In foldwise a **query** is one model's test accuracy: φ(row) = 1 when the model
classifies the row correctly, so E_{S_h}[φ] is its accuracy on the lockbox rows, and the
training-side value E_{S_t}[φ] is the model's cross-validated accuracy on the dev rows
(any value computed without the holdout will do; the theorem's "overfitting" counter is
then about the CV estimate). Answers are clipped to [0, 1]: the true accuracy lies there,
so clipping can only bring an answer closer to it.

**Noise.** Every draw comes from a 128-bit secret key per test set, kept beside the
ledger (``.foldwise/lockbox/thresholdout/<test sha256>.key``, outside git: the audit log
holds only its hash; a reader who knew the key could subtract ξ from an answer). Query i's
η and ξ, and the k-th γ, are fixed by (key, i) and (key, k): running a query again cannot
draw new noise, and a query is answered once per model (a repeat reports the recorded
answer, as in the default lockbox).

**Guarantee** (Theorem 9): for τ, β > 0 and m ≥ B > 0, with T = 3τ/4 and
σ = τ / (96 ln(4m/β)), an i.i.d. holdout of n rows, and any analyst who sees S_t and the
answers and picks φ_1…φ_m adaptively: P[∃ i ≤ m: Z_i < B and |a_i − P[φ_i]| ≥ τ] ≤ β,
where Z_i counts the queries j ≤ i whose training-side value is more than τ/2 from the
truth, whenever n ≥ n_0 = O(ln(m/β)/τ²) · min{B, √(B ln(ln(m/β)/τ))/τ}. The constant in
n_0 is not given, so foldwise prints the scale of n_0 beside n rather than a verdict.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foldwise.errors import FoldwiseError
from foldwise.files import shared_root

MODES = ("once", "thresholdout")
METRIC = "acc"  # the only score that is a row-wise mean of [0, 1] values (F1, loss: not)
CITATION = "Dwork et al., Science 349:636 (2015); Theorem 9 of CACM 60(4) (2017)"
# One independent stream of draws per kind of noise, each indexed by query (η, ξ) or by
# over-threshold answer (γ).
STREAMS = {"gamma": 0, "eta": 1, "xi": 2}


@dataclass(frozen=True)
class Settings:
    """``lockbox.thresholdout``; ``threshold``/``sigma`` are the theorem's unless set."""

    budget: int  # B: over-threshold answers
    max_queries: int  # m: queries in all
    tolerance: float  # τ: the accuracy the guarantee is about
    beta: float  # β: its failure probability
    threshold: float  # T
    sigma: float  # σ

    @classmethod
    def of(cls, section: Any) -> Settings:
        tau, beta = float(section.tolerance), float(section.beta)
        budget, m = int(section.budget), int(section.max_queries)
        t_thm, s_thm = theorem_settings(tau, beta, m)
        t, s = section.get("threshold"), section.get("sigma")
        return cls(budget, m, tau, beta, t_thm if t is None else float(t),
                   s_thm if s is None else float(s))  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def theorem_settings(tolerance: float, beta: float, max_queries: int) -> tuple[float, float]:
    """Theorem 9's threshold and noise rate: T = 3τ/4, σ = τ / (96 ln(4m/β))."""
    return 0.75 * tolerance, tolerance / (96 * math.log(4 * max_queries / beta))


def laplace(key: int, stream: str, index: int, scale: float) -> float:
    """One Laplace(0, scale) draw, fixed by (key, stream, index)."""
    seq = np.random.SeedSequence(key, spawn_key=(STREAMS[stream], index))
    return float(np.random.default_rng(seq).laplace(0.0, scale))


def spent(s: Settings, asked: int, over: int) -> str | None:
    """Why no further query can be answered (the budget or the query cap), or None."""
    if over >= s.budget:
        return (
            f"the Thresholdout budget is spent: {over} of B = {s.budget} over-threshold "
            f"answers used ({asked} queries answered, of at most m = {s.max_queries})"
        )
    if asked >= s.max_queries:
        return (
            f"the Thresholdout query limit is reached: {asked} of m = {s.max_queries} queries "
            f"answered ({over} of B = {s.budget} over-threshold answers used)"
        )
    return None


@dataclass(frozen=True)
class Answer:
    value: float  # what the analyst is told
    over: bool  # the holdout disagreed: value is holdout + ξ, and one unit of B is spent
    query: int  # 1-based
    budget_left: int
    queries_left: int


class Thresholdout:
    """The mechanism's state: ``asked`` queries answered so far, ``over`` of them over the
    threshold. The state of an opened lockbox is rebuilt from its audit entries."""

    def __init__(self, settings: Settings, key: int, *, asked: int = 0, over: int = 0) -> None:
        self.s, self.key, self.asked, self.over = settings, key, asked, over

    @property
    def threshold_hat(self) -> float:
        """T̂ = T + γ, γ ~ Lap(2σ) drawn anew after each over-threshold answer."""
        return self.s.threshold + laplace(self.key, "gamma", self.over, 2 * self.s.sigma)

    def query(self, train: float, holdout: float) -> Answer:
        """Answer one query; raises :class:`FoldwiseError` once the budget is spent."""
        why = spent(self.s, self.asked, self.over)
        if why:
            raise FoldwiseError(f"{why}.", REFUSAL_FIX)
        i = self.asked
        eta = laplace(self.key, "eta", i, 4 * self.s.sigma)
        over = abs(holdout - train) > self.threshold_hat + eta
        if over:
            value = holdout + laplace(self.key, "xi", i, self.s.sigma)
            self.over += 1
        else:
            value = train
        self.asked += 1
        return Answer(
            min(1.0, max(0.0, float(value))), bool(over), self.asked,
            self.s.budget - self.over, self.s.max_queries - self.asked,
        )  # fmt: skip


REFUSAL_FIX = (
    "test on rows no opening has seen — append new rows to the dataset and set "
    "lockbox.test_rows=new: a new test set is a new lockbox with a fresh budget. Raising "
    "lockbox.thresholdout.budget or max_queries now is refused: the guarantee counts every "
    "answer this test set gave."
)


# ------------------------------------------------------------------ the guarantee
def guarantee(s: Settings, n: int) -> dict[str, Any]:
    """Theorem 9 with these settings and n test rows: its assumptions, and whether the
    threshold and noise are the theorem's."""
    tau, beta, m, b = s.tolerance, s.beta, s.max_queries, s.budget
    t_thm, s_thm = theorem_settings(tau, beta, m)
    covered = math.isclose(s.threshold, t_thm) and math.isclose(s.sigma, s_thm)
    ln = math.log(m / beta)
    scale = ln / tau**2 * min(b, math.sqrt(b * max(math.log(ln / tau), 0.0)) / tau)
    text = (
        f"Thresholdout guarantee ({CITATION}): if the n = {n} test rows are i.i.d. draws "
        f"from the population, T = 3τ/4 and σ = τ/(96 ln(4m/β)), then with probability "
        f"≥ {1 - beta:.0%} each of the first m = {m} answers that comes while fewer than "
        f"B = {b} queries had a CV estimate more than τ/2 off is within τ = {tau:g} of the "
        f"model's true accuracy, for n ≥ C·ln(m/β)/τ²·min{{B, √(B ln(ln(m/β)/τ))/τ}} = "
        f"C × {float(f'{scale:.2g}'):,.0f}, with a constant C the theorem does not give."
    )
    if not covered:
        text += (
            f" These settings are not the theorem's (T = {s.threshold:g}, σ = {s.sigma:.3g}; "
            f"the theorem's: T = {t_thm:g}, σ = {s_thm:.3g}): it does not cover these answers."
        )
    return {
        "tolerance": tau, "beta": beta, "max_queries": m, "budget": b,
        "threshold": s.threshold, "sigma": s.sigma, "n": n, "n0_scale": scale,
        "covered": covered, "text": text,
    }  # fmt: skip


# ------------------------------------------------------------------ the lockbox's state
def entries_of(audit: list[dict[str, Any]], test_sha256: str) -> list[dict[str, Any]]:
    return [e for e in audit if e["test_sha256"] == test_sha256]


def state(previous: list[dict[str, Any]]) -> tuple[int, int]:
    """(queries answered, over-threshold answers) of a test set, from its audit entries."""
    answers = [e["thresholdout"] for e in previous if "thresholdout" in e]
    return len(answers), sum(bool(a["over"]) for a in answers)


def decide(
    audit: list[dict[str, Any]], test_sha256: str, model_sha256: str, s: Settings
) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
    """``("repeat", previous, entry)`` for a model this test set answered already,
    ``("query", previous, None)`` for a new query; raises when none may be answered."""
    previous = entries_of(audit, test_sha256)
    same = [e for e in previous if e["model_sha256"] == model_sha256]
    if same:
        return "repeat", previous, same[-1]
    plain = [e for e in previous if "thresholdout" not in e]
    if plain:
        seen = "; ".join(f"{e['opened_at']} {e['label']}" for e in plain)
        raise FoldwiseError(
            f"lockbox.mode=thresholdout, but the test set {test_sha256[:12]} was already "
            f"opened in the default mode ({seen}): its test scores were shown in full, and "
            "Thresholdout's guarantee counts every look at the test rows from the first.",
            "go back to lockbox.mode=once, or test on rows no opening has seen "
            "(lockbox.test_rows=new).",
        )
    if previous:
        first = previous[0]["thresholdout"]["settings"]
        if first != s.as_dict():
            changed = [f"{k}: {first.get(k)!r} at the first query, {v!r} now"
                       for k, v in s.as_dict().items() if first.get(k) != v]  # fmt: skip
            raise FoldwiseError(
                f"lockbox.thresholdout settings changed since this test set's first query "
                f"({previous[0]['opened_at']}): {'; '.join(changed)}. The budget, threshold "
                "and noise are fixed when a test set is first queried.",
                "restore the settings of the first query.",
            )
    asked, over = state(previous)
    why = spent(s, asked, over)
    if why:
        listed = "; ".join(
            f"#{e['thresholdout']['query']} {e['label']} ({e['opened_at']}"
            + (", over threshold)" if e["thresholdout"]["over"] else ")")
            for e in previous
        )
        raise FoldwiseError(f"{why} on test set {test_sha256[:12]}: {listed}.", REFUSAL_FIX)
    return "query", previous, None


# ------------------------------------------------------------------ the secret key
def key_path(root: Path, test_sha256: str) -> Path:
    return shared_root(root) / ".foldwise" / "lockbox" / "thresholdout" / f"{test_sha256}.key"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key_for(root: Path, test_sha256: str, previous: list[dict[str, Any]]) -> tuple[int, str]:
    """The test set's noise key and its hash; made at its first query, then checked
    against the hash every audit entry recorded."""
    path = key_path(root, test_sha256)
    recorded = {e["thresholdout"]["key_sha256"] for e in previous if "thresholdout" in e}
    if path.is_file():
        text = path.read_text().strip()
        if recorded and _digest(text) not in recorded:
            raise FoldwiseError(
                f"{path} is not the noise key this test set's Thresholdout answers were "
                f"drawn with (the audit log records sha256 {sorted(recorded)[0][:12]}).",
                "restore the key file from the checkout or backup that made those answers; "
                "new noise for an answered test set would let a re-run fish for answers.",
            )
        return int(text, 16), _digest(text)
    if recorded:
        raise FoldwiseError(
            f"{path} is missing: the noise key of test set {test_sha256[:12]}, which "
            f"answered {state(previous)[0]} Thresholdout queries.",
            "copy the key file from the checkout that made those answers (it lives beside "
            "the ledger, outside git); new noise would let a re-run fish for answers.",
        )
    text = f"{secrets.randbits(128):032x}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return int(text, 16), _digest(text)
