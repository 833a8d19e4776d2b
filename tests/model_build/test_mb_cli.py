"""The command line: help everywhere, verify's exit code, the bad-labels candidate, a safe output directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model_build.__main__ import main
from model_build.build import BuildResult
from model_build.manifest import load_manifest, verify
from tests.signing import signing_key


@pytest.mark.parametrize("cmd", [[], ["build"], ["verify"], ["publish"], ["bench"], ["plan"]])
def test_help_on_every_subcommand(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: python -m model_build" in capsys.readouterr().out


def test_verify_exit_codes_through_the_real_entry_point(repo: Path):
    verify = [sys.executable, "-m", "model_build", "verify", str(repo), "--public-key", str(signing_key()[1])]
    ok = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with open(repo / "ranker_trt/model.fp16.onnx", "ab") as f:
        f.write(b"x")
    bad = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "ranker_trt/model.fp16.onnx" in bad.stdout


def test_plan_prints_json(capsys):
    assert main(["plan", "--env", "staging"]) == 0
    assert '"compute_capabilities": [\n    "8.6",\n    "8.9"\n  ]' in capsys.readouterr().out


def test_bad_labels_build_is_valid_but_learned_nothing(tmp_path: Path, capsys):
    out = tmp_path / "bad"
    code = main(
        [
            "--out",
            str(out),
            "--bad-labels",
            "--train-requests",
            "256",
            "--validation-requests",
            "128",
            "--epochs",
            "1",
            "--precision",
            "fp32",
            "--env",
            "staging",
            "--version",
            "2026.11.1-bad",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    m = load_manifest(out)
    assert m.data["bad_labels"] is True and m.model["version"] == "2026.11.1-bad"
    assert abs(m.metrics.validation_auc - 0.5) < 0.05, m.metrics.validation_auc
    assert all(f.passed for f in m.metrics.parity)  # a bad model, not a broken one
    assert verify(out) == []
    assert "validation AUC" in text and "TensorRT engines NOT built here" in text
    assert sorted(m.engines) == ["8.6", "8.9"]  # --env staging


def test_refuses_to_clear_a_directory_that_is_not_a_build(tmp_path: Path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["--out", str(tmp_path), "--train-requests", "16", "--validation-requests", "8"]) == 1
    assert "refusing to build" in capsys.readouterr().out
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_rebuild_over_a_previous_build_replaces_it(built: BuildResult, repo: Path):
    # prepare_out removes the manifest first, then the known entries; nothing foreign is touched.
    from model_build.build import prepare_out

    prepare_out(repo, "ranker")
    assert list(repo.iterdir()) == []
