"""DVC stage `curves`: learning and validation curves of the selected configuration.

Writes results/curves/ (CSV summaries declared as DVC plots, per-fold rows, PNG figures).
"""

from foldwise import curves, params
from foldwise.errors import run_stage
from foldwise.files import repo_root


def main() -> None:
    curves.run(params.load(), params.Layout(repo_root()))


if __name__ == "__main__":
    run_stage(main)
