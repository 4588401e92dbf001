"""Configuration rules below :mod:`foldwise.params` (which loads and checks
``params.yaml``): which keys exist (:mod:`.keys`), ``sweep.grid`` (:mod:`.grid`),
``sweep=optuna``'s search space (:mod:`.space`), the launcher, ensemble and refit
settings (:mod:`.sections`), and the small rules they share (:mod:`.rules`). Nothing
here reads data or trains."""

from foldwise import resolvers  # noqa: F401  (registers ${foldwise:...} on import)
