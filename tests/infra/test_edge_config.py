"""Issue 15, the edge: the new stack keys refuse bad input at load, with one message naming the stack, the key, the
value and the rule (the convention of tests/infra/test_config_refusals.py)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra import config as C
from infra.config import ConfigError, RegionConfig, load_fleet, parse, read_stack_file

CIDR_RULE = "rule: an IPv4 CIDR block such as 10.10.0.0/16 (address/prefix, no host bits set); {!r} is not one"
IPV6_RULE = "rule: an IPv4 CIDR block; 2001:db8::/32 is an IPv6 range (this field is IPv4 only)"


def _values() -> dict[str, Any]:
    return copy.deepcopy(read_stack_file("prod-use1"))


def assert_refused(mutate: Callable[[dict[str, Any]], Any], key: str, value: Any, rule: str) -> None:
    v = _values()
    mutate(v)
    with pytest.raises(ConfigError) as e:
        parse("prod-use1", v)
    err = e.value
    assert (err.key, err.value, err.rule) == (key, value, rule)
    assert str(err) == f"stack prod-use1: reco-dr:{key} = {value!r}: {rule}"


def accepted(mutate: Callable[[dict[str, Any]], Any]) -> RegionConfig:
    v = _values()
    mutate(v)
    cfg = parse("prod-use1", v)
    assert isinstance(cfg, RegionConfig)
    return cfg


# ---------------------------------------------------------------- allowed_cidrs: written out, no implicit default
def test_allowed_cidrs_is_required():
    v = _values()
    del v["load_balancer"]["allowed_cidrs"]
    with pytest.raises(ConfigError) as e:
        parse("prod-use1", v)
    assert str(e.value) == "stack prod-use1: reco-dr:load_balancer.allowed_cidrs is missing: rule: required key"


def test_shipped_stacks_write_their_clients_out():
    for stack in C.list_stacks():
        values = read_stack_file(stack)
        if values.get("role") == "region":
            assert values["load_balancer"]["allowed_cidrs"] == ["0.0.0.0/0"], stack


# ---------------------------------------------------------------- release_tooling_cidrs
TOOLING = "load_balancer.release_tooling_cidrs"
TOOLING_REFUSALS = {
    "not a CIDR": (["runner"], CIDR_RULE.format("runner")),
    "host bits set": (["34.120.0.7/24"], CIDR_RULE.format("34.120.0.7/24")),
    "IPv6": (["2001:db8::/32"], IPV6_RULE),
    "too wide": (
        ["34.0.0.0/8"],
        "rule: the release tooling's egress addresses, a /16 or narrower; 34.0.0.0/8 would let a large part of the "
        "internet pin a model version",
    ),
    "everyone": (
        ["0.0.0.0/0"],
        "rule: the release tooling's egress addresses, a /16 or narrower; 0.0.0.0/0 would let a large part of the "
        "internet pin a model version",
    ),
    "twice": (["34.120.0.0/24", "34.120.0.0/24"], "rule: each CIDR block once; 34.120.0.0/24 is listed twice"),
    "more than a pin rule holds": (
        ["34.120.0.0/24", "34.121.0.0/24", "34.122.0.0/24"],
        "rule: at most 2 CIDR blocks (an ALB listener rule holds 5 match evaluations: a pin spends one on the header "
        "and 2 on the inference paths)",
    ),
}


@pytest.mark.parametrize("case", sorted(TOOLING_REFUSALS))
def test_release_tooling_cidrs_refused(case):
    cidrs, rule = TOOLING_REFUSALS[case]
    assert_refused(lambda v: v["load_balancer"].update(release_tooling_cidrs=cidrs), TOOLING, cidrs, rule)


def test_release_tooling_cidrs_must_be_inside_allowed_cidrs():
    def mutate(v):
        v["load_balancer"].update(allowed_cidrs=["198.51.100.0/24"], release_tooling_cidrs=["203.0.113.0/28"])

    assert_refused(
        mutate,
        TOOLING,
        ["203.0.113.0/28"],
        "rule: inside allowed_cidrs ['198.51.100.0/24']: the load balancer's security group drops 203.0.113.0/28 "
        "before any listener rule sees it",
    )


def test_release_tooling_cidrs_accepted_and_default_empty():
    assert accepted(lambda v: None).load_balancer.release_tooling_cidrs == ()
    cfg = accepted(
        lambda v: v["load_balancer"].update(
            allowed_cidrs=["198.51.100.0/24", "34.120.0.0/16"],
            release_tooling_cidrs=["198.51.100.0/28", "34.120.5.0/24"],
        )
    )
    assert cfg.load_balancer.release_tooling_cidrs == ("198.51.100.0/28", "34.120.5.0/24")
    assert C.MAX_RELEASE_TOOLING_CIDRS == 2


# ---------------------------------------------------------------- waf
WAF_LIMIT_RULE = (
    "rule: waf.enabled needs rate_limit_per_5min (requests one client address may send in 5 minutes before WAF "
    "blocks it; size it above your busiest caller's rate, a backend's NAT address included)"
)
WAF_REFUSALS = {
    "enabled without a limit": ({"enabled": True}, "load_balancer.waf", {"enabled": True}, WAF_LIMIT_RULE),
    "a string for a boolean": (
        {"enabled": "true", "rate_limit_per_5min": 1000},
        "load_balancer.waf.enabled",
        "true",
        "rule: Input should be a valid boolean",
    ),
    "limit below AWS's minimum": (
        {"enabled": True, "rate_limit_per_5min": 5},
        "load_balancer.waf.rate_limit_per_5min",
        5,
        "rule: Input should be greater than or equal to 10",
    ),
    "limit as text": (
        {"enabled": True, "rate_limit_per_5min": "1000"},
        "load_balancer.waf.rate_limit_per_5min",
        "1000",
        "rule: Input should be a valid integer (strict: a string, a boolean or a float is not an integer)",
    ),
    "a typo": (
        {"enabled": True, "rate_limit": 1000},
        "load_balancer.waf.rate_limit",
        1000,
        "rule: unknown key (a typo?)",
    ),
}


@pytest.mark.parametrize("case", sorted(WAF_REFUSALS))
def test_waf_refused(case):
    waf, key, value, rule = WAF_REFUSALS[case]
    assert_refused(lambda v: v["load_balancer"].update(waf=waf), key, value, rule)


def test_waf_off_by_default_and_accepted_when_complete():
    assert accepted(lambda v: None).load_balancer.waf == C.Waf(enabled=False, rate_limit_per_5min=None)
    cfg = accepted(lambda v: v["load_balancer"].update(waf={"enabled": True, "rate_limit_per_5min": 100000}))
    assert (cfg.load_balancer.waf.enabled, cfg.load_balancer.waf.rate_limit_per_5min) == (True, 100000)


# ---------------------------------------------------------------- cluster.endpoint_public_access_cidrs
PUBLIC = "cluster.endpoint_public_access_cidrs"
PRIVATE_RULE = (
    "rule: public IPv4 blocks; {} is a private or reserved range, which EKS refuses in publicAccessCidrs (clients "
    "inside the VPC reach the private endpoint without being listed)"
)
PUBLIC_REFUSALS = {
    "not a CIDR": (["office"], CIDR_RULE.format("office")),
    "host bits set": (["52.1.2.3/16"], CIDR_RULE.format("52.1.2.3/16")),
    "IPv6": (["2001:db8::/32"], IPV6_RULE),
    "private": (["10.0.0.0/8"], PRIVATE_RULE.format("10.0.0.0/8")),
    "shared address space": (["100.64.0.0/10"], PRIVATE_RULE.format("100.64.0.0/10")),
    "documentation range": (["203.0.113.0/24"], PRIVATE_RULE.format("203.0.113.0/24")),
    "twice": (["52.1.2.3/32", "52.1.2.3/32"], "rule: each CIDR block once; 52.1.2.3/32 is listed twice"),
    "beyond the EKS quota": (
        [f"52.1.2.{i}/32" for i in range(41)],
        "rule: at most 40 CIDR blocks (the EKS quota per cluster)",
    ),
}


@pytest.mark.parametrize("case", sorted(PUBLIC_REFUSALS))
def test_endpoint_public_access_cidrs_refused(case):
    cidrs, rule = PUBLIC_REFUSALS[case]
    assert_refused(lambda v: v.update(cluster={"endpoint_public_access_cidrs": cidrs}), PUBLIC, cidrs, rule)


def test_cluster_unknown_key_refused():
    assert_refused(
        lambda v: v.update(cluster={"endpoint_public_access": True}),
        "cluster.endpoint_public_access",
        True,
        "rule: unknown key (a typo?)",
    )


def test_endpoint_private_by_default():
    v = _values()
    del v["cluster"]
    cfg = parse("prod-use1", v)
    assert isinstance(cfg, RegionConfig) and cfg.cluster.endpoint_public_access_cidrs == ()


@pytest.mark.parametrize(
    "blocks", [["0.0.0.0/0"], ["52.1.2.3/32", "34.120.0.0/16"], [f"52.1.2.{i}/32" for i in range(40)]]
)
def test_endpoint_public_blocks_accepted(blocks):
    cfg = accepted(lambda v: v.update(cluster={"endpoint_public_access_cidrs": blocks}))
    assert cfg.cluster.endpoint_public_access_cidrs == tuple(blocks)


# ---------------------------------------------------------------- the health check path and the edge
def test_a_health_check_path_the_edge_answers_404_is_refused(tmp_path: Path):
    stacks = tmp_path / "stacks"
    shutil.copytree(C.STACKS_DIR, stacks)
    path = stacks / "Pulumi.prod-global.yaml"
    text = path.read_text()
    assert "    path: /v2/health/ready\n" in text
    path.write_text(text.replace("    path: /v2/health/ready\n", "    path: /healthz\n"))
    with pytest.raises(ConfigError) as e:
        load_fleet("prod", stacks)
    assert str(e.value) == (
        "stack prod-global: reco-dr:health_check.path = '/healthz': rule: a path the regional load balancers forward "
        "to Triton (/v2/health/ready, /v2/health/live); every other path is answered 404 at the edge, so the health "
        "check of eu-west-1 would always fail"
    )
    path.write_text(text.replace("    path: /v2/health/ready\n", "    path: /v2/health/live\n"))
    assert load_fleet("prod", stacks).glob.health_check.path == "/v2/health/live"
