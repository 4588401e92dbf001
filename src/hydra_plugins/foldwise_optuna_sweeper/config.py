"""``hydra/sweeper=foldwise_optuna``: registered when Hydra scans ``hydra_plugins``."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class FoldwiseOptunaSweeperConf:
    # The search's settings are params.yaml's sweep.space and sweep.optuna (DVC tracks
    # them), not the sweeper's config.
    _target_: str = "hydra_plugins.foldwise_optuna_sweeper.sweeper.FoldwiseOptunaSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="foldwise_optuna", node=FoldwiseOptunaSweeperConf,
    provider="foldwise",
)  # fmt: skip
