"""Bad stack input is refused at load (issue 14): one message naming the stack, the key, the value and the rule,
raised as ConfigError (a refused command line exits non-zero with that line and no traceback: test_plan_exit.py)."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra import config as C
from infra.config import ConfigError, RegionConfig, load_fleet, load_stack, parse, read_stack_file
from infra.mocks import run_program
from tests.signing import with_canary

ROOT = Path(__file__).resolve().parents[2]
REGIONS = str(sorted(C.REGIONS))
STRICT_INT = "rule: Input should be a valid integer (strict: a string, a boolean or a float is not an integer)"
STRICT_FLOAT = "rule: Input should be a valid number (strict: a string or a boolean is not a number)"
STRICT_STR = 'rule: Input should be a valid string (strict: a number is not a string; quote it in YAML ("1.33"))'
FINITE = "rule: Input should be a finite number"

Mutate = Callable[[dict[str, Any]], Any]


def refusal(stack: str, mutate: Mutate) -> ConfigError:
    v = copy.deepcopy(read_stack_file(stack))
    mutate(v)
    with pytest.raises(ConfigError) as e:
        parse(stack, v)
    return e.value


def assert_refused(stack: str, mutate: Mutate, key: str, value: Any, rule: str) -> None:
    """Refused, with one message naming the stack, the key, the value and the rule (a NaN compares by its repr)."""
    err = refusal(stack, mutate)
    assert (err.stack, err.key, repr(err.value), err.rule) == (stack, key, repr(value), rule)
    assert str(err) == f"stack {stack}: reco-dr:{key} = {value!r}: {rule}"


@pytest.fixture
def stacks_copy(tmp_path: Path) -> Path:
    d = tmp_path / "stacks"
    shutil.copytree(C.STACKS_DIR, d)
    return d


def edit(stacks_dir: Path, stack: str, after: str, *lines: str) -> None:
    """Insert `lines` after the line `after` of the stack file, as text (YAML that safe_dump cannot write)."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    text = path.read_text().splitlines()
    i = text.index(after)
    path.write_text("\n".join([*text[: i + 1], *lines, *text[i + 1 :]]) + "\n")


def file_refusal(stacks_dir: Path, stack: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_stack(stack, stacks_dir)
    return e.value


# ---------------------------------------------------------------- 1. allowed_cidrs
CIDR_RULE = "rule: an IPv4 CIDR block such as 10.10.0.0/16 (address/prefix, no host bits set); {!r} is not one"
CIDRS = {
    "not a CIDR": (["office"], CIDR_RULE.format("office")),
    "host bits set": (["203.0.113.7/24"], CIDR_RULE.format("203.0.113.7/24")),
    "IPv6 range": (
        ["2001:db8::/32"],
        "rule: an IPv4 CIDR block; 2001:db8::/32 is an IPv6 range (this field is IPv4 only)",
    ),
    "empty list": (
        [],
        "rule: at least one IPv4 CIDR block; an empty list closes the listener to every client "
        "(0.0.0.0/0 opens it to all)",
    ),
}


@pytest.mark.parametrize("case", sorted(CIDRS))
def test_allowed_cidrs_refused(case):
    cidrs, rule = CIDRS[case]
    assert_refused(
        "prod-use1",
        lambda v: v["load_balancer"].update(allowed_cidrs=cidrs),
        "load_balancer.allowed_cidrs",
        cidrs,
        rule,
    )


def test_allowed_cidrs_accept_ipv4_blocks():
    v = copy.deepcopy(read_stack_file("prod-use1"))
    v["load_balancer"]["allowed_cidrs"] = ["198.51.100.0/24", "203.0.113.7/32"]
    cfg = parse("prod-use1", v)
    assert isinstance(cfg, RegionConfig)
    assert cfg.load_balancer.allowed_cidrs == ("198.51.100.0/24", "203.0.113.7/32")


# ---------------------------------------------------------------- 2. keys and namespaces
def test_unknown_key_in_the_project_namespace_refused(stacks_copy):
    edit(stacks_copy, "prod-use1", "  reco-dr:vpc_cidr: 10.10.0.0/16", "  reco-dr:vpc_cdir: 10.99.0.0/16")
    assert str(file_refusal(stacks_copy, "prod-use1")) == (
        "stack prod-use1: reco-dr:vpc_cdir = '10.99.0.0/16': rule: unknown key (a typo?)"
    )


NAMESPACE_RULE = (
    "rule: config keys are <namespace>:<name> with a namespace from ['pulumi', 'reco-dr'] (infra/config.py NAMESPACES)"
)
FOREIGN_KEYS = {
    "typo of the project namespace": (
        "reco_dr:vpc_cidr",
        "10.99.0.0/16",
        f"{NAMESPACE_RULE}; 'reco_dr' looks like a typo of 'reco-dr'",
    ),
    "provider namespace no resource reads": ("aws:region", "us-east-1", NAMESPACE_RULE),
    "no namespace": ("vpc_cidr", "10.99.0.0/16", NAMESPACE_RULE),
}


@pytest.mark.parametrize("case", sorted(FOREIGN_KEYS))
def signing_key_in_an_unknown_namespace_refused(case, stacks_copy):
    key, value, rule = FOREIGN_KEYS[case]
    edit(stacks_copy, "prod-use1", "  reco-dr:role: region", f"  {key}: {value}")
    assert str(file_refusal(stacks_copy, "prod-use1")) == f"stack prod-use1: {key} = {value!r}: {rule}"


def test_the_namespace_table_is_exactly_what_the_stacks_use():
    used = {
        k.split(":", 1)[0]
        for p in C.STACKS_DIR.glob("Pulumi.*.yaml")
        for k in (yaml.safe_load(p.read_text())["config"] or {})
    }
    assert used == set(C.NAMESPACES)


def test_pulumi_namespace_accepted(stacks_copy):
    edit(stacks_copy, "prod-use1", "  reco-dr:role: region", "  pulumi:tags: {team: ranking}")
    cfg = load_stack("prod-use1", stacks_copy)
    assert isinstance(cfg, RegionConfig) and cfg.region == "us-east-1"


def test_unknown_key_refused_inside_the_pulumi_program(monkeypatch, values):
    """`pulumi up` hands the program its whole config (PULUMI_CONFIG): a key of ours outside the schema is refused."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"reco-dr:vpc_cdir": "10.99.0.0/16"}))
    with pytest.raises(pulumi.RunError) as e:
        run_program("prod-use1", values=values)
    assert str(e.value) == "stack prod-use1: reco-dr:vpc_cdir = '10.99.0.0/16': rule: unknown key (a typo?)"


# ---------------------------------------------------------------- 3. YAML duplicates, anchors, aliases
YAML_CASES = {
    "repeated top-level key": (
        "  reco-dr:vpc_cidr: 10.10.0.0/16",
        ["  reco-dr:vpc_cidr: 10.99.0.0/16"],
        "reco-dr:vpc_cidr = '10.99.0.0/16': rule: a key appears once in a mapping (line 9 repeats line 8; "
        "YAML would keep the last one silently)",
    ),
    "repeated nested key": (
        "    max: 4",
        ["    max: 40"],
        "reco-dr:system_pool.max = 40: rule: a key appears once in a mapping (line 15 repeats line 14; "
        "YAML would keep the last one silently)",
    ),
    "anchor": (
        "  reco-dr:role: region",
        ["  reco-dr:service_cidr: &svc 172.20.0.0/16"],
        "reco-dr:service_cidr = '&svc': rule: no YAML anchors (&) or aliases (*): write each value where it applies "
        "(line 6)",
    ),
    "alias": (
        "  reco-dr:role: region",
        ["  reco-dr:service_cidr: *svc"],
        "reco-dr:service_cidr = '*svc': rule: no YAML anchors (&) or aliases (*): write each value where it applies "
        "(line 6)",
    ),
    "merge key": (
        "    max: 4",
        ["    <<: {max: 40}"],
        "reco-dr:system_pool = '<<': rule: no YAML merge keys (<<): write each key where it applies (line 15)",
    ),
    "invalid YAML": (
        "  reco-dr:role: region",
        ["  reco-dr:service_cidr: [172.20.0.0/16"],
        "(file) = '{file}': rule: valid YAML (expected ',' or ']', but got ':', line 7)",
    ),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_stack_file_yaml_refused(case, stacks_copy):
    after, lines, message = YAML_CASES[case]
    edit(stacks_copy, "prod-use1", after, *lines)
    file = stacks_copy / "Pulumi.prod-use1.yaml"
    assert str(file_refusal(stacks_copy, "prod-use1")) == "stack prod-use1: " + message.format(file=file)


def test_alias_bomb_refused_at_once(stacks_copy):
    """A "billion laughs" document: nine levels of ten aliases each, 10**9 strings once expanded."""
    levels = ['  reco-dr:l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"  reco-dr:l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    edit(stacks_copy, "prod-use1", "  reco-dr:role: region", *levels)
    start = time.perf_counter()
    err = file_refusal(stacks_copy, "prod-use1")
    assert time.perf_counter() - start < 1.0  # a sanity bound: the first anchor is refused, nothing expands
    assert (err.key, err.value) == ("reco-dr:l0", "&l0")


# ---------------------------------------------------------------- 4. whole-string patterns
# Every regex-validated string: (stack, path to the value, a valid value). The value plus a trailing newline is
# refused (a `$` of Python's `re.match` would accept it).
PATTERNED = {
    "certificate ARN": ("prod-use1", ("load_balancer", "certificate_arn"), None),
    "Triton image": ("prod-use1", ("triton", "image"), None),
    "regional env": ("prod-use1", ("env",), None),
    "GPU pool name": ("prod-use1", ("gpu_pools", 0, "name"), None),
    "model name": ("prod-use1", ("model", "name"), None),
    "model version": ("prod-use1", ("model", "version"), None),
    "canary version": ("prod-use1", ("model", "canary_version"), "2026.12.0"),
    "pinned digest": ("prod-use1", ("model", "digests", "2026.11.0"), None),
    "global env": ("prod-global", ("env",), None),
    "zone name": ("prod-global", ("zone", "name"), None),
    "zone id": ("prod-global", ("zone", "zone_id"), "Z0123456789ABC"),
    "record": ("prod-global", ("record",), None),
    "health check path": ("prod-global", ("health_check", "path"), None),
    "alarm email": ("prod-global", ("alarm_email",), "oncall@example.com"),
}


def _put(v: dict, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        v = v[p]
    v[path[-1]] = value


def _get(v: dict, path: tuple) -> Any:
    for p in path:
        v = v[p]
    return v


@pytest.mark.parametrize("case", sorted(PATTERNED))
def test_trailing_newline_refused(case):
    stack, path, valid = PATTERNED[case]
    v = copy.deepcopy(read_stack_file(stack))
    if path == ("model", "canary_version"):  # a served version is valid only with its manifest digest pinned
        with_canary(v["model"], str(valid), 0)
    elif valid is not None:
        _put(v, path, valid)
    good = _get(v, path)
    parse(stack, v)  # the value as it is passes
    _put(v, path, good + "\n")
    with pytest.raises(ConfigError) as e:
        parse(stack, v)
    assert e.value.key == "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    assert e.value.value == good + "\n"


def test_python_patterns_are_applied_whole():
    """The `re` patterns of infra.config are used with fullmatch; pydantic's Field patterns run in the Rust
    engine, whose `$` is the end of the text (test_trailing_newline_refused holds each to it)."""
    source = (ROOT / "infra" / "config.py").read_text()
    assert not re.search(r"\.match\(", source)


# ---------------------------------------------------------------- 5. GPU pool bound
def test_gpu_pool_max_beyond_the_bound_refused():
    assert C.MAX_GPU_POOL_NODES == 32
    assert_refused(
        "prod-use1",
        lambda v: v["gpu_pools"][0].update(max=33),
        "gpu_pools[0].max",
        33,
        "rule: a GPU pool scales to at most MAX_GPU_POOL_NODES = 32 nodes "
        "(infra/config.py: the spend the autoscaler may reach unattended)",
    )


def test_gpu_pool_max_at_the_bound_accepted():
    v = copy.deepcopy(read_stack_file("prod-use1"))
    v["gpu_pools"][0]["max"] = C.MAX_GPU_POOL_NODES
    parse("prod-use1", v)


# ---------------------------------------------------------------- 6. system pool catalog
SYSTEM_RULE = (
    "rule: a system pool instance type from infra/catalog.py SYSTEM_INSTANCE_TYPES (x86_64 families c6i, c7i, m5, "
    "m6a, m6i, m7a, m7i, r6i, r7i; sizes large to 4xlarge)"
)


@pytest.mark.parametrize("instance_type", ["p5.48xlarge", "m7g.xlarge", "m7i.huge", "t3.micro"])
def test_system_pool_instance_type_outside_the_catalog_refused(instance_type):
    assert_refused(
        "prod-use1",
        lambda v: v["system_pool"].update(instance_type=instance_type),
        "system_pool.instance_type",
        instance_type,
        SYSTEM_RULE,
    )


# ---------------------------------------------------------------- 7. Kubernetes version
K8S_RULE = "rule: one of the supported EKS versions ['1.31', '1.32', '1.33'] (infra/catalog.py, quoted)"


@pytest.mark.parametrize(
    ("version", "rule"), [("1.29", K8S_RULE), ("1.34", K8S_RULE), ("v1.33", K8S_RULE), (1.33, STRICT_STR)]
)
def test_unsupported_kubernetes_version_refused(version, rule):
    assert_refused("prod-use1", lambda v: v.update(kubernetes_version=version), "kubernetes_version", version, rule)


# ---------------------------------------------------------------- 8. health check
PORT_RULE = "rule: a TCP port from 1 to 65535"
PATH_RULE = "rule: an HTTP path starting with / (Route 53 ResourcePath: no spaces, 255 characters)"


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("port", 0, PORT_RULE),
        ("port", 65536, PORT_RULE),
        ("port", -443, PORT_RULE),
        ("path", "v2/health/ready", PATH_RULE),
        ("path", "", PATH_RULE),
        ("path", "/v2/health ready", PATH_RULE),
        ("path", "/" + "x" * 255, PATH_RULE),
    ],
)
def test_health_check_port_and_path_refused(key, value, rule):
    assert_refused("prod-global", lambda v: v["health_check"].update({key: value}), f"health_check.{key}", value, rule)


# ---------------------------------------------------------------- 9. a region twice in routing
def test_region_listed_twice_in_routing_refused(stacks_copy):
    edit(stacks_copy, "prod-global", "        weight: 30", "      us-east-1:", "        weight: 10")
    assert str(file_refusal(stacks_copy, "prod-global")) == (
        "stack prod-global: reco-dr:routing.regions.us-east-1 = {'weight': 10}: rule: a key appears once in a mapping "
        "(line 20 repeats line 16; YAML would keep the last one silently)"
    )


def test_region_listed_twice_in_the_engines_json_refused(monkeypatch):
    """Inside `pulumi up` the routing arrives as JSON text; a repeated key there is refused too."""
    v = copy.deepcopy(read_stack_file("prod-global"))
    del v["routing"]  # read from the engine's config below, not from the mocks' values
    raw = '{"mode": "weighted", "regions": {"us-east-1": {"weight": 40}, "us-east-1": {"weight": 10}}}'
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"reco-dr:routing": raw}))
    with pytest.raises(pulumi.RunError) as e:
        run_program("prod-global", values=v)
    assert str(e.value) == (
        "stack prod-global: reco-dr:routing = 'us-east-1': rule: a key appears once in a mapping "
        "(the engine's JSON repeats it)"
    )


# ---------------------------------------------------------------- 10. strict types
STRICT = {
    "weight as a string": (
        "prod-global",
        lambda v: v["routing"]["regions"]["us-east-1"].update(weight="40"),
        "routing.regions.us-east-1.weight",
        "40",
        STRICT_INT,
    ),
    "weight as a boolean": (
        "prod-global",
        lambda v: v["routing"]["regions"]["us-east-1"].update(weight=True),
        "routing.regions.us-east-1.weight",
        True,
        STRICT_INT,
    ),
    "ttl as a boolean": ("prod-global", lambda v: v.update(ttl=True), "ttl", True, STRICT_INT),
    "ttl as a string": ("prod-global", lambda v: v.update(ttl="60"), "ttl", "60", STRICT_INT),
    "pool max as a boolean": (
        "prod-use1",
        lambda v: v["gpu_pools"][0].update(max=True),
        "gpu_pools[0].max",
        True,
        STRICT_INT,
    ),
    "batch size as a float": (
        "prod-use1",
        lambda v: v["triton"].update(max_batch_size=4096.0),
        "triton.max_batch_size",
        4096.0,
        STRICT_INT,
    ),
    "canary weight as a string": (
        "prod-use1",
        lambda v: with_canary(v["model"], "2026.12.0", "10"),
        "model.canary_weight",
        "10",
        STRICT_INT,
    ),
    "success rate as a boolean": (
        "prod-global",
        lambda v: v["objectives"].update(success_rate=True),
        "objectives.success_rate",
        True,
        STRICT_FLOAT,
    ),
    "throughput as a string": (
        "prod-global",
        lambda v: v["capacity"]["qps_per_gpu"].update({"9.0": "12000"}),
        "capacity.qps_per_gpu.9.0",
        "12000",
        STRICT_FLOAT,
    ),
    "request interval as a string": (
        "prod-global",
        lambda v: v["health_check"].update(request_interval="10"),
        "health_check.request_interval",
        "10",
        "rule: Input should be 10 or 30",
    ),
}


@pytest.mark.parametrize("case", sorted(STRICT))
def test_strict_types_refuse_strings_and_booleans(case):
    assert_refused(*STRICT[case])


def test_every_model_is_strict_and_finite():
    assert C.Strict.model_config["strict"] is True and C.Strict.model_config["allow_inf_nan"] is False
    strict = [m for m in vars(C).values() if isinstance(m, type) and issubclass(m, C.Strict)]
    assert len(strict) > 10 and all(m.model_config["strict"] for m in strict)


def test_a_boolean_through_the_engines_encoding_is_refused(values):
    """The engine hands scalars as text (`true`); decoded as JSON it is a boolean, refused where an int is due."""
    values["artifact_noncurrent_days"] = True
    with pytest.raises(pulumi.RunError) as e:
        run_program("prod-use1", values=values)
    assert str(e.value) == f"stack prod-use1: reco-dr:artifact_noncurrent_days = True: {STRICT_INT}"


# ---------------------------------------------------------------- 11. control region
@pytest.mark.parametrize("region", ["us-east-9", "moon-1", "US-EAST-1"])
def test_unknown_control_region_refused(region):
    assert_refused(
        "prod-global",
        lambda v: v.update(control_region=region),
        "control_region",
        region,
        f"rule: one of the supported AWS regions {REGIONS}",
    )


# ---------------------------------------------------------------- 12. alarm email
EMAIL_RULE = "rule: an email address (name@domain.tld) for the alarm topic; leave the key out for none"


@pytest.mark.parametrize("email", ["", None, "oncall", "oncall@example", "on call@example.com"])
def test_bad_alarm_email_refused(email):
    assert_refused("prod-global", lambda v: v.update(alarm_email=email), "alarm_email", email, EMAIL_RULE)


def test_empty_alarm_email_refused_inside_the_program_without_a_traceback():
    """The engine hands "" through; it used to reach json.loads and raise JSONDecodeError."""
    v = copy.deepcopy(read_stack_file("prod-global"))
    v["alarm_email"] = ""
    with pytest.raises(pulumi.RunError) as e:
        run_program("prod-global", values=v)
    assert str(e.value) == f"stack prod-global: reco-dr:alarm_email = '': {EMAIL_RULE}"


# ---------------------------------------------------------------- 13. qps_per_gpu
@pytest.mark.parametrize(
    ("qps", "rule"),
    [
        (0, "rule: Input should be greater than 0"),
        (-100, "rule: Input should be greater than 0"),
        (float("nan"), FINITE),
        (float("inf"), FINITE),
    ],
)
def test_qps_per_gpu_zero_negative_nan_or_infinite_refused(qps, rule):
    assert_refused(
        "prod-global",
        lambda v: v["capacity"]["qps_per_gpu"].update({"9.0": qps}),
        "capacity.qps_per_gpu.9.0",
        qps,
        rule,
    )


def test_nan_throughput_from_the_stack_file_refused(stacks_copy):
    path = stacks_copy / "Pulumi.prod-global.yaml"
    path.write_text(path.read_text().replace('"9.0": 12000', '"9.0": .nan'))
    with pytest.raises(ConfigError) as e:
        load_stack("prod-global", stacks_copy)
    assert e.value.key == "capacity.qps_per_gpu.9.0" and math.isnan(e.value.value) and e.value.rule == FINITE


# ---------------------------------------------------------------- 14. gates that would be off
GATES = {
    "infinite PSI bound": (("release", "gates", "psi_max"), float("inf"), FINITE),
    "NaN PSI bound": (("release", "gates", "psi_max"), float("nan"), FINITE),
    "infinite p99 bound": (("release", "gates", "p99_ms_max"), float("inf"), FINITE),
    "infinite p99 objective (the bound's default)": (("objectives", "p99_ms"), float("inf"), FINITE),
    "error rate max of 1": (
        ("release", "gates", "error_rate_max"),
        1,
        "rule: error_rate_max < 1 (the statistic is at most 1: a maximum of 1 switches the gate off)",
    ),
    "error rate max above 1": (
        ("release", "gates", "error_rate_max"),
        1.5,
        "rule: error_rate_max < 1 (the statistic is at most 1: a maximum of 1.5 switches the gate off)",
    ),
    "KS max of 1": (
        ("release", "gates", "ks_max"),
        1.0,
        "rule: ks_max < 1 (the statistic is at most 1: a maximum of 1 switches the gate off)",
    ),
    "AUC min of 0": (
        ("release", "gates", "auc_min"),
        0,
        "rule: auc_min > 0 (the metric is at least 0: a minimum of 0 switches the gate off)",
    ),
    "NDCG min of 0": (
        ("release", "gates", "ndcg_min"),
        0.0,
        "rule: ndcg_min > 0 (the metric is at least 0: a minimum of 0 switches the gate off)",
    ),
}


@pytest.mark.parametrize("case", sorted(GATES))
def test_gate_threshold_that_switches_the_gate_off_refused(case):
    path, value, rule = GATES[case]
    assert_refused("prod-global", lambda v: _put(v, path, value), ".".join(path), value, rule)


# ---------------------------------------------------------------- 15. artifact retention vs the rollback window
def _set(stacks_dir: Path, stack: str, update: Callable[[dict], Any]) -> None:
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(path.read_text())
    update(doc["config"])
    path.write_text(yaml.safe_dump(doc))


RETENTION = (
    "stack prod-euw1: reco-dr:artifact_noncurrent_days = {days}: rule: at least release.rollback_window_days of "
    "prod-global ({days} < {window}): a rollback or restore within that window copies back noncurrent S3 versions, "
    "and S3 expires them after artifact_noncurrent_days"
)


def test_artifact_retention_shorter_than_the_rollback_window_refused(stacks_copy):
    _set(stacks_copy, "prod-euw1", lambda c: c.update({"reco-dr:artifact_noncurrent_days": 7}))
    with pytest.raises(ConfigError) as e:
        load_fleet("prod", stacks_copy)
    assert str(e.value) == RETENTION.format(days=7, window=14)


def test_rollback_window_longer_than_the_artifact_retention_refused(stacks_copy):
    _set(stacks_copy, "prod-global", lambda c: c["reco-dr:release"].update(rollback_window_days=45))
    with pytest.raises(ConfigError) as e:
        load_fleet("prod", stacks_copy)
    assert str(e.value) == RETENTION.format(days=30, window=45)


def test_rollback_window_equal_to_the_retention_accepted(stacks_copy):
    _set(stacks_copy, "prod-global", lambda c: c["reco-dr:release"].update(rollback_window_days=30))
    assert load_fleet("prod", stacks_copy).glob.release.rollback_window_days == 30


# ---------------------------------------------------------------- 16. the load-balancer alarms behind the metric checks
LATENCY_RULE = (
    "rule: below objectives.p99_ms ({p99} ms): the mean that drains a region must sit under the p99 users are "
    "promised, or most requests are slower than the objective before DNS moves"
)
HEALTH_ALARMS = {
    "period not whole minutes": (
        {"period_seconds": 90},
        "period_seconds",
        90,
        "rule: a multiple of 60 (the load balancer publishes its metrics once a minute)",
    ),
    "period below a minute": (
        {"period_seconds": 30},
        "period_seconds",
        30,
        "rule: Input should be greater than or equal to 60",
    ),
    "no evaluation period": (
        {"evaluation_periods": 0},
        "evaluation_periods",
        0,
        "rule: Input should be greater than or equal to 1",
    ),
    "M greater than N": (
        {"evaluation_periods": 2, "datapoints_to_alarm": 3},
        "datapoints_to_alarm",
        3,
        "rule: at most evaluation_periods (2): CloudWatch refuses M of N with M > N",
    ),
    "longer than a day": (
        {"period_seconds": 3600, "evaluation_periods": 25},
        "evaluation_periods",
        25,
        "rule: evaluation_periods x period_seconds (3600) at most 86400 s (CloudWatch evaluates an alarm over one day "
        "at most)",
    ),
    "error ratio of 1": (
        {"error_ratio": 1.0},
        "error_ratio",
        1.0,
        "rule: error_ratio < 1 (a ratio is at most 1: a threshold of 1 never alarms)",
    ),
    "error ratio of 0": ({"error_ratio": 0}, "error_ratio", 0, "rule: Input should be greater than 0"),
    "NaN error ratio": ({"error_ratio": float("nan")}, "error_ratio", float("nan"), FINITE),
    "error ratio as a string": ({"error_ratio": "0.01"}, "error_ratio", "0.01", STRICT_FLOAT),
    "latency of 0": ({"latency_ms": 0}, "latency_ms", 0, "rule: Input should be greater than 0"),
    "latency at the p99 objective": ({"latency_ms": 250}, "latency_ms", 250, LATENCY_RULE.format(p99=250)),
    "latency above the p99 objective": ({"latency_ms": 300.5}, "latency_ms", 300.5, LATENCY_RULE.format(p99=250)),
    "unknown key": ({"p99_ms": 200}, "p99_ms", 200, "rule: unknown key (a typo?)"),
}


@pytest.mark.parametrize("case", sorted(HEALTH_ALARMS))
def test_health_alarm_settings_refused(case):
    given, key, value, rule = HEALTH_ALARMS[case]
    assert_refused("prod-global", lambda v: v.update(health_alarms=given), f"health_alarms.{key}", value, rule)


def test_a_lowered_p99_objective_refuses_the_default_latency_threshold():
    """The rule holds for the default too: an objective at or below 100 ms needs an explicit, lower latency_ms."""
    assert_refused(
        "staging-global",
        lambda v: v["objectives"].update(p99_ms=80),
        "health_alarms.latency_ms",
        100,
        LATENCY_RULE.format(p99=80),
    )
    v = copy.deepcopy(read_stack_file("staging-global"))
    v["objectives"]["p99_ms"] = 80
    v["health_alarms"] = {"latency_ms": 40}
    cfg = parse("staging-global", v)
    assert isinstance(cfg, C.GlobalConfig) and cfg.health_alarms.latency_ms == 40


def test_health_alarm_defaults_and_a_valid_override():
    assert load_fleet("prod").glob.health_alarms == C.HealthAlarms(
        period_seconds=60, evaluation_periods=2, datapoints_to_alarm=1, error_ratio=0.01, latency_ms=100
    )
    v = {
        **read_stack_file("prod-global"),
        "health_alarms": {"period_seconds": 300, "evaluation_periods": 5, "datapoints_to_alarm": 5},
    }
    cfg = parse("prod-global", v)
    assert isinstance(cfg, C.GlobalConfig)
    assert (cfg.health_alarms.period_seconds, cfg.health_alarms.datapoints_to_alarm) == (300, 5)


# ---------------------------------------------------------------- command lines
@pytest.mark.parametrize("argv", [["infra.plan", "prod-use1"], ["infra.capacity", "prod"]])
def test_command_lines_print_the_one_message_without_a_traceback(argv, stacks_copy):
    edit(stacks_copy, "prod-use1", "  reco-dr:role: region", "  reco_dr:vpc_cidr: 10.99.0.0/16")
    res = subprocess.run(
        [sys.executable, "-m", *argv, "--stacks-dir", str(stacks_copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == (
        f"error: stack prod-use1: reco_dr:vpc_cidr = '10.99.0.0/16': {NAMESPACE_RULE}; "
        "'reco_dr' looks like a typo of 'reco-dr'"
    )
