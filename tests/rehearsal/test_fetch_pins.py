"""The pods' declared fetch-model script (infra.components.triton.FETCH_SCRIPT), run under /bin/sh as the
rehearsal runs it (drills.rehearsal.pod.fetch_declared, the aws shim against a real moto_server): a restore's
fetch pins make a pod fetch the pinned S3 versions of a published version instead of the altered current
objects; pins for another version change nothing; a defect in the declared command fails the fetch."""

from __future__ import annotations

import dataclasses

import pytest

from drills.rehearsal.moto import MotoServer
from drills.rehearsal.pod import PodError, fetch_declared
from drills.rehearsal.procs import Supervisor, free_port_block
from drills.release.artifacts import parse_pins, pins_text
from infra.names import pins_key

BUCKET, REGION, MODEL = "artifacts-fetch", "us-east-1", "ranker"


def _pointer(version: str, vids: dict[str, str]) -> dict:
    return {
        "region": REGION,
        "model": MODEL,
        "version": version,
        "manifest_sha256": "ab" * 32,
        "files": {p: {"sha256": "-", "size": 1, "version_id": v} for p, v in vids.items()},
    }


def test_pins_text_round_trips_and_refuses_what_the_script_cannot_read():
    ptr = _pointer("2026.11.0", {"manifest.json": "v1", "ranker_onnx/1/model.onnx": "v2"})
    text = pins_text(ptr)
    assert text.splitlines()[0] == f"2026.11.0 {'ab' * 32}"
    assert parse_pins(text) == ("2026.11.0", "ab" * 32, {"manifest.json": "v1", "ranker_onnx/1/model.onnx": "v2"})
    ptr["files"]["manifest.json"]["version_id"] = None
    with pytest.raises(LookupError, match=r"no S3 version id for manifest\.json"):
        pins_text(ptr)
    with pytest.raises(ValueError, match="cannot split"):
        pins_text(_pointer("v", {" lead": "v1"}))


@pytest.fixture()
def moto(tmp_path, no_leftovers):
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        m = MotoServer(sup, port=free_port_block(1)).start()
        s3 = m.client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield m


def _publish(s3, version: str) -> dict[str, str]:
    vids = {}
    for rel, body in {"manifest.json": b"{}", "ranker_onnx/1/model.onnx": b"good graph"}.items():
        vids[rel] = s3.put_object(Bucket=BUCKET, Key=f"{MODEL}/{version}/{rel}", Body=body)["VersionId"]
    return vids


def test_a_restores_pins_are_what_a_pod_fetches(moto, pod, tmp_path):
    s3 = moto.client("s3", REGION)
    vids = _publish(s3, "2026.11.0")
    key = f"{MODEL}/2026.11.0/ranker_onnx/1/model.onnx"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"altered graph")  # an overwrite: a new current version

    def fetch(version: str, dest: str) -> str:
        return fetch_declared(
            pod,
            bucket=BUCKET,
            prefix=f"{MODEL}/{version}",
            version=version,
            dest=tmp_path / dest,
            region=REGION,
            endpoint=moto.endpoint,
        )

    # No pins: the current objects, altered one included (verify-model refuses it next, see test_serving_guard).
    line = fetch("2026.11.0", "unpinned")
    assert "no fetch pins" in line
    assert (tmp_path / "unpinned/ranker_onnx/1/model.onnx").read_bytes() == b"altered graph"
    # Pins for another version: ignored.
    pins = pins_key(MODEL, REGION)
    s3.put_object(Bucket=BUCKET, Key=pins, Body=pins_text(_pointer("2026.10.0", vids)).encode())
    assert "the fetch pins name 2026.10.0" in fetch("2026.11.0", "other")
    assert (tmp_path / "other/ranker_onnx/1/model.onnx").read_bytes() == b"altered graph"
    # A restore's pins for this version: every file at its pinned S3 version; nothing under the prefix written.
    s3.put_object(Bucket=BUCKET, Key=pins, Body=pins_text(_pointer("2026.11.0", vids)).encode())
    assert "2 files at the S3 versions a restore pinned" in fetch("2026.11.0", "pinned")
    assert (tmp_path / "pinned/ranker_onnx/1/model.onnx").read_bytes() == b"good graph"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"altered graph"  # evidence stays current
    # A pinned version id that does not exist: the fetch fails with the CLI's words, the pod does not start.
    s3.put_object(Bucket=BUCKET, Key=pins, Body=b"2026.11.0 x\nnot-a-version ranker_onnx/1/model.onnx\n")
    with pytest.raises(PodError, match="fetch-model exited"):
        fetch("2026.11.0", "bad-pin")


def test_a_defect_in_the_declared_fetch_command_fails_the_rehearsal(moto, pod, tmp_path):
    _publish(moto.client("s3", REGION), "2026.11.0")
    script = pod.fetch[2].replace("--exact-timestamps", "--exact-timestamp")  # a typo in a declared flag
    broken = dataclasses.replace(pod, fetch=(*pod.fetch[:2], script, *pod.fetch[3:]))
    with pytest.raises(PodError, match="Unknown options: --exact-timestamp"):
        fetch_declared(
            broken,
            bucket=BUCKET,
            prefix=f"{MODEL}/2026.11.0",
            version="2026.11.0",
            dest=tmp_path / "d",
            region=REGION,
            endpoint=moto.endpoint,
        )
