"""foldwise.threads: training processes on one machine share its cores."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from foldwise import threads


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "registry", lambda: tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("FOLDWISE_THREADS", raising=False)
    monkeypatch.setattr(threads, "_last_set", None)
    before = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("n_cores", "n_live", "expected"), [(2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 3, 5), (8, 0, 8)]
)
def test_an_even_share_of_the_cores_and_at_least_one(n_cores, n_live, expected):
    assert threads.share(n_cores, n_live) == expected


def test_dead_processes_do_not_count_and_are_pruned(folder):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (folder / str(gone.pid)).touch()
    (folder / "not-a-pid").touch()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            (folder / str(other.pid)).touch()
            assert threads.live(folder) == 1
            assert not (folder / str(gone.pid)).exists()
        finally:
            other.kill()


def test_a_second_training_process_halves_the_first_ones_threads(folder, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 4)
    with threads.training():
        assert torch.get_num_threads() == 4  # alone
        assert (folder / str(os.getpid())).exists()
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
            try:
                (folder / str(other.pid)).touch()  # another training process starts
                assert threads.rebalance() == 4  # looked less than EVERY seconds ago
                assert threads.rebalance(force=True) == 2
                assert torch.get_num_threads() == 2
            finally:
                other.kill()
    assert list(folder.glob("[0-9]*")) == [folder / str(other.pid)]  # ours is gone


def test_the_users_thread_count_wins(folder, monkeypatch):
    monkeypatch.setenv("FOLDWISE_THREADS", "1")
    with threads.training():
        assert torch.get_num_threads() == 1
    monkeypatch.delenv("FOLDWISE_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(2)
    with threads.training():
        assert torch.get_num_threads() == 2  # left alone


def test_a_workers_cap_bounds_its_share(folder, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 8)
    threads.cap(3)  # e.g. SLURM's cpus_per_task, or cores ÷ joblib's n_jobs
    try:
        with threads.training():
            assert torch.get_num_threads() == 3  # alone, 8 cores: still 3
    finally:
        threads.cap(None)
