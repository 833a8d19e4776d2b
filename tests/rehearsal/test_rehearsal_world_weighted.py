"""The rehearsal backend from hand-made declared resources (weighted routing), cleanup after an exception, and
the bad-input paths that must stop before any process starts (a port in use, a corrupted model artifact).
A separate module from test_rehearsal_world so the two worlds do not run at the same time on 2 cores."""

from __future__ import annotations

import shutil
import socket
from functools import partial

import numpy as np
import pytest

from drills.rehearsal.pod import fetch_declared
from drills.rehearsal.procs import PortInUse, ProcessError, free_port_block, pid_alive
from drills.rehearsal.repo import ArtifactError, prepare_serving_repo, upload_tree
from drills.rehearsal.world import LB_NET, Scale, World, plain_publisher
from infra.config import load_fleet
from model_build.signing import manifest_digest
from tests.rehearsal.conftest import declared_pods, pod_for
from tests.signing import tamper_consistently

PRIMARY, SECONDARY = "us-east-1", "us-west-2"


@pytest.fixture(scope="module")
def fleet(stacks_dir):
    return load_fleet("staging", stacks_dir)  # the tiny build pinned


# ---------------------------------------------------------------- hand-made declared resources
def hand_made(weights: dict[str, int]) -> list[dict]:
    """Declared resources shaped like infra.mocks' records, weighted mode, for the translator and the DNS model."""
    short = {"us-east-1": "use1", "us-west-2": "usw2"}
    out = [
        {"type": "aws:route53/zone:Zone", "name": "zone", "id": "ZHAND", "inputs": {"name": "staging.shop.example.com"}}
    ]
    for r, w in weights.items():
        lb = f"lb-{short[r]}.{r}.elb.amazonaws.com"
        bucket = f"hand-{short[r]}-artifacts"
        out += [
            {
                "type": "aws:route53/healthCheck:HealthCheck",
                "name": f"hc-{r}",
                "id": f"hc-id-{r}",
                "inputs": {
                    "type": "HTTPS",
                    "fqdn": lb,
                    "port": 443,
                    "resourcePath": "/v2/health/ready",
                    "requestInterval": 10,
                    "failureThreshold": 3,
                    "tags": {"region": r},
                },
            },
            {
                "type": "aws:route53/record:Record",
                "name": f"rec-{r}",
                "id": f"rec-{r}",
                "inputs": {
                    "zoneId": "ZHAND",
                    "name": "ranker.staging.shop.example.com",
                    "type": "A",
                    "setIdentifier": r,
                    "weightedRoutingPolicies": [{"weight": w}],
                    "healthCheckId": f"hc-id-{r}",
                    "aliases": [{"name": lb, "zoneId": "Z35SXDOTRQ7X7K", "evaluateTargetHealth": True}],
                },
            },
            {"type": "aws:s3/bucket:Bucket", "name": f"b-{r}", "id": bucket, "region": r, "inputs": {"bucket": bucket}},
            {
                "type": "aws:s3/bucketVersioning:BucketVersioning",
                "name": f"v-{r}",
                "region": r,
                "inputs": {"bucket": bucket, "versioningConfiguration": {"status": "Enabled"}},
            },
        ]
    for r in weights:
        bucket = f"hand-{short[r]}-artifacts"
        out.append(
            {
                "type": "aws:s3/bucketReplicationConfig:BucketReplicationConfig",
                "name": f"repl-{r}",
                "region": r,
                "inputs": {
                    "bucket": bucket,
                    "role": "arn:aws:iam::123456789012:role/r",
                    "rules": [
                        {
                            "id": f"to-{o}",
                            "priority": i + 1,
                            "status": "Enabled",
                            "filter": {},
                            "deleteMarkerReplication": {"status": "Disabled"},
                            "destination": {"bucket": f"arn:aws:s3:::hand-{short[o]}-artifacts"},
                        }
                        for i, o in enumerate(x for x in weights if x != r)
                    ],
                },
            }
        )
    return out + declared_pods(load_fleet("staging"))  # what each region's Triton pods run


def test_weighted_world_from_hand_made_records_and_cleanup_after_an_exception(fleet, model_dir, tmp_path):
    w = World(
        fleet,
        model_dir=model_dir,
        workdir=tmp_path / "w",
        declared=hand_made({PRIMARY: 3, SECONDARY: 1}),
        scale=Scale.ci(),
        seed=3,
        publisher=plain_publisher,
    )
    with pytest.raises(RuntimeError, match="drill blew up"), w:
        assert w.moto is not None and w.moto.child is not None
        pids = [p for t in w.serving.servers().values() for p in t.pids()] + [w.moto.child.pid]
        assert w.route53.get_weights() == {PRIMARY: 3, SECONDARY: 1}
        assert w.route53.routing() == pytest.approx({PRIMARY: 0.75, SECONDARY: 0.25})
        answers = w.route53.resolve(200)
        assert 0.6 < answers.count(PRIMARY) / 200 < 0.9
        w.route53.set_weights({PRIMARY: 0, SECONDARY: 1})
        assert w.route53.routing() == {SECONDARY: 1.0}
        w.reapply(hand_made({PRIMARY: 1, SECONDARY: 1}))  # what a re-applied global stack does
        assert w.route53.get_weights() == {PRIMARY: 1, SECONDARY: 1}
        assert w.route53.routing() == {PRIMARY: 0.5, SECONDARY: 0.5}
        # Weighted traffic reaches both regions through the DNS name.
        lg = w.traffic.loadgen(rate=50, count=100, clients=16, timeout=1.0)
        recs = lg.run()
        assert all(r.ok for r in recs) and {r.region for r in recs} == {PRIMARY, SECONDARY}
        # A corrupted object in a bucket is never served.
        s3 = w.moto.client("s3")
        upload_tree(s3, w.buckets[PRIMARY], "models/tampered/1", model_dir)
        s3.put_object(Bucket=w.buckets[PRIMARY], Key="models/tampered/1/ranker_onnx/1/model.onnx", Body=b"evil")
        fetch = partial(fetch_declared, pod_for(fleet, PRIMARY), bucket=w.buckets[PRIMARY], region=PRIMARY)
        fetch(prefix="models/tampered/1", version="1", dest=tmp_path / "tampered", endpoint=w.moto.endpoint)
        with pytest.raises(ArtifactError, match="refusing to serve"):
            prepare_serving_repo(
                tmp_path / "tampered", tmp_path / "tampered-repo", pod_for(fleet, PRIMARY), manifest_digest(model_dir)
            )
        # Nor is a consistent tampered pair (the model changed and its hash rewritten in the manifest): every file
        # matches its manifest, but the manifest is not the digest the stack pins. The regions serve on, unchanged.
        forged = tamper_consistently(shutil.copytree(model_dir, tmp_path / "forged"))
        upload_tree(s3, w.buckets[PRIMARY], "models/forged/1", forged)
        fetch(prefix="models/forged/1", version="1", dest=tmp_path / "forged-synced", endpoint=w.moto.endpoint)
        pinned = fleet.regions[PRIMARY].model.digests[fleet.regions[PRIMARY].model.version]
        with pytest.raises(ArtifactError, match="is not the digest the stack pins for this version"):
            prepare_serving_repo(tmp_path / "forged-synced", tmp_path / "forged-repo", pod_for(fleet, PRIMARY), pinned)
        assert not (tmp_path / "forged-repo").exists()
        assert all(r.ok for r in w.traffic.loadgen(rate=50, count=50, clients=8, timeout=1.0).run())
        raise RuntimeError("drill blew up")
    assert not w.sup.leftovers() and not any(pid_alive(p) for p in pids)


def test_port_in_use_stops_before_anything_starts(fleet, model_dir, tmp_path):
    base = free_port_block(5, ["127.0.0.1", f"{LB_NET}1", f"{LB_NET}2"])
    with socket.socket() as s:
        s.bind((f"{LB_NET}2", base + 2))  # someone else's server on us-west-2's Triton HTTP port
        s.listen()
        w = World(fleet, model_dir=model_dir, workdir=tmp_path / "w", declared=[], base_port=base, scale=Scale.ci())
        with pytest.raises(
            PortInUse,
            match=rf"port {base + 2} on {LB_NET}2 is in use by another process: "
            r"stop it or pass --base-port",
        ):
            w.start()
    assert not w.sup.all_pids() and w.moto is None


def test_corrupted_model_build_output_refused_before_any_process(fleet, model_dir, tmp_path):
    src = tmp_path / "mb"
    shutil.copytree(model_dir, src)
    onnx = src / "ranker_onnx/1/model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    w = World(fleet, model_dir=src, workdir=tmp_path / "w", declared=[], scale=Scale.ci())
    with pytest.raises(ArtifactError, match=r"ranker_onnx/1/model.onnx.*refusing to serve"):
        w.start()
    assert not w.sup.all_pids()


def test_feature_batches_use_model_build_data_when_columns_match():
    from drills.rehearsal.loadgen import feature_batches

    sig = [
        {"name": "sparse_ids", "datatype": "INT32", "shape": [-1, 8]},
        {"name": "dense", "datatype": "FP32", "shape": [-1, 8]},
    ]
    (b,) = feature_batches(sig, n=1, batch=4)
    assert b["sparse_ids"].dtype == np.int32 and b["sparse_ids"].shape == (4, 8) and b["dense"].dtype == np.float32
    (s,) = feature_batches([{"name": "x", "datatype": "FP32", "shape": [-1, 3]}], n=1, batch=2)
    assert s["x"].shape == (2, 3)


def test_a_broken_regional_flag_fails_the_world_at_start_naming_it(fleet, model_dir, tmp_path):
    """A regional program whose Triton Deployment declares a bad flag: the rehearsal's Triton runs what is declared,
    so the world does not start, Triton's complaint names the flag, and nothing is left running."""
    declared = hand_made({PRIMARY: 1, SECONDARY: 1})
    for r in declared:
        if r["type"] == "kubernetes:apps/v1:Deployment":
            c = next(c for c in r["inputs"]["spec"]["template"]["spec"]["containers"] if c["name"] == "triton")
            c["args"] = [a.replace("--strict-readiness=true", "--strict-readyness=true") for a in c["args"]]
    w = World(
        fleet,
        model_dir=model_dir,
        workdir=tmp_path / "w",
        declared=declared,
        scale=Scale.ci(),
        publisher=plain_publisher,
    )
    with pytest.raises(ProcessError, match="unrecognized option '--strict-readyness=true'"):
        w.start()
    assert not w.sup.leftovers()
