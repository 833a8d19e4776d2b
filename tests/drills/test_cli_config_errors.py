"""A stack file that does not validate stops every drills command with one line (exit 2), before anything is
written or started: the rehearsal commands too, which create a run directory once they start."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import ROOT

TYPO = "  reco_dr:vpc_cidr: 10.99.0.0/16\n"


@pytest.fixture
def bad_stacks(tmp_path: Path) -> Path:
    d = tmp_path / "stacks"
    shutil.copytree(ROOT / "stacks", d)
    p = d / "Pulumi.prod-use1.yaml"
    p.write_text(p.read_text().replace("  reco-dr:role: region\n", "  reco-dr:role: region\n" + TYPO))
    return d


@pytest.mark.parametrize(
    "command",
    [
        ["rehearse", "--env", "prod"],
        ["rehearse-release", "--env", "prod"],
        ["plan", "region-outage", "--env", "prod", "--region", "us-east-1"],
    ],
)
def test_a_stack_that_does_not_validate_is_one_line_and_nothing_written(bad_stacks, tmp_path, command):
    out = tmp_path / "run"
    extra = ["--out", str(out)] if command[0].startswith("rehearse") else []
    r = subprocess.run(
        [sys.executable, "-m", "drills", *command, "--stacks-dir", str(bad_stacks), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "reco_dr:vpc_cidr" in r.stderr and "reco-dr" in r.stderr
    assert not out.exists()
