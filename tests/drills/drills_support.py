"""Test backend for the drills: moto (Route 53, S3, EKS) + the adapters' test implementations + fake Tritons.

`FakeTriton` is an HTTP server on 127.0.0.1 speaking the part of Triton's V2 protocol the probes use
(health, model metadata, inference) that a test can flip to fail. `build_test_backend` seeds moto the way the
Pulumi programs would have left AWS (buckets with versioning and replication, manifests, EKS clusters and GPU
node groups, the global stack's records and health checks through the LocalStackAdapter's applier) and
returns a drills Backend. The caller must have moto's mock active.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import yaml

from drills.adapters.base import Backend
from drills.adapters.capacity import EksCapacity, StaticPods
from drills.adapters.faults import CompositeFaults, HealthCheckInversion
from drills.adapters.local_stack import LocalStackAdapter, route53_applier
from drills.adapters.probes import PolicyResolver, TritonHttpProbe
from drills.adapters.route53 import HealthModel, ModelledRoute53
from drills.adapters.s3 import ReplicatingS3
from drills.clock import Clock
from infra.config import load_fleet
from model_build.manifest import Manifest
from tests.manifests import manifest
from tests.signing import signer_config

ROOT = Path(__file__).resolve().parents[2]
# Fast drill parameters for the fake clock: fewer clients and polls, short holds.
FAST = {
    "steps": 2,
    "hold_seconds": 60,
    "poll_seconds": 5,
    "probe_clients": 4,
    "min_samples": 10,
    "slo_window_seconds": 30,
}
METADATA = {
    "name": "ranker",
    "versions": ["1"],
    "platform": "python",
    "inputs": [
        {"name": "dense", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "item_ids", "datatype": "INT32", "shape": [-1, 2]},
    ],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
}


class FakeTriton:
    """A flippable stand-in for one region's Triton behind its load balancer."""

    def __init__(self, region: str):
        self.region = region
        self.ready = True
        self.fail_infer = False
        self.latency = 0.0
        self.requests = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                outer.requests += 1
                if self.path == "/v2/health/ready":
                    self._send(200 if outer.ready else 503)
                elif self.path == "/v2/health/live":
                    self._send(200)
                elif self.path == "/v2/models/ranker":
                    self._send(200, METADATA)
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                outer.requests += 1
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if outer.latency:
                    time.sleep(outer.latency)
                if not outer.ready or outer.fail_infer:
                    self._send(503, {"error": "unavailable"})
                elif self.path != "/v2/models/ranker/infer" or {i["name"] for i in body.get("inputs", [])} != {
                    "dense",
                    "item_ids",
                }:
                    self._send(400, {"error": "bad request"})
                else:
                    self._send(
                        200,
                        {
                            "model_name": "ranker",
                            "outputs": [{"name": "score", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}],
                        },
                    )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ServerFaults:
    """FaultAdapter over FakeTritons: the data-plane faults a test can make."""

    kinds = ("triton-down", "not-ready")

    def __init__(self, servers: dict[str, FakeTriton]):
        self.servers = servers

    def prepare(self, region: str, kind: str) -> dict:
        return {"ready": self.servers[region].ready}

    def inject(self, region: str, kind: str, handle: dict) -> None:
        self.servers[region].ready = False

    def clear(self, region: str, kind: str, handle: dict) -> None:
        self.servers[region].ready = handle.get("ready", True)


# The release tooling's egress range the copies declare (stacks/ declares none: an operator sets theirs), so releases
# plan with the track-header pins they score through.
TOOLING_CIDRS = ["10.250.0.0/16"]


def copy_stacks(
    dst: Path, env_overrides: dict[str, dict] | None = None, uid: str | None = None, release_tooling: bool = True
) -> Path:
    """A copy of stacks/ with per-stack config overrides ({stack: {key: value}} without the namespace). `uid`
    puts every environment under its own hosted zone, so tests sharing one moto do not see each other's records.
    `release_tooling`: every regional stack declares TOOLING_CIDRS as load_balancer.release_tooling_cidrs."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(f, dst / f.name)
        doc = yaml.safe_load((dst / f.name).read_text())
        if uid and f.name.endswith("-global.yaml"):
            doc["config"]["reco-dr:zone"]["name"] = f"{uid}.{doc['config']['reco-dr:zone']['name']}"
        if "reco-dr:model" in doc["config"]:  # releases in tests are signed by the test signer
            doc["config"]["reco-dr:model"]["signer"] = signer_config()
        if release_tooling and "reco-dr:load_balancer" in doc["config"]:
            doc["config"]["reco-dr:load_balancer"]["release_tooling_cidrs"] = TOOLING_CIDRS
        (dst / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    for stack, values in (env_overrides or {}).items():
        p = dst / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(p.read_text())
        for k, v in values.items():
            doc["config"][f"reco-dr:{k}"] = v
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def manifest_for(fleet: Any, ccs: list[str] | None = None, version: str | None = None) -> Manifest:
    """The fleet's model (or `version`) with an engine built for each of `ccs` (default: every GPU in the fleet)."""
    ccs = ccs if ccs is not None else fleet.compute_capabilities
    return manifest(version or next(iter(fleet.regions.values())).model.version, built=ccs)


def seed_aws(
    fleet: Any, stacks: LocalStackAdapter, manifests: Mapping[str, Manifest | dict | None] | None = None, uid: str = "t"
) -> dict[str, dict]:
    """Create in moto what the regional programs would have created, and the regional stacks' outputs.
    Names carry `uid` so tests can share one moto (its EC2 backend, which EKS node groups touch, is slow to
    create). `manifests`: per region, the manifest its bucket holds for the version it serves (default
    `manifest_for(fleet)`; None: none; a dict is written as it is, for a manifest that does not validate)."""
    outputs = {}
    for region, cfg in fleet.regions.items():
        stack = fleet.stack_names[region]
        bucket = f"reco-dr-{uid}-{stack}-artifacts"
        cluster = f"reco-dr-{uid}-{stack}"
        s3 = boto3.client("s3", region_name=region)
        kw = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **kw)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        eks = boto3.client("eks", region_name=region)
        eks.create_cluster(
            name=cluster, roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={"subnetIds": ["subnet-1"]}
        )
        for p in cfg.gpu_pools:
            eks.create_nodegroup(
                clusterName=cluster,
                nodegroupName=f"gpu-{p.name}-20261101",
                nodeRole="arn:aws:iam::123456789012:role/node",
                subnets=["subnet-1"],
                scalingConfig={"minSize": p.min, "desiredSize": p.desired, "maxSize": p.max},
                instanceTypes=[p.instance_type],
                tags={"reco-dr/gpu-pool": p.name},
            )
        out = {
            "region": region,
            "cluster_name": cluster,
            "lb_dns_name": f"{uid}-{stack}-alb.{region}.elb.amazonaws.com",
            "lb_zone_id": "Z35SXDOTRQ7X7K",
            "bucket_name": bucket,
            "bucket_arn": f"arn:aws:s3:::{bucket}",
            "kms_key_arn": f"arn:aws:kms:{region}:123456789012:key/k",
            "triton_image": cfg.triton.image,
            "model_version": cfg.model.version,
            "gpu_pools": [
                {
                    "name": p.name,
                    "instance_type": p.instance_type,
                    "gpu_model": p.gpu.gpu_model,
                    "gpus_per_instance": p.gpu.gpus,
                    "compute_capability": p.gpu.compute_capability,
                    "min": p.min,
                    "desired": p.desired,
                    "max": p.max,
                }
                for p in cfg.gpu_pools
            ],
        }
        stacks.seed_outputs(stack, out)
        outputs[region] = out
    for region, out in outputs.items():  # every bucket replicates to every other (the global stack's mesh)
        rules = [
            {
                "ID": f"to-{d}",
                "Priority": i,
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "DeleteMarkerReplication": {"Status": "Enabled"},
                "Destination": {"Bucket": outputs[d]["bucket_arn"]},
            }
            for i, d in enumerate(sorted(outputs))
            if d != region
        ]
        boto3.client("s3", region_name=region).put_bucket_replication(
            Bucket=out["bucket_name"],
            ReplicationConfiguration={"Role": "arn:aws:iam::123456789012:role/replication", "Rules": rules},
        )
        doc = manifests.get(region, manifest_for(fleet)) if manifests is not None else manifest_for(fleet)
        if doc is not None:
            cfg = fleet.regions[region]
            boto3.client("s3", region_name=region).put_object(
                Bucket=out["bucket_name"],
                Key=f"{cfg.model.name}/{cfg.model.version}/manifest.json",
                Body=doc.model_dump_json().encode() if isinstance(doc, Manifest) else json.dumps(doc).encode(),
            )
    return outputs


def build_test_backend(
    env: str,
    stacks_dir: Path,
    state_dir: Path,
    clock: Clock,
    *,
    clients: int = 4,
    replication_lag: float = 40.0,
    manifests: Mapping[str, Manifest | dict | None] | None = None,
    servers: dict[str, FakeTriton] | None = None,
    seed: bool = True,
    uid: str = "t",
) -> Backend:
    fleet = load_fleet(env, stacks_dir)
    r53 = boto3.client("route53", region_name="us-east-1")
    stacks = LocalStackAdapter(stacks_dir, state_dir / "stackstate", appliers={"global": route53_applier(r53)})
    outputs = (
        seed_aws(fleet, stacks, manifests, uid)
        if seed
        else {r: stacks.outputs(s) for r, s in fleet.stack_names.items()}
    )
    g = stacks.up(fleet.global_stack, "seed")["outputs"]
    own = servers is None
    servers = servers or {r: FakeTriton(r) for r in fleet.regions}
    endpoints = {r: s.url for r, s in servers.items()}
    probe_ready = TritonHttpProbe(endpoints, "ranker", clock, timeout=1.0)
    hc = fleet.glob.health_check
    model = HealthModel(clock, hc.request_interval, hc.failure_threshold, lambda region: probe_ready.ready(region).ok)
    for r in sorted(fleet.regions):
        model.watch(r)
    route53 = ModelledRoute53(
        r53,
        g["zone_id"],
        fleet.glob.fqdn,
        {r: o["lb_dns_name"] for r, o in outputs.items()},
        model,
        g["health_check_ids"],
    )
    s3 = ReplicatingS3(
        {r: boto3.client("s3", region_name=r) for r in fleet.regions},
        {r: o["bucket_name"] for r, o in outputs.items()},
        {r: (c.model.name, c.model.version) for r, c in fleet.regions.items()},
        clock,
        lag=lambda s, d: replication_lag,
    )
    capacity = EksCapacity(
        {r: boto3.client("eks", region_name=r) for r in fleet.regions},
        {r: o["cluster_name"] for r, o in outputs.items()},
        StaticPods(dict.fromkeys(fleet.regions, 2)),
    )
    resolver = PolicyResolver(route53.dns_answer, endpoints, clock, fleet.glob.ttl, clients=clients)
    probes = TritonHttpProbe(endpoints, "ranker", clock, resolver, timeout=1.0)
    faults = CompositeFaults(ServerFaults(servers), HealthCheckInversion(route53))
    b = Backend(
        "test",
        {"stacks_dir": str(stacks_dir), "state_dir": str(state_dir)},
        stacks,
        route53,
        s3,
        capacity,
        probes,
        faults,
        extras={"servers": servers, "health_model": model, "r53": r53, "outputs": outputs},
    )
    b.closers.append(model.stop)
    if own:

        def stop_servers() -> None:
            for s in servers.values():
                s.stop()

        b.closers.append(stop_servers)
    return b
