"""Ensembles as engine tasks: one *parent* task per (configuration, resample) becomes its
members, which train as tasks of one stack; their outcomes combine back into one
parent outcome, so every method (the sweep, nested CV, curves) sees an ensemble as it
sees a single model.

``ensemble.name``: ``none`` (a single model: the parent task itself) or ``bagging``
(``n_estimators`` members on bootstrap draws of ``max_samples`` × the parent's training
rows; see :mod:`foldwise.methods.bagging`). Members keep their own seeds (different
initial weights and batch orders) and early-stop on inner rows carved from their own
draw, as any single model does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from foldwise.engine import Outcome, Task
from foldwise.ensemble import bagging

NAMES = ("none", "bagging")
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
    """The tasks that train ``parent``: itself, or its bagging members."""
    s = parent.ensemble
    if not s:
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
                finals={FOLD: rows},
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
    if "val" in parent.evals and len(parent.evals["val"]):
        yv = y[parent.evals["val"]]
        val = bagging.average([np.asarray(o.predictions["val"][key]) for o in outcomes])
        metrics |= {f"val_{k}": v for k, v in bagging.scores_of(task, yv, val).items()}
        if "val" in parent.predict:
            predictions["val"] = _prediction(yv, val, regression)
    return Outcome(
        status="ok",
        metrics=metrics,
        history=_mean_history([o.history for o in outcomes]),
        best_epoch=round(float(np.median([o.best_epoch for o in outcomes]))),
        epochs_trained=max(o.epochs_trained for o in outcomes),
        n_train=len(rows),
        n_val=len(parent.evals.get("val", ())),
        predictions=predictions,
    )


def _prediction(y: np.ndarray, averaged: np.ndarray, regression: bool) -> dict[str, list]:
    """The ensemble's per-row prediction record, as a single model's (see Outcome)."""
    if regression:
        return {"pred": averaged.tolist(), "loss": ((averaged - y) ** 2).tolist()}
    out = {"pred": averaged.argmax(1).tolist(), "loss": bagging.row_losses(y, averaged).tolist()}
    if averaged.shape[1] == 2:
        out["prob"] = averaged[:, 1].tolist()
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

    collector = Collector(parents, y, getattr(meta, "regression", False), on_done)
    members = collector.tasks()
    if stacks is not None:
        index = {m.key: i for i, m in enumerate(members)}
        stacks = [[index[m.key] for p in s for m in collector.members[parents[p].key]]
                  for s in stacks]  # fmt: skip
    engine.train(members, x, y, meta, stacks=stacks, on_done=collector.done, **engine_kw)
    return [collector.results.get(p.key, Outcome(status="failed", error="not trained"))
            for p in parents]  # fmt: skip
