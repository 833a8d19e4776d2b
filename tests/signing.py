"""The test suite's release signer: one EC key per test process (never the repository's development key), the
way model_build signs a release, and the stack config that pins it."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from model_build.manifest import file_entry, load_manifest, write_manifest
from model_build.signing import dev_key, manifest_digest, sign_with_key


@functools.cache
def signing_key() -> tuple[Path, Path]:
    """(private, public) PEM paths of this process's test signer."""
    return dev_key(Path(tempfile.mkdtemp(prefix="reco-dr-test-signer-")))


def signer_config() -> dict:
    """`model.signer` as a stack pins this signer."""
    return {"kind": "key", "public_key": signing_key()[1].read_text()}


def sign(repo: Path) -> str:
    """Sign `repo` as a build does; returns its manifest digest (what `model.digests[version]` pins)."""
    sign_with_key(repo, signing_key()[0])
    return manifest_digest(repo)


def with_canary(model: dict, version: str, weight: int | str) -> None:
    """Set a stack's `model` values to serve a canary, with the canary's manifest digest pinned (a served version is
    valid only pinned)."""
    model["digests"] = {**model.get("digests", {}), version: "1" * 64}
    model.update(canary_version=version, canary_weight=weight)


def tamper_consistently(repo: Path) -> Path:
    """The attack a pinned digest and a signature stop: change the ONNX model and rewrite its hash in the manifest,
    so every file matches the manifest again. Returns `repo`."""
    onnx = repo / "ranker_onnx" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    m = load_manifest(repo)
    files = [file_entry(repo, f.path, f.role) if f.path == "ranker_onnx/1/model.onnx" else f for f in m.files]
    write_manifest(repo, m.model_copy(update={"files": files}))
    return repo
