"""Lockbox integrity on hand-made records: row registry (foldwise.lockbox.rows), the ledger and
its agreement with the audit log and MLflow, tamper checks (foldwise.lockbox.ledger)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from foldwise.errors import FoldwiseError
from foldwise.files import sha256_file, sha256_table, write_json
from foldwise.lockbox import ledger, rows
from foldwise.lockbox.audit import append_audit, authority, read_audit

SOURCE = "sklearn:digits"
MANIFEST = {"dataset": {"source": SOURCE}}


def opening(
    test_ids,
    table_ids=range(100),
    *,
    sha: str = "a" * 64,
    model: str = "1" * 64,
    source: str = SOURCE,
    reused: dict | None = None,
    opened_at: str = "2025-01-01T00:00:00+00:00",
    seed: int = 42,
) -> dict:
    """An audit entry as the test stage writes it (the fields these checks read)."""
    return {
        "opened_at": opened_at,
        "test_sha256": sha,
        "model_sha256": model,
        "label": "hidden=16",
        "look": 1,
        "n_test": len(list(test_ids)),
        "scores": {"acc": {"value": 0.9}},
        "dataset": {"source": source, "table_sha256": "t" * 64, "n_rows": len(list(table_ids))},
        "row_ids": {"table": rows.encode_ids(list(table_ids)), "test": rows.encode_ids(test_ids)},
        "reused_rows": reused,
        "split": {"seed": seed, "lockbox_by": "class", "test_rows": "all"},
    }


def cfg(reason=None, test_rows="all", data=None):
    return OmegaConf.create(
        {
            "data": data or {"name": "digits"},
            "lockbox": {"reuse_rows_reason": reason, "test_rows": test_rows},
        }
    )


def result(test_ids, sha):
    return SimpleNamespace(
        manifest={"test_sha256": sha}, test=pd.DataFrame({"row_id": np.asarray(test_ids)})
    )


def plan(entries, table_ids=range(100), fixed=None):
    ids = np.asarray(list(table_ids), dtype=np.int64)
    return rows.Plan(SOURCE, "t" * 64, ids, rows.openings_of(entries, SOURCE), entries, fixed)


# --------------------------------------------------------------------------------------------
# row ids and dataset identity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [[], [5], list(range(1797)), [-7, 3, 1_000_000_000_000], list(np.random.default_rng(0)
     .choice(100_000, 20_000, replace=False))],
)  # fmt: skip
def test_row_ids_round_trip(ids):
    assert rows.decode_ids(rows.encode_ids(ids)).tolist() == sorted(set(int(i) for i in ids))


def test_row_ids_are_compact():
    assert len(rows.encode_ids(range(100_000))) < 2_000  # a contiguous table: ~1.6 kB
    rng = np.random.default_rng(1)
    test = rng.choice(100_000, 20_000, replace=False)
    assert len(rows.encode_ids(test)) < 3 * 20_000  # ~2 bytes per id, base64 included


def test_source_id(tmp_path):
    assert rows.source_id({"name": "digits"}, tmp_path) == "sklearn:digits"
    data = {"name": "csv", "path": "./data/raw/t.csv", "id_column": None}
    assert rows.source_id(data, tmp_path) == "file:data/raw/t.csv#position"
    data = {"name": "csv", "path": str(tmp_path / "data/raw/t.csv"), "id_column": "sample_id"}
    (tmp_path / "dvc.yaml").touch()  # the repo root
    assert rows.source_id(data, tmp_path) == "file:data/raw/t.csv#id=sample_id"


# --------------------------------------------------------------------------------------------
# the split stage's rule
# --------------------------------------------------------------------------------------------


def test_first_split_is_fresh():
    fields = rows.admit(plan([]), cfg(), result(range(80, 100), "a" * 64))
    assert fields["reused_rows"] is None
    assert fields["dataset"] == {"source": SOURCE, "table_sha256": "t" * 64, "n_rows": 100}
    assert rows.decode_ids(fields["row_ids"]["test"]).tolist() == list(range(80, 100))


def test_the_opened_test_set_again_is_the_same_lockbox():
    entries = [opening(range(80, 100))]
    assert rows.admit(plan(entries), cfg(), result(range(80, 100), "a" * 64))["reused_rows"] is None


def test_new_split_of_seen_rows_is_refused():
    entries = [opening(range(80, 100), opened_at="2025-03-04T05:06:07+00:00")]
    with pytest.raises(FoldwiseError) as err:
        rows.admit(plan(entries), cfg(), result(range(70, 90), "b" * 64))
    message = str(err.value)
    # 10 rows were in the opened test set, 10 were dev rows the opened model trained on
    assert "20 of its 20 rows were seen at an earlier opening (10 in an opened test set" in message
    assert "2025-03-04T05:06:07+00:00 test set aaaaaaaaaaaa (20 rows, seed 42" in message
    assert "Nothing was trained" in message
    assert 'lockbox.reuse_rows_reason="<why>"' in message
    assert "lockbox.test_rows=new" in message


def test_reuse_with_a_reason_is_flagged_and_each_reason_authorises_one_test_set():
    entries = [opening(range(80, 100))]
    fields = rows.admit(plan(entries), cfg("relabelled"), result(range(70, 90), "b" * 64))
    reused = fields["reused_rows"]
    assert reused["reason"] == "relabelled"
    assert (reused["n_seen"], reused["n_seen_in_test"], reused["n_test"]) == (20, 10, 20)
    # once that test set was opened with the reason, the reason is spent ...
    entries.append(opening(range(70, 90), sha="b" * 64, model="2" * 64, reused=reused))
    with pytest.raises(FoldwiseError, match="already authorised the test set"):
        rows.admit(plan(entries), cfg("relabelled"), result(range(60, 80), "c" * 64))
    # ... but re-making that test set keeps its authorisation, even without the param
    again = rows.admit(plan(entries), cfg(), result(range(70, 90), "b" * 64))
    assert again["reused_rows"] == reused


def test_appended_rows_may_be_tested_alone():
    entries = [opening(range(80, 100))]  # the table had rows 0..99 then
    fresh = rows.new_rows(np.arange(130), SOURCE, rows.openings_of(entries, SOURCE))
    assert fresh.tolist() == list(range(100, 130))
    # dev = rows 0..99, opened test rows included: harmless for a score on unseen rows
    p = plan(entries, range(130), fresh)
    assert rows.admit(p, cfg(test_rows="new"), result(fresh, "b" * 64))["reused_rows"] is None
    # but a draw over all 130 rows would mix old rows into the test set
    with pytest.raises(FoldwiseError, match="reuses rows"):
        rows.admit(p, cfg(), result([5, 90, 120], "c" * 64))


def test_new_rows_again_after_their_opening_finds_the_same_test_set():
    entries = [opening(range(80, 100)), opening(range(100, 130), range(130), sha="b" * 64)]
    seen = rows.openings_of(entries, SOURCE)
    assert rows.new_rows(np.arange(130), SOURCE, seen).tolist() == list(range(100, 130))
    assert rows.new_rows(np.arange(150), SOURCE, seen).tolist() == list(range(130, 150))


def test_new_rows_needs_an_opening_and_new_rows():
    with pytest.raises(FoldwiseError, match="has no opening yet"):
        rows.new_rows(np.arange(10), SOURCE, [])
    seen = rows.openings_of([opening(range(80, 100))], SOURCE)
    with pytest.raises(FoldwiseError, match="every row of sklearn:digits was already seen"):
        rows.new_rows(np.arange(90), SOURCE, seen)


def test_other_sources_and_old_entries_do_not_count():
    entries = [opening(range(80, 100), source="sklearn:breast_cancer")]
    legacy = opening(range(80, 100))
    del legacy["row_ids"]  # written before rows were recorded: only its hash protects it
    entries.append(legacy)
    assert rows.openings_of(entries, SOURCE) == []
    assert rows.admit(plan(entries), cfg(), result(range(70, 90), "b" * 64))["reused_rows"] is None


# --------------------------------------------------------------------------------------------
# the ledger against the audit log
# --------------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "dvc.yaml").touch()
    return tmp_path


def test_new_opening_goes_to_ledger_and_log(repo):
    e = opening(range(80, 100))
    ledger.record(repo, authority(repo), e)
    assert read_audit(authority(repo)) == [e]
    assert ledger.read(repo) == [e]
    assert ledger.path(repo) == repo / ".foldwise/lockbox/ledger.jsonl"
    assert ledger.load(repo) == [e]


def test_deleted_or_truncated_log_is_refused_naming_the_ledger(repo):
    e = opening(range(80, 100), opened_at="2025-03-04T05:06:07+00:00")
    ledger.record(repo, authority(repo), e)
    authority(repo).write_text("")  # truncated (deleted reads the same)
    with pytest.raises(FoldwiseError) as err:
        ledger.load(repo)
    message = str(err.value)
    assert "lockbox/audit.jsonl lacks 1 lockbox opening(s) that the ledger" in message
    assert ".foldwise/lockbox/ledger.jsonl" in message
    assert "2025-03-04T05:06:07+00:00 test set aaaaaaaaaaaa, model hidden=16" in message
    assert "does not reset the lockbox" in message
    assert "git checkout -- lockbox/audit.jsonl" in message
    # the ledger can put the lost line back
    assert ledger.restore(repo) == [e]
    assert ledger.load(repo) == [e]


def test_edited_entry_is_refused_naming_the_fields(repo):
    ledger.record(repo, authority(repo), opening(range(80, 100)))
    line = json.loads(authority(repo).read_text())
    line["scores"]["acc"]["value"] = 0.99
    authority(repo).write_text(json.dumps(line) + "\n")
    with pytest.raises(FoldwiseError) as err:
        ledger.load(repo)
    message = str(err.value)
    assert "lockbox/audit.jsonl was edited after the lockbox was opened" in message
    assert "scores.acc.value: audit log 0.99, ledger 0.9." in message
    with pytest.raises(FoldwiseError, match="was edited"):
        ledger.restore(repo)  # an edited line is git's to restore, not the ledger's


def test_log_entries_the_ledger_lacks_are_adopted(repo):
    e1, e2 = opening(range(80, 100)), opening(range(0, 20), sha="b" * 64)
    append_audit(authority(repo), e1)  # e.g. from `git pull` or a fresh clone
    append_audit(authority(repo), e2)
    assert ledger.load(repo, adopt=False) == [e1, e2]
    assert ledger.read(repo) == []
    ledger.load(repo)
    assert ledger.read(repo) == [e1, e2]
    lines = [json.loads(x) for x in ledger.path(repo).read_text().splitlines()]
    assert [x["how"] for x in lines] == ["adopted", "adopted"]
    # a git merge that reorders lines is not a disagreement
    authority(repo).write_text("".join(json.dumps(e) + "\n" for e in (e2, e1)))
    assert ledger.load(repo) == [e2, e1]


def test_opened_by_git_identity_else_os_user(repo, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada Lovelace")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "ada@example.invalid")
    assert ledger.opened_by(repo) == "Ada Lovelace <ada@example.invalid>"

    def no_git(*a, **k):
        raise OSError("no git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert ledger.opened_by(repo).endswith("(OS user; no git identity)")


# --------------------------------------------------------------------------------------------
# tamper checks on the split's files
# --------------------------------------------------------------------------------------------


@pytest.fixture
def opened(repo):
    """A split whose test set was opened: (layout, manifest, test table, entries)."""
    table = pd.DataFrame({"row_id": np.arange(100), "x0": np.arange(100.0), "target": 0})
    test = table[table.row_id >= 80]
    sha = sha256_table(test)
    layout = SimpleNamespace(root=repo, manifest=repo / "data/split/manifest.json")
    manifest = {"test_sha256": sha, "n_test": 20, "lockbox_by": "class", "test_rows": "all",
                "reused_rows": None, "n_splits": 5, "dataset": {"source": SOURCE},
                "row_ids": {"table": rows.encode_ids(range(100)),
                            "test": rows.encode_ids(range(80, 100))}}  # fmt: skip
    write_json(layout.manifest, manifest)
    e = opening(range(80, 100), sha=sha)
    e["manifest_sha256"] = sha256_file(layout.manifest)
    return layout, manifest, test, [e]


def check(layout, manifest, test, entries):
    ledger.check_files(
        cfg(), layout, manifest, test["row_id"].to_numpy(), sha256_table(test), entries
    )


def test_untouched_files_pass(opened):
    check(*opened)
    layout, manifest, test, entries = opened
    manifest["n_splits"] = 10  # a re-split of the dev rows that keeps the test set
    write_json(layout.manifest, manifest)
    check(layout, manifest, test, entries)


def test_edited_test_rows_are_named(opened):
    layout, manifest, test, entries = opened
    edited = test.assign(x0=test["x0"] + np.r_[1.0, np.zeros(19)])
    with pytest.raises(FoldwiseError) as err:
        check(layout, manifest, edited, entries)
    message = str(err.value)
    assert "data/lockbox/test.parquet was changed after the split" in message
    assert f"the split manifest recorded {manifest['test_sha256'][:12]} (opened 2025-" in message
    assert "dvc checkout data/lockbox/test.parquet" in message


def test_edited_manifest_hash_is_named(opened):
    layout, manifest, test, entries = opened
    manifest["test_sha256"] = "f" * 64
    with pytest.raises(FoldwiseError, match=r"data/split/manifest.json was changed: data/lockbox"):
        check(layout, manifest, test, entries)


def test_manifest_hiding_a_reuse_flag_is_named(opened):
    layout, manifest, test, entries = opened
    flag = {"reason": "r", "n_seen": 3, "n_seen_in_test": 0, "n_test": 20}
    write_json(layout.manifest, {**manifest, "reused_rows": flag})  # as opened
    entries[0].update(reused_rows=flag, manifest_sha256=sha256_file(layout.manifest))
    write_json(layout.manifest, manifest)  # the flag removed by hand
    with pytest.raises(FoldwiseError) as err:
        check(layout, manifest, test, entries)
    assert "manifest.json was changed since this test set was opened" in str(err.value)
    assert 'reused_rows: opening {"n_seen": 3' in str(err.value)


def test_test_rows_seen_elsewhere_need_a_flag_in_the_manifest(opened):
    layout, manifest, test, entries = opened
    entries = [opening(range(70, 90), sha="b" * 64)]  # another test set showed rows 80..89
    with pytest.raises(FoldwiseError) as err:
        check(layout, manifest, test, entries)
    assert "holds 20 rows of sklearn:digits seen at earlier openings" in str(err.value)
    assert "records no authorised reuse" in str(err.value)
    manifest["reused_rows"] = {"reason": "r"}
    check(layout, manifest, test, entries)


# --------------------------------------------------------------------------------------------
# MLflow's lockbox runs
# --------------------------------------------------------------------------------------------


def test_mlflow_opening_missing_from_the_records_is_refused(tmp_path):
    from foldwise import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(OmegaConf.create({"tracking": {"uri": uri}}))
    exp = tracking.experiment_id(c, "foldwise")
    e = opening(range(80, 100))
    tags = {"foldwise.lockbox": "opening", "foldwise.test_sha256": e["test_sha256"],
            "foldwise.model_sha256": e["model_sha256"], "foldwise.dataset_source": SOURCE,
            "foldwise.opened_at": e["opened_at"], "foldwise.opened_by": "Ada <a@b>"}  # fmt: skip
    run = tracking.start_run(c, exp, "lockbox opening #1", "lockbox", tags)
    crashed = tracking.start_run(c, exp, "lockbox opening #2", "lockbox",
                                 {**tags, "foldwise.model_sha256": "9" * 64})  # fmt: skip
    conf = OmegaConf.create({"tracking": {"uri": uri}})
    ledger.check_mlflow(conf, [e], MANIFEST, "c" * 64)  # the log has it; the crash showed nothing
    ledger.check_mlflow(conf, [], MANIFEST, "c" * 64)  # no score logged yet: nothing was seen
    tracking.log(c, run, metrics={"test_acc": 0.9})
    with pytest.raises(FoldwiseError) as err:
        ledger.check_mlflow(conf, [], MANIFEST, "c" * 64)
    message = str(err.value)
    assert f"records 1 lockbox opening(s) of {SOURCE} that neither" in message
    assert f"run {run} 'lockbox opening #1' (2025-01-01T00:00:00+00:00" in message
    assert "opened by Ada <a@b>" in message and crashed not in message
    other = {"dataset": {"source": "sklearn:other"}}
    ledger.check_mlflow(conf, [], other, "c" * 64)  # another dataset's lockbox
