"""A GPU pool's capacity guarantee (gpu_pools[].capacity): accepted forms and refusals naming key, value, rule."""

from __future__ import annotations

import copy

import pytest

from infra.config import ConfigError, RegionConfig, parse, read_stack_file

CB = {
    "kind": "capacity-block",
    "reservation_id": "cr-0123456789abcdef0",
    "instances": 1,
    "end_date": "2027-01-01T11:30:00Z",
}


def _with(capacity: dict, stack: str = "prod-use1", **pool) -> dict:
    v = copy.deepcopy(read_stack_file(stack))
    v["gpu_pools"][0]["capacity"] = capacity
    v["gpu_pools"][0].update(pool)
    return v


@pytest.mark.parametrize(
    "capacity",
    [
        {"kind": "none"},
        {"kind": "odcr", "reservation_id": "cr-0123456789abcdef0", "instances": 2},
        {
            "kind": "odcr",
            "reservation_group_arn": "arn:aws:resource-groups:us-east-1:111111111111:group/g",
            "instances": 1,
        },
        {"kind": "odcr", "availability_zone": "us-east-1b", "instances": 3},
        CB,
    ],
)
def test_accepted(capacity):
    cfg = parse("prod-use1", _with(capacity))
    assert isinstance(cfg, RegionConfig) and cfg.gpu_pools[0].capacity.kind == capacity["kind"]


def refused(values: dict, stack: str = "prod-use1") -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse(stack, values)
    assert e.value.rule.startswith("rule:")
    return e.value


def test_reservation_id_format():
    e = refused(_with({"kind": "odcr", "reservation_id": "cr-123", "instances": 1}))
    assert (e.key, e.value) == ("gpu_pools[0].capacity.reservation_id", "cr-123")
    assert e.rule == "rule: a capacity reservation id, cr- and 17 hex digits"


def test_odcr_needs_exactly_one_target():
    e = refused(_with({"kind": "odcr", "instances": 1}))
    assert e.key == "gpu_pools[0].capacity" and "exactly one of reservation_id, reservation_group_arn or" in e.rule
    two = {"kind": "odcr", "instances": 1, "reservation_id": "cr-0123456789abcdef0", "availability_zone": "us-east-1a"}
    assert "got ['availability_zone', 'reservation_id']" in refused(_with(two)).rule


def test_reservation_needs_instances():
    e = refused(_with({"kind": "odcr", "reservation_id": "cr-0123456789abcdef0"}))
    assert e.rule == "rule: capacity.kind odcr needs instances >= 1 (the nodes it guarantees)"


def test_capacity_block_needs_its_end():
    e = refused(_with({k: v for k, v in CB.items() if k != "end_date"}))
    assert "capacity-block needs reservation_id and end_date" in e.rule
    e = refused(_with(CB | {"end_date": "2027-01-01"}))
    assert (e.key, e.value) == ("gpu_pools[0].capacity.end_date", "2027-01-01")


def test_none_takes_nothing_else():
    e = refused(_with({"kind": "none", "instances": 2}))
    assert e.rule == "rule: capacity.kind none takes no other key (got ['instances'])"


def test_more_reserved_than_the_pool_reaches():
    e = refused(_with({"kind": "odcr", "reservation_id": "cr-0123456789abcdef0", "instances": 4}, max=3))
    assert e.key == "gpu_pools[0]" and e.rule.startswith("rule: capacity.instances 4 <= max 3")


def test_spot_pool_cannot_use_a_reservation():
    e = refused(_with({"kind": "odcr", "reservation_id": "cr-0123456789abcdef0", "instances": 1}, capacity_type="SPOT"))
    assert "a SPOT pool cannot use it" in e.rule


def test_created_reservation_in_the_stacks_region():
    e = refused(_with({"kind": "odcr", "availability_zone": "us-west-2a", "instances": 1}))
    assert (
        e.key == "gpu_pools"
        and e.rule == "rule: h100.capacity.availability_zone us-west-2a must be a zone of us-east-1"
    )


def test_unknown_key_refused():
    e = refused(_with({"kind": "odcr", "reservation": "cr-0123456789abcdef0", "instances": 1}))
    assert (e.key, e.rule) == ("gpu_pools[0].capacity.reservation", "rule: unknown key (a typo?)")
