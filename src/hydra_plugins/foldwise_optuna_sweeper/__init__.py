"""foldwise's Hydra sweeper over Optuna ≥ 4 (``hydra/sweeper=foldwise_optuna``).

Hydra finds it through the ``hydra_plugins`` namespace package (``src/`` is on the path
of the editable install). The search itself is :mod:`foldwise.sweep.trials`.
"""
