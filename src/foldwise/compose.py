"""Regenerate ``params.yaml`` from ``conf/`` — what ``dvc exp run -S`` does with hydra.enabled.

    python -m foldwise.compose                       # defaults
    python -m foldwise.compose data=breast_cancer model=cnn

DVC's own composition writes the same file; this entry point exists for plain
``dvc repro`` users and for the test that keeps the committed params.yaml in sync.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from foldwise.errors import FoldwiseError, run_stage
from foldwise.files import atomic_write_text, repo_root
from foldwise.params import validate


def compose_params(overrides: list[str] | None = None, root: Path | None = None) -> DictConfig:
    root = root or repo_root()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def main(argv: list[str]) -> None:
    from hydra.errors import HydraException

    try:
        cfg = compose_params(argv)
    except HydraException as err:  # unknown group option, bad override syntax, ...
        raise FoldwiseError(str(err).splitlines()[0], "check the overrides against conf/") from err
    validate(cfg)  # before writing: a rejected override leaves params.yaml as it was
    path = repo_root() / "params.yaml"
    atomic_write_text(path, OmegaConf.to_yaml(cfg))
    print(f"wrote {path}")


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]))
