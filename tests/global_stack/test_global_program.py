"""The global program under Pulumi mocks, with StackReference answered by realistic regional outputs."""

from __future__ import annotations

import itertools
import json

import pulumi
import pytest

from infra import mocks as m
from infra.components import replication as repl
from infra.components.dns import RegionEndpoint, regional_record_args
from infra.config import load_fleet, read_stack_file
from infra.names import regional_fqdn

HC = "aws:route53/healthCheck:HealthCheck"
RECORD = "aws:route53/record:Record"
ZONE = "aws:route53/zone:Zone"
REPL = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def region_of(plan: m.Plan, r: m.ResourceRecord) -> str:
    """The region of the explicit AWS provider `r` was declared with."""
    p = plan.provider_of(r)
    assert p is not None and p.type == "pulumi:providers:aws", f"{r.type} {r.name} has no explicit AWS provider"
    return p.inputs["region"]


def outputs_by_region(env: str) -> dict[str, dict]:
    fleet = load_fleet(env)
    return {r: m.regional_outputs(s) for r, s in fleet.stack_names.items()}


def routed(plan: m.Plan) -> list[m.ResourceRecord]:
    """The weighted/failover records of `<record>.<zone>` (they carry a set identifier)."""
    return [r for r in plan.of_type(RECORD) if "setIdentifier" in r.inputs]


def plain(plan: m.Plan) -> list[m.ResourceRecord]:
    """The plain per-region records (simple routing: no set identifier)."""
    return [r for r in plan.of_type(RECORD) if "setIdentifier" not in r.inputs]


def checks_of_kind(plan: m.Plan, kind: str) -> list[m.ResourceRecord]:
    """A region's health checks of one kind (infra.health.CHILD_KINDS, or "calculated": the record's), by their tag."""
    return [h for h in plan.of_type(HC) if h.inputs["tags"]["check"] == kind]


# ---------------------------------------------------------------- DNS
def test_one_health_check_per_region_against_its_load_balancer(prod):
    outs = outputs_by_region("prod")
    hcs = checks_of_kind(prod, "shallow")
    assert sorted(h.inputs["fqdn"] for h in hcs) == sorted(o["lb_dns_name"] for o in outs.values())
    for h in hcs:
        i = h.inputs
        assert (i["type"], i["port"], i["resourcePath"], i["requestInterval"], i["failureThreshold"]) == (
            "HTTPS",
            443,
            "/v2/health/ready",
            10,
            3,
        )
        assert i["measureLatency"] is True and i["enableSni"] is True


def test_one_weighted_alias_record_per_region(prod):
    outs = outputs_by_region("prod")
    weights = load_fleet("prod").glob.routing.weights()
    calculated = {h.inputs["tags"]["region"]: h.id for h in checks_of_kind(prod, "calculated")}
    zone = prod.one(ZONE)
    records = {r.inputs["setIdentifier"]: r.inputs for r in routed(prod)}
    assert sorted(records) == sorted(outs) and len(routed(prod)) == len(outs)
    for region, rec in records.items():
        assert (rec["name"], rec["type"], rec["zoneId"]) == ("ranker.shop.example.com", "A", zone.state["zoneId"])
        assert rec["aliases"] == [
            {"name": outs[region]["lb_dns_name"], "zoneId": outs[region]["lb_zone_id"], "evaluateTargetHealth": True}
        ]
        assert rec["healthCheckId"] == calculated[region]  # its own region's (calculated) check
        assert rec["weightedRoutingPolicies"] == [{"weight": weights[region]}]
        assert "failoverRoutingPolicies" not in rec and "ttl" not in rec  # alias records take the target's TTL


def test_failover_mode_one_primary_one_secondary(staging):
    records = {r.inputs["setIdentifier"]: r.inputs for r in routed(staging)}
    assert {k: v["failoverRoutingPolicies"] for k, v in records.items()} == {
        "us-east-1": [{"type": "PRIMARY"}],
        "us-west-2": [{"type": "SECONDARY"}],
    }
    assert all("weightedRoutingPolicies" not in v and v["healthCheckId"] for v in records.values())
    calculated = {h.inputs["tags"]["region"]: h.id for h in checks_of_kind(staging, "calculated")}
    assert {k: v["healthCheckId"] for k, v in records.items()} == calculated
    assert len(staging.of_type(HC)) == 2 * 5  # per region: four children and the calculated check


def test_weighted_canary_and_standby_weights(run_global):
    routing = {
        "mode": "weighted",
        "regions": {"us-east-1": {"weight": 95}, "us-west-2": {"weight": 5}, "eu-west-1": {"weight": 0}},
    }
    plan = run_global("prod-global", routing=routing)
    weights = {r.inputs["setIdentifier"]: r.inputs["weightedRoutingPolicies"][0]["weight"] for r in routed(plan)}
    assert weights == {"us-east-1": 95, "us-west-2": 5, "eu-west-1": 0}
    # A standby at weight 0 still has its health check: it must be healthy to take traffic when needed.
    assert all(r.inputs["healthCheckId"] for r in routed(plan))
    # Its plain name is declared all the same: weights route the shared name, not the per-region ones.
    assert sorted(r.inputs["name"] for r in plain(plan)) == sorted(
        regional_fqdn("ranker", r, "shop.example.com") for r in weights
    )


def test_created_zone_is_protected_and_existing_zone_is_used_by_id(prod, run_global):
    assert prod.one(ZONE).options.get("protect") is True

    plan = run_global("prod-global", zone={"name": "shop.example.com", "zone_id": "Z0123456789ABCDEFGHIJ"})
    assert plan.of_type(ZONE) == []
    assert {r.inputs["zoneId"] for r in plan.of_type(RECORD)} == {"Z0123456789ABCDEFGHIJ"}  # plain records too


@pytest.mark.parametrize(("env", "zone"), [("prod", "shop.example.com"), ("staging", "staging.shop.example.com")])
def test_one_plain_alias_record_per_region(env, zone, prod, staging):
    """Beside the weighted/failover name, each region has exactly one simple alias record of its own load balancer,
    `<record>-<region short>.<zone>`: no set identifier, weight, failover role or health check (a resilient client
    ejects a failing region itself), evaluate_target_health False (it would gate nothing on a lone simple record)."""
    plan = {"prod": prod, "staging": staging}[env]
    outs = outputs_by_region(env)
    zone_id = plan.one(ZONE).state["zoneId"]
    # Records of the global stack: one routed and one plain per region (prod: 3 + 3, staging: 2 + 2).
    assert len(plan.of_type(RECORD)) == 2 * len(outs)
    by_name = {r.inputs["name"]: r for r in plain(plan)}
    assert len(by_name) == len(plain(plan)) == len(outs)
    assert sorted(by_name) == sorted(regional_fqdn("ranker", r, zone) for r in outs)
    assert {f"ranker-use1.{zone}", f"ranker-usw2.{zone}"} <= set(by_name)  # the names clients are told to use
    for region, o in outs.items():
        rec = by_name[regional_fqdn("ranker", region, zone)]
        assert rec.name == f"dns-regional-{region}" and rec.parent_type == "reco-dr:global:DnsFailover"
        assert rec.inputs == {
            "zoneId": zone_id,
            "name": regional_fqdn("ranker", region, zone),
            "type": "A",
            "aliases": [{"name": o["lb_dns_name"], "zoneId": o["lb_zone_id"], "evaluateTargetHealth": False}],
        }
        assert region_of(plan, rec) == region_of(plan, routed(plan)[0])  # the control region's provider signs it


def test_regional_record_args_is_pure_and_simple():
    ep = RegionEndpoint("us-west-2", "lb.us-west-2.elb.amazonaws.com", "Z1H1FL5HABSF5", weight=30)
    args = regional_record_args(ep, "ranker-usw2.shop.example.com", "ZONE")
    assert set(args) == {"zone_id", "name", "type", "aliases"}  # no set_identifier, routing policy or health check
    assert (args["zone_id"], args["name"], args["type"]) == ("ZONE", "ranker-usw2.shop.example.com", "A")
    (alias,) = args["aliases"]
    assert (alias.name, alias.zone_id, alias.evaluate_target_health) == (ep.lb_dns_name, ep.lb_zone_id, False)


# ---------------------------------------------------------------- replication
def test_replication_for_every_ordered_pair_of_regions(prod):
    outs = outputs_by_region("prod")
    by_bucket = {o["bucket_name"]: r for r, o in outs.items()}
    by_arn = {o["bucket_arn"]: r for r, o in outs.items()}
    configs = prod.of_type(REPL)
    assert len(configs) == 3  # one configuration per source bucket
    pairs = set()
    for c in configs:
        src = by_bucket[c.inputs["bucket"]]
        assert region_of(prod, c) == src  # written in the source bucket's region
        assert "artifacts-policy" in c.options.get("depends_on", [])  # permissions exist before replication starts
        for rule in c.inputs["rules"]:
            pairs.add((src, by_arn[rule["destination"]["bucket"]]))
        assert sorted(r["priority"] for r in c.inputs["rules"]) == [1, 2]
    assert pairs == set(itertools.permutations(outs, 2))


def test_replication_rule_contents(prod):
    outs = outputs_by_region("prod")
    by_arn = {o["bucket_arn"]: o for o in outs.values()}
    role = prod.one("aws:iam/role:Role")
    for c in prod.of_type(REPL):
        assert c.inputs["role"] == role.state["arn"]
        for rule in c.inputs["rules"]:
            dest = by_arn[rule["destination"]["bucket"]]
            assert rule["id"] == f"to-{dest['region']}"
            assert rule["status"] == "Enabled" and rule["filter"] == {}
            assert rule["deleteMarkerReplication"] == {"status": "Disabled"}  # a delete must not spread
            assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
            d = rule["destination"]
            assert d["encryptionConfiguration"] == {
                "replicaKmsKeyId": dest["kms_key_arn"]
            }  # the destination region's key
            assert d["replicationTime"] == {"status": "Enabled", "time": {"minutes": 15}}
            assert d["metrics"] == {"status": "Enabled", "eventThreshold": {"minutes": 15}}


def test_replication_role_trust_and_exact_permissions(prod):
    outs = outputs_by_region("prod")
    arns = sorted(o["bucket_arn"] for o in outs.values())
    role = prod.one("aws:iam/role:Role")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    (stmt,) = trust["Statement"]
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"} and stmt["Action"] == "sts:AssumeRole"
    assert stmt["Condition"] == {
        "StringEquals": {"aws:SourceAccount": m.ACCOUNT_ID},
        "ArnLike": {"aws:SourceArn": arns},
    }

    policy = json.loads(prod.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert all(s["Effect"] == "Allow" for s in by_sid.values())
    assert by_sid["ReadSourceReplicationConfig"]["Action"] == ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    assert by_sid["ReadSourceReplicationConfig"]["Resource"] == arns
    assert by_sid["ReadSourceObjectVersions"]["Action"] == [
        "s3:GetObjectVersionForReplication",
        "s3:GetObjectVersionAcl",
        "s3:GetObjectVersionTagging",
    ]
    assert by_sid["ReadSourceObjectVersions"]["Resource"] == [f"{a}/*" for a in arns]
    assert by_sid["WriteReplicas"]["Action"] == ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    assert by_sid["WriteReplicas"]["Resource"] == [f"{a}/*" for a in arns]
    for region, o in outs.items():
        suffix = "".join(p.capitalize() for p in region.split("-"))
        for sid, action in ((f"DecryptSource{suffix}", "kms:Decrypt"), (f"EncryptReplica{suffix}", "kms:Encrypt")):
            s = by_sid[sid]
            assert s["Action"] == [action] and s["Resource"] == [o["kms_key_arn"]]
            assert s["Condition"]["StringEquals"] == {"kms:ViaService": f"s3.{region}.amazonaws.com"}
            assert s["Condition"]["StringLike"] == {
                "kms:EncryptionContext:aws:s3:arn": [o["bucket_arn"], f"{o['bucket_arn']}/*"]
            }
    # Nothing beyond that: no wildcards, no other actions.
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {
        *repl.SOURCE_BUCKET_ACTIONS,
        *repl.SOURCE_OBJECT_ACTIONS,
        *repl.DESTINATION_OBJECT_ACTIONS,
        "kms:Decrypt",
        "kms:Encrypt",
    }
    assert len(policy["Statement"]) == 3 + 2 * len(outs)
    assert all(r != "*" for s in policy["Statement"] for r in s["Resource"])


def test_permissions_policy_builder_is_pure():
    b = [
        repl.BucketFacts("us-west-2", "b2", "arn:aws:s3:::b2", "arn:aws:kms:us-west-2:111111111111:key/2"),
        repl.BucketFacts("us-east-1", "b1", "arn:aws:s3:::b1", "arn:aws:kms:us-east-1:111111111111:key/1"),
    ]
    doc = repl.permissions_policy(b)
    assert [s["Sid"] for s in doc["Statement"]] == [
        "ReadSourceReplicationConfig",
        "ReadSourceObjectVersions",
        "WriteReplicas",
        "DecryptSourceUsEast1",
        "EncryptReplicaUsEast1",
        "DecryptSourceUsWest2",
        "EncryptReplicaUsWest2",
    ]
    with pytest.raises(ValueError, match="span accounts"):
        repl._account_of(["arn:aws:kms:us-east-1:111111111111:key/1", "arn:aws:kms:us-west-2:222222222222:key/2"])


# ---------------------------------------------------------------- alarms
def test_health_check_alarms_live_in_us_east_1(prod):
    hc_ids = {h.id for h in checks_of_kind(prod, "calculated")}  # the records' checks: a region leaving DNS notifies
    alarms = [a for a in prod.of_type(ALARM) if a.inputs.get("namespace") == "AWS/Route53"]
    assert len(alarms) == 3 and {a.inputs["dimensions"]["HealthCheckId"] for a in alarms} == hc_ids
    for a in alarms:
        assert region_of(prod, a) == "us-east-1"
        assert (a.inputs["metricName"], a.inputs["comparisonOperator"], a.inputs["threshold"]) == (
            "HealthCheckStatus",
            "LessThanThreshold",
            1,
        )
        topic_arn = a.inputs["alarmActions"][0]
        assert ":sns:us-east-1:" in topic_arn


def test_replication_latency_alarm_per_rule_in_source_region(prod):
    outs = outputs_by_region("prod")
    region_of_bucket = {o["bucket_name"]: r for r, o in outs.items()}
    latency = [a for a in prod.of_type(ALARM) if a.inputs.get("metricName") == "ReplicationLatency"]
    failed = [a for a in prod.of_type(ALARM) if a.inputs.get("metricName") == "OperationsFailedReplication"]
    assert len(latency) == len(failed) == 6
    pairs = set()
    for a in latency:
        d = a.inputs["dimensions"]
        src, dst = region_of_bucket[d["SourceBucket"]], region_of_bucket[d["DestinationBucket"]]
        pairs.add((src, dst))
        assert d["RuleId"] == f"to-{dst}"
        assert region_of(prod, a) == src  # S3 publishes replication metrics in the source region
        assert a.inputs["namespace"] == "AWS/S3" and a.inputs["threshold"] == 900
        assert f":sns:{src}:" in a.inputs["alarmActions"][0]
    assert pairs == set(itertools.permutations(outs, 2))


def test_alarm_topics_are_kms_encrypted_and_email_is_optional(prod, run_global):
    keys = {region_of(prod, k): k.state["arn"] for k in prod.of_type("aws:kms/key:Key")}
    for t in prod.of_type("aws:sns/topic:Topic"):
        assert t.inputs["kmsMasterKeyId"] == keys[region_of(prod, t)]
    for k in prod.of_type("aws:kms/key:Key"):
        policy = json.loads(k.inputs["policy"])
        assert any(s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in policy["Statement"])
        assert k.inputs["enableKeyRotation"] is True
    assert prod.of_type("aws:sns/topicSubscription:TopicSubscription") == []

    plan = run_global("prod-global", alarm_email="oncall@example.com")
    subs = plan.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert len(subs) == 3 and {s.inputs["endpoint"] for s in subs} == {"oncall@example.com"}


# ---------------------------------------------------------------- providers, outputs
def test_every_aws_resource_has_an_explicit_provider(prod, staging):
    for plan in (prod, staging):
        for r in plan.resources:
            if r.type.startswith("aws:"):
                region_of(plan, r)
    regions = sorted(p.inputs["region"] for p in prod.of_type("pulumi:providers:aws"))
    assert regions == ["eu-west-1", "us-east-1", "us-west-2"]


def test_stack_outputs(prod):
    o = prod.outputs
    assert o["fqdn"] == "ranker.shop.example.com" and o["routing_mode"] == "weighted"
    assert o["weights"] == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}
    assert sorted(o["health_check_ids"]) == ["eu-west-1", "us-east-1", "us-west-2"]
    assert o["record_set_identifiers"] == ["eu-west-1", "us-east-1", "us-west-2"]
    assert o["regional_fqdns"] == {
        "eu-west-1": "ranker-euw1.shop.example.com",
        "us-east-1": "ranker-use1.shop.example.com",
        "us-west-2": "ranker-usw2.shop.example.com",
    }
    # The very names the plain records declare.
    assert sorted(o["regional_fqdns"].values()) == sorted(r.inputs["name"] for r in plain(prod))
    assert o["regional_stacks"] == {"eu-west-1": "prod-euw1", "us-east-1": "prod-use1", "us-west-2": "prod-usw2"}


def test_stack_references_name_org_project_stack(prod):
    refs = sorted(r.inputs["name"] for r in prod.of_type("pulumi:pulumi:StackReference"))
    assert refs == [
        "organization/reco-dr/prod-euw1",
        "organization/reco-dr/prod-use1",
        "organization/reco-dr/prod-usw2",
    ]


# ---------------------------------------------------------------- failures
def test_missing_regional_output_fails_naming_stack_and_output(run_global):
    with pytest.raises(Exception, match=r"stack prod-usw2: output 'lb_dns_name' is missing"):
        run_global("prod-global", edits={"prod-usw2": {"lb_dns_name": None}})


def test_malformed_regional_output_fails_naming_stack_and_output(run_global):
    with pytest.raises(Exception, match=r"stack prod-euw1: output 'kms_key_arn' = 'not-an-arn' is malformed"):
        run_global("prod-global", edits={"prod-euw1": {"kms_key_arn": "not-an-arn"}})
    with pytest.raises(Exception, match=r"stack prod-use1: output 'lb_zone_id' .* is malformed"):
        run_global("prod-global", edits={"prod-use1": {"lb_zone_id": ""}})


def test_all_zero_weights_refused_before_anything_is_declared(run_global):
    routing = {
        "mode": "weighted",
        "regions": {"us-east-1": {"weight": 0}, "us-west-2": {"weight": 0}, "eu-west-1": {"weight": 0}},
    }
    with pytest.raises(pulumi.RunError, match=r"prod-global.*routing.*weight > 0") as e:
        run_global("prod-global", routing=routing)
    assert e.value.plan.resources == []  # type: ignore[attr-defined]  # run_program attaches .plan


def test_two_primaries_refused_before_anything_is_declared(run_global):
    routing = {
        "mode": "failover",
        "regions": {"us-east-1": {"failover": "PRIMARY"}, "us-west-2": {"failover": "PRIMARY"}},
    }
    with pytest.raises(pulumi.RunError, match=r"staging-global.*exactly one PRIMARY") as e:
        run_global("staging-global", values={**read_stack_file("staging-global"), "routing": routing})
    assert e.value.plan.resources == []  # type: ignore[attr-defined]  # run_program attaches .plan


def test_declare_global_refuses_an_invalid_config_object_too():
    """Defence in depth: a GlobalConfig built around validation (model_construct) is still refused."""
    from infra.config import ConfigError, RegionRoute, Routing
    from infra.global_stack import declare_global

    glob = load_fleet("prod").glob
    zero = Routing.model_construct(mode="weighted", regions={r: RegionRoute(weight=0) for r in glob.routing.regions})
    with pytest.raises(ConfigError, match="weight 0"):
        declare_global("prod-global", glob.model_copy(update={"routing": zero}))
