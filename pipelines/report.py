"""DVC stage `report`: one self-contained HTML page of the run (results/report.html).

Also run without DVC by `make report`, to preview the CV-only report before the
lockbox is opened.
"""

from foldwise import params, report
from foldwise.errors import run_stage
from foldwise.files import repo_root


def main() -> None:
    report.run(params.load(), params.Layout(repo_root()))


if __name__ == "__main__":
    run_stage(main)
