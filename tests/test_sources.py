"""Data that is not a table: a folder of images in class folders (data=image_folder) and
a user's torch Dataset by data._target_ (data=dataset), each read into the canonical
table at prepare, refused before any work when broken."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_params
from foldwise import data
from foldwise import params as P
from foldwise.errors import FoldwiseError

sys.path.insert(0, str(ROOT / "examples/shapes"))
sys.path.insert(0, str(Path(__file__).parent))  # own_data, as a user's package

from draw import draw


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "images"
    draw(out, per_class=4, size=16, classes=("circle", "square", "cross"))
    return out


def _prepare(*extra: str):
    cfg = tiny_params(list(extra))
    P.validate(cfg)
    return data.prepare(cfg)


def test_an_image_folder_becomes_the_table_of_its_pixels(shapes):
    table, meta = _prepare("data=image_folder", f"data.path={shapes}")
    assert (meta.dataset, meta.image_shape, meta.classes) == (
        "image_folder", [1, 16, 16], ["circle", "cross", "square"])  # fmt: skip
    assert len(table) == 12 and meta.n_features == 256
    # each row is its file's pixels (grey, /255), independently decoded here
    for path in sorted(shapes.rglob("*.png")):
        px = np.asarray(Image.open(path).convert("L"), dtype=np.float32).reshape(-1) / 255
        rid = data.sources.row_id(path.relative_to(shapes).as_posix())
        row = table.loc[table.row_id == rid]
        assert len(row) == 1
        np.testing.assert_array_equal(row[[f"x{i}" for i in range(256)]].to_numpy()[0], px)
        assert meta.classes[int(row.target.iloc[0])] == path.parent.name


def test_moving_the_folder_keeps_every_row_and_an_edited_image_keeps_its_row(shapes, tmp_path):
    before, _ = _prepare("data=image_folder", f"data.path={shapes}")
    moved = tmp_path / "renamed"
    shutil.copytree(shapes, moved)
    after, _ = _prepare("data=image_folder", f"data.path={moved}")
    assert after.equals(before)  # the same rows in the same order: the same split
    edited = sorted(moved.rglob("*.png"))[0]
    img = np.asarray(Image.open(edited)).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(edited)
    changed, _ = _prepare("data=image_folder", f"data.path={moved}")
    assert changed.row_id.tolist() == before.row_id.tolist()  # its row stays...
    diff = (changed.drop(columns="row_id") != before.drop(columns="row_id")).any(axis=1)
    assert diff.sum() == 1  # ...with its new pixels: the table (and its hash) differ


def test_a_resize_reads_mixed_sizes_and_rgb_keeps_three_channels(shapes, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(shapes, mixed)
    Image.new("RGB", (20, 24), (200, 10, 10)).save(mixed / "circle" / "big.png")
    with pytest.raises(FoldwiseError) as err:
        _prepare("data=image_folder", f"data.path={mixed}")
    assert "images differ in size" in str(err.value) and "data.size=[28,28]" in err.value.fix
    table, meta = _prepare("data=image_folder", f"data.path={mixed}", "data.size=[8,8]",
                           "data.channels=3")  # fmt: skip
    assert meta.image_shape == [3, 8, 8] and len(table) == 13


@pytest.mark.parametrize(
    ("break_it", "said", "fix"),
    [
        (lambda d: (d / "empty").mkdir(), "holds no images", "remove the empty folder"),
        (lambda d: (d / "circle" / "bad.png").write_bytes(
            (d / "circle" / "00000.png").read_bytes()[:60]), "cannot be read", "replace or remove"),
        (lambda d: shutil.copy(d / "circle" / "00000.png", d / "square" / "dup.png"),
         "are the same image", "remove one"),
        (lambda d: [shutil.rmtree(p) for p in list(d.iterdir())], "holds no class folders",
         "sub-folder named after the class"),
    ],
    ids=["empty-class", "truncated", "duplicate", "no-classes"],
)  # fmt: skip
def test_a_broken_image_folder_is_refused_naming_the_fix(shapes, tmp_path, break_it, said, fix):
    broken = tmp_path / "broken"
    shutil.copytree(shapes, broken)
    break_it(broken)
    with pytest.raises(FoldwiseError) as err:
        _prepare("data=image_folder", f"data.path={broken}")
    assert said in str(err.value) and fix in str(err.value.fix)


def test_image_folder_settings_are_refused_naming_the_fix(shapes):
    for extra, said in [([f"data.path={shapes / 'circle' / '00000.png'}"], "it is a file"),
                        (["data.path=nowhere"], "does not exist")]:  # fmt: skip
        with pytest.raises(FoldwiseError, match=said):
            _prepare("data=image_folder", *extra)
    with pytest.raises(FoldwiseError, match=r"data\.channels must be 1"):
        P.validate(tiny_params(["data=image_folder", f"data.path={shapes}", "data.channels=2"]))
    with pytest.raises(FoldwiseError, match=r"data\.size must be"):
        P.validate(tiny_params(["data=image_folder", f"data.path={shapes}", "data.size=[8]"]))


def test_a_users_dataset_becomes_the_table_of_its_items():
    from own_data import make_digits

    table, meta = _prepare("data=dataset", "data._target_=own_data.make_digits", "+data.n=60",
                           "split=group_kfold", "data.group_column=groups")  # fmt: skip
    ds = make_digits(60)
    assert meta.image_shape == [1, 8, 8] and meta.classes[:2] == ["digit0", "digit1"]
    assert table.row_id.tolist() == list(range(60))  # the dataset's indices
    x = table[[f"x{i}" for i in range(64)]].to_numpy()
    np.testing.assert_array_equal(x, ds.images.reshape(60, -1).numpy())
    assert [meta.classes[t] for t in table.target] == [ds.classes[t] for t in ds.targets]
    assert table.group.tolist() == ds.groups
    _, meta = _prepare("data=dataset", "data._target_=own_data.make_vectors",
                         "data.task=regression", "split=kfold")  # fmt: skip
    assert meta.task == "regression" and meta.image_shape is None and meta.n_features == 5


@pytest.mark.parametrize(
    ("extra", "said", "fix"),
    [
        ([], "data=dataset needs data._target_", "-S data._target_="),
        (["data._target_=own_data.make_digit"], "has no 'make_digit'", "own_data.make_digits"),
        (["data._target_=own_data.make_digits", "+data.size=3"],
         "data.size is not an argument of own_data.make_digits", "Remove data.size"),
        (["data._target_=own_data.raises"], "raised RuntimeError: the data server is down",
         "fix the factory"),
        (["data._target_=own_data.wrong_targets"], "labels do not match its length",
         ".targets hold one label per item"),
        (["data._target_=own_data.ragged"], "items differ in shape", "one shape"),
        (["data._target_=own_data.not_pairs"], "not (x, y) pairs", "(features or image, label)"),
        (["data._target_=own_data.make_digits", "data.time_column=times", "split=time_series"],
         "has no attribute 'times'", "data.time_column=null"),
    ],
    ids=["no-target", "misspelt", "unknown-kwarg", "factory-raises", "targets-length",
         "ragged", "not-pairs", "no-such-attribute"],
)  # fmt: skip
def test_a_broken_dataset_is_refused_naming_the_fix(extra, said, fix):
    with pytest.raises(FoldwiseError) as err:
        _prepare("data=dataset", *extra)
    assert said in str(err.value) and fix in str(err.value.fix)


@pytest.mark.slow
def test_an_image_folder_is_cross_validated_by_dvc_repro_and_predicts_new_images(tmp_path):
    """docs/data.md ("Your own data"): drawn shapes under data/raw/, `dvc repro` with the built-in
    CNN; every stage runs, the lockbox opens once, the lockbox's images replaced by noise
    change nothing before the test stage, the registered model is the champion, and
    `foldwise predict` scores a folder of new images as pixel rows are scored."""
    import json
    import shutil
    import subprocess

    import pandas as pd
    from test_leakage_e2e import digests

    from conftest import BIN, ROOT, make_project

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    off = [f"curves.{c}.enabled=false" for c in ("learning", "bias_variance")]
    # the user's transform (docs/data.md, "Preprocessing fit on the training rows"): fit
    # per model on its fit rows, saved with the model, applied by the test stage and predict
    robust = "{_target_: mytransforms.RobustScale, low: 0.1, high: 0.9}"
    cfg = tiny_params(["data=image_folder", "data.path=data/raw/shapes", "model=cnn",
                       "sweep.grid.model.hidden=[4]", "curves.validation.values=[4]",
                       f"data.normalize={robust}", *off])  # fmt: skip
    p = make_project(tmp_path, uri, cfg)
    shutil.copy(ROOT / "examples/own_data/mytransforms.py", p.path)  # beside dvc.yaml
    # the example's own DVC stage draws the folder (examples/shapes/dvc.yaml), upstream
    # of prepare: 3 classes of 14 images, 16 pixels a side
    drawn = p.path / "examples/shapes/params.yaml"
    text = drawn.read_text().replace("per_class: 30", "per_class: 14")
    drawn.write_text(text.replace("size: 28", "size: 16").replace("classes: 10", "classes: 3"))
    classes = ("circle", "square", "triangle")
    p.commit("fewer, smaller shapes")
    first = p.dvc("repro", "refit").stdout  # everything before the lockbox opens
    assert "Running stage 'examples/shapes/dvc.yaml:draw'" in first
    assert len(list((p.path / "data/raw/shapes").rglob("*.png"))) == 14 * 3

    # leakage invariance: the lockbox's images replaced by noise reach nothing before
    # the test stage (their rows keep their ids; only the full manifest's test hash moves)
    before = digests(p.path)
    # the drawn folder is the draw stage's output: DVC would redraw edited images unless
    # the stage is frozen (as docs/data.md tells a user who edits them by hand)
    p.dvc("freeze", "examples/shapes/dvc.yaml:draw")
    locked = set(pd.read_parquet(p.path / "data/lockbox/test.parquet")["row_id"])
    rng = np.random.default_rng(5)
    shapes = p.path / "data/raw/shapes"
    replaced = 0
    for f in sorted(shapes.rglob("*.png")):
        if data.sources.row_id(f.relative_to(shapes).as_posix()) in locked:
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(f)
            replaced += 1
    assert replaced == len(locked) > 0
    out = p.dvc("repro", "refit").stdout
    ran = {s for s in ("prepare", "split", "sweep", "aggregate", "nested", "curves", "refit")
           if f"Running stage '{s}'" in out}  # fmt: skip
    assert ran == {"prepare", "split"}
    after = digests(p.path)
    assert sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)) == [
        "data/split/manifest.json"]  # fmt: skip

    p.dvc("repro")  # the test stage, the report
    meta = json.loads((p.path / "data/prepared/meta.json").read_text())
    assert meta["image_shape"] == [1, 16, 16] and meta["classes"] == sorted(classes)
    test = json.loads((p.path / "results/test_metrics.json").read_text())
    assert 0 <= test["test"]["acc"]["value"] <= 1
    assert (p.path / "results/report.html").is_file()
    again = p.dvc("repro")  # nothing changed: nothing re-runs, the lockbox stays shut
    assert "Stage 'test' didn't change" in again.stdout + again.stderr

    new = tmp_path / "new"
    draw(new, per_class=2, size=16, seed=99, classes=classes)
    for model, name in ((str(p.path / "models/final"), "bundle"), ("foldwise-image_folder", "reg")):
        out = subprocess.run(
            [str(BIN / "foldwise"), "predict", "--model", model, "--input", str(new),
             "--output", str(tmp_path / f"{name}.csv")],
            cwd=p.path, env=p.env, capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    bundle = pd.read_csv(tmp_path / "bundle.csv")
    assert sorted(bundle.file) == sorted(str(f.relative_to(new)) for f in new.rglob("*.png"))
    assert set(bundle.prediction) <= set(classes)
    pd.testing.assert_frame_equal(bundle, pd.read_csv(tmp_path / "reg.csv"))
    # the same images as pixel rows decoded here (grey, /255): the same probabilities
    from foldwise.predict import load, predict_frame

    files = [new / f for f in bundle.file]
    px = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32).reshape(-1) / 255
                   for f in files])  # fmt: skip
    rows = pd.DataFrame(px, columns=[f"x{i}" for i in range(px.shape[1])])
    probs = [f"proba_{c}" for c in sorted(classes)]
    expected = predict_frame(load(p.path / "models/final"), rows)[probs].to_numpy()
    np.testing.assert_allclose(bundle[probs].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    # the saved model carries the user's transform, fitted (its own arguments, a state
    # per pixel), which the scores above applied (tests/test_transforms.py checks its state)
    (_, scaler), *_ = load(p.path / "models/final").members
    state = scaler["transform"]
    assert type(state).__name__ == "RobustScale" and (state.low, state.high) == (0.1, 0.9)
    assert state.centre_.shape == (16 * 16,) and bool(state.spread_.gt(0).all())


def test_channel_normalisation_is_fit_on_each_models_own_fit_rows():
    """data.normalize=channel: one mean and std per channel over every pixel of the rows
    the model fits on (computed here with torch), repeated over the channel's features;
    the inner early-stopping rows and every other row play no part."""
    import torch

    from foldwise import engine
    from foldwise.data import Meta
    from foldwise.engine import Hyper, Task
    from foldwise.engine.task import prepare

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (60, 3 * 4 * 4)) * np.repeat([1.0, 5.0, 0.2], 16)
    y = np.arange(60) % 3
    meta = Meta("imgs", 60, 48, ["a", "b", "c"], [f"x{i}" for i in range(48)], [3, 4, 4])
    for rows, early in ((np.arange(0, 40), True), (np.arange(20, 60), False)):
        task = Task("t", {"name": "cnn", "hidden": 4, "depth": 1, "dropout": 0.0},
                    Hyper(0.01, 0.0, 0.0, 2, early, 0.25, 1), 8, 3, rows,
                    evals={"val": np.setdiff1d(np.arange(60), rows)},
                    normalize="channel")  # fmt: skip
        p = prepare(task, x, y, image_shape=meta.image_shape)
        fit = torch.tensor(x[p.fit]).view(len(p.fit), 3, 16).transpose(0, 1).reshape(3, -1)
        want_mean = fit.mean(1).repeat_interleave(16).numpy()
        want_std = fit.std(1, unbiased=False).repeat_interleave(16).numpy()
        np.testing.assert_allclose(p.mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(p.scale, want_std, rtol=1e-12)
        assert (p.inner is not None) == early
        (out,) = engine.train([task], x, y, meta, accelerator="cpu", precision=64)
        np.testing.assert_allclose(out.scaler["mean"], want_mean, rtol=1e-12)


def test_normalize_settings_enter_the_hash_and_are_checked(shapes):
    from foldwise.fitting.configs import config_hash

    base = tiny_params(["data=image_folder", f"data.path={shapes}"])
    assert config_hash(base) == config_hash(tiny_params(["data=image_folder",
                                                         f"data.path={shapes}"]))  # fmt: skip
    chan = tiny_params(["data=image_folder", f"data.path={shapes}", "data.normalize=channel"])
    P.validate(chan)
    assert config_hash(chan) != config_hash(base)
    with pytest.raises(FoldwiseError, match="holds no images"):
        P.validate(tiny_params(["data=iris", "data.normalize=channel", "model=mlp"]))
    with pytest.raises(FoldwiseError, match=r"unknown data\.normalize"):
        P.validate(tiny_params(["data=image_folder", f"data.path={shapes}",
                                "data.normalize=pixel"]))  # fmt: skip


def test_each_folder_and_factory_is_its_own_source_of_rows(tmp_path):
    """The lockbox's row registry names rows by (source, row id): two image folders (or
    two Dataset factories) must never share ids, or one's opened test set would refuse
    (or, worse, vouch for) the other's rows."""
    from omegaconf import OmegaConf

    from foldwise.lockbox.rows import source_id

    def src(**d):
        return source_id(OmegaConf.create(d), tmp_path)

    a = src(name="image_folder", path="data/raw/shapes")
    assert a == src(name="image_folder", path="./data/raw/shapes") == "folder:data/raw/shapes"
    assert a != src(name="image_folder", path="data/raw/other")
    assert src(name="dataset", _target_="own_data.make_digits") == "dataset:own_data.make_digits"
    assert src(name="dataset", _target_="own_data.make_vectors") != src(
        name="dataset", _target_="own_data.make_digits")  # fmt: skip
    assert src(name="digits") == "sklearn:digits"
