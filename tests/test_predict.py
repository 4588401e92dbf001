"""Using the model: raw rows in, the same classes and probabilities out of MLflow's
pyfunc, `foldwise predict` and the test stage's scoring (LoadedModel.predict)."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_params
from foldwise import artifact, pyfunc
from foldwise.data import feature_columns, prepare
from foldwise.fitting.train import fit
from foldwise.predict import predict_frame

# one worker under `pytest -n` (--dist loadgroup): the module fixture is built once
pytestmark = pytest.mark.xdist_group("predict")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A small MLP on iris, saved as the refit stage saves it; and the raw rows."""
    cfg = tiny_params(["data=iris", "trainer.max_epochs=20", "model.hidden=8", "optim.lr=0.05"])
    table, meta = prepare(cfg)
    net, res = fit(cfg, meta, table)
    folder = tmp_path_factory.mktemp("model")
    artifact.save(folder, net, res.scaler, meta, {"model": dict(cfg.model)})
    raw = table[feature_columns(table)].set_axis(list(meta.feature_names), axis=1)
    return folder / "model.pt", table, raw


def test_pyfunc_cli_and_test_stage_agree_on_raw_rows(bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands here
    path, table, raw = bundle
    model = artifact.LoadedModel(path)
    stage = model.predict(table)  # what the test stage scores
    frame = predict_frame(model, raw)
    labels = np.asarray(model.meta.classes)
    assert (frame["prediction"].to_numpy() == labels[stage["pred"]]).all()
    assert (frame["prediction"] == labels[table["target"]]).mean() > 0.8  # scaled, not raw
    proba = frame[[f"proba_{c}" for c in model.meta.classes]].to_numpy()
    np.testing.assert_allclose(proba.sum(1), 1.0)
    loss = -np.log(proba[np.arange(len(table)), table["target"].to_numpy()])
    np.testing.assert_allclose(loss, stage["loss"], rtol=0, atol=1e-12)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        pyfunc.log(path, raw.head(5))
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    served = loaded.predict(raw)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), frame.reset_index(drop=True))

    raw.assign(extra="ignored").to_csv(tmp_path / "rows.csv", index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "foldwise.cli", "predict", "--model", str(path.parent),
         "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out.csv"),
         "--ignore-extra-columns"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "150 predictions" in proc.stderr
    cli = pd.read_csv(tmp_path / "out.csv")
    assert (cli["prediction"] == frame["prediction"].to_numpy()).all()
    # the CSV's rows ("5.1") are not the float32 table's (5.0999999...): compare on them
    same_rows = predict_frame(model, pd.read_csv(tmp_path / "rows.csv"), extra="ignore")
    want = same_rows.drop(columns="prediction").to_numpy()
    np.testing.assert_allclose(cli.drop(columns="prediction").to_numpy(), want, rtol=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "lack 1 of the model's 4 feature columns: sepal length (cm)"),
        ("extra", "hold 2 column(s) the model was not trained on: species, id (its 4 features"),
        ("text", "feature columns are not numeric: petal width (cm) ("),
    ],
)
def test_predict_refuses_rows_that_do_not_match_the_training_schema(
    bundle, tmp_path, capsys, change, message
):
    from foldwise.cli import main

    path, _, raw = bundle
    rows = raw.copy()
    if change == "drop":
        rows = rows.drop(columns=rows.columns[0])
    elif change == "extra":
        rows = rows.assign(species="setosa", id=range(len(rows)))
    else:
        rows["petal width (cm)"] = rows["petal width (cm)"].astype(str) + " cm"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    argv = ["predict", "--model", str(path), "--input", str(tmp_path / "rows.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Fix:" in err
    if change == "extra":
        assert "--ignore-extra-columns" in err
        assert main([*argv, "--ignore-extra-columns", "--output", str(tmp_path / "o.csv")]) == 0
        assert len(pd.read_csv(tmp_path / "o.csv")) == len(rows)
    # the table's own structure columns (row_id, target, ...) are not "extra"
    assert main([*argv[:-1], str(_structured(raw, tmp_path))]) == 0


def _structured(raw: pd.DataFrame, tmp_path) -> str:
    out = tmp_path / "structured.csv"
    raw.assign(row_id=range(len(raw)), target=0).to_csv(out, index=False)
    return str(out)
