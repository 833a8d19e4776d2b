"""The pods' own guard: the `verify-model` init container's script (stdlib python, run by the Triton image's
python3) refuses a repository whose bytes differ from its manifest, so a corrupted object never serves."""

from __future__ import annotations

import shutil
import subprocess
import sys

from infra.components.triton import VERIFY_SCRIPT
from model_build.manifest import load_manifest
from model_build.signing import manifest_digest
from tests.signing import tamper_consistently


def _run(path, serving=None, *models: str, digest: str | None = None) -> subprocess.CompletedProcess:
    """The init container as declared; `digest` is the stack's pin (default: the repository's own manifest's)."""
    serving = serving or path.parent / f"{path.name}-serving"
    if digest is None:
        digest = manifest_digest(path) if (path / "manifest.json").is_file() else "0" * 64
    return subprocess.run(
        [sys.executable, "-c", VERIFY_SCRIPT, str(path), str(serving), digest, *models],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_verified_repository_passes_and_a_tampered_one_never_starts(repos, tmp_path):
    repo = shutil.copytree(repos("2026.12.0", w_seed=2), tmp_path / "repo")
    ok = _run(repo)
    assert ok.returncode == 0 and "4 files match manifest.json (ranker 2026.12.0)" in ok.stdout
    # Same size, other bytes: only the hash catches it.
    onnx = repo / "ranker_onnx" / "1" / "model.onnx"
    b = bytearray(onnx.read_bytes())
    b[len(b) // 2] ^= 0xFF
    onnx.write_bytes(bytes(b))
    bad = _run(repo)
    assert bad.returncode == 1 and "ranker_onnx/1/model.onnx: sha256 " in bad.stderr
    assert "differs from the manifest's" in bad.stderr


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


def test_the_serving_repository_holds_the_declared_models_only(repos, tmp_path):
    """What Triton polls: the models the pod serves, linked from the verified copy; build artifacts stay outside."""
    repo = shutil.copytree(repos("2026.12.0", w_seed=2), tmp_path / "repo")
    (repo / "checkpoint").mkdir()  # an artifact beside the models: verified (here: refused as unlisted), never served
    (repo / "checkpoint" / "ranker.pt").write_bytes(b"weights")
    assert "checkpoint/ranker.pt: not in the manifest" in _run(repo, tmp_path / "s0", "ranker_onnx").stderr
    (repo / "checkpoint" / "ranker.pt").unlink()
    (repo / "checkpoint").rmdir()
    serving = tmp_path / "serving"
    ok = _run(repo, serving, "ranker_onnx")
    assert ok.returncode == 0 and "serving ranker_onnx from" in ok.stdout, ok.stderr
    got = sorted(p.relative_to(serving).as_posix() for p in serving.rglob("*") if p.is_file())
    assert got == ["ranker_onnx/1/model.onnx", "ranker_onnx/config.pbtxt"]
    # Linked, not copied: the bytes Triton reads are the verified ones.
    assert (serving / "ranker_onnx/1/model.onnx").stat().st_ino == (repo / "ranker_onnx/1/model.onnx").stat().st_ino


def test_a_declared_model_the_version_lacks_fails_the_pod(repos, tmp_path):
    repo = shutil.copytree(repos("2026.12.0", w_seed=2), tmp_path / "repo")
    r = _run(repo, tmp_path / "serving", "ranker_trt")
    assert r.returncode == 1 and "ranker_trt: declared to serve, but the version has no such model" in r.stderr
    assert not (tmp_path / "serving").exists()


def test_a_consistent_tampered_pair_is_refused_by_the_pinned_digest(repos, tmp_path):
    """Model changed and its hash rewritten in the manifest: every file matches the manifest, so only the digest the
    stack pins (of the manifest as released) tells; the pod refuses and nothing is linked for Triton."""
    repo = shutil.copytree(repos("2026.12.0", w_seed=2), tmp_path / "repo")
    pinned = manifest_digest(repo)
    tamper_consistently(repo)
    serving = tmp_path / "serving"
    r = _run(repo, serving, "ranker_onnx", digest=pinned)
    assert r.returncode == 1 and f"is not the digest the stack pins for this version ({pinned})" in r.stderr
    assert not serving.exists()
    assert _run(repo, serving, "ranker_onnx").returncode == 0  # the same pair, had it been the one pinned


def test_an_unsigned_release_never_starts(repos, tmp_path):
    repo = shutil.copytree(repos("2026.12.0", w_seed=2), tmp_path / "repo")
    (repo / "model.sig").unlink()
    r = _run(repo, tmp_path / "serving", "ranker_onnx")
    assert r.returncode == 1 and "no model.sig (the release is unsigned)" in r.stderr
