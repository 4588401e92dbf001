"""Registers foldwise's ``${foldwise:<name>}`` resolver in any process that loads Hydra
plugins, DVC's ``dvc exp run`` composition among them (it scans ``hydra_plugins``)."""

import foldwise.resolvers  # noqa: F401  (registers on import)
