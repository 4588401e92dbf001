"""The final model in MLflow's model registry: one version per model, alias `champion`,
a signature over the raw features; `foldwise predict --model` on the registered model
gives the local bundle's predictions exactly; `mlflow models serve` on it as well."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from conftest import BIN, make_project, tiny_params
from foldwise import artifact, pyfunc
from foldwise.cli import main
from foldwise.data import feature_columns, prepare
from foldwise.errors import FoldwiseError
from foldwise.fitting.train import fit
from foldwise.params import validate
from foldwise.predict import load_registered, predict_frame, resolve
from foldwise.tracking import registry, stop_group

# one worker under `pytest -n` (--dist loadgroup): the module fixture is built once
pytestmark = pytest.mark.xdist_group("registry")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A small MLP on iris, saved as the refit stage saves it; and its raw feature rows."""
    cfg = tiny_params(["data=iris", "trainer.max_epochs=5", "model.hidden=8", "optim.lr=0.05"])
    table, meta = prepare(cfg)
    net, res = fit(cfg, meta, table)
    folder = tmp_path_factory.mktemp("model")
    artifact.save(folder, net, res.scaler, meta, {"model": dict(cfg.model)})
    raw = table[feature_columns(table)].set_axis(list(meta.feature_names), axis=1)
    return folder / "model.pt", raw


def entry_for(model, run_id: str, look: int, fingerprint: str | None = None) -> dict:
    """An audit entry as the test stage writes it (the fields registration reads)."""
    return {
        "model_sha256": fingerprint or model.fingerprint, "label": "mlp hidden=8 lr=0.05",
        "config_hash": "c0ffee", "test_sha256": "ab" * 32, "look": look,
        "reused_test_set": look > 1, "git_commit": "1234abcd", "refit": "all_dev",
        "mlflow_run_id": f"lockbox-{look}", "opened_at": "2026-12-03T07:00:00+00:00",
        "scores": {"f1": {"value": 0.9}, "acc": {"value": 0.95}},
        "cv": {"metric": "val_f1", "mean": 0.93},
    }  # fmt: skip


def test_model_forms_and_names():
    assert resolve("foldwise-iris") == "models:/foldwise-iris@champion"
    assert resolve("models:/m/3") == "models:/m/3"
    assert resolve("models:/m@champion") == "models:/m@champion"
    assert resolve("models/final") == Path("models/final")
    assert resolve("model.pt") == Path("model.pt")
    assert registry.model_name(tiny_params(["data=wine"])) == "foldwise-wine"
    named = tiny_params(["data=wine", "lockbox.registered_model=churn-mlp"])
    assert registry.model_name(named) == "churn-mlp"
    validate(named)
    for bad in ("a/b", "x@y", "", "-lead"):
        cfg = tiny_params()
        cfg.lockbox.registered_model = bad
        with pytest.raises(FoldwiseError, match=r"lockbox\.registered_model must be a model name"):
            validate(cfg)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def test_register_once_per_model_then_predict_from_the_registry(
    bundle, tmp_path, monkeypatch, capsys, request, store
):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if store == "server":
        uri = request.getfixturevalue("mlflow_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path, raw = bundle
    model = artifact.LoadedModel(path)
    name = f"registry-test-{store}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        logged = pyfunc.log(path, raw.head(5))
    info = {"mlflow_run_id": run.info.run_id, "mlflow_model_uri": logged.model_uri}
    cfg = OmegaConf.create({"data": {"name": "iris"}, "lockbox": {"registered_model": name}})

    first = registry.register(cfg, info, entry_for(model, run.info.run_id, 1), "val_f1",
                              opened=True)  # fmt: skip
    assert first == {"name": name, "version": "1", "alias": "champion", "new": True}
    c = MlflowClient(uri)
    v = c.get_model_version_by_alias(name, "champion")
    assert str(v.version) == "1" and v.run_id == run.info.run_id
    tags = v.tags
    assert tags["foldwise.model_sha256"] == model.fingerprint
    assert (tags["foldwise.look"], tags["foldwise.test_f1"], tags["foldwise.cv_val_f1"]) == (
        "1", "0.9", "0.93")  # fmt: skip
    assert tags["foldwise.git_commit"] == "1234abcd" and tags["foldwise.refit_run_id"]
    assert "CV val_f1 0.9300, test 0.9000 (lockbox look #1" in v.description
    sig = mlflow.models.get_model_info(f"models:/{name}@champion").signature
    assert [(s.name, s.type.name) for s in sig.inputs.inputs] == [
        (c, "double") for c in model.meta.feature_names
    ]
    assert sig.outputs.input_names() == ["prediction"] + [f"proba_{k}" for k in model.meta.classes]

    # the same model again (a re-run of the test stage): no new version
    again = registry.register(cfg, info, entry_for(model, run.info.run_id, 1), "val_f1",
                              opened=True)  # fmt: skip
    assert again == {**first, "new": False}
    # another model reported again (a repeat) is registered, but champion stays ...
    other = entry_for(model, run.info.run_id, 2, fingerprint="f" * 64)
    second = registry.register(cfg, info, other, "val_f1", opened=False)
    assert (second["version"], second["alias"], second["new"]) == ("2", None, True)
    assert str(c.get_model_version_by_alias(name, "champion").version) == "1"
    # ... until it opens the lockbox itself
    assert registry.register(cfg, info, other, "val_f1", opened=True)["alias"] == "champion"
    assert str(c.get_model_version_by_alias(name, "champion").version) == "2"
    # the first model opened on another test set (new rows): its version, tags updated
    newer = {**entry_for(model, run.info.run_id, 1), "test_sha256": "cd" * 32}
    newer["scores"] = {"f1": {"value": 0.8}}
    back = registry.register(cfg, info, newer, "val_f1", opened=True)
    assert (back["version"], back["alias"], back["new"]) == ("1", "champion", False)
    v1 = c.get_model_version_by_alias(name, "champion")
    assert (str(v1.version), v1.tags["foldwise.test_sha256"], v1.tags["foldwise.test_f1"]) == (
        "1", "cd" * 32, "0.8")  # fmt: skip
    assert len(c.search_model_versions(f"name = '{name}'")) == 2

    # the registered model scores as the bundle does, to the last bit
    want = predict_frame(model, raw)
    for form in (f"models:/{name}@champion", f"models:/{name}/1"):
        got = predict_frame(load_registered(form, uri), raw)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    # `foldwise predict` (in-process: main() is the command) by bare name = by bundle path
    raw.to_csv(tmp_path / "rows.csv", index=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert main(["predict", "--model", str(path), "--input", "rows.csv", "--output", "a.csv"]) == 0
    argv = ["predict", "--model", name, "--tracking-uri", uri, "--input", "rows.csv"]
    assert main([*argv, "--output", "b.csv"]) == 0
    text = (tmp_path / "a.csv").read_text()
    assert (tmp_path / "b.csv").read_text() == text and text.count("\n") == len(raw) + 1
    capsys.readouterr()
    assert (
        main(["predict", "--model", "no-such", "--tracking-uri", uri, "--input", "rows.csv"]) == 2
    )
    err = capsys.readouterr().err
    assert "has no model models:/no-such@champion" in err and "Fix:" in err


def test_plain_predict_scores_with_this_datas_champion_and_says_which(
    bundle, tmp_path, monkeypatch, capsys
):
    # After `dvc exp run`s, models/final may be another dataset's (wine here) while
    # params.yaml says iris: plain `foldwise predict` must not pick it up silently.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path, raw = bundle
    wine = tiny_params(["data=wine", "trainer.max_epochs=2", "model.hidden=8"])
    table, meta = prepare(wine)
    net, res = fit(wine, meta, table)
    artifact.save(tmp_path / "models/final", net, res.scaler, meta, {"model": dict(wine.model)})
    (tmp_path / "models/final/info.json").write_text('{"label": "mlp hidden=8"}')
    raw.to_csv("rows.csv", index=False)
    params = lambda data: OmegaConf.save(  # noqa: E731
        {"data": {"name": data}, "tracking": {"uri": uri}}, tmp_path / "params.yaml"
    )
    argv = ["predict", "--input", "rows.csv", "--output", "out.csv"]

    params("iris")  # no champion for iris yet, and models/final is wine's: refused
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "models/final was trained on data=wine, but params.yaml's data is iris" in err
    assert "has no foldwise-iris@champion" in err
    assert "Fix: --model models/final to use it anyway, --model foldwise-wine" in err

    mlflow.set_tracking_uri(uri)  # iris's model opens the lockbox: it is the champion
    with mlflow.start_run() as run:
        logged = pyfunc.log(path, raw.head(5))
    info = {"mlflow_run_id": run.info.run_id, "mlflow_model_uri": logged.model_uri}
    model = artifact.LoadedModel(path)
    cfg = OmegaConf.create({"data": {"name": "iris"}, "tracking": {"uri": uri}})
    registry.register(cfg, info, entry_for(model, run.info.run_id, 1), "val_f1", opened=True)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "foldwise: model foldwise-iris@champion (version 1, mlp hidden=8 lr=0.05): the " \
        "registered champion of params.yaml's data=iris" in err  # fmt: skip
    assert "another: --model models/final" in err
    got = pd.read_csv("out.csv")
    want = predict_frame(model, raw)
    assert got["prediction"].astype(str).tolist() == want["prediction"].astype(str).tolist()

    params("wine")  # no wine champion: the last refit, which is wine's, named as such
    wine_rows = table[feature_columns(table)].set_axis(list(meta.feature_names), axis=1)
    wine_rows.to_csv("rows.csv", index=False)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "foldwise: model models/final (mlp hidden=8, data=wine: the last refit; " in err
    assert "has no foldwise-wine@champion" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(model_uri: str, env: dict, log: Path, timeout: float = 120):
    """`mlflow models serve` on 127.0.0.1; yields its URL; stops its process group."""
    port = _free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow models serve did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)


@pytest.mark.slow
def test_test_stage_registers_the_opened_model_and_mlflow_serves_it(
    tmp_path, sqlite_uri, monkeypatch
):
    from faultkit import stage

    monkeypatch.chdir(tmp_path)
    extra = ["data=iris", "sweep.grid.model.hidden=[8]", "trainer.max_epochs=2"]
    p = make_project(tmp_path, sqlite_uri, tiny_params(extra))
    env = {"MLFLOW_TRACKING_URI": sqlite_uri}
    # the stages as `dvc repro test` runs them, in this process (no interpreter start each)
    for name in ("prepare", "split", "sweep", "aggregate", "nested", "refit", "test"):
        ran = stage(p.path, name, env=env)
        assert ran.code == 0, f"{name}: {ran.out[-2000:]}{ran.err[-2000:]}"
    name = "foldwise-iris"
    assert f"registered as {name} version 1; alias champion" in ran.out
    c = MlflowClient(sqlite_uri)
    (v,) = c.search_model_versions(f"name = '{name}'")
    audit = json.loads((p.path / "lockbox/audit.jsonl").read_text().splitlines()[0])
    info = json.loads((p.path / "models/final/info.json").read_text())
    assert v.run_id == info["mlflow_run_id"]
    assert v.tags["foldwise.model_sha256"] == audit["model_sha256"]
    assert v.tags["foldwise.look"] == "1" and v.tags["foldwise.git_commit"] == audit["git_commit"]
    assert float(v.tags["foldwise.test_f1"]) == audit["scores"]["f1"]["value"]
    assert str(c.get_model_version_by_alias(name, "champion").version) == str(v.version)
    rerun = stage(p.path, "test", env=env).out  # the same model: no new look, no new version
    assert "no new look" in rerun and f"already registered as {name} version 1" in rerun
    assert len(c.search_model_versions(f"name = '{name}'")) == 1

    # the raw test rows, as a user has them; `foldwise predict` by name = by bundle path
    test = pd.read_parquet(p.path / "data/lockbox/test.parquet")
    meta = artifact.LoadedModel(p.path / "models/final/model.pt").meta
    raw = test[feature_columns(test)].set_axis(list(meta.feature_names), axis=1)
    raw.astype("float64").to_csv(tmp_path / "rows.csv", index=False)
    rows = pd.read_csv(tmp_path / "rows.csv")  # what both sides read
    argv = ["predict", "--input", str(tmp_path / "rows.csv"), "--tracking-uri", sqlite_uri]
    assert main([*argv, "--model", str(p.path / "models/final"), "--output", "a.csv"]) == 0
    assert main([*argv, "--model", name, "--output", "b.csv"]) == 0
    local = Path("a.csv").read_text()
    assert Path("b.csv").read_text() == local
    want = pd.read_csv(io.StringIO(local))

    body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
    with served(f"models:/{name}@champion", p.env, tmp_path / "serve.log") as url:
        times = []
        for _ in range(5):  # the first request also warms the process up
            req = urllib.request.Request(f"{url}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as r:
                answer = json.loads(r.read())
            times.append(time.perf_counter() - t)
    print(f"\nmlflow models serve, {len(rows)} rows a request: first {times[0] * 1000:.1f} ms, "
          f"then median {statistics.median(times[1:]) * 1000:.1f} ms")  # fmt: skip
    got = pd.DataFrame(answer["predictions"])
    assert list(got.columns) == list(want.columns) and len(got) == len(rows)
    assert (got["prediction"].astype(str) == want["prediction"].astype(str)).all()
    probas = [c for c in want.columns if c.startswith("proba_")]
    # JSON and CSV both carry the float64 values exactly (shortest repr round-trips)
    pd.testing.assert_frame_equal(got[probas], want[probas], check_exact=True)


def test_registry_down_fails_a_new_opening_and_warns_on_a_repeat(monkeypatch, capsys):
    """After a new opening the stage fails (re-run: a repeat registers it); a repeat only
    warns, after one quick retry rather than MLflow's minutes of them."""
    from types import SimpleNamespace

    from foldwise.lockbox import opening as lockbox

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    cfg = OmegaConf.create({"data": {"name": "iris"}, "lockbox": {"registered_model": None}})
    layout = SimpleNamespace(selection=Path("/nonexistent/selection.json"))
    entry = {**entry_for(SimpleNamespace(fingerprint="e" * 64), "r", 1)}
    t = time.monotonic()
    lockbox._register(cfg, layout, {"mlflow_run_id": "r"}, entry, opened=False)
    assert time.monotonic() - t < 30
    out = capsys.readouterr().out
    assert "WARNING: could not register the model in MLflow's registry" in out
    assert "re-run the test stage" in out
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(FoldwiseError, match="could not register the model"):
        lockbox._register(cfg, layout, {"mlflow_run_id": "r"}, entry, opened=True)
