"""The bad-input catalogue (issue 10; docs/troubleshooting.md, "When foldwise refuses").

Every bad input is refused with a :class:`FoldwiseError` that names the problem *and* the
fix, before any training and before the stage writes anything; the entry script prints
it on one line and exits 2. :data:`CATALOGUE` holds one case per entry (a few entries
have variants), each run in-process against the function that catches it
(``params.validate``, ``data.prepare``, ``split``, the compose entry point). Below it, a
few stage ``main``\\ s run in-process (exit 2, earlier outputs byte-identical), and a
handful of real subprocess runs (``@slow``) prove the exit code from the command line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from conftest import ROOT, TINY, make_project, tiny_params
from foldwise import params
from foldwise.config.keys import check_keys, known_keys
from foldwise.errors import FoldwiseError, run_stage

# ------------------------------------------------------------------------------- helpers
_BASE: list[DictConfig] = []


def cfg_with(**updates: object) -> DictConfig:
    """The tiny composed config with dotted keys set (added if new), as a params.yaml
    edited by hand or by ``dvc exp run -S +key=value`` would hold them."""
    if not _BASE:
        _BASE.append(tiny_params())
    cfg = OmegaConf.create(OmegaConf.to_container(_BASE[0]))
    for key, value in updates.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def csv_cfg(path: Path, **data: object) -> DictConfig:
    base = {"name": "csv", "path": str(path), "target": "label", "id_column": None,
            "drop": [], "image_shape": None, "sep": ","}  # fmt: skip
    return OmegaConf.create({"data": {**base, **data}, "seed": 0})


def prepare_text(text: str | bytes, **data: object) -> Callable[[Path], None]:
    """A case: ``data.prepare`` of a CSV file holding ``text``."""

    def run(tmp: Path) -> None:
        from foldwise.data import prepare

        path = tmp / "table.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        prepare(csv_cfg(path, **data))

    return run


def validate(**updates: object) -> Callable[[Path], None]:
    return lambda _tmp: params.validate(cfg_with(**updates))


def compose(*overrides: str) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        from foldwise.compose import main

        main(list(overrides))

    return run


def unread_model_key(tmp: Path) -> None:
    """A conf/model/ yaml that defines a key no code reads: the valid keys come from the
    schema, so a yaml file cannot make it valid."""
    conf = tmp / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "model/mine.yaml").write_text("name: mlp\nhidden: 8\ndepth: 1\ndropout: 0.0\n"
                                          "width: 32\n")  # fmt: skip
    params.validate(cfg_with(model__width=32))


def table(counts: dict[int, int], duplicated: bool = False) -> pd.DataFrame:
    """A canonical table with ``counts[c]`` rows of class c (distinct features, or every
    row twice when ``duplicated``)."""
    y = np.repeat(list(counts), list(counts.values()))
    x = np.arange(len(y), dtype=np.float32)
    if duplicated:
        x = x // 2
    return pd.DataFrame({"row_id": np.arange(len(y)), "x0": x, "target": y})


def split_of(counts: dict[int, int], *split_overrides: str, duplicated: bool = False):
    def run(_tmp: Path) -> None:
        from foldwise.compose import compose_params
        from foldwise.split import split

        base = [t for t in TINY if not t.startswith("split.")]
        cfg = compose_params([*base, *split_overrides], root=ROOT)
        params.validate(cfg)
        split(table(counts, duplicated), cfg, class_names=[f"c{c}" for c in counts])

    return run


def no_cuda(run: Callable[[Path], None]) -> Callable[[Path], None]:
    """Run ``run`` as on a machine without CUDA (whatever this one has)."""

    def wrapped(tmp: Path) -> None:
        import torch

        real = torch.cuda.is_available
        torch.cuda.is_available = lambda: False
        try:
            run(tmp)
        finally:
            torch.cuda.is_available = real

    return wrapped


def unwritable(tmp: Path) -> None:
    """data/prepared is a file: no user (root neither) can create files inside it."""
    (tmp / "dvc.yaml").write_text("stages: {}\n")
    OmegaConf.save(cfg_with(), tmp / "params.yaml")
    (tmp / "conf").symlink_to(ROOT / "conf")
    (tmp / "data").mkdir()
    (tmp / "data/prepared").write_text("not a folder")
    params.start("prepare", tmp)


def empty_grid(_tmp: Path) -> None:
    cfg = cfg_with()
    cfg.sweep.grid = {}
    params.validate(cfg)


RAGGED = "a,b,label\n1,2,x\n3,4,y,5\n5,6,x\n"
GOOD = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n"

# (entry, how it is triggered, the problem said, the fix said): both regexes must match.
CATALOGUE = [
    ("01-ragged-long", prepare_text(RAGGED), r"ragged CSV.*header has 3 fields.*line 3: 4",
     r"fix those lines"),
    ("01-ragged-short", prepare_text("a,b,label\n1,2,x\n3,4\n5,6,y\n"), r"ragged.*line 3: 2",
     r"fix those lines"),
    ("01-ragged-trailing-comma", prepare_text("a,b,label\n1,2,x,\n3,4,y,\n"),
     r"ragged.*line 2: 4, line 3: 4", r"extra separator"),
    ("02-wrong-delimiter", prepare_text("a;b;label\n1;2;x\n3;4;y\n"),
     r"single column named 'a;b;label'.*semicolon-separated", r"data\.sep=';'"),
    ("02-tab-delimiter", prepare_text("a\tb\tlabel\n1\t2\tx\n"), r"tab-separated",
     r"data\.sep='\\t'"),
    ("03-empty-file", prepare_text(""), r"table\.csv is empty \(0 bytes\)", r"export it again"),
    ("03-blank-lines-only", prepare_text("\n\n"), r"no header line", r"header row"),
    ("03-not-text", prepare_text(b"PK\x03\x04\xff\xfe\x00binary"), r"not UTF-8 text",
     r"as CSV \(UTF-8\) or Parquet"),
    ("04-header-only", prepare_text("a,b,label\n"), r"header \(3 columns\) but no rows",
     r"export the rows"),
    ("05-missing-target", prepare_text(GOOD, target="Label"), r"'Label' is not in table\.csv",
     r"did you mean data\.target=label"),
    ("06-target-missing-values", prepare_text("a,b,label\n1,2,x\n3,4,\n5,6,y\n"),
     r"1 rows have no label in 'label'", r"drop or label those rows"),
    ("07-single-class", prepare_text("a,b,label\n1,2,x\n3,4,x\n"),
     r"1 class\(es\) \('x'\).*at least 2", r"data\.task=regression"),
    ("08-inf-features", prepare_text("a,b,label\n1,inf,x\n3,4,y\n"),
     r"infinite values in feature columns: \['b'\]", r"replace or clip"),
    ("08-beyond-float32", prepare_text("a,b,label\n1e39,2,x\n3,4,y\n"),
     r"\['a'\] hold values beyond float32", r"rescale"),
    ("09-string-features", prepare_text("a,b,label\n1,abc,x\n3,4,y\n"),
     r"non-numeric feature columns: \['b'\] \(values such as 'b': 'abc'\)", r"data\.drop"),
    ("10-duplicated-ids", prepare_text("id,a,label\n1,2,x\n2,4,y\n1,6,x\n", id_column="id"),
     r"'id' has duplicate ids: 1 ids are shared by 2 rows \(e\.g\. 1\)",
     r"make the ids unique.*id_column=null"),
    ("10-duplicated-rows-across-lockbox", split_of({0: 20, 1: 20}, "split=kfold",
     "split.duplicates=error", duplicated=True), r"test_dev_duplicates.*exactly the features",
     r"drop repeated rows.*split\.duplicates=warn"),
    ("11-fewer-rows-than-folds", split_of({0: 4, 1: 4}, "split=kfold", "split.n_splits=10"),
     r"n_splits=10 is larger than the 6 dev rows", r"at most 6 folds"),
    ("12-class-smaller-than-folds", split_of({0: 35, 1: 5}),
     r"stratified 5-fold.*\{'c1': 4\}", r"lower split\.n_splits to 4.*split=kfold"),
    ("12-class-of-one-dev-row", split_of({0: 30, 1: 2}, "split.test_fraction=0.5"),
     r"stratified 5-fold.*\{'c1': 1\}", r"^(?!.*lower split\.n_splits).*collect more rows"),
    ("13-leave-p-out-explosion", split_of({0: 30, 1: 30}, "split=leave_p_out", "split.p=3"),
     r"would make 17,296 resamples \(C\(48, 3\)\), above split\.max_splits=2,000",
     r"split\.sample=<m>.*split=stratified_kfold"),
    ("14-unknown-group-option", compose("model=transformer"),
     r"unknown model 'transformer': conf/model/ has no transformer\.yaml", r"cnn, mlp"),
    ("14-unknown-group", compose("modle=mlp"), r"modle is not a foldwise setting",
     r"did you mean model\?"),
    ("14-unknown-option-in-params", validate(data__name="mnist"), r"unknown data\.name 'mnist'",
     r"digits, breast_cancer.*-S data=digits"),
    ("15-negative-learning-rate", validate(optim__lr=-0.001),
     r"optim\.lr must be a positive number.*-0\.001", r"optim\.lr=0\.001"),
    ("15-negative-learning-rate-in-grid", validate(sweep__grid__optim__lr=[0.01, -0.1]),
     r"sweep\.grid\.optim\.lr value -0\.1: optim\.lr must be a positive", r"optim\.lr=0\.001"),
    ("16-zero-width", validate(model__hidden=0), r"model\.hidden must be a positive integer, "
     r"got 0 \(a layer of width 0", r"model\.hidden=64"),
    ("16-zero-width-in-grid", validate(sweep__grid__model__hidden=[0, 8]),
     r"sweep\.grid\.model\.hidden value 0", r"model\.hidden=64"),
    ("17-zero-epochs", validate(trainer__max_epochs=0), r"max_epochs must be a positive "
     r"integer, got 0 \(0 epochs", r"trainer\.max_epochs=40"),
    ("18-dropout-one", validate(model__dropout=1.0), r"model\.dropout must be in \[0, 1\).*1\.0",
     r"model\.dropout=0\.1"),
    ("18-dropout-negative", validate(model__dropout=-0.1), r"model\.dropout.*-0\.1",
     r"0 for no dropout"),
    ("19-unwritable-output-folder", unwritable,
     r"cannot write data/prepared/table\.parquet: data/prepared is a file, not a folder",
     r"move or delete the file data/prepared"),
    ("20-gpu-without-cuda", no_cuda(validate(trainer__accelerator="gpu")),
     r"trainer\.accelerator=gpu, but this machine has no usable CUDA GPU",
     r"trainer\.accelerator=auto"),
    ("20-unknown-accelerator", validate(trainer__accelerator="tpu"),
     r"unknown trainer\.accelerator 'tpu'", r"auto, cpu, gpu"),
    ("21-empty-grid-list", validate(sweep__grid__model__hidden=[]),
     r"sweep\.grid\.model\.hidden has no values: the search space has no points",
     r"sweep\.grid\.model\.hidden=\[64\]"),
    ("21-empty-grid-range", validate(sweep__grid__model__hidden="range(5,5)"),
     r"sweep\.grid\.model\.hidden has no values", r"at least one value"),
    ("21-empty-grid", empty_grid, r"sweep\.grid is empty", r"sweep\.grid\.model\.hidden=\[32,64\]"),
    ("22-misspelled-key", validate(model__hiden=64), r"model\.hiden is not a foldwise "
     r"setting.*silently ignored", r"did you mean model\.hidden\? Set existing keys without '\+'"),
    ("22-key-in-wrong-section", validate(model__lr=0.1), r"model\.lr is not a foldwise setting",
     r"did you mean optim\.lr\?"),
    ("22-misspelled-nested-key", validate(trainer__early_stop__patience=3),
     r"trainer\.early_stop\.patience is not", r"trainer\.early_stopping\.patience"),
    ("22-misspelled-ensemble-key", validate(ensemble__n_estimator=5),
     r"ensemble\.n_estimator is not", r"did you mean ensemble\.n_estimators\?"),
    ("22-misspelled-split-key-of-another-scheme", validate(split__n_repeat=3),
     r"split\.n_repeat is not", r"did you mean split\.n_repeats\?"),
    ("22-misspelled-key-in-grid", validate(sweep__grid__model__hiden=[64]),
     r"sweep\.grid\.model\.hiden is not a foldwise setting",
     r"did you mean sweep\.grid\.model\.hidden\?"),
    ("22-grid-key-not-per-configuration", validate(sweep__grid__split__n_splits=[3, 5]),
     r"sweep\.grid sweeps split\.n_splits, but split settings are the same",
     r"set split\.n_splits outside the grid"),
    # Issue 16: a user's own network named by _target_ must not get the built-in one
    # trained in its place, whether set with -S '+model._target_=...' or by a yaml file.
    # Issue 18 made such targets real: one that does not import is refused, naming it;
    # one that imports, added on top of model=mlp, is told to select model=module.
    ("23-user-model-target", validate(model___target_="mynet.model.MyMLP", model__width=32),
     r"model\._target_='mynet\.model\.MyMLP': module 'mynet' does not import",
     r"Run from the project directory .* or add its folder to PYTHONPATH"),
    ("23-user-model-target-on-top-of-mlp", validate(model___target_="foldwise.models.CNN"),
     r"model\._target_=foldwise\.models\.CNN was added on top of model=mlp",
     r"-S model=module -S model\._target_=foldwise\.models\.CNN"),
    ("23-unread-model-key-from-a-yaml", unread_model_key,
     r"model\.width is not a foldwise setting: no code reads it",
     r"Remove model\.width"),
    ("24-wrong-type", validate(lockbox__bootstrap_resamples="1000"),  # was a TypeError
     r"lockbox\.bootstrap_resamples must be a whole number, got '1000'",
     r"lockbox\.bootstrap_resamples=1000 \(its default\); a number in quotes is text"),
    ("24-wrong-type-nested", validate(trainer__early_stopping__enabled="yes"),
     r"trainer\.early_stopping\.enabled must be true or false, got 'yes'",
     r"trainer\.early_stopping\.enabled=true"),
    ("22-misspelled-override", compose("model.hiden=64"), r"model\.hiden is not a foldwise",
     r"did you mean model\.hidden\?"),
    ("22-misspelled-override-with-plus", compose("+model.hiden=64"),
     r"model\.hiden is not a foldwise setting", r"did you mean model\.hidden\?"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("trigger", "problem", "fix"),
    [pytest.param(t, p, f, id=name) for name, t, p, f in CATALOGUE],
)
def test_catalogue(trigger, problem, fix, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # compose's repo root: none here, so ...
    monkeypatch.setattr("foldwise.compose.repo_root", lambda: ROOT)  # ... conf/ is the repo's
    monkeypatch.setattr("foldwise.compose.atomic_write_text", _never_write)
    with pytest.raises(FoldwiseError) as err:
        trigger(tmp_path)
    e = err.value
    assert e.fix, f"no fix given: {e}"
    assert re.search(problem, e.problem, re.S), e.problem
    assert re.search(fix, e.fix, re.S), e.fix
    assert "\n" not in e.problem  # printed as one line (then the fix)


def _never_write(*_a, **_k):
    raise AssertionError("a refused override wrote params.yaml")


def test_good_inputs_pass_the_same_checks(tmp_path):
    """The baseline the catalogue changes: valid inputs are accepted."""
    from foldwise.data import prepare

    path = tmp_path / "t.csv"
    path.write_text(GOOD)
    table_, meta = prepare(csv_cfg(path))
    assert len(table_) == 4 and meta.classes == ["x", "y"]
    path.write_text(GOOD.replace(",", ";"))
    assert len(prepare(csv_cfg(path, sep=";"))[0]) == 4
    path.write_text(GOOD.replace(",", "\t"))
    assert len(prepare(csv_cfg(path, sep="\\t"))[0]) == 4  # as -S "data.sep='\t'" gives it
    params.validate(cfg_with(sweep__grid__model__hidden="range(16,49,16)"))
    params.validate(cfg_with(**{"sweep.grid.ensemble.name": ["none", "bagging"]}))
    params.validate(cfg_with(trainer__accelerator="cpu"))


def test_gpu_is_accepted_where_cuda_is(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    params.validate(cfg_with(trainer__accelerator="gpu"))


def test_valid_keys_come_from_the_schema_and_conf_holds_the_same():
    """The known keys are the schema's (what the code reads); every key of every option of
    every group in conf/ is one of them, and every schema key appears in some option."""
    from foldwise.compose import compose_params
    from foldwise.config import schema
    from foldwise.files import flatten

    keys = known_keys()
    in_conf: set[str] = set()
    for path in [ROOT / "conf/config.yaml", *sorted((ROOT / "conf").glob("*/*.yaml"))]:
        tree = OmegaConf.to_container(OmegaConf.load(path)) or {}
        tree.pop("defaults", None)
        prefix = "" if path.parent.name == "conf" else f"{path.parent.name}."
        keys_here = {prefix + k for k in flatten(tree)}
        if tree.get("_target_"):  # the other keys are arguments of what it names
            keys_here &= keys.leaves
        in_conf |= keys_here
    in_conf = {k for k in in_conf if not k.startswith(schema.FREE)} | set(schema.FREE)
    assert in_conf <= keys.leaves, sorted(in_conf - keys.leaves)
    assert {o.key for o in schema.options()} <= in_conf
    for overrides in ([], ["data=csv", "ensemble=bagging", "split=time_series"]):
        composed = flatten(OmegaConf.to_container(compose_params(overrides, root=ROOT)))
        assert {k for k in composed if not k.startswith("sweep.grid.")} <= keys.leaves
    assert "nested.inner.n_repeats" in keys.leaves  # any split option, under nested.inner
    assert check_keys(cfg_with()) is None


def test_the_docs_list_every_setting_of_the_schema():
    import subprocess

    table = subprocess.run([sys.executable, "-m", "foldwise.config.schema"], check=True,
                           capture_output=True, text=True).stdout  # fmt: skip
    page = (ROOT / "docs/configuration.md").read_text()  # "Every setting"
    shown = page.split("<!-- options:start -->\n", 1)[1].split("<!-- options:end -->", 1)[0]
    assert shown == table, "run `make options` and paste it into docs/configuration.md"


# ---------------------------------------------------------------- stages, in-process
def stage_main(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / f"pipelines/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def refused(main: Callable[[], object], capsys) -> str:
    """Run a stage's main as its script does: exit 2 and one error line (plus the fix)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_stage(main)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("foldwise: error: ") and "\n  Fix: " in err, err
    assert "Traceback" not in err
    return err


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and "raw" not in p.parts
    }


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A minimal checkout (dvc.yaml, conf/, params.yaml) with a good iris-like table."""
    root = tmp_path / "proj"
    (root / "data/raw").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "conf").symlink_to(ROOT / "conf")
    rng = np.random.default_rng(0)
    good = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60),
                         "label": np.repeat(["x", "y", "z"], 20)})  # fmt: skip
    good.to_csv(root / "data/raw/good.csv", index=False)
    (root / "data/raw/ragged.csv").write_text(RAGGED)
    OmegaConf.save(
        tiny_params(["data=csv", "data.path=data/raw/good.csv", "data.target=label"]),
        root / "params.yaml",
    )
    monkeypatch.chdir(root)
    return root


def set_params(root: Path, **updates: object) -> None:
    cfg = OmegaConf.load(root / "params.yaml")
    for key, value in updates.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    OmegaConf.save(cfg, root / "params.yaml")


def test_prepare_refuses_a_ragged_csv_and_keeps_the_previous_table(project, capsys):
    stage_main("prepare")()  # a good run first: the outputs a bad run must leave alone
    before = tree_digest(project / "data")
    assert "prepared/table.parquet" in before
    set_params(project, data__path="data/raw/ragged.csv")
    err = refused(stage_main("prepare"), capsys)
    assert "ragged CSV" in err and "line 3: 4" in err
    assert tree_digest(project / "data") == before


def test_split_refuses_more_folds_than_rows_and_keeps_the_previous_split(project, capsys):
    stage_main("prepare")()
    stage_main("split")()
    before = tree_digest(project / "data")
    assert "split/folds.json" in before and "lockbox/test.parquet" in before
    set_params(project, split__n_splits=1000)
    err = refused(stage_main("split"), capsys)
    assert "split.n_splits=1000 is larger than the 48 dev rows" in err
    assert tree_digest(project / "data") == before


def test_gpu_without_cuda_is_refused_by_the_first_stage(project, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    set_params(project, trainer__accelerator="gpu")
    err = refused(stage_main("prepare"), capsys)
    assert "trainer.accelerator=gpu" in err and "no usable CUDA GPU" in err
    assert not (project / "data/prepared").exists()  # before reading any data


def test_an_output_folder_that_is_a_file_is_refused_before_work(project, capsys):
    (project / "data/prepared").write_text("a file where a folder should be")
    err = refused(stage_main("prepare"), capsys)
    assert "data/prepared is a file, not a folder" in err
    assert (project / "data/prepared").read_text() == "a file where a folder should be"


def test_a_misspelled_key_is_refused_by_every_stage_before_work(project, capsys):
    set_params(project, model__hiden=64)
    for stage in ("prepare", "aggregate"):
        err = refused(stage_main(stage), capsys)
        assert "model.hiden is not a foldwise setting" in err and "model.hidden" in err
    assert not (project / "data/prepared").exists() and not (project / "results").exists()


# ---------------------------------------------------------------- real processes
@pytest.fixture
def checkout(tmp_path, sqlite_uri):
    return make_project(
        tmp_path,
        sqlite_uri,
        tiny_params(["data=csv", "data.path=data/raw/ragged.csv", "data.target=label"]),
    )


def bytes_of(*paths: Path) -> list[bytes]:
    return [p.read_bytes() for p in paths]


@pytest.mark.slow
def test_stage_scripts_exit_2_with_one_line_and_leave_files_alone(checkout):
    (checkout.path / "data/raw/ragged.csv").write_text(RAGGED)
    prepared = checkout.path / "data/prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    (prepared / "table.parquet").write_bytes(b"an earlier table")
    (prepared / "meta.json").write_text("{}")
    before = bytes_of(prepared / "table.parquet", prepared / "meta.json")
    res = checkout.stage("prepare", check=False)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("foldwise: error: data.path: ragged.csv is a ragged CSV")
    assert "Traceback" not in res.stderr
    assert bytes_of(prepared / "table.parquet", prepared / "meta.json") == before

    # results/ is a file: refused for root as well (chmod would not stop root).
    shutil.rmtree(checkout.path / "results")
    (checkout.path / "results").write_text("not a folder")
    res = checkout.stage("aggregate", check=False)
    assert res.returncode == 2, res.stderr
    assert "cannot write results/cv_metrics.json: results is a file" in res.stderr
    assert (checkout.path / "results").read_text() == "not a folder"


@pytest.mark.slow
def test_compose_refuses_a_plus_key_and_keeps_params_yaml(checkout):
    before = (checkout.path / "params.yaml").read_bytes()
    res = checkout.run(sys.executable, "-m", "foldwise.compose", "+model.hiden=64", check=False)
    assert res.returncode == 2, res.stderr
    assert "model.hiden is not a foldwise setting" in res.stderr
    assert "did you mean model.hidden?" in res.stderr
    assert (checkout.path / "params.yaml").read_bytes() == before


@pytest.mark.slow
def test_dvc_exp_run_refuses_a_user_model_target_in_both_spellings(checkout):
    """Issue 16, as a new user tried it: ``+model._target_`` on the command line, and a
    ``conf/model/mynet.yaml`` naming ``_target_`` beside ``name: mlp``. Since issue 18 a
    target is trained, so one that does not import stops at the first stage with the
    reason and the fix; nothing is trained."""
    p = checkout
    p.set_params(tiny_params())
    p.commit("tiny digits")
    spelled = p.dvc("exp", "run", "-S", "+model._target_=mynet.model.MyMLP",
                    "-S", "+model.width=32", check=False)  # fmt: skip
    (p.path / "conf/model/mynet.yaml").write_text(
        "name: mlp\n_target_: mynet.model.MyMLP\nwidth: 32\nhidden: 64\ndepth: 1\ndropout: 0.1\n"
    )
    p.commit("a user's model yaml")
    by_yaml = p.dvc("exp", "run", "-S", "model=mynet", check=False)
    for res in (spelled, by_yaml):
        out = res.stdout + res.stderr
        assert res.returncode != 0, out
        assert "model._target_='mynet.model.MyMLP': module 'mynet' does not import" in out
        assert "Run from the project directory" in out
        assert "Traceback" not in out
        assert not (p.path / "results/sweep").exists()


@pytest.mark.slow
def test_gpu_without_cuda_exits_2_at_prepare(checkout):
    cfg = OmegaConf.load(checkout.path / "params.yaml")
    cfg.trainer.accelerator = "gpu"
    checkout.set_params(cfg)
    checkout.env = {**checkout.env, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, on any machine
    res = checkout.stage("prepare", check=False)
    assert res.returncode == 2, res.stderr
    # Refused by the params check, before the (absent) data file is even looked at.
    assert "trainer.accelerator=gpu, but this machine has no usable CUDA GPU" in res.stderr
    assert not (checkout.path / "data/prepared/table.parquet").exists()


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("+sweep.grid.optim.learning_rate=[0.01]", "did you mean sweep.grid.optim.lr?"),
        ("+trainer.epochs=3", "did you mean trainer.max_epochs?"),
        ("+split.k=3", "did you mean split.n_splits?"),
        ("+model.lr=0.01", "did you mean optim.lr?"),
    ],
)
def test_did_you_mean_ranks_by_meaning_within_the_section_first(override, meant):
    """`optim.learning_rate` once suggested `ensemble.learning_rate` (the same word in
    another section) instead of `optim.lr` (issue 22)."""
    with pytest.raises(FoldwiseError) as err:
        params.validate(tiny_params([override]))
    assert meant in err.value.fix


def test_removing_the_grid_says_how_to_replace_it():
    """`~sweep.grid` alone crashed with OmegaConf's traceback; the one spelling that
    replaces the grid works (issue 22)."""
    with pytest.raises(FoldwiseError) as err:
        params.validate(tiny_params(["~sweep.grid"]))
    assert "sweep.grid was removed" in str(err.value)
    assert "-S '+sweep.grid={model: {hidden: [16, 64]}}'" in err.value.fix
    cfg = tiny_params(["~sweep.grid", "+sweep.grid={model: {hidden: [16, 64]}}"])
    params.validate(cfg)
    assert OmegaConf.to_container(cfg.sweep.grid) == {"model": {"hidden": [16, 64]}}
