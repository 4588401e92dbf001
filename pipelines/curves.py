"""DVC stage `curves`: learning and validation curves of the selected configuration.

Writes results/curves/ (CSV summaries declared as DVC plots, per-fold rows, PNG figures).
"""

from foldwise import curves, params, tracking
from foldwise.errors import run_stage


def main() -> None:
    cfg, layout = params.start("curves")
    tracking.require(cfg)  # MLflow unreachable: exit 2 naming it, before any work
    curves.run(cfg, layout)


if __name__ == "__main__":
    run_stage(main)
