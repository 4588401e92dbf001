"""DVC stage `nested`: nested cross-validation of sweep + selection (opt-in).

Writes results/nested.json (DVC metrics): the nested estimate, the plain CV score of
the selection, the optimism between them, and each outer fold's winner.
"""

from foldwise import nested, params
from foldwise.errors import run_stage


def main() -> None:
    nested.run(*params.start("nested"))


if __name__ == "__main__":
    run_stage(main)
