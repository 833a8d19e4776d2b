"""Adapters one by one: Triton probes against local HTTP servers, the Automation API adapter against a fake
Stack, the file-backed stack adapter, Route 53 / S3 / EKS on moto, the health-check model, locks, EKS tokens."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import yaml

from drills.adapters.base import RecordState
from drills.adapters.capacity import EksCapacity, StaticPods, pool_of
from drills.adapters.faults import KubernetesFaults
from drills.adapters.kube import eks_token
from drills.adapters.local_stack import LocalStackAdapter, parse_path, route53_applier
from drills.adapters.probes import PolicyResolver, TritonHttpProbe, infer_body
from drills.adapters.pulumi_stack import AutomationStackAdapter
from drills.adapters.route53 import Boto3Route53, HealthModel, policy_answer
from drills.adapters.s3 import ReplicatingS3
from drills.checks import window_stats
from drills.errors import DrillError, GuardrailError
from drills.journal import Journal, host
from drills.lock import Lock, lock_path, lock_status
from drills.measure import percentile
from tests.drills.drills_support import FakeTriton, copy_stacks


# ---------------------------------------------------------------- probes
@pytest.fixture
def servers():
    s = {r: FakeTriton(r) for r in ("a", "b")}
    yield s
    for x in s.values():
        x.stop()


def test_triton_probe_ready_infer_and_failures(servers, clock):
    p = TritonHttpProbe({r: s.url for r, s in servers.items()}, "ranker", clock)
    assert p.ready("a").ok and p.infer("a").ok  # the body was built from the model's metadata
    servers["a"].ready = False
    r = p.ready("a")
    assert not r.ok and r.status == 503 and r.error == "HTTP 503"
    assert not p.infer("a").ok
    servers["b"].latency = 0.05
    res = [p.infer("b") for _ in range(5)]
    st = window_stats(res)
    assert st["success_rate"] == 1.0 and st["p50_ms"] >= 50 and st["p99_ms"] >= st["p50_ms"]
    servers["b"].stop()
    dead = p.infer("b")
    assert not dead.ok and dead.status is None and "Error" in (dead.error or "")


def test_infer_body_follows_the_model_signature():
    body = infer_body(
        {
            "inputs": [
                {"name": "dense", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "ids", "datatype": "INT32", "shape": [-1, 2]},
                {"name": "q", "datatype": "BYTES", "shape": [1]},
            ]
        }
    )
    assert body == {
        "inputs": [
            {"name": "dense", "shape": [1, 3], "datatype": "FP32", "data": [0.0] * 3},
            {"name": "ids", "shape": [1, 2], "datatype": "INT32", "data": [0, 0]},
            {"name": "q", "shape": [1], "datatype": "BYTES", "data": [""]},
        ]
    }


def test_policy_resolver_caches_per_client_for_the_ttl(servers, clock):
    answer = {"a": 1.0}
    res = PolicyResolver(lambda: dict(answer), {r: s.url for r, s in servers.items()}, clock, ttl=60, clients=4)
    assert [res.resolve(c)[0] for c in range(4)] == ["a"] * 4
    answer.clear()
    answer["b"] = 1.0
    clock.advance(16)  # client 0's first expiry is staggered to ttl/4
    assert [res.resolve(c)[0] for c in range(4)] == ["b", "a", "a", "a"]
    clock.advance(45)
    assert [res.resolve(c)[0] for c in range(4)] == ["b"] * 4
    answer.clear()
    clock.advance(61)
    assert res.resolve(0) == (None, None)  # no answer: the request fails like NXDOMAIN


def test_percentile_is_nearest_rank():
    assert percentile([], 99) is None
    assert percentile(list(range(1, 101)), 99) == 99 and percentile(list(range(1, 101)), 50) == 50
    assert percentile([5.0], 99) == 5.0


# ---------------------------------------------------------------- Automation API adapter (fake Stack)
class FakeStack:
    def __init__(self, name):
        self.name, self.calls = name, []
        self.config = {
            "reco-dr:routing.regions.us-east-1.weight": "40",
            "reco-dr:routing.regions.us-east-1.failover": "PRIMARY",
        }

    def get_config(self, key, *, path=False):
        from pulumi.automation import ConfigValue

        self.calls.append(("get_config", key, path))
        return ConfigValue(self.config[key])

    def set_all_config(self, config, *, path=False):
        self.calls.append(("set_all_config", {k: (v.value, v.secret) for k, v in config.items()}, path))

    def preview(self, on_output=None):
        self.calls.append(("preview",))
        return type("P", (), {"change_summary": {"same": 12, "update": 1}})()

    def up(self, message=None, on_output=None):
        from pulumi.automation import OutputValue

        self.calls.append(("up", message))
        summary = type("S", (), {"resource_changes": {"same": 12, "update": 1}})()
        return type("U", (), {"summary": summary, "outputs": {"zone_id": OutputValue("Z123", False)}})()

    def outputs(self):
        from pulumi.automation import OutputValue

        return {"weights": OutputValue({"us-east-1": 40}, False)}


def test_automation_adapter_sets_namespaced_path_keys():
    made = {}

    def select(stack_name, work_dir):
        made[stack_name] = (FakeStack(stack_name), work_dir)
        return made[stack_name][0]

    a = AutomationStackAdapter(Path("/repo"), org="acme", select=select)
    a.set_config("prod-global", {"routing.regions.us-east-1.weight": 20, "routing.regions.us-west-2.weight": 45})
    st, work_dir = made["acme/prod-global"]
    assert work_dir == "/repo"
    assert st.calls[-1] == (
        "set_all_config",
        {
            "reco-dr:routing.regions.us-east-1.weight": ("20", False),
            "reco-dr:routing.regions.us-west-2.weight": ("45", False),
        },
        True,
    )
    assert a.get_config("prod-global", "routing.regions.us-east-1.weight") == 40  # decoded to the int the file holds
    assert a.get_config("prod-global", "routing.regions.us-east-1.failover") == "PRIMARY"
    assert st.calls[-1] == ("get_config", "reco-dr:routing.regions.us-east-1.failover", True)
    assert a.preview("prod-global") == {"same": 12, "update": 1}
    assert a.up("prod-global", "drill x: shift-1") == {
        "summary": {"same": 12, "update": 1},
        "outputs": {"zone_id": "Z123"},
    }
    assert ("up", "drill x: shift-1") in st.calls
    assert a.outputs("prod-global") == {"weights": {"us-east-1": 40}}
    a.set_config("prod-usw2", {"gpu_pools[0].desired": 2})
    assert made["acme/prod-usw2"][0].calls[-1][1] == {"reco-dr:gpu_pools[0].desired": ("2", False)}


def test_automation_adapter_uses_the_documented_select_stack_signature():
    import inspect

    from pulumi import automation as auto

    params = inspect.signature(auto.select_stack).parameters
    assert {"stack_name", "work_dir", "opts"} <= set(params)
    assert "path" in inspect.signature(auto.Stack.set_all_config).parameters
    assert "on_output" in inspect.signature(auto.Stack.up).parameters


# ---------------------------------------------------------------- file-backed stacks
def test_parse_path_follows_pulumi_grammar():
    assert parse_path("routing.regions.us-east-1.weight") == ["routing", "regions", "us-east-1", "weight"]
    assert parse_path("gpu_pools[1].desired") == ["gpu_pools", 1, "desired"]
    assert parse_path('capacity.qps_per_gpu["9.0"]') == ["capacity", "qps_per_gpu", "9.0"]


def test_local_stack_adapter_edits_validates_and_previews(tmp_path):
    stacks = copy_stacks(tmp_path / "s")
    a = LocalStackAdapter(stacks, tmp_path / "state")
    a.set_config("prod-global", {"routing.regions.us-east-1.weight": 20, 'capacity.qps_per_gpu["9.0"]': 13000})
    doc = yaml.safe_load((stacks / "Pulumi.prod-global.yaml").read_text())["config"]
    assert doc["reco-dr:routing"]["regions"]["us-east-1"] == {"weight": 20}
    assert doc["reco-dr:routing"]["regions"]["us-west-2"] == {"weight": 30}  # siblings kept
    assert doc["reco-dr:capacity"]["qps_per_gpu"]["9.0"] == 13000
    assert a.get_config("prod-global", "routing.regions.us-east-1.weight") == 20
    assert a.preview("prod-global")["update"] >= 1
    a.set_config("prod-global", {"routing.regions.us-east-1.weight": 300})  # Route 53 allows 0..255
    with pytest.raises(DrillError, match=r"pulumi up would fail.*weight"):
        a.up("prod-global", "x")


def test_route53_applier_and_boto3_adapter_on_moto(aws, tmp_path):
    stacks = copy_stacks(tmp_path / "s", uid="adp")
    r53 = boto3.client("route53", region_name="us-east-1")
    a = LocalStackAdapter(stacks, tmp_path / "state", {"global": route53_applier(r53)})
    for _region, stack in (("us-east-1", "prod-use1"), ("us-west-2", "prod-usw2"), ("eu-west-1", "prod-euw1")):
        a.seed_outputs(stack, {"lb_dns_name": f"{stack}.elb.amazonaws.com", "lb_zone_id": "Z35SXDOTRQ7X7K"})
    out = a.up("prod-global", "seed")["outputs"]
    again = a.up("prod-global", "again")["outputs"]
    assert again["health_check_ids"] == out["health_check_ids"]  # applying twice creates nothing new
    lbs: dict[str, str | None] = {
        "us-east-1": "prod-use1.elb.amazonaws.com",
        "us-west-2": "prod-usw2.elb.amazonaws.com",
        "eu-west-1": "prod-euw1.elb.amazonaws.com",
    }
    # moto answers TestDNSAnswer with 404: no samples here; no read cache, so each read sees the last `up`
    b = Boto3Route53(r53, out["zone_id"], "ranker.adp.shop.example.com", lbs, answer_samples=0, cache_seconds=0)
    recs = b.records()
    assert {r: s.weight for r, s in recs.items()} == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}
    assert {s.set_identifier for s in recs.values()} == set(lbs) and recs["us-east-1"].health_check_id == out[
        "health_check_ids"
    ]["us-east-1"]
    # Beside the routed name, one plain alias per region (infra/components/dns.py): no routing, no health check.
    zone = "adp.shop.example.com"
    assert out["regional_fqdns"] == {
        r: f"ranker-{s}.{zone}" for r, s in (("us-east-1", "use1"), ("us-west-2", "usw2"), ("eu-west-1", "euw1"))
    }
    stored = r53.list_resource_record_sets(HostedZoneId=out["zone_id"])["ResourceRecordSets"]
    plain = {rr["Name"]: rr for rr in stored if rr["Type"] == "A" and rr["Name"] != f"ranker.{zone}."}
    assert plain == {
        f"{name}.": {
            "Name": f"{name}.",
            "Type": "A",
            "AliasTarget": {"HostedZoneId": "Z35SXDOTRQ7X7K", "DNSName": lbs[r], "EvaluateTargetHealth": False},
        }
        for r, name in out["regional_fqdns"].items()
    }
    a.set_config("prod-global", {"routing.regions.us-east-1.weight": 0})
    a.up("prod-global", "shift")
    assert b.records()["us-east-1"].weight == 0
    assert b.dns_answer() == {"eu-west-1": 0.5, "us-west-2": 0.5}  # the policy over Route 53's own health verdicts
    # inversion goes through UpdateHealthCheck(Inverted=...); moto stores it
    b.set_inverted("us-west-2", True)
    assert (
        r53.get_health_check(HealthCheckId=out["health_check_ids"]["us-west-2"])["HealthCheck"]["HealthCheckConfig"][
            "Inverted"
        ]
        is True
    )
    # moto's status is a hard-coded success: the AWS adapter reads it as healthy, inverted as unhealthy
    assert b.health("us-east-1") is True and b.health("us-west-2") is False


def test_policy_answer_rules():
    w = {r: RecordState(r, r, weight=x) for r, x in {"a": 40, "b": 30, "c": 0}.items()}
    assert policy_answer(w, lambda r: True) == {"a": 40 / 70, "b": 30 / 70}
    assert policy_answer(w, lambda r: r != "a") == {"b": 1.0}
    assert policy_answer(w, lambda r: r == "c") == {"c": 1.0}  # only the zero-weight record is healthy
    assert policy_answer(w, lambda r: False) == {"a": 40 / 70, "b": 30 / 70}  # none healthy: all treated as healthy
    f = {"p": RecordState("p", "p", failover="PRIMARY"), "s": RecordState("s", "s", failover="SECONDARY")}
    assert policy_answer(f, lambda r: True) == {"p": 1.0}
    assert policy_answer(f, lambda r: r == "s") == {"s": 1.0}
    assert policy_answer(f, lambda r: False) == {"p": 1.0}


def test_health_model_detects_after_threshold_probes_and_recovers(clock):
    state = {"up": True}
    m = HealthModel(clock, interval=10, threshold=3, probe=lambda k: state["up"])
    m.watch("r")
    clock.advance(25)
    state["up"] = False  # fault at t=25; probes at 30, 40, 50 fail
    clock.advance(24)
    assert m.status("r") is True
    clock.advance(1)
    assert m.status("r") is False and m.transitions[-1][0] == clock.now()
    assert m.status("r", inverted=True) is True
    state["up"] = True
    clock.advance(30)
    assert m.status("r") is True


# ---------------------------------------------------------------- EKS, S3
def test_eks_capacity_on_moto(aws):
    eks = boto3.client("eks", region_name="us-west-2")
    eks.create_cluster(
        name="capt", roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={"subnetIds": ["s"]}
    )
    eks.create_nodegroup(
        clusterName="capt", nodegroupName="system", nodeRole="arn:aws:iam::123456789012:role/n", subnets=["s"]
    )
    eks.create_nodegroup(
        clusterName="capt",
        nodegroupName="gpu-a100-2026",
        nodeRole="arn:aws:iam::123456789012:role/n",
        subnets=["s"],
        scalingConfig={"minSize": 1, "desiredSize": 1, "maxSize": 3},
    )
    cap = EksCapacity({"us-west-2": eks}, {"us-west-2": "capt"}, StaticPods({"us-west-2": 2}))
    [g] = cap.node_groups("us-west-2")
    assert (g.pool, g.min, g.desired, g.max, g.status) == ("a100", 1, 1, 3, "ACTIVE")
    cap.set_scaling("us-west-2", "a100", min=2, desired=3)
    assert eks.describe_nodegroup(clusterName="capt", nodegroupName="gpu-a100-2026")["nodegroup"]["scalingConfig"] == {
        "minSize": 2,
        "maxSize": 3,
        "desiredSize": 3,
    }
    with pytest.raises(ValueError, match="max 3"):
        cap.set_scaling("us-west-2", "a100", desired=4)
    assert cap.triton_ready("us-west-2") == (2, 2)
    assert (
        pool_of("gpu-l40s-20261101123", None) == "l40s"
        and pool_of("x", {"reco-dr/gpu-pool": "h100"}) == "h100"
        and pool_of("system", {}) is None
    )


def test_replicating_s3_model_and_version_cleanup(aws, clock):
    c = {r: boto3.client("s3", region_name=r) for r in ("us-east-1", "eu-west-1")}
    c["us-east-1"].create_bucket(Bucket="rep-src")
    c["eu-west-1"].create_bucket(Bucket="rep-dst", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for r, b in (("us-east-1", "rep-src"), ("eu-west-1", "rep-dst")):
        c[r].put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    c["us-east-1"].put_bucket_replication(
        Bucket="rep-src",
        ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/r",
            "Rules": [
                {
                    "ID": "x",
                    "Priority": 1,
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "DeleteMarkerReplication": {"Status": "Disabled"},
                    "Destination": {"Bucket": "arn:aws:s3:::rep-dst"},
                }
            ],
        },
    )
    s3 = ReplicatingS3(c, {"us-east-1": "rep-src", "eu-west-1": "rep-dst"}, {}, clock, lag=lambda s, d: 30)
    s3.put_object("us-east-1", "k", b"x")
    assert s3.head("eu-west-1", "k") is None
    clock.advance(30)
    assert s3.head("eu-west-1", "k") is not None
    s3.put_object("us-east-1", "k", b"y")
    s3.delete_object("us-east-1", "k")
    assert not c["us-east-1"].list_object_versions(Bucket="rep-src", Prefix="k").get("Versions")


# ---------------------------------------------------------------- Kubernetes (EKS token, scale fault)
def test_eks_token_is_a_presigned_sts_url_naming_the_cluster():
    session = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1")
    tok = eks_token(session, "eu-west-1", "reco-dr-prod-euw1")
    assert tok.startswith("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(tok[len("k8s-aws-v1.") :] + "==").decode()
    q = parse_qs(urlparse(url).query)
    assert urlparse(url).netloc == "sts.eu-west-1.amazonaws.com" and q["Action"] == ["GetCallerIdentity"]
    assert "x-k8s-aws-id" in q["X-Amz-SignedHeaders"][0] and q["X-Amz-Expires"] == ["60"]


def test_kubernetes_fault_scales_triton_to_zero_and_back():
    class Kube:
        def __init__(self):
            self.replicas = {"triton-h100": 3, "triton-l40s": 2}
            self.patches = []

        def get(self, path, **params):
            assert path == "/apis/apps/v1/namespaces/triton/deployments" and params == {
                "labelSelector": "app.kubernetes.io/name=triton"
            }
            return {"items": [{"metadata": {"name": n}, "spec": {"replicas": r}} for n, r in self.replicas.items()]}

        def patch(self, path, body):
            self.patches.append((path, body))
            self.replicas[path.split("/")[-2]] = body["spec"]["replicas"]

    k = Kube()
    f = KubernetesFaults({"us-east-1": k})
    handle = f.prepare("us-east-1", "triton-down")
    f.inject("us-east-1", "triton-down", handle)
    assert k.replicas == {"triton-h100": 0, "triton-l40s": 0}
    assert k.patches[0][0] == "/apis/apps/v1/namespaces/triton/deployments/triton-h100/scale"
    f.clear("us-east-1", "triton-down", json.loads(json.dumps(handle)))  # the handle survives the journal
    assert k.replicas == {"triton-h100": 3, "triton-l40s": 2}


# ---------------------------------------------------------------- lock
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_stale_detection_and_unfinished_drills(tmp_path, clock):
    lk = Lock.acquire(tmp_path, "prod", "d-live")
    with pytest.raises(GuardrailError) as e:
        Lock.acquire(tmp_path, "prod", "d-other")
    assert e.value.code == "lock" and "d-live" in str(e.value)
    lk.release()
    assert lock_status(tmp_path, "prod") is None
    # a dead holder whose drill did not finish: refused, naming the rollback
    j = Journal.create(tmp_path, "d-crashed", clock)
    j.write(
        "start",
        drill_id="d-crashed",
        plan={"env": "prod", "scenario": "evacuate-region", "region": "us-east-1", "steps": []},
    )
    path = lock_path(tmp_path, "prod")
    path.write_text(json.dumps({"drill_id": "d-crashed", "pid": _dead_pid(), "host": host()}))
    held = lock_status(tmp_path, "prod")
    assert held is not None and held["alive"] is False
    with pytest.raises(GuardrailError) as e:
        Lock.acquire(tmp_path, "prod", "d-new")
    assert e.value.code == "unfinished-drill" and "drills rollback d-crashed" in str(e.value)
    # its own rollback may take it over
    Lock.acquire(tmp_path, "prod", "d-crashed", takeover_of="d-crashed").release()
    # a dead holder whose drill finished: the stale lock is removed
    j.write("finished", status="completed")
    path.write_text(json.dumps({"drill_id": "d-crashed", "pid": _dead_pid(), "host": host()}))
    Lock.acquire(tmp_path, "prod", "d-new").release()


class _R53:
    """The Route 53 calls Boto3Route53.health makes, over a table of checks (moto keeps no AlarmIdentifier)."""

    def __init__(self, checks: dict[str, dict], observations: dict[str, list[str]]):
        self.checks, self.observations = checks, observations

    def get_health_check(self, HealthCheckId: str) -> dict:
        return {"HealthCheck": {"Id": HealthCheckId, "HealthCheckConfig": self.checks[HealthCheckId]}}

    def update_health_check(self, HealthCheckId: str, Inverted: bool) -> None:
        self.checks[HealthCheckId]["Inverted"] = Inverted

    def get_health_check_status(self, HealthCheckId: str) -> dict:
        cfg = self.checks[HealthCheckId]
        assert cfg["Type"] not in ("CALCULATED", "CLOUDWATCH_METRIC"), "Route 53 refuses GetHealthCheckStatus here"
        return {"HealthCheckObservations": [{"StatusReport": {"Status": s}} for s in self.observations[HealthCheckId]]}


class _CloudWatch:
    def __init__(self, states: dict[str, str]):
        self.states = states

    def describe_alarms(self, AlarmNames: list[str]) -> dict:
        return {
            "MetricAlarms": [{"AlarmName": n, "StateValue": self.states[n]} for n in AlarmNames if n in self.states]
        }


def test_the_aws_adapter_evaluates_a_calculated_check_from_its_children():
    """GetHealthCheckStatus answers for endpoint checks only: a record's calculated check is evaluated from its
    children, a metric child from its alarm's state in CloudWatch (with its InsufficientDataHealthStatus)."""
    ok = ["Success: HTTP Status Code 200"] * 5
    checks: dict[str, dict[str, Any]] = {
        "shallow": {"Type": "HTTPS"},
        "deep": {"Type": "HTTPS_STR_MATCH"},
        "5xx": {
            "Type": "CLOUDWATCH_METRIC",
            "AlarmIdentifier": {"Region": "us-east-1", "Name": "a-5xx"},
            "InsufficientDataHealthStatus": "Healthy",
        },
        "calc": {"Type": "CALCULATED", "ChildHealthChecks": ["shallow", "deep", "5xx"], "HealthThreshold": 3},
    }
    r53 = _R53(checks, {"shallow": ok, "deep": ok})
    cw = _CloudWatch({"a-5xx": "INSUFFICIENT_DATA"})
    b = Boto3Route53(r53, "Z", "ranker.x", {"us-east-1": None}, {"us-east-1": "calc"}, 0, 0, lambda region: cw)
    assert b.health("us-east-1") is True  # too little data reads as healthy, as declared
    cw.states["a-5xx"] = "ALARM"
    assert b.health("us-east-1") is False
    cw.states["a-5xx"] = "OK"
    r53.observations["deep"] = ["Failure: HTTP Status Code 503"] * 5
    assert b.health("us-east-1") is False  # one failing child is enough at threshold 3 of 3
    checks["calc"]["HealthThreshold"] = 2
    assert b.health("us-east-1") is True
    b.set_inverted("us-east-1", True)
    assert b.health("us-east-1") is False
