"""The whole rehearsal backend at reduced scale: staging's two regions, created in moto from the offline plan of
the real Pulumi programs, two real Tritons, the health-check, DNS and replication models, and client traffic.

Timings are scaled (Scale.ci: 0.25 s health-check interval, TTL 1 s); the failure threshold and everything
else stay as declared. Every world is torn down with no process left behind, also after an exception.
"""

from __future__ import annotations

import time

import pytest
import requests

from drills.measure import Slo
from drills.rehearsal.dns import query
from drills.rehearsal.world import LB_NET, Scale, World, plain_publisher, plan_declared
from infra.config import load_fleet
from model_build.manifest import Manifest

# The Pulumi programs use deprecated pulumi_aws classes; that is for their owners, not this test.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PRIMARY, SECONDARY = "us-east-1", "us-west-2"
TOLERANCE_S = 1.0  # scheduling on 2 shared cores: probe phase, thread wake-ups, one extra probe


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture(scope="module")
def fleet(stacks_dir):
    return load_fleet("staging", stacks_dir)  # the tiny build pinned


@pytest.fixture(scope="module")
def world(fleet, model_dir, tmp_path_factory):
    declared = plan_declared(fleet)  # the global and regional programs under Pulumi mocks
    w = World(
        fleet,
        model_dir=model_dir,
        workdir=tmp_path_factory.mktemp("world"),
        declared=declared,
        scale=Scale.ci(),
        seed=7,
        publisher=plain_publisher,
    )
    with w:
        yield w
    assert not w.sup.leftovers(), "processes left behind"
    assert all(not t.shm_regions() for t in w.serving.servers().values())


def test_moto_holds_what_the_programs_declare(world, fleet):
    recs = {rr["SetIdentifier"]: rr for rr in world.route53.records()}
    assert {r: rr.get("Failover") for r, rr in recs.items()} == {PRIMARY: "PRIMARY", SECONDARY: "SECONDARY"}
    assert all(rr["AliasTarget"]["EvaluateTargetHealth"] and rr["HealthCheckId"] for rr in recs.values())
    r53 = world.moto.client("route53")
    for hid in world.health_check_ids.values():
        # Each record carries its region's calculated check over the shallow, deep and two ALB-metric checks.
        calc = r53.get_health_check(HealthCheckId=hid)["HealthCheck"]["HealthCheckConfig"]
        assert calc["Type"] == "CALCULATED" and calc["HealthThreshold"] == 4
        kids = {
            world.applied.hc_info[c]["kind"]: r53.get_health_check(HealthCheckId=c)["HealthCheck"]["HealthCheckConfig"]
            for c in calc["ChildHealthChecks"]
        }
        assert sorted(kids) == ["5xx", "deep", "latency", "shallow"]
        for kind, path in (("shallow", "/v2/health/ready"), ("deep", "/deep-health")):
            cfg = kids[kind]
            # moto keeps the declared timings; only the model runs them scaled.
            assert (cfg["RequestInterval"], cfg["FailureThreshold"]) == (10, fleet.glob.health_check.failure_threshold)
            assert cfg["ResourcePath"] == path
        assert kids["deep"]["Type"] == "HTTPS_STR_MATCH" and kids["deep"]["SearchString"] == "DEEP-OK"
        assert kids["5xx"]["Type"] == kids["latency"]["Type"] == "CLOUDWATCH_METRIC"
    stored = world.storage.replication_configs()
    for region, bucket in world.buckets.items():
        (rule,) = stored[bucket]["Rules"]
        assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}  # as declared
        assert rule["Destination"]["ReplicationTime"]["Status"] == "Enabled"  # S3 RTC, from the API
        other = world.buckets[SECONDARY if region == PRIMARY else PRIMARY]
        assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{other}"
        assert world.moto.client("s3").get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    # EKS node groups as declared, so the drills' capacity adapter can read and pre-scale them in moto.
    for region, cfg in fleet.regions.items():
        eks = world.moto.client("eks", region)
        cluster = world.clusters[region]
        groups = [
            eks.describe_nodegroup(clusterName=cluster, nodegroupName=n)["nodegroup"]
            for n in eks.list_nodegroups(clusterName=cluster)["nodegroups"]
        ]
        gpu = {
            g["tags"].get("reco-dr/gpu-pool"): g["scalingConfig"]
            for g in groups
            if g.get("tags", {}).get("reco-dr/gpu-pool")
        }
        assert gpu == {p.name: {"minSize": p.min, "desiredSize": p.desired, "maxSize": p.max} for p in cfg.gpu_pools}


def test_each_region_serves_the_model_synced_from_its_bucket(world, model_dir):
    batch = world.traffic.batches(n=1, batch=32)[0]
    for region, t in world.serving.servers().items():
        # The region's Triton is a pod behind the region's load-balancer model, which answers on the region's address.
        assert t.address == world.serving.pod_address(region) and not t.address.startswith(LB_NET)
        out = t.infer(world.traffic.model, batch)["outputs"][0]
        lb = f"http://{world.region_ip[region]}:{world.ports['http']}"
        assert requests.get(f"{lb}/v2/health/ready", timeout=5).status_code == 200
        deep = requests.get(f"{lb}/deep-health", timeout=5)
        assert deep.status_code == 200 and deep.text.startswith("DEEP-OK"), deep.text
        assert requests.get(f"{lb}/v2/repository/index", timeout=5).status_code == 404  # not on the edge
        assert out["shape"] == [32, 1] and all(0 < v < 1 for v in out["data"])
        manifest, _ = world.served_manifest(region)
        assert Manifest.model_validate(manifest) == world.manifest
        keys = [
            o["Key"]
            for o in world.moto.client("s3").list_objects_v2(Bucket=world.buckets[region], Prefix=world.model_prefix)[
                "Contents"
            ]
        ]
        assert f"{world.model_prefix}/manifest.json" in keys
        assert world.serving.ready(region) == (1, 1)
    d = world.describe()
    assert all(r["triton"]["ready_s"][0] < 30 and r["triton"]["rss_mib"] > 10 for r in d["regions"].values())


def test_dns_answers_the_primary_while_it_is_healthy(world):
    assert world.route53.health_status() == {PRIMARY: True, SECONDARY: True}
    assert world.route53.routing() == {PRIMARY: 1.0}
    assert set(world.route53.resolve(5)) == {PRIMARY}


def test_plain_regional_names_answer_their_region_even_with_its_health_check_failing(world):
    """The global stack's plain per-region names (beside the failover name) are answered from the declared records
    with their region's address, with no health gating: when PRIMARY's health check fails the failover name leaves
    it, its plain name still answers it (a resilient client decides for itself)."""
    names = world.regional_names
    assert names == {
        PRIMARY: "ranker-use1.staging.shop.example.com",
        SECONDARY: "ranker-usw2.staging.shop.example.com",
    }

    def answers() -> dict[str, tuple[list[str], str]]:
        out = {}
        for region, name in names.items():
            ips, _ttl, rcode = query(name, world.dns_address)
            out[region] = (ips, rcode)
        return out

    everyone = {r: ([world.region_ip[r]], "NOERROR") for r in names}
    assert answers() == everyone
    world.route53.set_inverted(PRIMARY, True)  # PRIMARY's health check fails (Route 53 API: nothing else moves)
    try:
        wait_for(lambda: world.route53.routing() == {SECONDARY: 1.0}, timeout=2)
        assert world.route53.health_status()[PRIMARY] is False
        assert set(world.route53.resolve(3)) == {SECONDARY}  # the failover name excludes PRIMARY
        assert answers() == everyone  # its plain name does not
    finally:
        world.route53.set_inverted(PRIMARY, False)
        wait_for(lambda: world.route53.routing() == {PRIMARY: 1.0}, timeout=2)  # as the next test expects


def test_region_outage_moves_traffic_and_loses_nothing_after_the_window(world):
    pred = world.route53.predicted_rto()
    lg = world.traffic.loadgen(rate=40, duration=6.0, clients=8, timeout=1.0)
    with lg:
        time.sleep(1.5)
        fault = world.fail_region(PRIMARY, "kill")
        lg.join()
    recs = lg.records()
    window = pred["total_s"] + TOLERANCE_S
    o = world.fleet.glob.objectives
    # The objectives judged over one TTL (one minute at full scale, shrinking with the scaled timings).
    slo = Slo(success_rate=o.success_rate, p99_ms=o.p99_ms, window_s=max(1.0, float(world.route53.ttl)))
    rto = world.route53.rto(recs, fault, PRIMARY, slo, window_limit_s=window)
    # Requests completed before the fault all succeeded (one in flight when the process died may not have).
    errors_before = [(round(r.t - fault, 3), r.error) for r in recs if r.t + r.latency_ms / 1000 < fault and not r.ok]
    assert rto["before"]["share"] == {PRIMARY: 1.0} and not errors_before, errors_before
    assert rto["after"]["share"] == {SECONDARY: 1.0} and rto["after"]["success_rate"] == 1.0
    interval = world.scale.hc_interval
    threshold = world.fleet.glob.health_check.failure_threshold
    assert (threshold - 1) * interval <= rto["detection_s"] <= threshold * interval + TOLERANCE_S
    assert rto["dns_change_s"] - rto["detection_s"] < 0.2  # health is evaluated at query time
    assert rto["all_clients_recovered_s"] <= pred["total_s"] + TOLERANCE_S
    assert rto["lost_after_window"] == 0 and rto["errors_during_failover"] > 0
    assert len(recs) >= 0.9 * 40 * 6
    assert set(world.route53.resolve(3)) == {SECONDARY}
    world.last_rto = rto  # for the figures printed by the last test


def test_canary_replication_lag_is_measured(world):
    canary = world.storage.put_canary(SECONDARY)
    got = world.storage.wait_replicated(canary, timeout=10)
    rpo = got[PRIMARY]["rpo_s"]
    assert world.scale.replication_lag <= rpo < world.scale.replication_lag + 2.0
    s3 = world.moto.client("s3")
    body = s3.get_object(Bucket=world.buckets[PRIMARY], Key=canary.key)["Body"].read()
    assert body == s3.get_object(Bucket=canary.bucket, Key=canary.key, VersionId=canary.version_id)["Body"].read()
    # No delete marker follows: the declared rules do not replicate delete markers (a delete in one region must not
    # hide the file in every region): within the time the object itself took and more, nothing lands.
    s3.delete_object(Bucket=canary.bucket, Key=canary.key)
    marker = s3.list_object_versions(Bucket=canary.bucket, Prefix=canary.key)["DeleteMarkers"][0]["VersionId"]
    dests = [world.buckets[PRIMARY]]
    assert world.storage.replicator.wait(canary.bucket, canary.key, marker, dests, timeout=rpo + 2.0) == {}
    assert not s3.list_object_versions(Bucket=world.buckets[PRIMARY], Prefix=canary.key).get("DeleteMarkers")
    assert s3.get_object(Bucket=world.buckets[PRIMARY], Key=canary.key)["Body"].read() == body
    world.last_rpo = rpo


def test_restore_fails_back_then_stall_and_inversion_fail_over(world):
    world.restore_region(PRIMARY)
    # Route 53 failover fails back once healthy again: the endpoint checks at once, the 5xx alarm the kill tripped
    # only after its evaluation periods are clean (period x periods, scaled, one more for the period's phase).
    a = world.fleet.glob.health_alarms
    failback = a.period_seconds * world.scale.time * (a.evaluation_periods + 1) + 5.0
    wait_for(lambda: world.route53.routing() == {PRIMARY: 1.0}, timeout=failback)
    t0 = time.monotonic()
    world.fail_region(PRIMARY, "stall")  # SIGSTOP: probes time out instead of being refused
    t1 = wait_for(lambda: world.route53.routing() == {SECONDARY: 1.0})
    assert t1 - t0 <= world.route53.predicted_rto()["detection_s"] + world.scale.probe_timeout + TOLERANCE_S
    world.restore_region(PRIMARY)
    wait_for(lambda: world.route53.routing() == {PRIMARY: 1.0}, timeout=failback)  # the stall's 504s tripped it too
    world.route53.set_inverted(PRIMARY, True)  # the control-plane variant: Route 53 API only
    wait_for(lambda: world.route53.routing() == {SECONDARY: 1.0}, timeout=2)
    world.route53.set_inverted(PRIMARY, False)
    # Within the failback bound, not 2 s: in one full-suite run (12 min on 2 cores) routing had not come back
    # within 2 s (cause not established; the test passed alone); the bound any failback here is held to.
    wait_for(lambda: world.route53.routing() == {PRIMARY: 1.0}, timeout=failback)
    causes = [c.cause for c in world.route53.dns_changes()]
    assert causes[0] == "start" and causes.count("health") >= 6


def test_figures(world, capsys):
    """Not an assertion: the measured figures, printed for the issue note (pytest -s shows them)."""
    d = world.describe()
    rto = getattr(world, "last_rto", {})
    with capsys.disabled():
        print(
            "\nrehearsal figures:",
            {
                "triton_ready_s": {r: v["triton"]["ready_s"] for r, v in d["regions"].items()},
                "triton_rss_mib": {r: v["triton"]["rss_mib"] for r, v in d["regions"].items()},
                "moto_ready_s": round(d["moto_ready_s"], 2),
                "timings": d["timings"],
                "rto": {
                    k: (round(v, 3) if isinstance(v, float) else v)
                    for k, v in rto.items()
                    if k.endswith("_s") or k.startswith("errors") or k in ("requests", "lost_after_window")
                },
                "latency_before": rto.get("before"),
                "latency_after": rto.get("after"),
                "rpo_s": getattr(world, "last_rpo", None),
            },
        )
