"""The user guide (docs/, built with MkDocs) and the README quickstart stay true.

* ``mkdocs build --strict``: a broken link or anchor, or a page missing from the nav,
  fails (mkdocs.yml's ``validation`` turns each into a warning, strict into an error).
* Every shell block marked as an example runs. The mark is an HTML comment on the line
  before the block's fence (invisible on GitHub and in the built site):

  ``<!-- example -->``
      every command of the block runs as written, in order, in a copy of the project
      (its tracked and untracked files, ``.venv`` linked): cheap commands only, such as
      ``make options``, ``make params ARGS=...``, ``foldwise --help`` or a script that
      writes a few files.
  ``<!-- example: overrides -->``
      a block of pipeline runs (minutes each): every ``dvc exp run`` line's ``-S``
      overrides are composed from ``conf/`` and checked as every stage checks
      ``params.yaml`` before any work (``python -m foldwise.compose``'s checks), without
      training. A misspelled key, a group option that does not exist or a value of the
      wrong type in the docs fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
MARK = re.compile(r"^\s*<!-- example(?::\s*(?P<kind>[a-z]+))? -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)")


def examples(path: Path) -> list[tuple[str, int, str, list[str]]]:
    """(file, line, kind, commands) of each marked block; continuation lines joined."""
    lines = path.read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        mark = MARK.match(line)
        if not mark:
            continue
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        assert fence and fence["lang"] in ("bash", "sh"), (
            f"{path.name}:{i + 1}: an example mark must stand right before a ```bash fence"
        )
        indent = len(fence["indent"])
        body = []
        for code in lines[i + 2 :]:
            if code.strip().startswith("```"):
                break
            body.append(code[indent:])
        commands = []
        for code in "\n".join(body).replace("\\\n", " ").splitlines():
            if code.strip() and not code.strip().startswith("#"):
                commands.append(code)
        kind = mark["kind"] or "run"
        assert kind in ("run", "overrides"), f"{path.name}:{i + 1}: unknown example kind {kind}"
        found.append((path.relative_to(ROOT).as_posix(), i + 1, kind, commands))
    return found


EXAMPLES = [ex for page in [*PAGES, ROOT / "README.md"] for ex in examples(page)]


def test_mkdocs_builds_strict(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    # nothing fetched when the pages open: no web fonts, no CDN
    html = (tmp_path / "site" / "index.html").read_text()
    assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html


def test_every_page_is_in_the_nav_and_the_readme_links_to_pages_that_exist():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert {p.name for p in PAGES} == set(re.findall(r"([\w-]+\.md)$", nav, re.M))
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    assert len(readme.splitlines()) <= 350, "the README is a quickstart: the guide is docs/"


def test_the_docs_mark_examples_of_both_kinds():
    kinds = {kind for _, _, kind, _ in EXAMPLES}
    assert kinds == {"run", "overrides"}
    assert sum(len(c) for *_, kind, c in EXAMPLES if kind == "overrides") >= 30


def _ids(kind):
    return [pytest.param(c, id=f"{f}:{n}") for f, n, k, c in EXAMPLES if k == kind]


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory):
    """The project's files (git's view: tracked and untracked, not ignored), .venv linked."""
    copy = tmp_path_factory.mktemp("project")
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


@pytest.mark.parametrize("commands", _ids("run"))
def test_example_runs(commands, project_copy, tmp_path):
    # `make` would reinstall: the copy's pyproject.toml is newer than the stamp in .venv
    script = 'set -euo pipefail\nmake() { command make -o .venv/.installed "$@"; }\n'
    script += "\n".join(commands) + "\n"
    bin_dir = project_copy / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=project_copy,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _overrides(command: str) -> list[str] | None:
    """The -S values of a `dvc exp run` command line; None for any other command."""
    words = shlex.split(command, comments=True)
    while words and ("=" in words[0] and not words[0].startswith("-")):
        words = words[1:]  # VAR=value before the command
    if words[:3] != ["dvc", "exp", "run"]:
        return None
    values = []
    for i, word in enumerate(words):
        if word in ("-S", "--set-param"):
            values.append(words[i + 1])
    return values


# The user packages the examples name, which the docs copy beside dvc.yaml first
# (`cp -r examples/own_model/mynets .`, `cp examples/own_data/mydata.py .`).
USER_PACKAGES = (ROOT / "examples/own_model", ROOT / "examples/own_data")


@pytest.fixture
def user_packages(monkeypatch):
    before = set(sys.modules)
    for folder in USER_PACKAGES:
        monkeypatch.syspath_prepend(str(folder))
    yield
    for name in set(sys.modules) - before:  # other tests import their own mynets
        if name.split(".")[0] in ("mynets", "mydata"):
            del sys.modules[name]


@pytest.mark.parametrize("commands", _ids("overrides"))
def test_example_overrides_compose(commands, user_packages):
    from hydra.errors import HydraException

    from foldwise.compose import compose_params, explain
    from foldwise.errors import FoldwiseError
    from foldwise.params import validate

    runs = [(c, o) for c in commands if (o := _overrides(c)) is not None]
    assert runs, "an overrides example holds at least one `dvc exp run`"
    for command, overrides in runs:
        try:
            try:
                cfg = compose_params(overrides, root=ROOT)
            except HydraException as err:
                raise explain(err, ROOT / "conf") from err
            validate(cfg)
        except FoldwiseError as err:
            pytest.fail(f"{command}\n  -> {err}")
