"""DVC stage `nested`: nested cross-validation of sweep + selection (opt-in).

Writes results/nested.json (DVC metrics): the nested estimate, the plain CV score of
the selection, the optimism between them, and each outer fold's winner.
"""

from foldwise import nested, params, tracking
from foldwise.errors import run_stage


def main() -> None:
    cfg, layout = params.start("nested")
    if cfg.nested.enabled:
        tracking.require(cfg)  # MLflow unreachable: exit 2 naming it, before any work
    nested.run(cfg, layout)


if __name__ == "__main__":
    run_stage(main)
