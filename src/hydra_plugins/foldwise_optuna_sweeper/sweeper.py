"""The sweeper: Hydra's side of :func:`foldwise.sweep.trials.drive` (ask, launch, tell)."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict


class FoldwiseOptunaSweeper(Sweeper):
    """Asks Optuna for trials and launches one job per trial (``+trial=N``) on the
    configured launcher (basic or joblib); the study's settings are ``sweep.optuna``."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = [0]

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from foldwise import params as P
        from foldwise.errors import FoldwiseError
        from foldwise.files import repo_root
        from foldwise.sweep import trials

        if arguments:
            raise FoldwiseError(
                f"hydra/sweeper=foldwise_optuna takes no sweep overrides, got {arguments}.",
                "declare the search space in params.yaml (sweep.space) instead.",
            )
        assert self.config is not None and self.launcher is not None
        cfg = OmegaConf.create(OmegaConf.to_container(self.config, resolve=False))
        with open_dict(cfg):
            cfg.pop("hydra", None)  # the task's config: params.yaml as the jobs see it
        layout = P.Layout(repo_root())
        trials.drive(cfg, layout, trials.launch_jobs(self.launcher, self.job_idx))
        return None
