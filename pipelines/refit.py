"""DVC stage `refit`: the selected configuration trained on all dev rows → models/final/."""

from foldwise import params, refit, tracking
from foldwise.errors import run_stage
from foldwise.files import repo_root


def main() -> None:
    cfg = params.load()
    tracking.require(cfg)  # MLflow unreachable: exit 2 naming it, before any work
    refit.run(cfg, params.Layout(repo_root()))


if __name__ == "__main__":
    run_stage(main)
