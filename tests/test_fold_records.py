"""A fold run opened as its stack starts (tags, params, dataset sent then) and completed
by a small record at the end holds exactly what a fold run created by its record holds:
the two are compared field by field in a real SQLite store, over random outcomes."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from foldwise import params as P
from foldwise import tracking
from foldwise.results import Session
from foldwise.sweep import jobs
from foldwise.tracking import pending

DATASET = {"name": "digits dev", "digest": "aac04972eb4b", "rows": 1437,
           "context": "cross-validation"}  # fmt: skip
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
names = st.sampled_from(["val_acc", "val_f1", "val_loss", "train_loss", "train_f1"])


@st.composite
def outcomes(draw) -> dict:
    ok = draw(st.booleans())
    epochs = draw(st.integers(1, 12))
    keys = draw(st.sets(names, min_size=1, max_size=4))
    out = {"status": "ok" if ok else "failed", "n_train": 9, "n_val": 3}
    if ok:
        out["metrics"] = {k: draw(finite) for k in keys}
        out["history"] = {"epoch": list(range(1, epochs + 1)),
                          **{k: draw(st.lists(finite, min_size=epochs, max_size=epochs))
                             for k in keys}}  # fmt: skip
        out["best_epoch"], out["epochs_trained"] = draw(st.integers(1, epochs)), epochs
    else:
        out["error"] = draw(st.sampled_from(["non-finite loss at epoch 3", "CUDA out of memory"]))
    return out


def _session(c: MlflowClient, exp: str, overrides: dict) -> tuple[Session, dict]:
    sweep = tracking.start_run(c, exp, "sweep", "sweep")
    conf = {"hash": "0123456789ab", "label": "mlp lr=0.01", "overrides": overrides,
            "run_id": tracking.start_run(c, exp, "cfg", "config", parent=sweep)}  # fmt: skip
    tags = {"foldwise.git_commit": "abc", "foldwise.split_manifest": "f0"}
    doc = {"experiment_id": exp, "sweep_run_id": sweep, "configs": [conf], "n_folds": 5,
           "split_key": "s", "code": "c", "engine": "e", "dataset": DATASET,
           "common_tags": tags}  # fmt: skip
    return Session(doc), conf


def _seen(c: MlflowClient, run_id: str) -> dict:
    """Everything a fold run holds, but its id and times."""
    run = c.get_run(run_id)
    histories = {
        k: [(m.step, m.value) for m in c.get_metric_history(run_id, k)] for k in run.data.metrics
    }
    return {
        "name": run.info.run_name,
        "status": run.info.status,
        "params": run.data.params,
        "tags": {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"},
        "metrics": run.data.metrics,
        "histories": histories,
        "datasets": [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs],
        "artifacts": [a.path for a in c.list_artifacts(run_id)],
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for every example (creating one takes seconds)."""
    return tmp_path_factory.mktemp("records")


# No shrinking: each example costs a dozen store transactions (~1 s on a busy machine).
@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(outcome=outcomes(), lr=finite, fold=st.integers(0, 4), fail_params=st.booleans())
def test_a_fold_run_opened_early_ends_as_one_created_by_its_record(
    store: Path, outcome: dict, lr: float, fold: int, fail_params: bool
):
    layout = P.Layout(store / uuid.uuid4().hex)  # result files of this example
    c = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = c.create_experiment(uuid.uuid4().hex, artifact_location=(store / "art").as_uri())
    session, conf = _session(c, exp, {"optim.lr": lr})
    key = session.job_key(conf["hash"], fold)
    durable = pending.Durable(c, c.tracking_uri, layout.root)

    late = jobs._record(durable, session, layout, conf, fold, key, dict(outcome))
    if fail_params:  # the open stops after creating the run: the record sends everything

        class ParamsRefused:
            def __getattr__(self, name):
                return getattr(c, name)

            def log_batch(self, run_id, metrics=(), params=(), tags=()):
                if params:
                    raise ConnectionError("MLflow went away")
                return c.log_batch(run_id, metrics=metrics, params=params, tags=tags)

        durable = pending.Durable(ParamsRefused(), c.tracking_uri, layout.root)
    early, complete = jobs._open_fold_run(durable, session, conf, fold, key)
    assert early is not None and complete is not fail_params
    pending.Durable._down_since = None  # the store is back at once
    durable = pending.Durable(c, c.tracking_uri, layout.root)
    jobs._record(durable, session, layout, conf, fold, key, dict(outcome), run=early,
                 opened=complete)  # fmt: skip
    assert not pending.pending(layout.root)
    a, b = _seen(c, late["fold_run_id"]), _seen(c, early)
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert a["params"] == {"fold": str(fold), "optim.lr": str(lr)}
    assert a["status"] == ("FINISHED" if outcome["status"] == "ok" else "FAILED")
    for k, v in outcome.get("metrics", {}).items():
        assert math.isclose(a["metrics"][k], v, rel_tol=1e-6)
        assert [s for s, _ in a["histories"][f"epoch/{k}"]] == list(
            range(1, outcome["epochs_trained"] + 1)
        )
