"""The project's shape: who may read the lockbox, configs in sync, thin entry scripts."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from conftest import ROOT
from foldwise.compose import compose_params

LOCKBOX = "data/lockbox/test.parquet"


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_only_the_test_stage_depends_on_the_lockbox():
    readers = [name for name, s in stages().items() if LOCKBOX in paths(s.get("deps"))]
    assert readers == ["test"]
    writers = [name for name, s in stages().items() if LOCKBOX in paths(s.get("outs"))]
    assert writers == ["split"]


def test_no_code_but_the_lockbox_and_split_stage_touches_the_test_rows():
    """`Layout.test` (the lockbox path) is used by lockbox.py and the split entry only."""
    users = []
    for py in [
        *ROOT.joinpath("src/foldwise").glob("*.py"),
        *ROOT.joinpath("pipelines").glob("*.py"),
    ]:
        tree = ast.parse(py.read_text())
        if any(
            isinstance(n, ast.Attribute)
            and n.attr == "test"
            and isinstance(n.value, ast.Name)
            and n.value.id == "layout"
            for n in ast.walk(tree)
        ):
            users.append(py.relative_to(ROOT).as_posix())
    assert sorted(users) == ["pipelines/split.py", "src/foldwise/lockbox.py"]


def test_every_stage_runs_its_own_script_and_depends_on_it():
    for name, s in stages().items():
        assert s["cmd"] == f"python pipelines/{name}.py"
        assert f"pipelines/{name}.py" in paths(s["deps"])
        for dep in paths(s["deps"]):
            assert (ROOT / dep).exists() or dep.startswith(("data/", "results/", "models/")), dep


PLUMBING = {"params", "errors", "files", "tracking", "compose"}  # don't change outputs


def foldwise_imports(path: Path) -> set[str]:
    """foldwise modules imported anywhere in a file (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "foldwise":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("foldwise."):
            found.add(node.module.split(".")[1])
    return found


def test_stage_code_deps_cover_every_module_a_stage_runs():
    """A change to any module a stage executes must re-run it (DVC only sees deps)."""
    for name, s in stages().items():
        todo, seen = foldwise_imports(ROOT / f"pipelines/{name}.py"), set()
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            todo |= foldwise_imports(ROOT / f"src/foldwise/{module}.py")
        deps = set(paths(s["deps"]))
        missing = {m for m in seen - PLUMBING if f"src/foldwise/{m}.py" not in deps}
        assert not missing, (name, sorted(missing))


def test_params_yaml_is_the_composition_of_conf():
    composed = OmegaConf.to_container(compose_params(root=ROOT))
    committed = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))
    assert committed == composed, "run `make params` to regenerate params.yaml from conf/"


def test_entry_scripts_are_thin():
    for script in ROOT.joinpath("pipelines").glob("*.py"):
        code = [ln for ln in script.read_text().splitlines() if ln.strip()]
        assert len(code) < 80, f"{script.name}: move logic into src/foldwise"


def test_dvc_hydra_integration_points_at_conf():
    config = (ROOT / ".dvc/config").read_text()
    assert "[hydra]" in config and "enabled = true" in config
    assert Path(ROOT / "conf/config.yaml").is_file()


def test_validation_lists_match_the_registries():
    """params.py lists names without importing torch; they must match what is registered."""
    from foldwise import aggregate, data, models, params, split

    assert set(params.DATASETS) == set(data.LOADERS)
    assert set(params.CV_SCHEMES) == set(split.SCHEMES)
    assert set(params.MODELS) == set(models.BACKBONES)
    assert set(params.SELECTION_RULES) == set(aggregate.RULES)
