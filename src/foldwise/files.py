"""Small file helpers: atomic writes, stable hashes, repo paths.

Everything a stage writes goes through :func:`atomic_write_text` (or the table
variant) so that an interrupted or failing stage never leaves a half-written file
behind and never corrupts what an earlier run produced.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_DVC_TMP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def repo_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder above ``start`` holding ``dvc.yaml``.

    ``dvc exp run --temp`` runs stages in a copy under ``<repo>/.dvc/tmp/exps/``;
    paths that must be shared with the real checkout (the MLflow store) use
    :func:`shared_root` instead.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return here


def shared_root(start: Path | None = None) -> Path:
    """Like :func:`repo_root`, but escapes DVC's temporary experiment copies."""
    root = str(repo_root(start))
    cut = (root + os.sep).find(_DVC_TMP_MARKER)
    return Path(root[:cut]) if cut > 0 else Path(root)


def _umask() -> int:
    """The process's umask, read without changing it (setting it to learn it would race
    with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: the one portable way
    os.umask(mask)
    return mask


def _as_a_normal_write(fd: int) -> None:
    """mkstemp makes a file 0600 whatever the umask; give it the mode ``open()`` would
    (0666 less the umask), so a shared server or a CI artifact reader can read it."""
    os.fchmod(fd, 0o666 & ~_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        _as_a_normal_write(fd)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)  # a failed write() names no file; say which one
        raise


def check_writable(paths: Iterable[Path], root: Path) -> None:
    """Refuse, before any work, output files a stage could not write.

    For each file: no folder on its way may be a file, the file itself may not be a
    folder, and the deepest folder that exists must accept a new file (probed with an
    anonymous temporary file, so a read-only mount or a permission refuses even root,
    who ignores ``chmod``). Nothing is created or changed.
    """
    from foldwise.errors import FoldwiseError

    def rel(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    for path in paths:
        if path.is_dir():
            raise FoldwiseError(
                f"cannot write {rel(path)}: it is a folder.",
                "move that folder away; the stage writes a file there.",
            )
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise FoldwiseError(
                f"cannot write {rel(path)}: {rel(folder)} is a file, not a folder.",
                f"move or delete the file {rel(folder)} (the stage writes into a folder of "
                "that name), then re-run.",
            )
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            where = rel(folder) if folder != root else "the project folder"
            raise FoldwiseError(
                f"cannot write {rel(path)}: {where} does not accept new files ({err.strerror}).",
                f"make {where} writable for this user (chown/chmod, or a writable mount), or "
                "run from a checkout you can write to.",
            ) from None


TMP_SUFFIX = ".tmp"


def remove_stale_temp(folder: Path) -> int:
    """Delete the temporary files that a process killed mid-write (kill -9, power loss)
    left in ``folder``; the files they were meant to replace are untouched."""
    n = 0
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def no_nan(obj: Any) -> Any:
    """``obj`` with every NaN float replaced by None: strict JSON, and DVC metrics
    show "-" rather than a bogus number where a scheme has no such statistic."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [no_nan(v) for v in obj]
    return obj


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Atomically write a Parquet table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    _as_a_normal_write(fd)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"hidden": 32}}`` → ``{"model.hidden": 32}`` (dicts and DictConfigs)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def sha256_json(obj: Any) -> str:
    """SHA-256 of a canonical JSON rendering (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_table(df: pd.DataFrame) -> str:
    """SHA-256 of a table's rows, independent of row order and file format.

    Rows are sorted by ``row_id``; each column contributes its name, dtype and raw
    bytes, so the hash changes if any value, column or row changes.
    """
    df = df.sort_values("row_id", kind="stable")
    h = hashlib.sha256()
    for col in df.columns:
        values = df[col].to_numpy()
        h.update(f"{col}:{values.dtype.str}:".encode())
        if values.dtype == object:
            h.update("\x1f".join(map(str, values)).encode())
        else:
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: Iterable[Path], base: Path) -> str:
    """One hash over several files' relative names and contents."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(base)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def code_version() -> str:
    """Hash of foldwise's own source: a result computed by other code is not reused."""
    pkg = Path(__file__).resolve().parent
    return sha256_files(pkg.rglob("*.py"), pkg)[:16]


def git_commit(cwd: Path | None = None) -> str:
    """The checkout's HEAD commit (``+dirty`` if tracked files changed), or ``unknown``."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        head = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def quiet_progress_off_a_terminal() -> None:
    """MLflow's artifact progress bars only where someone watches them: in a log (a DVC
    stage, CI, a redirected `foldwise predict`) they are noise. A user's own setting of
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR wins."""
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
