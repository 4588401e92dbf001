"""The report's figures: matplotlib (Agg) → PNG → ``data:`` URI, so the HTML needs no files.

Each function takes plain numbers or a summary table and returns the URI. Metric names
come from the inputs (``val_f1``, ``val_mse``, ...), never from a fixed list.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

SELECTED = "tab:orange"
OTHER = "tab:blue"


def data_uri(fig: Any) -> str:
    """The figure as a base64 PNG ``data:`` URI; the figure is closed."""
    buf = io.BytesIO()
    # No "Software" text chunk: it names matplotlib's web site inside the image.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class FoldRow:
    """One configuration's per-resample scores and its summary, for the strip plot."""

    label: str
    values: Sequence[float]
    mean: float | None
    low: float | None
    high: float | None
    selected: bool


def fold_scores(rows: Sequence[FoldRow], metric: str) -> str:
    """Each configuration's per-fold validation scores (dots), mean (bar) and interval
    (line), best-ranked on top, the selected configuration in orange."""
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.3))
    rng = np.random.default_rng(0)  # jitter only separates overlapping dots
    for y, row in enumerate(reversed(rows)):
        colour = SELECTED if row.selected else OTHER
        v = np.asarray(row.values, dtype=float)
        ax.scatter(
            v,
            y + rng.uniform(-0.12, 0.12, len(v)),
            s=22,
            color=colour,
            alpha=0.7,
            edgecolors="none",
            zorder=3,
        )
        if row.low is not None and row.high is not None:
            ax.hlines(y - 0.28, row.low, row.high, color=colour, lw=2.5, zorder=2)
        if row.mean is not None:
            ax.vlines(row.mean, y - 0.38, y - 0.18, color="black", lw=2, zorder=4)
    ax.set_yticks(range(len(rows)), [r.label + (" ★" if r.selected else "") for r in rows][::-1])
    ax.set_ylim(-0.7, len(rows) - 0.5)
    ax.set_xlabel(f"{metric} per fold (dots); mean (black bar) and interval (line)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return data_uri(fig)


def curve_metrics(table: pd.DataFrame, first: str) -> list[str]:
    """At most two panels: the selection metric (else the bounded score), then the loss —
    or, where the loss is that same metric (regression: loss = MSE), the bounded score."""
    names = [
        c.removeprefix("val_").removesuffix("_mean")
        for c in table.columns
        if c.startswith("val_") and c.endswith("_mean")
    ]
    names = [n for n in names if f"train_{n}_mean" in table.columns]
    lead = next(
        (n for n in (first, "f1", "r2", "score") if n in names), names[0] if names else None
    )
    if lead is None:
        return []
    same = lambda n: np.allclose(table[f"val_{n}_mean"], table[f"val_{lead}_mean"])  # noqa: E731
    second = next((n for n in ("loss", "f1", "r2", "score") if n in names and not same(n)), None)
    return [lead] if second is None else [lead, second]


def curve(
    table: pd.DataFrame,
    *,
    x: str,
    xlabel: str,
    metrics: Sequence[str],
    categorical: bool = False,
    marked: Any = None,
) -> str:
    """Train and validation mean with their bands, one panel per metric; ``marked`` draws
    a dashed line at the selected x value."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    xs = table[x].astype(str).tolist() if categorical else table[x].to_numpy(dtype=float)
    for ax, m in zip(axes[0], metrics, strict=True):
        for part, colour in (("train", OTHER), ("val", SELECTED)):
            col = f"{part}_{m}"
            ax.plot(xs, table[f"{col}_mean"], marker="o", color=colour, label=col)
            if {f"{col}_low", f"{col}_high"} <= set(table.columns):
                ax.fill_between(
                    xs, table[f"{col}_low"], table[f"{col}_high"], color=colour, alpha=0.2
                )
        if marked is not None and categorical and str(marked) in xs:
            ax.axvline(xs.index(str(marked)), color="grey", ls="--", label=f"selected: {marked}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{m} (mean, 95% band over folds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return data_uri(fig)


# (column, legend, style) of each decomposition's terms.
ZERO_ONE = (
    ("expected_loss", "expected loss", "k-o"),
    ("bias", "bias", "C3-s"),
    ("net_variance", "net variance", "C0-^"),
    ("variance", "variance", "C0:"),
)
SQUARED = (
    ("expected_loss", "expected loss", "k-o"),
    ("bias", "bias²", "C3-s"),
    ("variance", "variance", "C0-^"),
)


def bias_variance(
    table: pd.DataFrame, *, param: str, marked: Any, ylabel: str, squared: bool
) -> str:
    """The decomposition's terms against the complexity parameter."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = table["x"].astype(str).tolist()
    for col, label, style in SQUARED if squared else ZERO_ONE:
        if col in table.columns:
            ax.plot(xs, table[col], style, label=label)
    if marked is not None and str(marked) in xs:
        ax.axvline(xs.index(str(marked)), color="grey", ls="--", label=f"selected: {marked}")
    ax.set_xlabel(param)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return data_uri(fig)


def members_bias_variance(table: pd.DataFrame, *, xlabel: str, ylabel: str, squared: bool) -> str:
    """The decomposition's terms against the number of members (or rounds); dotted
    lines: the same network alone (``single_*`` columns, bagging)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for col, label, style in SQUARED if squared else ZERO_ONE[:3]:
        ax.plot(table["members"], table[col], style, label=label)
        if f"single_{col}" in table.columns and col != "expected_loss":
            ax.axhline(table[f"single_{col}"].iloc[0], color=style[:2], ls=":",
                       label=f"{label}, single model")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return data_uri(fig)


def ensembles(table: pd.DataFrame, ylabel: str) -> str:
    """Validation (solid) and training (dotted) score of the first b members vs b, one
    colour per ensemble configuration, with the validation band over resamples."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (config, t) in enumerate(table.groupby("config", sort=False)):
        colour = f"C{i}"
        ax.plot(t["members"], t["val_score_mean"], "-o", color=colour, label=f"{config} · val")
        ax.fill_between(t["members"], t["val_score_low"], t["val_score_high"], color=colour,
                        alpha=0.15)  # fmt: skip
        ax.plot(t["members"], t["train_score_mean"], ":", color=colour, label=f"{config} · train")
    ax.set_xlabel("members (the ensemble of the first b)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return data_uri(fig)


def cv_vs_test(
    metric: str, cv: tuple[float, float | None, float | None], test: tuple[float, float, float]
) -> str:
    """The CV estimate and the test score, each with its interval, on one axis."""
    fig, ax = plt.subplots(figsize=(6.5, 1.7))
    for y, ((mean, low, high), colour) in enumerate(((test, "tab:green"), (cv, SELECTED))):
        if low is not None and high is not None:
            ax.hlines(y, low, high, color=colour, lw=3)
        ax.plot([mean], [y], "o", color="black", zorder=3)
    ax.set_yticks([0, 1], ["test (bootstrap)", "CV estimate"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel(metric)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return data_uri(fig)
