"""DVC stage `aggregate`: fold results → per-configuration statistics → selection.

Writes results/cv_metrics.json (DVC metrics), results/cv_table.csv (ranked) and
results/selection.json (the configuration the refit will train).
"""

from foldwise import aggregate, params, tracking
from foldwise.errors import run_stage


def main() -> None:
    cfg, layout = params.start("aggregate")
    tracking.require(cfg)  # MLflow unreachable: exit 2 naming it, before any work
    aggregate.run(cfg, layout)


if __name__ == "__main__":
    run_stage(main)
