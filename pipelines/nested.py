"""DVC stage `nested`: nested cross-validation of sweep + selection (opt-in).

Writes results/nested.json (DVC metrics): the nested estimate, the plain CV score of
the selection, the optimism between them, and each outer fold's winner.
"""

from foldwise import nested, params, tracking
from foldwise.errors import run_stage
from foldwise.files import repo_root


def main() -> None:
    cfg = params.load()
    if cfg.nested.enabled:
        tracking.require(cfg)  # MLflow unreachable: exit 2 naming it, before any work
    nested.run(cfg, params.Layout(repo_root()))


if __name__ == "__main__":
    run_stage(main)
