"""The manifest describes every file; verify catches every kind of tampering and names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from model_build.build import BuildResult
from model_build.manifest import MANIFEST, SIGNATURE, Manifest, load_manifest, sha256_file, verify, write_manifest


def test_manifest_lists_every_file_with_hash_and_size(built: BuildResult):
    m = load_manifest(built.out)
    # Every file but the manifest and the signature over all of them (model_build.signing).
    on_disk = {p.relative_to(built.out).as_posix() for p in built.out.rglob("*") if p.is_file()} - {MANIFEST, SIGNATURE}
    assert {f.path for f in m.files} == on_disk
    for f in m.files:
        assert sha256_file(built.out / f.path) == f.sha256 and (built.out / f.path).stat().st_size == f.size
    assert m.model == {"name": "ranker", "version": "2026.11.0"}
    rev = m.git["revision"]
    assert isinstance(rev, str)
    assert (m.data["seed"] and len(rev) in (40, 7)) or rev == "unknown"
    assert m.compute_capabilities == ["8.0", "8.6", "8.9", "9.0"]
    assert m.tensorrt_version == "10.8.0" and m.triton["release"] == "25.01" and m.triton["version"] == "2.54.0"
    assert [t.name for t in m.signature.inputs] == ["sparse_ids", "dense"] and m.signature.outputs[0].name == "score"
    assert 0 <= m.metrics.validation_auc <= 1 and m.metrics.parity
    assert m.benchmark.status == "not-run" and m.benchmark.qps_per_gpu == {}
    # not built here: no invented hashes, and the Jobs that build them are named
    for e in m.engines.values():
        assert e.status == "not-built" and e.sha256 is None and e.size is None
        assert "not built here" in (e.reason or "") and e.build_jobs
        assert not (built.out / e.file).exists()


def test_fresh_build_verifies(built: BuildResult):
    assert verify(built.out) == []


def test_appended_byte_is_caught_by_size(repo: Path):
    with open(repo / "ranker_onnx/1/model.onnx", "ab") as f:
        f.write(b"x")
    problems = verify(repo)
    assert len(problems) == 1 and problems[0].startswith("ranker_onnx/1/model.onnx: size")


def test_same_size_edit_is_caught_by_hash(repo: Path):
    p = repo / "ranker_trt/config.pbtxt"
    p.write_text(p.read_text().replace("8.0", "7.5"))  # same length, different content
    problems = verify(repo)
    assert len(problems) == 1 and problems[0].startswith("ranker_trt/config.pbtxt: sha256")


def test_missing_and_unexpected_files(repo: Path):
    (repo / "ranker_py/1/model.py").unlink()
    (repo / "ranker_onnx/2").mkdir()
    (repo / "ranker_onnx/2/model.onnx").write_bytes(b"not a model")
    problems = verify(repo)
    assert "ranker_py/1/model.py: missing" in problems
    assert any(p.startswith("ranker_onnx/2/model.onnx: unexpected file") for p in problems)


def test_no_manifest_is_not_a_release(repo: Path):
    (repo / MANIFEST).unlink()
    assert verify(repo) == [f"{MANIFEST}: missing (an unfinished build, or not a model repository): {repo}"]


def test_signature_mismatch_is_caught_even_with_a_matching_hash(repo: Path):
    # Rewrite a config and the ONNX graph *and* their manifest entries: hashes match, signatures do not.
    cfg = repo / "ranker_onnx/config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 4096", "max_batch_size: 512"))
    model = onnx.load(str(repo / "ranker_onnx/1/model.onnx"))
    model.graph.input[1].name = "dense_features"
    for n in model.graph.node:
        n.input[:] = ["dense_features" if i == "dense" else i for i in n.input]
    onnx.save(model, str(repo / "ranker_onnx/1/model.onnx"))
    m = load_manifest(repo)
    for f in m.files:
        if f.path in ("ranker_onnx/config.pbtxt", "ranker_onnx/1/model.onnx"):
            f.sha256, f.size = sha256_file(repo / f.path), (repo / f.path).stat().st_size
    write_manifest(repo, m)
    problems = verify(repo)
    assert any(p.startswith("ranker_onnx/config.pbtxt: max_batch_size 512") for p in problems)
    assert any(p.startswith("ranker_onnx/1/model.onnx: ONNX signature") for p in problems)


def test_engine_added_by_a_job_needs_a_matching_record(repo: Path):
    m = load_manifest(repo)
    e = m.engines["9.0"]
    engine = repo / e.file
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"serialized engine bytes")
    problems = verify(repo)
    assert problems == [f"{e.file}: engine present but its record {e.record} is missing"]
    src = m.file(e.onnx)
    assert src is not None
    record: dict[str, object] = {
        "compute_capability": "9.0",
        "file": e.file,
        "sha256": sha256_file(engine),
        "size": engine.stat().st_size,
        "tensorrt_version": e.tensorrt_version,
        "onnx_sha256": src.sha256,
        "built_on": "NVIDIA H100 80GB HBM3",
        "device_compute_capability": "9.0",
        "hardware_compatibility": "NONE",
        "version_compatible": False,
        "profile": e.profile,
        "parity": [],
        "built_at": "2026-11-24T00:00:00+00:00",
    }
    (repo / e.record).parent.mkdir(parents=True)
    (repo / e.record).write_text(json.dumps(record))
    assert verify(repo) == []
    engine.write_bytes(b"another engine, same key")
    assert verify(repo) == [f"{e.file}: does not match its record {e.record} (sha256/size)"]
    record.update(sha256=sha256_file(engine), size=engine.stat().st_size, tensorrt_version="10.7.0")
    (repo / e.record).write_text(json.dumps(record))
    assert any("TensorRT 10.7.0" in p for p in verify(repo))


def test_schema_rejects_paths_outside_the_repository(built: BuildResult):
    doc = json.loads((built.out / MANIFEST).read_text())
    doc["files"][0]["path"] = "../etc/passwd"
    with pytest.raises(ValueError):
        Manifest.model_validate(doc)


def test_manifest_write_is_atomic_and_leaves_no_temp_files(repo: Path):
    m = load_manifest(repo)
    write_manifest(repo, m)
    assert not list(repo.glob(".manifest-*"))
    assert verify(repo) == []
    shutil.rmtree(repo)


def test_engines_available_reads_records_from_any_store(repo: Path):
    from model_build.manifest import engines_available

    m = load_manifest(repo)

    def read(rel: str) -> bytes | None:
        return (repo / rel).read_bytes() if (repo / rel).is_file() else None

    assert engines_available(m, read) == dict.fromkeys(m.compute_capabilities, "missing")
    e = m.engines["8.9"]
    src = m.file(e.onnx)
    assert src is not None
    record = {
        "compute_capability": "8.9",
        "file": e.file,
        "sha256": "0" * 64,
        "size": 1,
        "tensorrt_version": e.tensorrt_version,
        "onnx_sha256": src.sha256,
        "built_on": "NVIDIA L4",
        "device_compute_capability": "8.9",
        "hardware_compatibility": "NONE",
        "version_compatible": False,
        "profile": e.profile,
        "built_at": "2026-11-24T00:00:00+00:00",
    }
    store = {e.record: json.dumps(record).encode()}
    assert engines_available(m, store.get)["8.9"] == "added-by-job"
    store[e.record] = json.dumps(record | {"onnx_sha256": "1" * 64}).encode()  # built from another graph
    assert engines_available(m, store.get)["8.9"] == "missing"
