"""The lockbox: the test set is opened once per selected model, and every opening is audited.

Rules, keyed by the SHA-256 of the test rows (a new split of rows an opening has
already seen is refused earlier, by the split stage: :mod:`foldwise.lockbox.rows`):

* **first opening** — evaluate, record it in the audit log, report;
* **same model again** (same weight fingerprint) — report the recorded result;
  no new evaluation, no new look;
* **different model** — refused: comparing test scores of several selections and
  keeping the best turns the test set into a validation set, and its score stops
  being an unbiased estimate of generalization. ``lockbox.override_reason`` allows
  it anyway; the opening is recorded with the reason, the result is flagged
  ``reused_test_set``, and each reason authorises exactly one opening.

The audit log (``lockbox/audit.jsonl``) is append-only JSON lines, kept in git,
never in DVC's cache: the history of looks must survive ``dvc checkout``. A ledger
outside git and MLflow record every opening too, and the test stage refuses when they
disagree or a file was edited after an opening (:mod:`foldwise.lockbox.ledger`).
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foldwise.errors import FoldwiseError
from foldwise.lockbox import audit as audit_log
from foldwise.lockbox import ledger
from foldwise.scores import higher_is_better


@dataclass(frozen=True)
class Decision:
    kind: str  # "first" | "repeat" | "override"
    previous: list[dict[str, Any]]  # earlier openings of this test set
    recorded: dict[str, Any] | None  # the entry to report, for "repeat"

    @property
    def look(self) -> int:
        """How many distinct models have seen this test set, this one included."""
        return len(self.previous) + (self.kind != "repeat")


def decide(
    audit: list[dict[str, Any]], test_sha256: str, model_sha256: str, override_reason: str | None
) -> Decision:
    """What opening the lockbox for this model means, given the audit history."""
    previous = [e for e in audit if e["test_sha256"] == test_sha256]
    same = [e for e in previous if e["model_sha256"] == model_sha256]
    if same:
        return Decision("repeat", previous, same[-1])
    if not previous:
        return Decision("first", previous, None)
    reason = (override_reason or "").strip()
    seen = "; ".join(f"{e['opened_at']} {e['label']} ({e['model_sha256'][:12]})" for e in previous)
    if not reason:
        raise FoldwiseError(
            f"the test set {test_sha256[:12]} was already opened for another model ({seen}). "
            "Evaluating a different selection on it, then keeping whichever scores better, "
            "tunes hyperparameters on the test set: its score would no longer estimate "
            "performance on new data.",
            "go back to the selection you already tested, or test on genuinely new data, or "
            '— knowingly — set lockbox.override_reason="<why>"; the opening is then audited '
            "and its result flagged as coming from a reused test set.",
        )
    used = [e for e in previous if (e.get("override_reason") or "").strip() == reason]
    if used:
        raise FoldwiseError(
            f"lockbox.override_reason {reason!r} already authorised opening "
            f"{used[0]['opened_at']}; each reason authorises one opening.",
            "write the reason for this opening.",
        )
    return Decision("override", previous, None)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def metrics_document(entry: dict[str, Any]) -> dict[str, Any]:
    """``results/test_metrics.json`` (DVC metrics) from an audit entry."""
    if "thresholdout" in entry:  # the answer only: no interval, no CV gap (it may be the CV)
        return {
            "status": "opened",
            "mode": "thresholdout",
            "test": entry["scores"],
            "n_test": entry["n_test"],
            "look": entry["look"],
            "reused_test_set": False,
            "override_reason": None,
            **ledger.metrics_fields(entry),
            "config": entry["config_hash"],
            "label": entry["label"],
            "model_sha256": entry["model_sha256"],
            "test_sha256": entry["test_sha256"],
            "opened_at": entry["opened_at"],
            "thresholdout": entry["thresholdout"],
        }
    return {
        "status": "opened",
        "test": entry["scores"],
        "n_test": entry["n_test"],
        "look": entry["look"],
        "reused_test_set": entry["reused_test_set"],
        "override_reason": entry.get("override_reason"),
        **ledger.metrics_fields(entry),
        "config": entry["config_hash"],
        "label": entry["label"],
        "model_sha256": entry["model_sha256"],
        "test_sha256": entry["test_sha256"],
        "opened_at": entry["opened_at"],
        "confidence": entry["confidence"],
        **({"cv_vs_test": cv_vs_test(entry)} if entry.get("cv") else {}),
        **({"refit": entry["refit"]} if entry.get("refit", "all_dev") != "all_dev" else {}),
    }


def confusion(y: Any, pred: Any, n_classes: int) -> list[list[int]]:
    """Counts of (true class, predicted class) pairs."""
    import numpy as np

    counts = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(counts, (np.asarray(y), np.asarray(pred)), 1)
    return counts.tolist()


def write_confusion(path: Path, entry: dict[str, Any]) -> None:
    """``results/test_confusion.csv``: one ``actual,predicted`` row per test row (the
    layout DVC's confusion-matrix plot reads); empty before the lockbox has opened."""
    from foldwise.files import atomic_write_text

    lines = ["actual,predicted"]
    conf = entry.get("confusion")
    if conf:
        names = conf["classes"]
        for i, row in enumerate(conf["counts"]):
            for j, n in enumerate(row):
                lines += [f"{names[i]},{names[j]}"] * n
    atomic_write_text(path, "\n".join(lines) + "\n")


def _write_metrics(layout: Any, doc: dict[str, Any]) -> None:
    """``test_metrics.json`` (every score and interval) and its DVC headline."""
    from foldwise import headline
    from foldwise.files import read_json, write_json

    selection = read_json(layout.selection) if layout.selection.is_file() else {}
    # which selection on which dev rows this is about: a later aggregate marks the
    # headline "not opened" once it no longer is (headline.mark_stale_test)
    doc = {**doc, "split_key": selection.get("split_key")}
    write_json(layout.test_metrics, doc)
    metric = (doc.get("cv_vs_test") or {}).get("metric") or selection.get("metric")
    headline.write(layout.headline("test"), headline.test(doc, metric))


def cv_vs_test(entry: dict[str, Any]) -> dict[str, Any]:
    """The selected configuration's CV estimate beside its test result.

    ``gap`` is how much better cross-validation made the model look than the test set
    did (CV − test for scores, test − CV for losses and errors): near zero within the intervals
    means the CV estimate generalized; clearly positive means selection or the CV
    scheme was optimistic (or the test set differs from dev).
    """
    cv = entry["cv"]
    name = cv["metric"].removeprefix("val_")
    test = entry["scores"][name]
    gap = cv["mean"] - test["value"]
    return {
        "metric": cv["metric"],
        "cv": {k: cv.get(k) for k in ("mean", "ci_low", "ci_high", "method")},
        "test": test,
        "gap": gap if higher_is_better(name) else -gap,
    }


def run(cfg: Any, layout: Any) -> dict[str, Any]:
    """The test stage, holding an exclusive lock on the authoritative audit log.

    The authority is the log of the real checkout, even when DVC runs the stage in a
    temporary experiment copy (``dvc exp run --temp`` / queued experiments): a look
    taken there must count for every later look. The lock serialises concurrent
    openings (e.g. ``dvc queue start -j 2``). The copy's own log is then overwritten
    with the authority's, so the DVC output reflects the full history.
    """
    authority = audit_log.authority(layout.root)
    authority.parent.mkdir(parents=True, exist_ok=True)
    with ledger.locked(layout.root):
        # The records agree (audit log vs ledger), and the test rows and manifest are what
        # the split stage wrote and what earlier openings recorded: before loading a model.
        ledger.check(cfg, layout, _read_test(layout))
        entry = _open(cfg, layout, authority)
        if authority.resolve() != layout.audit_log.resolve():
            layout.audit_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(authority, layout.audit_log)
    return entry


def _read_test(layout: Any) -> Any:
    import pandas as pd

    return pd.read_parquet(layout.test)


def _open(cfg: Any, layout: Any, audit: Path) -> dict[str, Any]:
    """Check everything, decide, and only then open the lockbox."""
    import pandas as pd

    from foldwise.artifact import load
    from foldwise.files import read_json, sha256_table

    bundle = layout.model_dir / "model.pt"
    if not bundle.is_file():
        raise FoldwiseError(f"{bundle} is missing.", "run the refit stage first: dvc repro refit")
    model = load(bundle)  # a network's bundle, or a selected baseline's
    info = read_json(layout.model_dir / "info.json")
    manifest = read_json(layout.manifest)
    test = pd.read_parquet(layout.test)
    test_sha = sha256_table(test)
    if str(cfg.lockbox.get("mode", "once")) == "thresholdout":
        return _open_thresholdout(cfg, layout, audit, model, info, manifest, test, test_sha)
    reason = cfg.lockbox.override_reason
    reason = None if reason is None else str(reason)  # YAML may have parsed it as a number
    try:
        decision = decide(audit_log.read_audit(audit), test_sha, model.fingerprint, reason)
    except FoldwiseError as refusal:
        _refused(layout, info, model.fingerprint, test_sha, refusal)
        raise
    if decision.kind == "repeat":
        return _repeat(cfg, layout, info, decision.recorded)
    # a new look: MLflow must not know openings the log lost
    ledger.check_mlflow(cfg, audit_log.read_audit(audit), manifest, test_sha)

    rows = model.predict(test)
    confidence = float(cfg.lockbox.confidence)
    from foldwise.methods.resampling import bootstrap_scores

    scores = bootstrap_scores(
        rows["y"],
        rows["pred"],
        rows["loss"],
        resamples=int(cfg.lockbox.bootstrap_resamples),
        confidence=confidence,
        seed=int(cfg.seed),
        prob=rows["prob"],
        extra=True,
        task=model.meta.task,
    )
    reused = decision.kind == "override"
    entry = {
        **_opening(layout, test, test_sha, info, model, decision.look),
        "reused_test_set": reused,
        "override_reason": reason if reused else None,
        "scores": scores,
        "confidence": confidence,
        "cv": info.get("cv"),
        "refit": info.get("refit", "all_dev"),
        **({"cv_unavailable": info["cv_unavailable"]} if info.get("cv_unavailable") else {}),
    }
    if not model.meta.regression:
        # counts[i][j]: test rows of class i predicted as j (classes in model.meta order)
        entry["confusion"] = {
            "classes": model.meta.classes,
            "counts": confusion(rows["y"], rows["pred"], model.meta.n_classes),
        }
    metrics = (
        {f"test_{k}": s["value"] for k, s in scores.items()}
        | {f"test_{k}_ci_low": s["ci_low"] for k, s in scores.items()}
        | {f"test_{k}_ci_high": s["ci_high"] for k, s in scores.items()}
    )
    _record(cfg, layout, info, audit, manifest, test, entry, metrics)
    if reused:
        print(
            f"[test] WARNING: look #{entry['look']} at this test set (override: "
            f"{entry['override_reason']!r}); the score is flagged reused_test_set."
        )
    print(f"[test] audit: {audit} (commit it to git)")
    _register(cfg, layout, info, entry, opened=True)
    return entry


def _open_thresholdout(
    cfg: Any, layout: Any, audit: Path, model: Any, info: dict, manifest: dict, test: Any,
    test_sha: str,
) -> dict[str, Any]:  # fmt: skip
    """``lockbox.mode=thresholdout``: answer this model's test accuracy with Thresholdout
    (:mod:`foldwise.lockbox.thresholdout`), within the test set's fixed budget."""
    from sklearn.metrics import accuracy_score

    from foldwise.lockbox import thresholdout as to

    s = to.Settings.of(cfg.lockbox.thresholdout)
    cv = info.get("cv") or {}
    try:
        if cv.get("metric") != f"val_{to.METRIC}" or cv.get("mean") is None:
            raise FoldwiseError(
                "lockbox.mode=thresholdout compares the model's test accuracy with its CV "
                f"accuracy, but the refit model has no CV estimate of val_{to.METRIC} "
                f"({cv.get('metric') or info.get('cv_unavailable') or 'none recorded'}).",
                f"select on accuracy (-S selection.metric=val_{to.METRIC}) with refit=all_dev, "
                "then dvc repro.",
            )
        kind, previous, recorded = to.decide(
            audit_log.read_audit(audit), test_sha, model.fingerprint, s
        )
    except FoldwiseError as refusal:
        _refused(layout, info, model.fingerprint, test_sha, refusal)
        raise
    if kind == "repeat":
        return _repeat(cfg, layout, info, recorded)
    ledger.check_mlflow(cfg, audit_log.read_audit(audit), manifest, test_sha)
    key, key_sha = to.key_for(layout.root, test_sha, previous)
    asked, over = to.state(previous)
    rows = model.predict(test)
    holdout = float(accuracy_score(rows["y"], rows["pred"]))
    train = float(cv["mean"])
    answer = to.Thresholdout(s, key, asked=asked, over=over).query(train, holdout)
    entry = {
        **_opening(layout, test, test_sha, info, model, answer.query),
        "reused_test_set": False,
        "override_reason": None,
        # the answer only: the raw test accuracy (and every other score) stays unshown
        "scores": {
            to.METRIC: {
                "value": answer.value,
                "ci_low": None,
                "ci_high": None,
                "interval": "thresholdout",
            }
        },
        "confidence": None,
        "cv": info.get("cv"),
        "refit": info.get("refit", "all_dev"),
        "thresholdout": {
            "query": answer.query,
            "answer": answer.value,
            "over": answer.over,
            "train": train,
            "budget_left": answer.budget_left,
            "queries_left": answer.queries_left,
            "settings": s.as_dict(),
            "key_sha256": key_sha,
            "guarantee": to.guarantee(s, len(test)),
        },
    }
    metrics = {
        f"test_{to.METRIC}": answer.value,
        "thresholdout_over": float(answer.over),
        "thresholdout_budget_left": float(answer.budget_left),
    }
    _record(cfg, layout, info, audit, manifest, test, entry, metrics)
    print(f"[test] audit: {audit} (commit it to git)")
    _register(cfg, layout, info, entry, opened=True)
    return entry


def _opening(layout: Any, test: Any, test_sha: str, info: dict, model: Any, look: int) -> dict:
    """What every audited opening records first: when, which rows, which model, which look."""
    from foldwise.files import git_commit

    return {
        "opened_at": now(),
        "test_sha256": test_sha,
        "n_test": len(test),
        "config_hash": info["config_hash"],
        "label": info["label"],
        "model_sha256": model.fingerprint,
        "git_commit": git_commit(layout.root),
        "look": look,
    }


def _refused(layout: Any, info: dict, model_sha: str, test_sha: str, refusal: Exception) -> None:
    """Don't leave the previous model's test scores beside this model's selection: the
    metrics file now says that this model was refused, and has no scores."""
    _write_metrics(layout, {
        "status": "refused", "config": info["config_hash"], "label": info["label"],
        "model_sha256": model_sha, "test_sha256": test_sha,
        "reason": getattr(refusal, "problem", str(refusal)),
    })  # fmt: skip
    write_confusion(layout.test_confusion, {})


def _repeat(cfg: Any, layout: Any, info: dict, entry: dict[str, Any]) -> dict[str, Any]:
    """The same model again: its recorded result, no new look."""
    _write_metrics(layout, metrics_document(entry))
    write_confusion(layout.test_confusion, entry)
    print(
        f"[test] this model ({entry['model_sha256'][:12]}) already opened the lockbox at "
        f"{entry['opened_at']}; reporting the recorded result (no new look)."
    )
    _report(entry)
    _register(cfg, layout, info, entry, opened=False)
    return entry


def _record(
    cfg: Any,
    layout: Any,
    info: dict,
    audit: Path,
    manifest: dict,
    test: Any,
    entry: dict[str, Any],
    metrics: dict[str, float],
) -> None:
    """A new opening: its MLflow run, the ledger and the audit log, then the scores
    (MLflow, ``test_metrics.json``, the terminal). Fills in ``entry``."""
    from foldwise import tracking  # MLflow: only for a new opening, not a repeat

    test_sha, reused = entry["test_sha256"], entry["reused_test_set"]
    entry.update(ledger.opening_fields(cfg, layout, manifest))  # rows, opener, manifest hash
    c = tracking.client(cfg)
    run_id = tracking.start_run(
        c,
        info["experiment_id"],
        f"lockbox opening #{entry['look']} · {info['label']}",
        "lockbox",
        {
            f"{tracking.TAG}lockbox": "opening",
            f"{tracking.TAG}lockbox_mode": "thresholdout" if "thresholdout" in entry else "once",
            f"{tracking.TAG}look": entry["look"],
            f"{tracking.TAG}reused_test_set": reused,
            f"{tracking.TAG}model_sha256": entry["model_sha256"],
            f"{tracking.TAG}test_sha256": test_sha,
            f"{tracking.TAG}config_hash": info["config_hash"],
            f"{tracking.TAG}git_commit": entry["git_commit"],
            **({f"{tracking.TAG}override_reason": entry["override_reason"]} if reused else {}),
            **ledger.mlflow_tags(entry),
        },
        parent=info["sweep_run_id"],
    )
    # The only run that carries the test rows as its dataset.
    tracking.log_dataset(c, run_id, {"name": f"{cfg.data.name} test", "digest": test_sha[:12],
                                     "rows": len(test), "context": "testing"})  # fmt: skip
    entry["mlflow_run_id"] = run_id
    # Recorded (ledger, then audit log) before the scores reach MLflow or the terminal.
    ledger.record(layout.root, audit, entry)
    tracking.log(
        c,
        run_id,
        params={"label": info["label"], "n_test": len(test)},
        metrics={"reused_test_set": float(reused), "look": entry["look"]} | metrics,
    )
    c.set_terminated(run_id)
    _write_metrics(layout, metrics_document(entry))
    write_confusion(layout.test_confusion, entry)
    _report(entry)


def _register(cfg: Any, layout: Any, info: dict, entry: dict, *, opened: bool) -> None:
    """The opened model into MLflow's registry (:mod:`foldwise.tracking.registry`). After a new
    opening a failure fails the stage (the opening stays recorded: a re-run registers it
    without a new look); after a repeat it is only reported."""
    import contextlib

    from foldwise import tracking
    from foldwise.files import read_json
    from foldwise.redact import redact
    from foldwise.tracking import registry

    selection = read_json(layout.selection) if layout.selection.is_file() else {}
    metric = (entry.get("cv") or {}).get("metric") or selection.get("metric") or "val_loss"
    # A repeat must not wait out MLflow's minutes of retries for a server that is down.
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    try:
        with contextlib.nullcontext() if opened else tracking.env_vars(quick):
            reg = registry.register(cfg, info, entry, metric, opened=opened)
    except Exception as err:
        why = redact(f"{type(err).__name__}: {err}").strip().splitlines()
        problem = (f"could not register the model in MLflow's registry "
                   f"({why[-1][:300] if why else ''}).")  # fmt: skip
        fix = "re-run the test stage (dvc repro test): the opening is recorded, no new look."
        if opened:
            raise FoldwiseError(problem, fix) from None
        print(f"[test] WARNING: {problem} {fix}")
        return
    uri = f"models:/{reg['name']}@{registry.ALIAS}"
    state = "registered as" if reg["new"] else "already registered as"
    where = f"; alias {registry.ALIAS} → it ({uri})" if reg["alias"] else (
        f"; alias {registry.ALIAS} stays on the latest opening")  # fmt: skip
    print(f"[test] {state} {reg['name']} version {reg['version']}{where}")


def _report_thresholdout(entry: dict[str, Any]) -> None:
    t = entry["thresholdout"]
    g, s = t["guarantee"], t["settings"]
    # the answer is good to about ±τ: one decimal beyond τ's first significant digit
    digits = max(0, -math.floor(math.log10(s["tolerance"]))) + 1
    n = entry["n_test"]
    how = (
        f"the test accuracy plus Laplace noise: the {n} test rows disagree with the CV "
        "estimate, and one unit of the budget is spent"
        if t["over"]
        else f"the CV estimate, which the {n} test rows agree with within the noisy threshold"
    )
    print(
        f"[test] {entry['label']}: Thresholdout answer #{t['query']}: test_acc = "
        f"{t['answer']:.{digits}f}, {how}. Left: {t['budget_left']} of B = {s['budget']} "
        f"over-threshold answers, {t['queries_left']} of m = {s['max_queries']} queries."
    )
    print(f"[test] {g['text']}")


def _report(entry: dict[str, Any]) -> None:
    if "thresholdout" in entry:
        _report_thresholdout(entry)
        return
    for line in report_lines(entry):
        print(line)


def report_lines(entry: dict[str, Any]) -> list[str]:
    """The test stage's terminal lines for an opening (``entry``: its audit entry), each
    number at the precision its interval supports (:mod:`foldwise.headline`); the gap
    at the test interval's, as the report prints it."""
    from foldwise import headline as h

    c = entry["confidence"]
    out = []
    for name, s in entry["scores"].items():
        lo, hi = s["ci_low"], s["ci_high"]
        out.append(
            f"[test] {entry['label']}: test_{name} = {h.near(s['value'], lo, hi)}  "
            f"({c:.0%} {s.get('interval', 'percentile')} bootstrap CI {h.near(lo, lo, hi)} – "
            f"{h.near(hi, lo, hi)}, n={entry['n_test']})"
        )
    if entry.get("cv_unavailable"):
        out.append(
            f"[test] CV estimate of this {entry.get('refit')} model: {entry['cv_unavailable']}"
        )
    if entry.get("cv"):
        g = cv_vs_test(entry)
        cv, t = g["cv"], g["test"]
        cv_half = h.half_width(cv.get("ci_low"), cv.get("ci_high"))
        t_half = h.half_width(t["ci_low"], t["ci_high"])
        interval = f" {h.interval(cv['ci_low'], cv['ci_high'])}" if cv_half is not None else ""
        out.append(
            f"[test] CV estimate {g['metric']} {h.fixed(cv['mean'], cv_half)}{interval} vs test "
            f"{h.near(t['value'], t['ci_low'], t['ci_high'])} "
            f"{h.interval(t['ci_low'], t['ci_high'])}: gap "
            f"{h.fixed(g['gap'], t_half, sign=True)} "
            "(positive: CV was optimistic)"
        )
    return out
