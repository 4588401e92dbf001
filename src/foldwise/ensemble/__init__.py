"""Ensembles as engine tasks: one *parent* task per (configuration, resample) becomes its
members, which train as tasks of one stack; their outcomes combine back into one
parent outcome, so every method (the sweep, nested CV, curves) sees an ensemble as it
sees a single model.

``ensemble.name``:

- ``none``: a single model, the parent task itself;
- ``bagging``: ``n_estimators`` members on bootstrap draws of ``max_samples`` × the
  parent's training rows (:mod:`foldwise.ensemble.bagging`), trained as one stack.
  Members keep their own seeds (initial weights, batch order) and early-stop on inner
  rows carved from their own draw, as any single model does;
- ``adaboost`` (classification) and ``gradient_boosting`` (regression): up to
  ``n_estimators`` weak learners (the configuration's network: a small MLP, or
  ``model.depth=0`` for a linear model) trained one *round* at a time, every parent's
  round-m learner in one stack, with SAMME's sample weights in the loss or the current
  residuals as the target (:mod:`foldwise.ensemble.boosting`). Weak learners train on
  every training row for ``trainer.max_epochs`` epochs (no early-stopping rows: the
  weighted error is measured on all of them, as scikit-learn's AdaBoost does).

Every ensemble's result also records its *staged* scores — the ensemble of its first
1, 2, …, B members — as ``stage_<split>_<score>`` curves (step = members), the data of
the "score vs number of estimators" plots; with ``Task.staged`` its validation
predictions keep each stage's prediction too (bias–variance vs members).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from foldwise.engine import Outcome, Task
from foldwise.ensemble import bagging, boosting

NAMES = ("none", "bagging", "adaboost", "gradient_boosting")
BOOSTING = ("adaboost", "gradient_boosting")
FOLD = "fold"  # a member's prediction set: its parent's (distinct) training rows


def spec(cfg: DictConfig) -> dict[str, Any] | None:
    """``cfg.ensemble`` as a plain dict, or None for a single model."""
    ens = cfg.get("ensemble")
    if ens is None or str(ens.get("name", "none")) == "none":
        return None
    return OmegaConf.to_container(ens, resolve=True)


def member_seed(seed: int, b: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0xBA6, b]).generate_state(1)[0] & 0x7FFFFFFF)


def expand(parent: Task) -> list[Task]:
    """The tasks that train ``parent``: itself, or its bagging members. (A boosting
    parent trains round by round, one learner at a time: one task stands for it.)"""
    s = parent.ensemble
    if not s or s["name"] in BOOSTING:
        return [parent]
    rows = np.unique(parent.train)
    seed = bagging.draw_seed(rows, parent.seed)
    out = []
    for b, drawn in enumerate(bagging.draws(rows, int(s["n_estimators"]),
                                            float(s["max_samples"]), seed)):  # fmt: skip
        out.append(
            dataclasses.replace(
                parent,
                key=f"{parent.key}#m{b}",
                seed=member_seed(parent.seed, b),
                train=np.asarray(drawn, dtype=np.int64),
                finals={**parent.finals, FOLD: rows},
                predict=tuple(dict.fromkeys(("val", FOLD, *parent.predict))),
                proba=True,
                group=parent.key,
                label=f"{parent.label} · member {b}" if parent.label else "",
                ensemble=None,
            )
        )
    return out


def combine(parent: Task, members: Sequence[Task], outcomes: Sequence[Outcome], y: np.ndarray,
            regression: bool) -> Outcome:  # fmt: skip
    """The parent's outcome from its members' (see the module doc); failed if any failed."""
    if len(members) == 1 and members[0] is parent:
        return outcomes[0]
    bad = [(t, o) for t, o in zip(members, outcomes, strict=True) if o.status != "ok"]
    if bad:
        t, o = bad[0]
        return Outcome(status="failed", error=f"{len(bad)} of {len(members)} bagging members "
                       f"failed; first ({t.key}): {o.error}")  # fmt: skip
    task = "regression" if regression else "classification"
    key = "pred" if regression else "proba"
    rows = np.unique(parent.train)
    fold = [np.asarray(o.predictions[FOLD][key]) for o in outcomes]
    metrics = {f"train_{k}": v for k, v in
               bagging.scores_of(task, y[rows], bagging.average(fold)).items()}  # fmt: skip
    oob_rows, oob = bagging.out_of_bag(rows, [t.train for t in members], fold)
    if len(oob_rows):
        pos = np.searchsorted(rows, oob_rows)
        metrics |= {f"oob_{k}": v for k, v in bagging.scores_of(task, y[rows][pos], oob).items()}
    predictions = {}
    history = _mean_history([o.history for o in outcomes])
    history |= _staged(task, "train", y[rows], fold, lambda vs: bagging.average(vs))
    if "val" in parent.evals and len(parent.evals["val"]):
        yv = y[parent.evals["val"]]
        members_val = [np.asarray(o.predictions["val"][key]) for o in outcomes]
        val = bagging.average(members_val)
        metrics |= {f"val_{k}": v for k, v in bagging.scores_of(task, yv, val).items()}
        history |= _staged(task, "val", yv, members_val, lambda vs: bagging.average(vs))
        if "val" in parent.predict:
            predictions["val"] = _prediction(yv, val, regression, parent.proba)
            if parent.staged:
                predictions["val"]["staged"] = _staged_predictions(members_val, bagging.average,
                                                                   regression)  # fmt: skip
    for name in parent.predict:  # other row sets predicted at the end (e.g. a fold ensemble's)
        if name != "val" and name in parent.finals:
            avg = bagging.average([np.asarray(o.predictions[name][key]) for o in outcomes])
            predictions[name] = _prediction(y[parent.finals[name]], avg, regression, parent.proba)
    return Outcome(
        status="ok",
        metrics=metrics,
        history=history,
        best_epoch=round(float(np.median([o.best_epoch for o in outcomes]))),
        epochs_trained=max(o.epochs_trained for o in outcomes),
        n_train=len(rows),
        n_val=len(parent.evals.get("val", ())),
        predictions=predictions,
    )


def _prediction(
    y: np.ndarray, averaged: np.ndarray, regression: bool, proba: bool = False
) -> dict[str, list]:
    """The ensemble's per-row prediction record, as a single model's (see Outcome)."""
    if regression:
        return {"pred": averaged.tolist(), "loss": ((averaged - y) ** 2).tolist()}
    out = {"pred": averaged.argmax(1).tolist(), "loss": bagging.row_losses(y, averaged).tolist()}
    if averaged.shape[1] == 2:
        out["prob"] = averaged[:, 1].tolist()
    if proba:
        out["proba"] = averaged.tolist()
    return out


Combine = Callable[[Sequence[np.ndarray]], np.ndarray]


def _staged_predictions(
    members: Sequence[np.ndarray], ensemble_of: Combine, regression: bool
) -> list[list]:
    """Per b = 1..B, the prediction (class, or value) of the ensemble of the first b."""
    out = []
    for b in range(1, len(members) + 1):
        combined = ensemble_of(members[:b])
        out.append((combined if regression else combined.argmax(1)).tolist())
    return out


def _staged(
    task: str, side: str, y: np.ndarray, members: Sequence[np.ndarray], ensemble_of: Combine
) -> dict[str, list[float]]:
    """``stage_<side>_<score>``: the scores of the ensemble of the first 1..B members."""
    out: dict[str, list[float]] = {}
    for b in range(1, len(members) + 1):
        for k, v in bagging.scores_of(task, y, ensemble_of(members[:b])).items():
            out.setdefault(f"stage_{side}_{k}", []).append(float(v))
    return out


def _mean_history(histories: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per epoch, the mean over the members still training then (early stopping ends
    members at different epochs)."""
    out: dict[str, list[float]] = {}
    for name in histories[0]:
        longest = max(len(h.get(name, ())) for h in histories)
        out[name] = [
            float(np.mean([h[name][e] for h in histories if len(h.get(name, ())) > e]))
            for e in range(longest)
        ]
    return out


class Collector:
    """Receives member outcomes as the engine finishes them and hands each parent's
    combined outcome to ``on_done`` once its last member is in."""

    def __init__(self, parents: Sequence[Task], y: np.ndarray, regression: bool,
                 on_done: Callable[[Task, Outcome], None] | None) -> None:  # fmt: skip
        self.y, self.regression, self.on_done = y, regression, on_done
        self.members = {p.key: expand(p) for p in parents}
        self.parent = {p.key: p for p in parents}
        self.owner = {m.key: p.key for p in parents for m in self.members[p.key]}
        self.got: dict[str, dict[str, Outcome]] = {}
        self.results: dict[str, Outcome] = {}

    def tasks(self) -> list[Task]:
        return [m for ms in self.members.values() for m in ms]

    def done(self, member: Task, outcome: Outcome) -> None:
        key = self.owner[member.key]
        got = self.got.setdefault(key, {})
        got[member.key] = outcome
        if len(got) < len(self.members[key]):
            return
        parent, members = self.parent[key], self.members[key]
        combined = combine(parent, members, [got[m.key] for m in members], self.y,
                           self.regression)  # fmt: skip
        self.results[key] = combined
        if self.on_done is not None:
            self.on_done(parent, combined)


def plan(parents: Sequence[Task], meta: Any, **plan_kw: Any) -> list[list[int]]:
    """Stacks of parent indices: the engine plans the members (as the models they are),
    and never splits one parent's members across stacks."""
    from foldwise import engine

    members, owner = [], []
    for i, p in enumerate(parents):
        ms = expand(p)
        members += ms
        owner += [i] * len(ms)
    stacks = engine.plan(members, meta, **plan_kw)
    return [list(dict.fromkeys(owner[j] for j in s)) for s in stacks]


@dataclasses.dataclass
class Boosted:
    """A boosting parent's learners and how they combine."""

    parent: Task
    rows: np.ndarray  # its distinct training rows
    learners: list[Outcome] = dataclasses.field(default_factory=list)
    alphas: list[float] = dataclasses.field(default_factory=list)  # GB: ν per stage
    fold: list[np.ndarray] = dataclasses.field(default_factory=list)  # per learner, on rows
    val: list[np.ndarray] = dataclasses.field(default_factory=list)
    f0: float = 0.0  # gradient boosting's initial constant
    weights: np.ndarray | None = None  # SAMME's current sample weights over ``rows``
    stop: str | None = None
    error: str | None = None
    outcome: Outcome | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return self.parent.ensemble or {}

    def combined(self, regression: bool, n_classes: int) -> Combine:
        """The first b learners' predictions → the ensemble's (probabilities, or values)."""
        if regression:
            return lambda hs: boosting.staged(self.f0, hs, self.alphas[0])[-1]
        return lambda ps: boosting.samme_proba(ps, self.alphas[: len(ps)], n_classes)


def boost(
    parents: Sequence[Task],
    x: np.ndarray,
    y: np.ndarray,
    meta: Any,
    *,
    keep_state: bool = False,
    on_done: Callable[[Task, Outcome], None] | None = None,
    **engine_kw: Any,
) -> list[Boosted]:
    """Train boosting parents round by round (every parent's round-m learner in the
    engine's stacks together) and combine each into one outcome (module doc)."""
    from foldwise import engine

    regression = getattr(meta, "regression", False)
    k = int(getattr(meta, "n_classes", 0))
    state = [Boosted(p, np.unique(p.train)) for p in parents]
    for b in state:
        if regression:
            b.f0 = float(np.mean(y[b.rows]))
        else:
            b.weights = boosting.initial_weights(len(b.rows))
    rounds = max((int(b.spec["n_estimators"]) for b in state), default=0)
    for r in range(rounds):
        active = [b for b in state if b.stop is None and b.error is None
                  and r < int(b.spec["n_estimators"])]  # fmt: skip
        if not active:
            break
        tasks = [_learner(b, r, y, regression) for b in active]
        outs = engine.train(tasks, x, y, meta, keep_state=keep_state, **engine_kw)
        for b, out in zip(active, outs, strict=True):
            _absorb(b, out, r, y, regression, k)
    for b in state:
        b.outcome = _boosted_outcome(b, y, regression, k)
        if on_done is not None:
            on_done(b.parent, b.outcome)
    return state


def _learner(b: Boosted, r: int, y: np.ndarray, regression: bool) -> Task:
    p = b.parent
    weights = targets = None
    if regression:  # the residuals of the ensemble so far, at every row it is scored on
        f = np.full(len(y), b.f0)
        for a, h_rows, h_val in zip(b.alphas, b.fold, b.val, strict=False):
            f[b.rows] += a * h_rows
            if len(h_val):
                f[p.evals["val"]] += a * h_val
        targets = boosting.residuals(y, f)
    else:
        weights = np.ones(len(y))
        weights[b.rows] = b.weights
    val = "val" in p.evals and len(p.evals["val"]) > 0
    return dataclasses.replace(
        p,
        key=f"{p.key}#r{r}",
        seed=member_seed(p.seed, r),
        hyper=dataclasses.replace(p.hyper, early_stopping=False),
        train=b.rows,
        finals={FOLD: b.rows},
        predict=("val", FOLD) if val else (FOLD,),
        weights=weights,
        targets=targets,
        label=f"{p.label} · round {r}" if p.label else "",
        ensemble=None,
        group="",
        proba=False,
    )


def _absorb(b: Boosted, out: Outcome, r: int, y: np.ndarray, regression: bool, k: int) -> None:
    """One round's learner into its parent's state (SAMME's update, or a GB stage)."""
    if out.status != "ok":
        b.error = f"round {r}: {out.error}"
        return
    h_rows = np.asarray(out.predictions[FOLD]["pred"])
    h_val = np.asarray(out.predictions["val"]["pred"]) if "val" in out.predictions else []
    if regression:
        b.alphas.append(float(b.spec.get("learning_rate", 1.0)))
    else:
        last = r == int(b.spec["n_estimators"]) - 1
        w = boosting.clip_weights(b.weights, np.zeros(len(b.rows), dtype=bool))
        step = boosting.samme_round(w, h_rows != y[b.rows], k, float(b.spec["learning_rate"]),
                                    last)  # fmt: skip
        if step.alpha is None:  # dropped: no better than chance
            b.stop = step.stop
            if not b.learners:
                b.error = f"AdaBoost cannot be fit: the first {step.stop}"
            return
        b.alphas.append(step.alpha)
        b.weights, b.stop = step.weights, step.stop
    b.learners.append(out)
    b.fold.append(h_rows)
    b.val.append(h_val)


def _boosted_outcome(b: Boosted, y: np.ndarray, regression: bool, k: int) -> Outcome:
    if b.error:
        return Outcome(status="failed", error=b.error)
    task = "regression" if regression else "classification"
    p, ensemble_of = b.parent, b.combined(regression, k)
    metrics = {f"train_{s}": v for s, v in
               bagging.scores_of(task, y[b.rows], ensemble_of(b.fold)).items()}  # fmt: skip
    metrics["n_learners"] = float(len(b.learners))
    history = _staged(task, "train", y[b.rows], b.fold, ensemble_of)
    predictions = {}
    if "val" in p.evals and len(p.evals["val"]):
        yv = y[p.evals["val"]]
        val = ensemble_of(b.val)
        metrics |= {f"val_{s}": v for s, v in bagging.scores_of(task, yv, val).items()}
        history |= _staged(task, "val", yv, b.val, ensemble_of)
        if "val" in p.predict:
            predictions["val"] = _prediction(yv, val, regression)
            if p.staged:
                predictions["val"]["staged"] = _staged_predictions(b.val, ensemble_of, regression)
    epochs = b.learners[0].epochs_trained
    return Outcome(
        status="ok", metrics=metrics, history=history, best_epoch=epochs, epochs_trained=epochs,
        n_train=len(b.rows), n_val=len(p.evals.get("val", ())), predictions=predictions,
    )  # fmt: skip


def train(
    parents: Sequence[Task],
    x: np.ndarray,
    y: np.ndarray,
    meta: Any,
    *,
    on_done: Callable[[Task, Outcome], None] | None = None,
    stacks: list[list[int]] | None = None,
    **engine_kw: Any,
) -> list[Outcome]:
    """:func:`foldwise.engine.train` for parent tasks: members stacked, results combined.

    ``stacks`` (lists of parent indices) become stacks of their members; without it the
    engine plans the members, never splitting one parent's members across stacks.
    """
    from foldwise import engine

    boosted = {i for i, p in enumerate(parents) if p.ensemble and p.ensemble["name"] in BOOSTING}
    others = [p for i, p in enumerate(parents) if i not in boosted]
    collector = Collector(others, y, getattr(meta, "regression", False), on_done)
    members = collector.tasks()
    if members:
        if stacks is not None:
            index = {m.key: i for i, m in enumerate(members)}
            stacks = [[index[m.key] for p in s if p not in boosted
                       for m in collector.members[parents[p].key]] for s in stacks]  # fmt: skip
            stacks = [s for s in stacks if s]
        engine.train(members, x, y, meta, stacks=stacks, on_done=collector.done, **engine_kw)
    results = dict(collector.results)
    if boosted:
        for b in boost([parents[i] for i in sorted(boosted)], x, y, meta, on_done=on_done,
                       **engine_kw):  # fmt: skip
            results[b.parent.key] = b.outcome
    return [results.get(p.key, Outcome(status="failed", error="not trained")) for p in parents]
