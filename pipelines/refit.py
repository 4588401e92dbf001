"""DVC stage `refit`: the selected configuration trained on all dev rows → models/final/."""

from foldwise import params, refit, tracking
from foldwise.errors import run_stage


def main() -> None:
    cfg, layout = params.start("refit")
    tracking.require(cfg)  # MLflow unreachable: exit 2 naming it, before any work
    refit.run(cfg, layout)


if __name__ == "__main__":
    run_stage(main)
