"""Issue 15, the edge: the HTTPS listener forwards only the documented routes, answers everything else 404, and honours
the X-Reco-Track header only from the release tooling's addresses (refusing it from anyone else)."""

from __future__ import annotations

import copy
import ipaddress
import re

import pytest

from infra.config import read_stack_file
from infra.health import DEEP_HEALTH_PATH
from infra.mocks import ResourceRecord, run_program
from infra.names import PIN_PRIORITY, TRACK_GUARD_PRIORITY, TRACK_HEADER, edge_routes
from tests.signing import with_canary

RULE = "aws:lb/listenerRule:ListenerRule"
TOOLING = ["198.51.100.0/24", "192.0.2.16/28"]  # as many blocks as a pin rule has room for
PUBLIC_CLIENT = "203.0.113.9"
TOOLING_CLIENT = "198.51.100.7"


def documented_routes(m: str) -> dict[str, tuple[int, list[str], list[str]]]:
    """The allowed set, written out (README "The edge" and infra/components/load_balancer.py's docstring)."""
    return {
        "ingress-route-health": (100, ["GET"], ["/v2/health/ready", "/v2/health/live"]),
        "ingress-route-infer-tensorrt": (
            110,
            ["POST"],
            [f"/v2/models/{m}_trt/infer", f"/v2/models/{m}_trt/versions/*/infer"],
        ),
        "ingress-route-infer-onnx": (
            111,
            ["POST"],
            [f"/v2/models/{m}_onnx/infer", f"/v2/models/{m}_onnx/versions/*/infer"],
        ),
        "ingress-route-model-tensorrt": (120, ["GET"], [f"/v2/models/{m}_trt", f"/v2/models/{m}_trt/ready"]),
        "ingress-route-model-onnx": (121, ["GET"], [f"/v2/models/{m}_onnx", f"/v2/models/{m}_onnx/ready"]),
    }


def _canary_values(stack: str, tooling: list[str] | None, weight: int = 10) -> dict:
    v = copy.deepcopy(read_stack_file(stack))
    with_canary(v["model"], "2026.12.0", weight)
    if tooling is not None:
        v["load_balancer"]["release_tooling_cidrs"] = tooling
    return v


@pytest.fixture(scope="module")
def pinned():
    """prod-use1 during a canary at 10%, with the release tooling's addresses declared."""
    return run_program("prod-use1", values=_canary_values("prod-use1", TOOLING))


@pytest.fixture(scope="module")
def unpinned():
    """prod-use1 during a canary at 10%, no release tooling addresses (the shipped stacks)."""
    return run_program("prod-use1", values=_canary_values("prod-use1", None))


# ---------------------------------------------------------------- a model of the listener, from the declared rules
def _wildcard(pattern: str) -> re.Pattern[str]:
    """An ALB value pattern: `*` is any run of characters (slashes included), `?` exactly one."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def _condition_holds(cond: dict, method: str, path: str, headers: dict[str, str], source: str) -> bool:
    ((kind, spec),) = cond.items()
    if kind == "httpRequestMethod":
        return method in spec["values"]
    if kind == "pathPattern":  # case-sensitive
        return any(_wildcard(p).fullmatch(path) for p in spec["values"])
    if kind == "httpHeader":  # header names and values compare case-insensitively
        got = {k.lower(): v for k, v in headers.items()}.get(spec["httpHeaderName"].lower())
        return got is not None and any(_wildcard(p.lower()).fullmatch(got.lower()) for p in spec["values"])
    if kind == "sourceIp":
        return any(ipaddress.ip_address(source) in ipaddress.ip_network(c) for c in spec["values"])
    raise AssertionError(f"a condition this model does not know: {kind}")


def answer(plan, method: str, path: str, headers: dict[str, str] | None = None, source: str = PUBLIC_CLIENT):
    """What the listener does with a request: ("forward", {target group arn: weight}) or ("fixed", status)."""
    rules: list[ResourceRecord] = sorted(plan.of_type(RULE), key=lambda r: r.inputs["priority"])
    actions = plan.one("aws:lb/listener:Listener").inputs["defaultActions"]
    for r in rules:
        if all(_condition_holds(c, method, path, headers or {}, source) for c in r.inputs["conditions"]):
            actions = r.inputs["actions"]
            break
    (a,) = actions
    if a["type"] == "fixed-response":
        return "fixed", a["fixedResponse"]["statusCode"]
    if "targetGroupArn" in a:
        return "forward", {a["targetGroupArn"]: 1}
    return "forward", {g["arn"]: g["weight"] for g in a["forward"]["targetGroups"]}


def _arns(plan) -> tuple[str, str | None]:
    tgs = {t.inputs["name"]: t.state["arn"] for t in plan.of_type("aws:lb/targetGroup:TargetGroup")}
    stable = next(a for n, a in tgs.items() if n.endswith("-triton"))
    canary = next((a for n, a in tgs.items() if n.endswith("-canary")), None)
    return stable, canary


# Triton endpoints no client of the ranker needs (the HTTP/REST v2 API and its extensions), and near misses.
REFUSED = [
    ("GET", "/"),
    ("GET", "/v2"),  # server metadata
    ("GET", "/metrics"),
    ("GET", "/v2/models/{m}_trt/config"),
    ("GET", "/v2/models/{m}_trt/stats"),
    ("GET", "/v2/models/stats"),
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/{m}_trt/load"),
    ("POST", "/v2/repository/models/{m}_trt/unload"),
    ("GET", "/v2/trace/setting"),
    ("POST", "/v2/trace/setting"),
    ("POST", "/v2/models/{m}_trt/trace/setting"),
    ("GET", "/v2/logging"),
    ("POST", "/v2/logging"),
    ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/cudasharedmemory/region/r/register"),
    ("POST", "/v2/models/{m}_py/infer"),  # the python-backend model is never public
    ("GET", "/v2/models/{m}_py"),
    ("POST", "/v2/models/{m}/infer"),  # not a Triton model of the repository
    ("POST", "/v2/models/{m}_trt/generate"),
    ("POST", "/v2/models/{m}_trt/generate_stream"),
    ("GET", "/v2/models/{m}_trt/infer"),  # the right path, the wrong method
    ("POST", "/v2/health/ready"),
    ("GET", "/v2/models/{m}_trt/versions/1"),
    ("GET", "/V2/health/ready"),  # path patterns are case-sensitive
    ("GET", "/v2/health/ready/"),
    ("DELETE", "/v2/models/{m}_trt"),
]
ALLOWED = [
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/health/live"),
    ("POST", "/v2/models/{m}_trt/infer"),
    ("POST", "/v2/models/{m}_trt/versions/1/infer"),
    ("POST", "/v2/models/{m}_onnx/infer"),
    ("POST", "/v2/models/{m}_onnx/versions/1/infer"),
    ("GET", "/v2/models/{m}_trt"),
    ("GET", "/v2/models/{m}_trt/ready"),
    ("GET", "/v2/models/{m}_onnx"),
    ("GET", "/v2/models/{m}_onnx/ready"),
]


# ---------------------------------------------------------------- declared resources
def test_default_action_is_a_fixed_404(regional):
    _stack, plan, _cfg = regional
    (action,) = plan.one("aws:lb/listener:Listener").inputs["defaultActions"]
    assert action["type"] == "fixed-response" and "forward" not in action and "targetGroupArn" not in action
    assert action["fixedResponse"]["statusCode"] == "404"
    assert action["fixedResponse"]["contentType"] == "text/plain"


def test_route_rules_are_exactly_the_documented_set(regional):
    _stack, plan, cfg = regional
    routes = {
        r.name: (
            r.inputs["priority"],
            r.inputs["conditions"][0]["httpRequestMethod"]["values"],
            r.inputs["conditions"][1]["pathPattern"]["values"],
        )
        for r in plan.of_type(RULE)
        if r.name.startswith("ingress-route-")
    }
    assert routes == documented_routes(cfg.model.name)
    # The same set as infra.names.edge_routes, which the drills and the config rules read.
    assert {
        f"ingress-route-{k}": (r.priority, [r.method], list(r.paths)) for k, r in edge_routes(cfg.model.name).items()
    } == routes
    for r in plan.of_type(RULE):
        if r.name.startswith("ingress-route-"):
            assert len(r.inputs["conditions"]) == 2  # method and path, nothing a client could leave out


def test_routes_forward_to_the_stable_target_group_without_a_canary(regional):
    _stack, plan, cfg = regional
    stable, canary = _arns(plan)
    assert canary is None
    m = cfg.model.name
    for method, path in ALLOWED:
        assert answer(plan, method, path.format(m=m)) == ("forward", {stable: 1}), (method, path)


def test_everything_else_is_answered_404(regional):
    _stack, plan, cfg = regional
    m = cfg.model.name
    for method, path in REFUSED:
        assert answer(plan, method, path.format(m=m)) == ("fixed", "404"), (method, path)


def test_the_health_check_path_is_forwarded(regional):
    """Route 53 probes the global stack's health_check.path (default /v2/health/ready) over HTTPS, with GET."""
    from infra.config import HealthCheck

    _stack, plan, _cfg = regional
    kind, _ = answer(plan, "GET", HealthCheck().path)
    assert kind == "forward"


def test_no_rule_or_path_reaches_the_python_backend_or_the_repository(regional):
    _stack, plan, cfg = regional
    values = [
        v
        for r in plan.of_type(RULE)
        for c in r.inputs["conditions"]
        for v in c.get("pathPattern", {}).get("values", [])
    ]
    assert values and not any("_py" in v or "repository" in v or "config" in v or "stats" in v for v in values)
    # Besides Triton's own paths, only the deep-health sidecar's one path (its own target group, infra/health.py).
    assert all(v.startswith(("/v2/health/", f"/v2/models/{cfg.model.name}_")) or v == DEEP_HEALTH_PATH for v in values)


# ---------------------------------------------------------------- canary: weights on the allowed paths only
def test_canary_weights_apply_to_every_allowed_path_only(unpinned):
    stable, canary = _arns(unpinned)
    assert canary is not None
    for method, path in ALLOWED:
        assert answer(unpinned, method, path.format(m="ranker")) == ("forward", {stable: 90, canary: 10})
    for method, path in REFUSED:
        assert answer(unpinned, method, path.format(m="ranker")) == ("fixed", "404")
    for r in unpinned.of_type(RULE):
        if r.name.startswith("ingress-route-"):
            assert r.inputs["actions"][0]["forward"]["stickiness"]["enabled"] is False


# ---------------------------------------------------------------- the X-Reco-Track header
def test_no_pin_rules_without_release_tooling_cidrs(unpinned, use1):
    for plan in (unpinned, use1):
        assert not [r for r in plan.of_type(RULE) if r.name.startswith("ingress-pin-")]
        assert not [r for r in plan.of_type(RULE) if r.inputs["priority"] in PIN_PRIORITY.values()]


def test_pin_rules_need_the_release_tooling_source(pinned):
    stable, canary = _arns(pinned)
    pins = {r.name: r.inputs for r in pinned.of_type(RULE) if r.name.startswith("ingress-pin-")}
    assert sorted(pins) == ["ingress-pin-canary", "ingress-pin-stable"]
    for track, arn in (("canary", canary), ("stable", stable)):
        rule = pins[f"ingress-pin-{track}"]
        assert rule["priority"] == PIN_PRIORITY[track]
        assert rule["actions"] == [{"type": "forward", "targetGroupArn": arn}]
        conds = {k: v for c in rule["conditions"] for k, v in c.items()}
        assert conds == {
            "httpHeader": {"httpHeaderName": TRACK_HEADER, "values": [track]},
            "sourceIp": {"values": TOOLING},
            "pathPattern": {"values": ["/v2/models/ranker_trt/infer", "/v2/models/ranker_onnx/infer"]},
        }


def test_the_release_tooling_pins_a_version(pinned):
    stable, canary = _arns(pinned)
    for track, arn in (("canary", canary), ("stable", stable)):
        for model in ("ranker_trt", "ranker_onnx"):
            got = answer(pinned, "POST", f"/v2/models/{model}/infer", {TRACK_HEADER: track}, TOOLING_CLIENT)
            assert got == ("forward", {arn: 1})
    # The second block too, and the header's value in any case (ALB compares header values case-insensitively).
    got = answer(pinned, "POST", "/v2/models/ranker_trt/infer", {"x-reco-track": "CANARY"}, "192.0.2.20")
    assert got == ("forward", {canary: 1})


def test_the_header_is_refused_from_anyone_else(pinned, unpinned, use1):
    stable, canary = _arns(pinned)
    for plan in (pinned, unpinned, use1):
        for value in ("canary", "stable", "anything"):
            got = answer(plan, "POST", "/v2/models/ranker_trt/infer", {TRACK_HEADER: value}, PUBLIC_CLIENT)
            assert got == ("fixed", "403"), (plan.stack, value)
    # From the release tooling: only the pins' paths and values are pinned, the rest is refused, never forwarded.
    assert answer(pinned, "GET", "/v2/health/ready", {TRACK_HEADER: "canary"}, TOOLING_CLIENT) == ("fixed", "403")
    assert answer(pinned, "POST", "/v2/models/ranker_trt/infer", {TRACK_HEADER: "x"}, TOOLING_CLIENT) == (
        "fixed",
        "403",
    )
    # Without the header the release tooling's requests are ordinary client requests.
    assert answer(pinned, "POST", "/v2/models/ranker_trt/infer", {}, TOOLING_CLIENT) == (
        "forward",
        {stable: 90, canary: 10},
    )


def test_the_guard_rule(regional):
    _stack, plan, _cfg = regional
    (guard,) = [r for r in plan.of_type(RULE) if r.name == "ingress-track-guard"]
    assert guard.inputs["priority"] == TRACK_GUARD_PRIORITY > max(PIN_PRIORITY.values())
    assert guard.inputs["conditions"] == [{"httpHeader": {"httpHeaderName": TRACK_HEADER, "values": ["*"]}}]
    assert guard.inputs["actions"][0]["fixedResponse"]["statusCode"] == "403"
    assert min(r.priority for r in edge_routes("ranker").values()) > TRACK_GUARD_PRIORITY


def test_canary_resources_are_the_target_group_and_the_pins_only_where_declared(pinned, unpinned, use1):
    from infra.names import canary_aws_resources

    def aws_extra(plan):
        return {(r.type, r.name) for r in plan.resources if r.type.startswith("aws:")} - {
            (r.type, r.name) for r in use1.resources
        }

    assert len(aws_extra(unpinned)) == canary_aws_resources(pins=False) == 1
    assert len(aws_extra(pinned)) == canary_aws_resources(pins=True) == 3


# ---------------------------------------------------------------- ALB's limits on a rule
def test_every_rule_fits_the_alb_limits(regional, pinned):
    """At most 3 match evaluations per condition (5 values for a source-ip), 5 per rule, 5 wildcards per rule,
    one of each of method/path/source-ip per rule, a priority per rule."""
    _stack, plan, _cfg = regional
    for p in (plan, pinned):
        rules = p.of_type(RULE)
        assert len({r.inputs["priority"] for r in rules}) == len(rules)
        for r in rules:
            conds = r.inputs["conditions"]
            values = [v for c in conds for spec in c.values() for v in spec["values"]]
            assert len(values) <= 5, r.name
            assert sum(v.count("*") + v.count("?") for v in values) <= 5, r.name
            for c in conds:
                ((kind, spec),) = c.items()
                assert len(spec["values"]) <= (5 if kind == "sourceIp" else 3), r.name
                assert all(len(v) <= 128 for v in spec["values"])
            kinds = [k for c in conds for k in c]
            assert all(kinds.count(k) <= 1 for k in ("httpRequestMethod", "pathPattern", "sourceIp"))
