"""The pods' own guard: the `verify-model` init container's script (stdlib python, run by the Triton image's
python3) refuses a repository whose bytes differ from its manifest, so a corrupted object never serves."""

from __future__ import annotations

import shutil
import subprocess
import sys

from infra.components.triton import VERIFY_SCRIPT
from model_build.manifest import load_manifest


def _run(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", VERIFY_SCRIPT, str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_verified_repository_passes_and_a_tampered_one_never_starts(repos, tmp_path):
    repo = shutil.copytree(repos("2026.12.0", w_seed=2), tmp_path / "repo")
    ok = _run(repo)
    assert ok.returncode == 0 and "3 files match manifest.json (ranker 2026.12.0)" in ok.stdout
    # Same size, other bytes: only the hash catches it.
    onnx = repo / "ranker_onnx" / "1" / "model.onnx"
    b = bytearray(onnx.read_bytes())
    b[len(b) // 2] ^= 0xFF
    onnx.write_bytes(bytes(b))
    bad = _run(repo)
    assert bad.returncode == 1 and "ranker_onnx/1/model.onnx: sha256/size differ from the manifest" in bad.stderr


def test_missing_unexpected_and_unrecorded_engine_files(repos, tmp_path):
    repo = shutil.copytree(repos("2026.12.0", w_seed=2, onnx_fallback=False), tmp_path / "repo")
    (repo / "ranker_onnx" / "config.pbtxt").unlink()
    (repo / "extra.bin").write_bytes(b"x")
    engine = load_manifest(repo).engines["9.0"]
    (repo / engine.file).parent.mkdir(parents=True, exist_ok=True)
    (repo / engine.file).write_bytes(b"an engine nobody recorded")
    r = _run(repo)
    assert r.returncode == 1
    for want in (
        "ranker_onnx/config.pbtxt: missing",
        "extra.bin: not in the manifest",
        f"{engine.file}: no engine record that matches it",
    ):
        assert want in r.stderr
    assert _run(tmp_path / "nothing").returncode == 1
