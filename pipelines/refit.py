"""DVC stage `refit`: the selected configuration trained on all dev rows → models/final/."""

from foldwise import params, refit
from foldwise.errors import run_stage
from foldwise.files import repo_root


def main() -> None:
    refit.run(params.load(), params.Layout(repo_root()))


if __name__ == "__main__":
    run_stage(main)
