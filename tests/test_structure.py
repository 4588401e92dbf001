"""The project's shape: who may read the lockbox, configs in sync, thin entry scripts."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def test_every_dvc_plot_names_its_axes():
    """`dvc plots show` titles an unnamed axis by its column (`x`, `y`): every plot says
    what its axes are."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    for plot in plots:
        ((name, spec),) = plot.items()
        unnamed = [k for k in ("x_label", "y_label") if not str(spec.get(k) or "").strip()]
        assert not unnamed, f"plot {name!r} has no {' or '.join(unnamed)}"
        assert spec["x_label"] not in ("x", "y") and spec["y_label"] not in ("x", "y")


def test_no_code_but_the_lockbox_and_split_stage_touches_the_test_rows():
    """`Layout.test` (the lockbox path) is used by lockbox/opening.py and the split entry
    only."""
    users = []
    for py in [
        *ROOT.joinpath("src/foldwise").rglob("*.py"),  # every package too
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
    assert sorted(users) == ["pipelines/split.py", "src/foldwise/lockbox/opening.py"]


def test_every_stage_runs_its_own_script_and_depends_on_it():
    for name, s in stages().items():
        assert s["cmd"] == f"python pipelines/{name}.py"
        assert f"pipelines/{name}.py" in paths(s["deps"])
        for dep in paths(s["deps"]):
            assert (ROOT / dep).exists() or dep.startswith(("data/", "results/", "models/")), dep


# Plumbing that doesn't change a stage's outputs (the sweep only *reads* the audit log
# to warn early that the lockbox is open). Dotted names below foldwise.
PLUMBING = {"params", "errors", "files", "tracking", "tracking.pending", "compose", "lockbox.audit",
            "redact"}  # fmt: skip


def module_path(dotted: str) -> Path | None:
    """``lockbox.ledger`` → src/foldwise/lockbox/ledger.py (a package: its folder)."""
    base = ROOT / "src/foldwise" / dotted.replace(".", "/")
    if base.is_dir():
        return base
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def module_files(module: str) -> list[Path]:
    """The files importing ``module`` runs: its own (a package: its ``__init__``) and its
    packages' ``__init__`` above it."""
    parts = module.split(".")
    inits = [ROOT / "src/foldwise" / "/".join(parts[:i]) / "__init__.py"
             for i in range(1, len(parts))]  # fmt: skip
    path = module_path(module)
    own = path / "__init__.py" if path is not None and path.is_dir() else path
    return [f for f in [*inits, own] if f is not None and f.is_file()]


def foldwise_imports(path: Path) -> set[str]:
    """foldwise modules (dotted, below foldwise) imported anywhere in a file (function-level
    imports too): ``from foldwise.lockbox import ledger`` → ``lockbox.ledger``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("foldwise"):
            base = node.module.removeprefix("foldwise").removeprefix(".")
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                found.add(sub if module_path(sub) is not None else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("foldwise.") for a in node.names
                      if a.name.startswith("foldwise.")}  # fmt: skip
    return found - {""}


def covered(module: str, deps: set[str]) -> bool:
    path = module_path(module)
    rel = str(path.relative_to(ROOT)) if path is not None else f"src/foldwise/{module}"
    return any(rel == d or rel.startswith(f"{d}/") for d in deps)


def test_stage_code_deps_cover_every_module_a_stage_runs():
    """A change to any module a stage executes must re-run it (DVC only sees deps)."""
    for name, s in stages().items():
        todo, seen = foldwise_imports(ROOT / f"pipelines/{name}.py"), set()
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            if module in PLUMBING:
                # params validates with the scheme registry, but a stage whose output
                # depends on a scheme imports foldwise.split itself
                continue
            for path in module_files(module):
                todo |= foldwise_imports(path)
        deps = set(paths(s["deps"]))
        missing = {m for m in seen - PLUMBING if not covered(m, deps)}
        assert not missing, (name, sorted(missing))


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_params_yaml_has_the_shape_conf_composes():
    """params.yaml is a composition of conf/ (values may differ after `dvc exp apply`, and
    the sweep grid is free-form), so its keys must be exactly what conf/ gives for the
    same config-group choices."""
    committed = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))
    choices = [
        f"data={committed['data']['name']}",
        f"model={committed['model']['name']}",
        f"split={committed['split']['scheme']}",
        f"selection={committed['selection']['rule']}",
    ]
    composed = OmegaConf.to_container(compose_params(choices, root=ROOT))
    drop = lambda keys: {k for k in keys if not k.startswith("sweep.grid.")}  # noqa: E731
    assert drop(_keys(committed)) == drop(_keys(composed)), "run `make params`"


def test_conf_defaults_compose_to_a_valid_configuration():
    from foldwise.params import validate

    validate(OmegaConf.create(OmegaConf.to_container(compose_params(root=ROOT))))


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
    from foldwise import aggregate, data, models, params

    assert set(params.DATASETS) == set(data.LOADERS)
    assert set(params.MODELS) == set(models.BUILTINS)
    assert set(params.SELECTION_RULES) == set(aggregate.RULES)


def test_the_params_check_of_the_light_stages_does_not_import_torch():
    """prepare, split, aggregate and report validate params.yaml and never train: torch
    (and through it Lightning) is imported only for a network of the user's. It once was
    for every config, a second and more on each light stage."""
    code = (
        "import sys\n"
        "from foldwise.compose import compose_params\n"
        "from foldwise import params\n"
        "from omegaconf import OmegaConf\n"
        "cfg = OmegaConf.create(OmegaConf.to_container(compose_params([])))\n"
        "params.validate(cfg)\n"
        "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
