"""DVC stage `report`: one self-contained HTML page of the run (results/report.html).

Also run without DVC by `make report`, to preview the CV-only report before the
lockbox is opened.
"""

from foldwise import params, report
from foldwise.errors import run_stage


def main() -> None:
    report.run(*params.start("report"))


if __name__ == "__main__":
    run_stage(main)
