"""Every config rule refuses with a message naming stack, key, value and rule, and declares nothing."""

from __future__ import annotations

import shutil

import pulumi
import pytest
import yaml

from infra.config import ConfigError, load_fleet, parse
from infra.mocks import RecordingMocks, run_program

REGIONS = (
    "['ap-northeast-1', 'ap-south-1', 'ap-southeast-1', 'ap-southeast-2', 'ca-central-1', 'eu-central-1', "
    "'eu-north-1', 'eu-west-1', 'eu-west-2', 'sa-east-1', 'us-east-1', 'us-east-2', 'us-west-1', 'us-west-2']"
)
PIN_RULE = "rule: the Triton image must be pinned by a version tag (not 'latest') or a sha256 digest"

CASES = {
    "pool out of order": (
        lambda v: v["gpu_pools"][0].update(min=3, desired=2, max=1),
        "stack prod-use1: reco-dr:gpu_pools[0] = {'name': 'h100', 'instance_type': 'p5.48xlarge', "
        "'min': 3, 'desired': 2, 'max': 1, 'capacity': {'kind': 'odcr', 'reservation_id': 'cr-0b1c2d3e000000001', "
        "'instances': 1}}: rule: min <= desired <= max (got min 3, desired 2, max 1)",
    ),
    "non-GPU instance type": (
        lambda v: v["gpu_pools"][1].update(instance_type="m7i.xlarge"),
        "stack prod-use1: reco-dr:gpu_pools[1].instance_type = 'm7i.xlarge': "
        "rule: a GPU pool needs a GPU instance type from the catalog (families: g5, g6, g6e, p4d, p4de, p5, p5e, p5en)",
    ),
    "unknown region": (
        lambda v: v.update(region="mars-east-1"),
        f"stack prod-use1: reco-dr:region = 'mars-east-1': rule: one of the supported AWS regions {REGIONS}",
    ),
    "service CIDR overlaps VPC": (
        lambda v: v.update(service_cidr="10.10.128.0/17"),
        "stack prod-use1: reco-dr:service_cidr = '10.10.128.0/17': rule: the Kubernetes service CIDR must not overlap "
        "vpc_cidr 10.10.0.0/16",
    ),
    "missing required key": (
        lambda v: v.pop("vpc_cidr"),
        "stack prod-use1: reco-dr:vpc_cidr is missing: rule: required key",
    ),
    "unpinned image (latest)": (
        lambda v: v["triton"].update(image="nvcr.io/nvidia/tritonserver:latest"),
        f"stack prod-use1: reco-dr:triton.image = 'nvcr.io/nvidia/tritonserver:latest': {PIN_RULE}",
    ),
    "unpinned image (no tag)": (
        lambda v: v["triton"].update(image="nvcr.io/nvidia/tritonserver"),
        f"stack prod-use1: reco-dr:triton.image = 'nvcr.io/nvidia/tritonserver': {PIN_RULE}",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_message_from_plain_python(case, values):
    mutate, message = CASES[case]
    mutate(values)
    with pytest.raises(ConfigError) as e:
        parse("prod-use1", values)
    assert str(e.value) == message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_declares_nothing(case, values):
    mutate, message = CASES[case]
    mutate(values)
    mocks = RecordingMocks("prod-use1")
    with pytest.raises(pulumi.RunError) as e:
        run_program("prod-use1", values=values, mocks=mocks)
    assert str(e.value) == message
    assert mocks.resources == [] and mocks.calls == []
    assert e.value.plan.resources == []  # type: ignore[attr-defined]  # run_program attaches .plan


def test_the_same_values_are_fine(values):
    assert run_program("prod-use1", values=values).resources  # the mutations above are what break the config


@pytest.fixture
def stacks_copy(tmp_path):
    from infra.config import STACKS_DIR

    d = tmp_path / "stacks"
    shutil.copytree(STACKS_DIR, d)
    return d


def _set(stacks_dir, stack, key, value):
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"][f"reco-dr:{key}"] = value
    path.write_text(yaml.safe_dump(doc))


def test_overlapping_vpcs_between_stacks_of_an_environment(stacks_copy):
    load_fleet("prod", stacks_copy)  # fine as shipped
    _set(stacks_copy, "prod-euw1", "vpc_cidr", "10.10.0.0/17")
    with pytest.raises(ConfigError) as e:
        load_fleet("prod", stacks_copy)
    assert str(e.value) == (
        "stack prod-use1: reco-dr:vpc_cidr = '10.10.0.0/16': rule: VPC CIDRs in one environment must "
        "not overlap (10.10.0.0/17 in prod-euw1)"
    )


def test_stack_file_values_pass_through_the_engine_encoding(stacks_copy):
    """run_program JSON-encodes structured values as the engine does; a bad file value still names its key."""
    _set(
        stacks_copy,
        "prod-use1",
        "gpu_pools",
        [{"name": "h100", "instance_type": "c7i.large", "min": 1, "desired": 1, "max": 2}],
    )
    with pytest.raises(pulumi.RunError) as e:
        run_program("prod-use1", stacks_dir=stacks_copy)
    assert "reco-dr:gpu_pools[0].instance_type = 'c7i.large': rule: a GPU pool needs a GPU instance type" in str(
        e.value
    )
    assert e.value.plan.resources == []  # type: ignore[attr-defined]  # run_program attaches .plan
