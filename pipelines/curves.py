"""DVC stage `curves`: learning and validation curves of the selected configuration.

Writes results/curves/ (CSV summaries declared as DVC plots, per-fold rows, PNG figures).
"""

from foldwise import curves, params
from foldwise.errors import run_stage


def main() -> None:
    curves.run(*params.start("curves"))


if __name__ == "__main__":
    run_stage(main)
