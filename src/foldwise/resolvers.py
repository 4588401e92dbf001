"""The ``${foldwise:<name>}`` resolver: a network argument the data implies, under the
argument name the user's constructor happens to use.

``model.width_in: ${foldwise:n_features}`` passes the feature count to ``width_in``.
The data is not known when ``conf/`` is composed (nor when DVC writes ``params.yaml``),
so the resolver checks the name and returns the placeholder as written; it stays so in
``params.yaml``, in the job key and in MLflow, and the model builder
(:func:`foldwise.models.with_data`) replaces it with the data's value. The resolver is
registered on import: by :mod:`foldwise.config` (the checks of ``params.yaml``) and
:mod:`foldwise.models` (any process that builds a network, ``foldwise predict`` too),
and by the ``hydra_plugins.foldwise_resolvers`` package for DVC's composition
(``dvc exp run`` loads Hydra plugins before it composes). It imports only OmegaConf.
"""

from __future__ import annotations

import re

from omegaconf import OmegaConf

# the placeholder as it stays in a resolved config
PLACEHOLDER = re.compile(r"^\$\{foldwise:\s*(\w+)\s*\}$")
NAMES = ("in_features", "n_features", "in_shape", "in_channels", "out_features")


def placeholder(name: str) -> str:
    if name not in NAMES:
        raise ValueError(
            f"${{foldwise:{name}}}: foldwise has no value named {name!r}; "
            f"use one of {', '.join(NAMES)} (docs/models.md, Your own model)."
        )
    return f"${{foldwise:{name}}}"


OmegaConf.register_new_resolver("foldwise", placeholder, replace=True)
