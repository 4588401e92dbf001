"""A user's own network by ``model._target_``: built with the data's shapes, stacked as if
trained alone (BatchNorm, a custom layer, two dropout rates), trained alone when vmap
cannot run it (saying why), refused before any work when broken, and re-trained when
its source changes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from conftest import ROOT, TINY, make_project, tiny_params
from foldwise import engine, models
from foldwise import params as P
from foldwise.data import Meta, feature_columns
from foldwise.engine import Hyper, Task
from foldwise.errors import FoldwiseError
from foldwise.fitting.configs import config_hash, config_label

EXAMPLES = ROOT / "examples/own_model"
sys.path.insert(0, str(EXAMPLES))  # the user's package, as the project directory holds it


def _digits(n: int = 160):
    d = load_digits()
    keep = np.sort(np.random.default_rng(1).choice(len(d.target), n, replace=False))
    meta = Meta("digits", n, 64, [str(i) for i in range(10)],
                [f"x{i}" for i in range(64)], [1, 8, 8])  # fmt: skip
    return d.data[keep].astype(np.float64), d.target[keep].astype(np.int64), meta


def _tasks(model: dict, n: int) -> list[Task]:
    """Four models of one network: their own learning rates, seeds, row counts (a short
    fold that runs out of steps first), early stopping on and off."""
    rng = np.random.default_rng(7)
    out = []
    for i, (lr, rows, early) in enumerate([(0.01, 120, True), (0.03, 40, False),
                                           (0.003, 90, True), (0.05, 120, False)]):  # fmt: skip
        train = np.sort(rng.choice(n, rows, replace=False))
        out.append(Task(
            key=f"t{i}", model=model, hyper=Hyper(lr, 1e-3 * i, 0.0, 3 + i, early, 0.25, 1),
            batch_size=16, seed=100 + i, train=train,
            evals={"val": np.setdiff1d(np.arange(n), train)[:30]},
        ))  # fmt: skip
    return out


@pytest.mark.parametrize(
    "model",
    [
        {"_target_": "mynets.nets.SmallCNN", "width": 4, "blocks": 2, "dropout": 0.2},
        {"_target_": "mynets.nets.GatedMLP", "width": 8, "dropout": 0.0, "last_dropout": 0.4},
    ],
    ids=["cnn-batchnorm", "custom-layer-two-dropout-rates"],
)
def test_a_users_network_stacks_exactly_as_it_trains_alone(model):
    x, y, meta = _digits()
    tasks = _tasks(model, len(y))
    assert engine.plan(tasks, meta, precision=64) == [[0, 1, 2, 3]]  # one stack
    sizes = set()  # a stack that raised would be retried in halves: it must not have
    together = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64, keep_state=True,
                            on_epoch=lambda _n, info: sizes.add(info.n_models))  # fmt: skip
    assert sizes == {4}
    alone = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64, keep_state=True,
                         max_models=1)  # fmt: skip
    for t, a, b in zip(tasks, together, alone, strict=True):
        assert a.status == b.status == "ok", (a.error, b.error)
        for k in a.history:
            np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-9, atol=1e-6,
                                       err_msg=f"{t.key} {k}")  # fmt: skip
        assert (a.best_epoch, a.epochs_trained) == (b.best_epoch, b.epochs_trained)
        # every weight and buffer (BatchNorm's running statistics, at the best epoch)
        assert a.state_dict.keys() == b.state_dict.keys()
        for k in a.state_dict:
            torch.testing.assert_close(a.state_dict[k], b.state_dict[k], rtol=1e-9, atol=1e-9)
    running = [k for k in together[0].state_dict if k.endswith("running_mean")]
    assert running, "the network has BatchNorm layers"
    # the short fold's model stopped updating its statistics when its rows ran out
    assert not torch.equal(together[1].state_dict[running[0]], together[3].state_dict[running[0]])


def test_the_trained_state_loads_into_the_users_own_class():
    x, y, meta = _digits()
    model = {"_target_": "mynets.nets.SmallCNN", "width": 4, "blocks": 1}
    (out,) = engine.train(_tasks(model, len(y))[:1], x, y, meta, accelerator="cpu",
                          keep_state=True)  # fmt: skip
    net = models.build_backbone(model, meta)
    net.load_state_dict(out.state_dict)  # strict: every parameter and buffer, same names
    assert int(net.features[1].num_batches_tracked) > 0


def test_a_network_vmap_cannot_run_trains_alone_and_says_why(capsys):
    x, y, meta = _digits()
    model = {"_target_": "own_nets.NoisyMLP", "width": 8}
    tasks = _tasks(model, len(y))[:2]
    assert engine.plan(tasks, meta) == [[0], [1]]
    first = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64)
    said = capsys.readouterr().out
    assert "own_nets.NoisyMLP trains one model at a time (vmap cannot stack it:" in said
    assert "random" in said.lower()
    again = engine.train(tasks[::-1], x, y, meta, accelerator="cpu", precision=64)[::-1]
    for a, b in zip(first, again, strict=True):  # its noise is seeded by the task alone
        assert a.status == "ok" and a.history == b.history


def test_a_lightning_module_trains_itself_and_its_scores_are_its_forwards():
    """Its own training_step, optimizer, schedule and self.log; foldwise's early stopping
    and scores. Every reported validation score is recomputed by scikit-learn from the
    returned state, and a task's outcome does not depend on the other tasks."""
    from scipy.special import softmax
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    x, y, meta = _digits()
    model = {"_target_": "mynets.lit.LitCNN", "width": 4}
    tasks = _tasks(model, len(y))[:2]  # early stopping on, then off
    out = engine.train(tasks, x, y, meta, accelerator="cpu", precision=64, keep_state=True)
    for t, o in zip(tasks, out, strict=True):
        assert o.status == "ok", o.error
        assert len(o.history["user_train_ce"]) == o.epochs_trained  # the module's self.log
        assert o.best_epoch <= o.epochs_trained <= t.hyper.max_epochs
        net = models.build_backbone(model, meta).double()
        net.load_state_dict(o.state_dict)
        val = t.evals["val"]
        xv = (x[val] - np.asarray(o.scaler["mean"])) / np.asarray(o.scaler["scale"])
        with torch.no_grad():
            logits = net.eval()(torch.from_numpy(xv)).numpy()
        assert o.metrics["val_acc"] == pytest.approx(accuracy_score(y[val], logits.argmax(1)))
        assert o.metrics["val_f1"] == pytest.approx(
            f1_score(y[val], logits.argmax(1), average="macro"))  # fmt: skip
        loss = log_loss(y[val], softmax(logits, axis=1), labels=list(range(10)))
        assert o.metrics["val_loss"] == pytest.approx(loss, rel=1e-9)
    again = engine.train(tasks[::-1], x, y, meta, accelerator="cpu", precision=64)[::-1]
    for a, b in zip(out, again, strict=True):
        assert a.history == b.history


def test_a_lightning_modules_optimizer_is_its_own_so_optim_is_not_swept():
    base = ["model._target_=mynets.lit.LitCNN", "curves.validation.param=model.width",
            "~sweep.grid.model.hidden"]  # fmt: skip
    with pytest.raises(FoldwiseError, match=r"LightningModule: its configure_optimizers") as e:
        P.validate(_cfg(*base))  # the default grid sweeps optim.lr
    assert "-S '~sweep.grid.optim.lr'" in e.value.fix
    base += ["~sweep.grid.optim.lr", "+sweep.grid.model.lr=[0.01,0.1]"]
    with pytest.raises(FoldwiseError, match=r"LitCNN takes but the config does not set") as e:
        P.validate(_cfg(*base))
    assert e.value.fix == "-S +model.width=<value>."
    P.validate(_cfg(*base, "+model.width=4"))
    with pytest.raises(FoldwiseError, match=r"returns its schedulers, so this one") as e:
        P.validate(_cfg(*base, "+model.width=4", "scheduler=cosine"))
    assert "-S scheduler=none" in e.value.fix


def test_data_shapes_reach_the_constructor_unless_the_config_sets_them():
    _, _, meta = _digits()
    cnn = models.build_backbone({"_target_": "mynets.nets.SmallCNN", "width": 4}, meta)
    assert cnn.in_shape == (1, 8, 8) and cnn.head[-1].out_features == 10
    mlp = models.build_backbone({"name": "mlp", "hidden": 4, "depth": 1, "dropout": 0.0}, meta)
    assert mlp.net[0].in_features == 64 and mlp.net[-1].out_features == 10
    fixed = models.build_backbone({"_target_": "mynets.nets.GatedMLP", "out_features": 3}, meta)
    assert fixed.out.out_features == 3


def _cfg(*extra: str):
    return tiny_params(["model=module", *extra])


def test_a_sweep_over_the_users_kwargs_validates_labels_and_hashes():
    base = ["model._target_=mynets.nets.GatedMLP", "+model.width=8"]
    with pytest.raises(FoldwiseError, match=r"sweep\.grid\.model\.hidden sweeps an argument") as e:
        P.validate(_cfg(*base))  # the default grid sweeps the built-ins' model.hidden
    assert "-S '~sweep.grid.model.hidden'" in e.value.fix
    base += ["~sweep.grid.model.hidden", "+sweep.grid.model.width=[4,8]"]
    with pytest.raises(FoldwiseError, match=r"curves\.validation\.param is model\.hidden") as e:
        P.validate(_cfg(*base))  # and so do the default curves
    assert "-S curves.validation.param=model.width" in e.value.fix
    cfg = _cfg(*base, "curves.validation.param=model.width")
    P.validate(cfg)
    assert config_label(cfg, {"model.width": 4}) == "GatedMLP width=4"
    assert models.dry_run(cfg.model, _digits()[2]) > 0


@pytest.mark.parametrize(
    ("extra", "said", "fix"),
    [
        (["model._target_=mynets.nets.GatedMPL"], "has no 'GatedMPL'", "mynets.nets.GatedMLP"),
        (["model._target_=mynet.nets.GatedMLP"], "does not import", "did you mean mynets"),
        (
            ["model._target_=mynets.nets.GatedMLP", "+model.widht=8"],
            "model.widht is not an argument of mynets.nets.GatedMLP",
            "did you mean model.width",
        ),
        (
            ["model._target_=own_nets.NoisyMLP", "+model.noise=0.1", "+model.sigma=1"],
            "model.sigma is not an argument",
            "Remove model.sigma",
        ),
        ([], "model=module needs model._target_", "-S model._target_="),
        (["model._target_=GatedMLP"], "is not a dotted path", "mypkg.nets"),
    ],
    ids=[
        "misspelt-class",
        "misspelt-module",
        "misspelt-kwarg",
        "unknown-kwarg",
        "no-target",
        "not-dotted",
    ],
)
def test_bad_targets_and_kwargs_are_refused_naming_the_fix(extra, said, fix):
    with pytest.raises(FoldwiseError) as err:
        P.validate(_cfg(*extra))
    assert said in str(err.value) and fix in err.value.fix


def test_a_target_added_on_top_of_the_built_in_says_to_select_module():
    cfg = tiny_params(["+model._target_=mynets.nets.GatedMLP"])
    with pytest.raises(FoldwiseError, match="added on top of model=mlp") as err:
        P.validate(cfg)
    assert "-S model=module -S model._target_=mynets.nets.GatedMLP" in err.value.fix


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ({"_target_": "own_nets.Raises"}, "forward raised RuntimeError on a batch of 2 rows"),
        ({"_target_": "own_nets.WrongShape"}, "returned [2, 1] for a batch of 2 rows"),
        ({"_target_": "own_nets.not_a_module"}, "returned a str, not a torch nn.Module"),
        ({"_target_": "own_nets.NoOptimizers"}, "LightningModule without configure_optimizers"),
    ],
    ids=["forward-raises", "wrong-output-shape", "not-a-module", "lightning-no-optimizers"],
)
def test_a_broken_network_fails_its_dry_run_before_any_work(model, said):
    with pytest.raises(FoldwiseError) as err:
        models.dry_run(model, _digits()[2])
    assert said in str(err.value)


def test_editing_the_users_source_changes_the_config_hash_and_nothing_else_does(tmp_path):
    pkg = tmp_path / "editednets"
    shutil.copytree(EXAMPLES / "mynets", pkg)
    sys.path.insert(0, str(tmp_path))
    try:
        cfg = _cfg("model._target_=editednets.nets.GatedMLP")
        before = config_hash(cfg)
        assert config_hash(cfg) == before  # stable
        (pkg / "README.txt").write_text("not code")
        assert config_hash(cfg) == before
        nets = pkg / "nets.py"
        nets.write_text(nets.read_text().replace("torch.sigmoid(self.g)", "torch.tanh(self.g)"))
        assert config_hash(cfg) != before
    finally:
        sys.path.remove(str(tmp_path))
    builtin = tiny_params()
    assert "model_source" not in str(config_hash(builtin))
    assert models.source_hash(builtin.model) is None


def test_the_example_package_is_what_the_docs_show():
    for page in ("README.md", "docs/models.md"):  # the quickstart and "Your own model"
        assert "model._target_=mynets.nets.SmallCNN" in (ROOT / page).read_text()
    assert Path(EXAMPLES / "mynets/nets.py").is_file()


# ---------------------------------------------------------------- the real pipeline
# TINY (dvc exp run composes params.yaml from conf/ and these), then the lines of docs/models.md
SMALL = [t for t in TINY if not t.startswith(("sweep.grid.", "curves.validation."))]
CASES = {
    "nn.Module": (
        ["model=module", "model._target_=mynets.nets.SmallCNN", "+model.width=4",
         "~sweep.grid.model.hidden", "+sweep.grid.model.width=[4,8]", "sweep.grid.optim.lr=[0.01]",
         "curves.validation.param=model.width", "curves.validation.values=[4,8]",
         # an argument by foldwise's resolver, through DVC's own composition; a scheduler
         "+model.out_features=${foldwise:out_features}", "scheduler=cosine",
         *(f"curves.{c}.enabled=false" for c in ("learning", "bias_variance"))],
        ["SmallCNN width=4 lr=0.01", "SmallCNN width=8 lr=0.01"],
        "vmap cannot stack it",
    ),
    # the curves, the second run and the registry are the nn.Module case's (the same code)
    "LightningModule": (
        ["model=module", "model._target_=mynets.lit.LitCNN", "+model.width=4", "+model.lr=0.05",
         "~sweep.grid.model.hidden", "~sweep.grid.optim.lr", "+sweep.grid.model.lr=[0.02,0.05]",
         "curves.validation.param=model.lr", "curves.validation.values=[0.02,0.05]",
         *(f"curves.{c}.enabled=false" for c in ("learning", "validation", "bias_variance"))],
        ["LitCNN lr=0.02", "LitCNN lr=0.05"],
        "a LightningModule trains with its own training_step",
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_users_package_is_cross_validated_by_dvc_exp_run_and_predicts_elsewhere(tmp_path, case):
    """As docs/models.md ("Your own model") says: the package in the project directory, the
    overrides of the example, `dvc exp run`; every stage runs, the lockbox opens once,
    and the saved and the registered model predict from another directory (the model
    carries its code)."""
    import json

    import pandas as pd

    overrides, labels, note = CASES[case]
    args = [a for o in [*SMALL, *overrides] for a in ("-S", o)]
    p = make_project(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", tiny_params())
    shutil.copytree(EXAMPLES / "mynets", p.path / "mynets")
    p.commit("tiny digits, and the user's package")
    ran = p.dvc("exp", "run", *args)
    said = ran.stdout + ran.stderr
    # BatchNorm and dropout stack; a LightningModule trains alone, as it says
    assert (note in said) == (case == "LightningModule"), said[-3000:]

    session = json.loads((p.path / "results/sweep/session.json").read_text())
    assert sorted(c["label"] for c in session["configs"]) == labels
    cv = json.loads((p.path / "results/cv_metrics.json").read_text())
    assert all(c["complete"] for c in cv["configs"].values())
    test = json.loads((p.path / "results/test_metrics.json").read_text())
    assert 0 <= test["test"]["acc"]["value"] <= 1
    full = case == "nn.Module"
    if full:
        params = (p.path / "params.yaml").read_text()
        assert "out_features: ${foldwise:out_features}" in params  # as written
        assert "CosineAnnealingLR" in params
        job = json.loads(next((p.path / "results/sweep/jobs").glob("*.json")).read_text())
        lr = job["history"]["lr"]  # cosine from optim.lr: each epoch's rate
        assert lr[0] == pytest.approx(0.01) and lr == sorted(lr, reverse=True), lr
        curve = pd.read_csv(p.path / "results/curves/validation.csv")
        assert sorted(curve["x"]) == [4, 8]  # over the user's own argument
        again = p.dvc("exp", "run", *args)  # nothing changed: nothing re-runs
        assert "Stage 'test' didn't change" in again.stdout + again.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    meta = json.loads((p.path / "data/prepared/meta.json").read_text())
    table = pd.read_parquet(p.path / "data/lockbox/test.parquet")
    rows = table[feature_columns(table)].set_axis(meta["feature_names"], axis=1)
    rows.head(5).to_csv(elsewhere / "rows.csv", index=False)
    env = {k: v for k, v in p.env.items() if k != "PYTHONPATH"}
    # the saved bundle, then the registered model (MLflow's registry), from elsewhere
    ways = [(str(p.path / "models/final"), "bundle"), ("foldwise-digits", "reg")][: 1 + full]
    for model, name in ways:
        out = subprocess.run(
            [str(Path(sys.executable).parent / "foldwise"), "predict", "--model", model,
             "--input", "rows.csv", "--output", f"{name}.csv"],
            cwd=elsewhere, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    bundle = pd.read_csv(elsewhere / "bundle.csv")
    assert len(bundle) == 5
    if full:
        pd.testing.assert_frame_equal(bundle, pd.read_csv(elsewhere / "reg.csv"))


def test_other_argument_names_take_the_datas_values_by_the_foldwise_resolver():
    from omegaconf import OmegaConf

    from foldwise import resolvers
    from foldwise.fitting.configs import n_params  # noqa: F401  (the plan step's dry run)

    _, _, meta = _digits()
    assert set(resolvers.NAMES) == set(meta.implied())  # one list of names, two places
    mapped = ["model._target_=own_nets.OtherNames", "~sweep.grid.model.hidden",
              "curves.validation.param=model.width", "+model.width=8",
              "+model.n_inputs=${foldwise:n_features}",
              "+model.n_labels=${foldwise:out_features}"]  # fmt: skip
    cfg = _cfg(*mapped)
    P.validate(cfg)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["n_inputs"] == "${foldwise:n_features}"  # as written: the data comes later
    net = models.build_backbone(model, meta)
    assert (net.net[0].in_features, net.net[-1].out_features) == (64, 10)
    iris = Meta("iris", 150, 4, ["a", "b", "c"], [f"x{i}" for i in range(4)], None)
    net = models.build_backbone(model, iris)
    assert (net.net[0].in_features, net.net[-1].out_features) == (4, 3)
    with pytest.raises(FoldwiseError) as err:
        P.validate(_cfg(*mapped[:4], "+model.n_labels=${foldwise:n_classes}"))
    assert "model.n_labels" in str(err.value) and "no value named 'n_classes'" in str(err.value)
    assert "out_features" in str(err.value)
