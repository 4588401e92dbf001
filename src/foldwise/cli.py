"""The `foldwise` command: using what the pipeline made, outside DVC.

    foldwise predict --input rows.csv [--model models/final] [--output predictions.csv]

`predict` scores raw rows (CSV or Parquet, the features under their original column
names) with the final model and writes ``prediction`` and ``proba_<label>`` columns: the
numbers MLflow's pyfunc and the test stage compute (:mod:`foldwise.predict`). Bad input
exits 2 with the problem and the fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foldwise.errors import FoldwiseError


def _predict(args: argparse.Namespace) -> int:
    from foldwise.files import atomic_write_text
    from foldwise.predict import load, predict_frame, read_rows

    model = load(args.model)
    rows = read_rows(args.input)
    out = predict_frame(model, rows)
    if args.output is None:
        out.to_csv(sys.stdout, index=False)
    else:
        atomic_write_text(args.output, out.to_csv(index=False))
        print(f"foldwise: {len(out)} predictions → {args.output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="foldwise", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="score raw rows with the final model")
    p.add_argument("--input", type=Path, required=True, help="CSV or Parquet rows to score")
    p.add_argument("--model", type=Path, default=Path("models/final"), help="bundle folder or file")
    p.add_argument("--output", type=Path, help="CSV to write (default: standard output)")
    p.set_defaults(run=_predict)
    args = ap.parse_args(argv)
    try:
        return args.run(args)
    except FoldwiseError as err:
        print(f"foldwise: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
