"""The sweep's progress line: counts, throttling, and an ETA that only moves as work is done."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from foldwise.progress import Progress, clock, process_seconds


def eta_seconds(line: str) -> int | None:
    m = re.search(r"ETA (\d+):(\d+)", line)
    return None if m is None else int(m[1]) * 60 + int(m[2])


def test_no_eta_before_a_steady_epoch_then_a_steady_countdown():
    lines: list[str] = []
    # 80 models × 30 epochs in one stack; the first epoch pays warm-up (10 s).
    p = Progress(total=80, every=0, out=lines.append)
    seconds = [10.0] + [0.5] * 29
    for e, s in enumerate(seconds, start=1):
        p.epoch(0, 1, e, 30, work=80, seconds=s, remaining=80 * (30 - e), training=80)
    assert "ETA --:--" in lines[0]  # warm-up is not a rate
    etas = [eta_seconds(ln) for ln in lines[1:]]
    # 160 model-epochs/s once steady: 28 epochs × 80 models left after epoch 2 = 14 s
    assert etas[0] == 14
    assert etas == sorted(etas, reverse=True)  # never jumps up
    assert etas[-1] == 0


def test_early_stopping_only_shortens_the_eta_and_later_stacks_count():
    lines: list[str] = []
    p = Progress(total=160, every=0, out=lines.append, pending_epochs=80 * 30)
    p.epoch(0, 2, 1, 30, work=80, seconds=1.0, remaining=80 * 29, training=80)
    p.epoch(0, 2, 2, 30, work=80, seconds=1.0, remaining=80 * 28, training=80)
    p.epoch(0, 2, 3, 30, work=80, seconds=1.0, remaining=40 * 27, training=40)  # half stopped
    a, b = eta_seconds(lines[1]), eta_seconds(lines[2])
    assert a == (80 * 28 + 80 * 30) // 80 and b < a


def test_lines_are_throttled_but_first_and_last_epochs_always_print():
    lines: list[str] = []
    p = Progress(total=4, every=3600, out=lines.append)
    for e in range(1, 11):
        p.epoch(0, 1, e, 10, work=4, seconds=0.1, remaining=4 * (10 - e),
                training=0 if e == 10 else 4)  # fmt: skip
    assert len(lines) == 2 and "epoch 1/10" in lines[0] and "epoch 10/10" in lines[1]


def test_counts_and_last_result_are_shown():
    lines: list[str] = []
    p = Progress(total=10, done=3, every=0, out=lines.append)
    p.finished("mlp lr=0.01", 2, "val_f1 0.9700")
    p.skipped()
    p.epoch(0, 1, 1, 5, work=5, seconds=1, remaining=20, training=5)
    assert "models 5/10" in lines[0] and "last: mlp lr=0.01 · fold 2 · val_f1 0.9700" in lines[0]


def test_clock():
    assert clock(float("nan")) == "--:--"
    assert clock(65) == "1:05" and clock(3725) == "1:02:05"


def test_process_seconds_counts_from_the_process_start():
    """A fresh interpreter that sleeps 0.5 s is about 0.5 s old (plus its start-up),
    never the machine's uptime; and the age grows as the clock does."""
    code = "import time; time.sleep(0.5); import foldwise.progress as p; print(p.process_seconds())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout)  # fmt: skip
    assert 0.5 <= age < 20
    a = process_seconds()
    time.sleep(0.2)
    b = process_seconds()
    assert a is not None and b is not None and 0.19 <= b - a < 1.0
