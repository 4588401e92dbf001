"""DVC stage `prepare`: dataset (params: data) → data/prepared/{table.parquet,meta.json}."""

from foldwise import params
from foldwise.data import prepare
from foldwise.errors import run_stage
from foldwise.files import write_json, write_table


def main() -> None:
    cfg, layout = params.start("prepare")
    table, meta = prepare(cfg)
    write_table(layout.table, table)
    write_json(layout.meta, meta.to_dict())
    print(
        f"[prepare] {meta.dataset}: {meta.n_rows} rows, {meta.n_features} features, "
        + ("a numeric target (regression)" if meta.regression else f"{meta.n_classes} classes")
        + f" → {layout.table.relative_to(layout.root)}"
    )


if __name__ == "__main__":
    run_stage(main)
