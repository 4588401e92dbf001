"""Regenerate ``params.yaml`` from ``conf/`` — what ``dvc exp run -S`` does with hydra.enabled.

    python -m foldwise.compose                       # defaults
    python -m foldwise.compose data=breast_cancer model=cnn

DVC's own composition writes the same file; this entry point exists for plain
``dvc repro`` users and for the test that keeps the committed params.yaml in sync.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from foldwise.errors import FoldwiseError, run_stage
from foldwise.files import atomic_write_text, check_writable, repo_root
from foldwise.params import validate


def compose_params(overrides: list[str] | None = None, root: Path | None = None) -> DictConfig:
    root = root or repo_root()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def explain(err: Exception, conf: Path) -> FoldwiseError:
    """Hydra's refusal of an override, with the fix: a group's options, the closest key."""
    from foldwise.config.keys import known_keys

    first = str(err).splitlines()[0]
    missing = re.search(r"Could not find '([^'/]+)/([^']+)'", first)
    if missing and (conf / missing[1]).is_dir():
        group, option = missing[1], missing[2]
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        return FoldwiseError(
            f"unknown {group} {option!r}: conf/{group}/ has no {option}.yaml.",
            f"use one of: {', '.join(options)} (e.g. {group}={options[0]}).",
        )
    unknown = re.search(r"Could not override '([^']+)'", first)
    keys = known_keys()
    if unknown:
        key = unknown[1]
        if key.startswith("sweep.grid."):  # keys conf/'s grid lacks need '+'
            swept = key.removeprefix("sweep.grid.")
            close = swept if swept in keys.leaves else keys.closest(swept)
            return FoldwiseError(
                f"sweep.grid has no key {swept} yet (conf/sweep/grid.yaml does not sweep it).",
                f"add a key to the search space with '+': +sweep.grid.{close or swept}=[...].",
            )
        groups = sorted(p.name for p in conf.iterdir() if p.is_dir())
        close = keys.closest(key, [*keys.leaves, *groups])
        return FoldwiseError(
            f"{key} is not a foldwise setting: conf/ defines no such key or group.",
            (f"did you mean {close}? " if close else "")
            + "Use a key or group that exists (see conf/). A '+' in front would add the key, "
            "but no code reads it, so foldwise refuses it too.",
        )
    return FoldwiseError(first, "check the overrides against conf/ (Hydra's override syntax).")


def main(argv: list[str]) -> None:
    from hydra.errors import HydraException

    try:
        cfg = compose_params(argv)
    except HydraException as err:  # unknown group option, bad override syntax, ...
        raise explain(err, repo_root() / "conf") from err
    # Before writing: a rejected override leaves params.yaml as it was.
    validate(cfg)
    path = repo_root() / "params.yaml"
    check_writable([path], repo_root())
    atomic_write_text(path, OmegaConf.to_yaml(cfg))
    print(f"wrote {path}")


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]))
