"""region-brownout and quiet as plans (drills/scenarios/brownout.py): the fault vocabulary at the plan, the alarm's
worst case in the prediction, the replication-partition plan's own shape, and the soak. Pure: no cloud, no servers."""

from __future__ import annotations

import pytest

from drills.errors import GuardrailError
from drills.scenarios import build_plan


def actions(plan) -> list[str]:
    return [s.action for s in plan.steps]


def test_a_brownout_runs_region_outages_plan_with_its_fault():
    p = build_plan("region-brownout", "prod", "us-east-1", overrides={"fault": "unload"})
    assert actions(p) == [
        "precheck",
        "inject_fault",
        "observe_failover",
        "hold",
        "measure_startup",  # the pods the survivors added since the fault, timed
        "clear_fault",
        "observe_recovery",
        "verify_restored",
    ]
    assert p.steps[1].params == {"region": "us-east-1", "fault": "unload"}
    assert any("deep check" in n for n in p.notes)
    # Seen by the deep check (an endpoint check): the prediction is its interval x threshold.
    assert p.predicted["detection"] == 30


@pytest.mark.parametrize("fault", ["errors=0.3", "latency=400ms", "bandwidth=65536"])
def test_a_fault_only_an_alarm_sees_is_predicted_at_the_alarms_worst_case(fault):
    p = build_plan("region-brownout", "prod", "us-east-1", overrides={"fault": fault})
    assert p.predicted["detection"] == 120  # the fault's own minute, which may not breach, then one breaching minute
    assert p.predicted["total"] == 120 + p.predicted["dns_change"] + 60


@pytest.mark.parametrize(
    ("fault", "words"),
    [(None, "needs --fault"), ("triton-down", "region-outage's kinds"), ("errors=3", "(0, 1]"), ("nope", "needs")],
)
def test_a_brownout_without_a_brownout_fault_is_refused_naming_the_kinds(fault, words):
    with pytest.raises(GuardrailError) as e:
        build_plan("region-brownout", "prod", "us-east-1", overrides={"fault": fault})
    assert words in str(e.value) and e.value.code == "bad-fault"


def test_a_replication_partition_cuts_writes_elsewhere_heals_and_measures_the_catch_up():
    p = build_plan("region-brownout", "staging", "us-east-1", overrides={"fault": "replication-partition"})
    assert actions(p) == [
        "precheck",
        "inject_fault",
        "canary_write",
        "hold",
        "clear_fault",
        "measure_replication",
        "canary_delete",
    ]
    assert p.steps[2].params == {"sources": ["us-west-2"]}  # every other region writes; none reaches the cut one
    assert p.steps[5].params["since_heal"] is True
    assert not any(s.action == "observe_failover" for s in p.steps)  # serving is untouched: no DNS failover


def test_quiet_holds_and_injects_nothing():
    p = build_plan("quiet", "prod", overrides={"hold_seconds": 600})
    assert actions(p) == ["precheck", "hold"]
    assert p.steps[1].wait_seconds == 600 and not any(s.mutates for s in p.steps)
