"""DVC stage `refit`: the selected configuration trained on all dev rows → models/final/."""

from foldwise import params, refit
from foldwise.errors import run_stage


def main() -> None:
    refit.run(*params.start("refit"))


if __name__ == "__main__":
    run_stage(main)
