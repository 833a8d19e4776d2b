"""Issue 15, the edge: AWS WAF on the load balancer where a stack turns it on (`load_balancer.waf`), else none."""

from __future__ import annotations

import copy

import pytest

from infra.components.load_balancer import WAF_COUNT_ONLY, WAF_MANAGED_RULE_GROUPS
from infra.config import read_stack_file
from infra.mocks import run_program

ACL = "aws:wafv2/webAcl:WebAcl"
ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"


@pytest.fixture(scope="module")
def with_waf():
    v = copy.deepcopy(read_stack_file("prod-euw1"))
    v["load_balancer"]["waf"] = {"enabled": True, "rate_limit_per_5min": 600000}
    return run_program("prod-euw1", values=v)


def test_no_waf_unless_a_stack_enables_it(regional):
    _stack, plan, cfg = regional
    assert cfg.load_balancer.waf.enabled is False
    assert not [r for r in plan.resources if r.type.startswith("aws:wafv2/")]


def test_waf_disabled_with_a_limit_declares_nothing():
    v = copy.deepcopy(read_stack_file("prod-euw1"))
    v["load_balancer"]["waf"] = {"enabled": False, "rate_limit_per_5min": 600000}
    plan = run_program("prod-euw1", values=v)
    assert not [r for r in plan.resources if r.type.startswith("aws:wafv2/")]


def test_web_acl_is_regional_with_the_managed_groups_and_a_rate_rule(with_waf):
    acl = with_waf.one(ACL)
    assert acl.inputs["scope"] == "REGIONAL" and acl.inputs["defaultAction"] == {"allow": {}}
    assert acl.parent_type == "reco-dr:regional:TritonLoadBalancer"
    assert with_waf.provider_of(acl).inputs["region"] == "eu-west-1"
    vis = acl.inputs["visibilityConfig"]
    assert vis["cloudwatchMetricsEnabled"] is True and vis["sampledRequestsEnabled"] is True
    rules = {r["name"]: r for r in acl.inputs["rules"]}
    assert set(rules) == {"rate-per-address", *WAF_MANAGED_RULE_GROUPS}
    assert set(WAF_MANAGED_RULE_GROUPS) == {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesAmazonIpReputationList",
    }
    assert sorted(r["priority"] for r in rules.values()) == list(range(len(rules)))
    for r in rules.values():
        assert r["visibilityConfig"]["cloudwatchMetricsEnabled"] is True
        assert r["visibilityConfig"]["sampledRequestsEnabled"] is True
    rate = rules["rate-per-address"]
    assert rate["priority"] == 0 and rate["action"] == {"block": {}}
    assert rate["statement"]["rateBasedStatement"] == {
        "aggregateKeyType": "IP",
        "limit": 600000,
        "evaluationWindowSec": 300,
    }
    for group in WAF_MANAGED_RULE_GROUPS:
        r = rules[group]
        assert r["overrideAction"] == {"none": {}} and "action" not in r
        stmt = r["statement"]["managedRuleGroupStatement"]
        assert (stmt["vendorName"], stmt["name"]) == ("AWS", group)
        counted = [o["name"] for o in stmt.get("ruleActionOverrides", []) if o["actionToUse"] == {"count": {}}]
        assert counted == list(WAF_COUNT_ONLY.get(group, ()))
    # A ranking request's body is larger than the Common Rule Set's 8 KB limit: that rule counts, never blocks.
    assert WAF_COUNT_ONLY == {"AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",)}


def test_web_acl_is_associated_with_the_load_balancer(with_waf):
    acl, assoc = with_waf.one(ACL), with_waf.one(ASSOCIATION)
    lb = with_waf.one("aws:lb/loadBalancer:LoadBalancer")
    assert assoc.inputs["resourceArn"] == lb.state["arn"] and assoc.inputs["webAclArn"] == acl.state["arn"]
