"""The lockbox's back doors, tried on a project whose lockbox a real `dvc repro` opened.

Called at the end of ``test_pipeline_e2e``'s lockbox test, on its project (one pipeline
run for both): files are edited, the audit log is deleted, the ledger too, and the seed
is changed, each against the real stages (issue 10).
"""

from __future__ import annotations

import json
import shutil

import pandas as pd

from conftest import Project, run_tree, tiny_params
from foldwise.files import sha256_file

AUDIT = "lockbox/audit.jsonl"
LEDGER = ".foldwise/lockbox/ledger.jsonl"


def test_stage(p: Project, check: bool = True):
    """``python pipelines/test.py`` in this process (conftest's Project.stage): what the
    stage refuses is the point here, its command line is `dvc repro`'s below."""
    return p.stage("test", check=check, in_process=True)


def refused(proc, *needles: str) -> str:
    """The stage (or dvc) failed with a foldwise error naming every needle."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "foldwise: error:" in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    return out


def back_doors(p: Project, uri: str) -> None:
    """On a project of digits whose lockbox was opened (by `dvc repro`, with ``uri``'s
    MLflow store): edit files, delete the records, change the seed — each is refused."""
    root = p.path
    p.commit("opened the lockbox")  # the audit log is committed, as docs/lockbox.md asks
    entries = [json.loads(x) for x in (root / AUDIT).read_text().splitlines()]
    first = entries[-1]  # the opening of the model the test stage now sees
    assert first["opened_by"] == "foldwise tests <tests@foldwise.invalid>"
    assert first["dataset"]["source"] == "sklearn:digits" and first["reused_rows"] is None
    assert first["manifest_sha256"] == sha256_file(root / "data/split/manifest.json")
    ledger = [json.loads(x) for x in (root / LEDGER).read_text().splitlines()]
    assert [(x["how"], x["entry"]) for x in ledger] == [("opened", e) for e in entries]
    metrics = json.loads((root / "results/test_metrics.json").read_text())
    assert metrics["reused_rows"] is False and metrics["opened_by"] == first["opened_by"]
    runs = run_tree(uri)["lockbox"]
    assert {r.data.tags["foldwise.opened_by"] for r in runs} == {first["opened_by"]}
    # ...and from which commit: one of this repo's, in the log and on the MLflow run
    commit = first["git_commit"].removesuffix("+dirty")
    assert p.run("git", "cat-file", "-t", commit).stdout.strip() == "commit"
    assert {r.data.tags["foldwise.git_commit"] for r in runs} == {e["git_commit"] for e in entries}
    assert {r.data.tags["foldwise.dataset_source"] for r in runs} == {"sklearn:digits"}
    lines = (root / AUDIT).read_text().splitlines()

    def unchanged() -> None:
        assert (root / AUDIT).read_text().splitlines() == lines

    # (a) tampering after the opening: the test stage names the edited file
    test_file = root / "data/lockbox/test.parquet"
    original = test_file.read_bytes()
    rows = pd.read_parquet(test_file)
    rows.loc[0, "x5"] += 1.0
    rows.to_parquet(test_file, index=False)
    changed = "data/lockbox/test.parquet was changed after the split"
    recorded = f"recorded {first['test_sha256'][:12]} (opened {first['opened_at']}"
    refused(test_stage(p, check=False), changed, recorded)
    test_file.write_bytes(original)

    manifest_file = root / "data/split/manifest.json"
    original = manifest_file.read_bytes()
    manifest = json.loads(original)
    manifest["test_sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    refused(test_stage(p, check=False), "data/split/manifest.json was changed")
    manifest_file.write_bytes(original)

    edited = dict(first, scores={**first["scores"], "acc": {**first["scores"]["acc"], "value": 1}})
    (root / AUDIT).write_text("\n".join([*lines[:-1], json.dumps(edited, sort_keys=True)]) + "\n")
    was_edited = "lockbox/audit.jsonl was edited after the lockbox"
    refused(test_stage(p, check=False), was_edited, "scores.acc.value: audit log 1, ledger")
    p.run("git", "checkout", "--", AUDIT)  # the documented fix
    assert "no new look" in test_stage(p).stdout
    unchanged()

    # (b) deleting the audit log does not reset the lockbox: the ledger knows ...
    (root / AUDIT).unlink()
    lacks = f"lockbox/audit.jsonl lacks {len(lines)} lockbox opening"
    out = refused(p.dvc("repro", "test", check=False), lacks, LEDGER, f"git checkout -- {AUDIT}")
    assert "Running stage 'sweep'" not in out
    # never committed? the ledger has it
    p.run("python", "-m", "foldwise.lockbox.ledger", "restore")
    unchanged()
    # ... and without the ledger too, MLflow's lockbox run does
    shutil.rmtree(root / ".foldwise")
    (root / AUDIT).unlink()
    mlflow_knows = f"records {len(lines)} lockbox opening(s) of sklearn:digits"
    refused(test_stage(p, check=False), "MLflow", mlflow_knows, *(r.info.run_id for r in runs))
    p.run("git", "checkout", "--", AUDIT)
    assert "no new look" in test_stage(p).stdout  # the restored log is adopted again
    assert (root / LEDGER).is_file()
    unchanged()

    # (c) a new seed draws a new test set out of seen rows: refused before any training
    split_files = ("data/lockbox/test.parquet", "data/split/manifest.json")
    before = {f: sha256_file(root / f) for f in split_files}
    p.set_params(tiny_params(["seed=7"]))
    reuses = "this split's test set reuses rows of sklearn:digits"
    out = refused(p.dvc("repro", "test", check=False), reuses, "Nothing was trained")
    assert "Running stage 'sweep'" not in out
    assert before == {f: sha256_file(root / f) for f in split_files}
    # with a reason it proceeds, and the split, the opening and the result are flagged
    p.set_params(tiny_params(["seed=7", "lockbox.reuse_rows_reason='relabelled two digits'"]))
    assert "WARN reused rows" in p.dvc("repro", "split").stdout
    manifest = json.loads(manifest_file.read_text())
    assert manifest["reused_rows"]["reason"] == "relabelled two digits"
    assert manifest["reused_rows"]["n_seen"] == manifest["n_test"]  # every row was seen
    # (the test stage alone: the model refit on seed 42's dev rows, which is the leak)
    assert "flagged reused_rows" in test_stage(p).stdout
    metrics = json.loads((root / "results/test_metrics.json").read_text())
    assert metrics["reused_rows"] is True
    assert metrics["reuse_rows_reason"] == "relabelled two digits"
    last = json.loads((root / AUDIT).read_text().splitlines()[-1])
    assert last["reused_rows"] == manifest["reused_rows"] and last["look"] == 1
    tags = [r.data.tags["foldwise.reused_rows"] for r in run_tree(uri)["lockbox"]]
    assert sorted(tags) == ["False"] * len(lines) + ["True"]
