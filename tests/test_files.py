"""Result files get the mode a plain ``open()`` would give them (issue 22: mkstemp made
them 0600, unreadable to a shared server's other users or a CI artifact reader)."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from foldwise.files import atomic_write_text, write_json, write_table


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"a": 1})
        write_table(tmp_path / "c.parquet", pd.DataFrame({"a": [1]}))
        with open(tmp_path / "plain", "w") as fh:  # what a normal write gives
            fh.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.txt", "b.json", "c.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
