"""Each region's health as the global stack declares it (infra/health.py): the shallow, deep and load-balancer metric
checks combined by the CALCULATED check the region's record carries, the alarms the metric checks follow, and the p99
alarm that pages people and moves nothing."""

from __future__ import annotations

import pytest

from infra import health as H
from infra import mocks as m
from infra.config import load_fleet
from infra.invariants import health_findings
from tests.global_stack.test_global_program import ALARM, HC, RECORD, outputs_by_region, region_of, routed


def _checks(plan: m.Plan) -> dict[tuple[str, str], m.ResourceRecord]:
    """(region, kind) -> the check, by its tags."""
    return {(h.inputs["tags"]["region"], h.inputs["tags"]["check"]): h for h in plan.of_type(HC)}


def _alarm(plan: m.Plan, name: str) -> m.ResourceRecord:
    (a,) = [a for a in plan.of_type(ALARM) if a.inputs.get("name") == name]
    return a


def _declared(plan: m.Plan) -> list[dict]:
    """Records and checks as a policy pack sees them (inputs and property dependencies)."""
    return [
        {
            "type": r.type,
            "name": r.name,
            "urn": r.urn,
            "inputs": r.inputs,
            "property_dependencies": r.property_dependencies,
        }
        for r in plan.resources
        if r.type in (HC, RECORD)
    ]


# ---------------------------------------------------------------- the checks
@pytest.mark.parametrize("env", ["prod", "staging"])
def test_each_region_has_four_children_and_a_calculated_check_its_record_carries(env, prod, staging):
    plan = {"prod": prod, "staging": staging}[env]
    checks = _checks(plan)
    regions = sorted(outputs_by_region(env))
    assert sorted(checks) == sorted((r, k) for r in regions for k in (*H.CHILD_KINDS, H.CALCULATED))
    records = {r.inputs["setIdentifier"]: r.inputs for r in routed(plan)}
    for r in regions:
        calc = checks[(r, H.CALCULATED)]
        assert calc.inputs["type"] == "CALCULATED"
        assert calc.inputs["childHealthchecks"] == [checks[(r, k)].id for k in H.CHILD_KINDS]
        assert calc.inputs["childHealthThreshold"] == H.CHILD_HEALTH_THRESHOLD == 4  # any failing child drains it
        assert records[r]["healthCheckId"] == calc.id
        assert calc.inputs["tags"]["Name"] == f"{load_fleet(env).glob.fqdn} {r}"
        for k in H.CHILD_KINDS:
            assert checks[(r, k)].inputs["tags"]["Name"] == f"{load_fleet(env).glob.fqdn} {r} {k}"


def test_the_shallow_check_keeps_its_resource_name(prod):
    """Renaming it would replace the check the records used until now: a new check starts with no history."""
    for r in outputs_by_region("prod"):
        assert _checks(prod)[(r, H.SHALLOW)].name == f"dns-hc-{r}"


def test_deep_check_string_matches_the_sidecar_through_the_load_balancer(prod):
    checks = _checks(prod)
    hc = load_fleet("prod").glob.health_check
    for r, o in outputs_by_region("prod").items():
        deep, shallow = checks[(r, H.DEEP)].inputs, checks[(r, H.SHALLOW)].inputs
        assert (deep["type"], deep["resourcePath"], deep["searchString"]) == (
            "HTTPS_STR_MATCH",
            H.DEEP_HEALTH_PATH,
            H.DEEP_HEALTH_OK,
        )
        assert (shallow["type"], shallow["resourcePath"]) == ("HTTPS", hc.path)
        # The same target, interval and threshold as the shallow check.
        assert deep["fqdn"] == shallow["fqdn"] == o["lb_dns_name"]
        for k in ("port", "requestInterval", "failureThreshold", "measureLatency", "enableSni"):
            assert deep[k] == shallow[k], k
        assert (deep["requestInterval"], deep["failureThreshold"]) == (hc.request_interval, hc.failure_threshold)


def test_metric_checks_follow_the_regions_alarms(prod):
    checks = _checks(prod)
    for r in outputs_by_region("prod"):
        for kind in H.ALARM_KINDS:
            c = checks[(r, kind)].inputs
            assert c["type"] == "CLOUDWATCH_METRIC"
            assert c["cloudwatchAlarmName"] == H.alarm_name("prod", r, kind)
            assert c["cloudwatchAlarmRegion"] == r == region_of(prod, _alarm(prod, c["cloudwatchAlarmName"]))
            assert c["insufficientDataHealthStatus"] == H.INSUFFICIENT_DATA_HEALTH_STATUS == "Healthy"
            assert "fqdn" not in c and "resourcePath" not in c


# ---------------------------------------------------------------- the alarms the metric checks follow
def test_error_ratio_alarm_is_metric_math_over_the_load_balancers_counts(prod):
    cfg = load_fleet("prod").glob.health_alarms
    for r, o in outputs_by_region("prod").items():
        a = _alarm(prod, H.alarm_name("prod", r, H.ERRORS))
        i = a.inputs
        queries = {q["id"]: q for q in i["metricQueries"]}
        assert sorted(queries) == sorted([*H.ERROR_METRICS, H.ERROR_RATIO_ID])
        ratio = queries.pop(H.ERROR_RATIO_ID)
        assert (ratio["expression"], ratio["returnData"]) == ("(FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests", True)
        for qid, q in queries.items():
            assert q["returnData"] is False
            assert q["metric"] == {
                "namespace": "AWS/ApplicationELB",
                "metricName": H.ERROR_METRICS[qid],
                "dimensions": {"LoadBalancer": o["lb_arn_suffix"]},
                "period": cfg.period_seconds,
                "stat": "Sum",
            }
        assert not {"metricName", "namespace", "period", "statistic"} & set(i)  # the queries carry them
        assert (
            (i["threshold"], i["comparisonOperator"])
            == (cfg.error_ratio, "GreaterThanThreshold")
            == (0.01, "GreaterThanThreshold")
        )
        # M of N with hysteresis: ALARM on the first bad minute of two, OK after two clean ones; silence is no breach.
        assert (i["evaluationPeriods"], i["datapointsToAlarm"], i["treatMissingData"]) == (2, 1, "notBreaching")
        assert region_of(prod, a) == r
        assert "alarmActions" not in i and "okActions" not in i  # its action is the metric check
        assert (i["tags"]["region"], i["tags"]["alarm"]) == (r, H.ERRORS)


def test_latency_alarm_is_the_mean_response_time_of_the_stable_target_group(prod):
    cfg = load_fleet("prod").glob.health_alarms
    for r, o in outputs_by_region("prod").items():
        a = _alarm(prod, H.alarm_name("prod", r, H.LATENCY))
        i = a.inputs
        assert (i["namespace"], i["metricName"], i["statistic"]) == (
            "AWS/ApplicationELB",
            "TargetResponseTime",
            "Average",
        )
        assert "extendedStatistic" not in i  # Route 53 refuses an alarm on a percentile
        assert i["dimensions"] == {"LoadBalancer": o["lb_arn_suffix"], "TargetGroup": o["target_group_arn_suffix"]}
        assert i["threshold"] == pytest.approx(cfg.latency_ms / 1000) == pytest.approx(0.1)  # seconds
        assert (i["period"], i["evaluationPeriods"], i["datapointsToAlarm"]) == (60, 2, 1)
        assert (i["comparisonOperator"], i["treatMissingData"]) == ("GreaterThanThreshold", "notBreaching")
        assert region_of(prod, a) == r and "alarmActions" not in i
        assert (i["tags"]["region"], i["tags"]["alarm"]) == (r, H.LATENCY)


def test_p99_alarm_pages_people_and_feeds_no_check(prod):
    glob = load_fleet("prod").glob
    followed = {h.inputs.get("cloudwatchAlarmName") for h in prod.of_type(HC)}
    topics = {region_of(prod, t): t.state["arn"] for t in prod.of_type("aws:sns/topic:Topic")}
    for r, o in outputs_by_region("prod").items():
        a = _alarm(prod, H.p99_alarm_name("prod", r))
        i = a.inputs
        assert (i["metricName"], i["extendedStatistic"]) == ("TargetResponseTime", "p99")
        assert "statistic" not in i
        assert i["dimensions"] == {"LoadBalancer": o["lb_arn_suffix"], "TargetGroup": o["target_group_arn_suffix"]}
        assert i["threshold"] == pytest.approx(glob.objectives.p99_ms / 1000) == pytest.approx(0.25)
        assert (i["period"], i["evaluationPeriods"], i["datapointsToAlarm"]) == (60, 2, 1)
        assert region_of(prod, a) == r
        assert i["alarmActions"] == i["okActions"] == [topics[r]]  # the region's existing alarm topic
        assert i["name"] not in followed  # no Route 53 check follows it: it moves no traffic
        assert (i["tags"]["region"], i["tags"]["alarm"]) == (r, H.P99)
    # The records' checks are still what notifies people of a region leaving DNS.
    hc_alarms = {
        a.inputs["dimensions"]["HealthCheckId"]
        for a in prod.of_type(ALARM)
        if a.inputs.get("namespace") == "AWS/Route53"
    }
    assert hc_alarms == {h.id for h in prod.of_type(HC) if h.inputs["type"] == "CALCULATED"}


def test_alarm_settings_come_from_config(run_global):
    plan = run_global(
        "prod-global",
        health_alarms={
            "period_seconds": 120,
            "evaluation_periods": 3,
            "datapoints_to_alarm": 2,
            "error_ratio": 0.05,
            "latency_ms": 150,
        },
    )
    for r in outputs_by_region("prod"):
        errors = _alarm(plan, H.alarm_name("prod", r, H.ERRORS)).inputs
        assert errors["threshold"] == 0.05
        assert {q["metric"]["period"] for q in errors["metricQueries"] if "metric" in q} == {120}
        latency = _alarm(plan, H.alarm_name("prod", r, H.LATENCY)).inputs
        assert latency["threshold"] == pytest.approx(0.15)
        p99 = _alarm(plan, H.p99_alarm_name("prod", r)).inputs
        for a in (errors, latency, p99):
            assert (a["evaluationPeriods"], a["datapointsToAlarm"]) == (3, 2)
        assert latency["period"] == p99["period"] == 120


# ---------------------------------------------------------------- the invariant (policy pack, health_findings)
def test_the_declared_stacks_hold_the_invariant(prod, staging):
    assert health_findings(_declared(prod)) == [] and health_findings(_declared(staging)) == []


def _edit(resources: list[dict], fn) -> list[dict]:
    return [
        fn({**r, "inputs": dict(r["inputs"]), "property_dependencies": dict(r["property_dependencies"])})
        for r in resources
    ]


def test_the_invariant_catches_a_record_on_a_child_or_on_another_regions_check(prod):
    declared = _declared(prod)
    checks = {
        (r["inputs"]["tags"]["region"], r["inputs"]["tags"]["check"]): r["urn"] for r in declared if r["type"] == HC
    }

    def carry(kind_region):
        def fn(r):
            if r["type"] == RECORD and r["inputs"].get("setIdentifier") == "us-east-1":
                r["property_dependencies"]["healthCheckId"] = [checks[kind_region]]
            return r

        return fn

    for target in (("us-east-1", H.SHALLOW), ("us-west-2", H.CALCULATED)):
        found = health_findings(_edit(declared, carry(target)))
        assert [f.id for f in found] == ["health.calculated"] and "us-east-1" in found[0].message, target


def test_the_invariant_catches_a_lax_threshold_and_a_missing_child(prod):
    declared = _declared(prod)
    deep = {
        r["inputs"]["tags"]["region"]: r["urn"]
        for r in declared
        if r["type"] == HC and r["inputs"]["tags"]["check"] == H.DEEP
    }

    def lax(r):
        if r["inputs"].get("type") == "CALCULATED":
            r["inputs"]["childHealthThreshold"] = 3
        return r

    assert {f.id for f in health_findings(_edit(declared, lax))} == {"health.threshold"}

    def no_deep(r):
        if r["inputs"].get("type") == "CALCULATED":
            kids = r["property_dependencies"]["childHealthchecks"]
            r["property_dependencies"]["childHealthchecks"] = [
                u for u in kids if u != deep[r["inputs"]["tags"]["region"]]
            ]
        return r

    found = health_findings(_edit(declared, no_deep))
    assert {f.id for f in found} == {"health.children"} and len(found) == 3


# ---------------------------------------------------------------- what the drills read
def test_outputs_name_every_check_and_alarm(prod):
    o = prod.outputs
    checks = _checks(prod)
    assert o["health_check_ids"] == {r: checks[(r, H.CALCULATED)].id for r in outputs_by_region("prod")}
    assert o["health_check_children"] == {
        r: {k: checks[(r, k)].id for k in H.CHILD_KINDS} for r in outputs_by_region("prod")
    }
    assert o["health_alarm_names"] == {
        r: {k: H.alarm_name("prod", r, k) for k in H.ALARM_KINDS} for r in outputs_by_region("prod")
    }


def test_a_regional_stack_without_the_alarm_dimensions_fails_naming_it(run_global):
    with pytest.raises(Exception, match=r"stack prod-usw2: output 'target_group_arn_suffix' is missing"):
        run_global("prod-global", edits={"prod-usw2": {"target_group_arn_suffix": None}})
