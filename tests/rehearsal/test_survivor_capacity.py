"""The rehearsal's survivor-capacity model, its pure part (drills/rehearsal/capacity.py): what a region runs at peak,
what a scale-up asks for, which nodes a reservation covers, and the stated parts each launch waits for."""

from __future__ import annotations

from datetime import UTC, datetime

from drills.rehearsal.capacity import launches, node_qps, scale_target, stated_parts, steady_nodes, wanted_qps
from infra.capacity import guaranteed_instances, shares_after_loss
from infra.catalog import CAPACITY_STARTUP, INSUFFICIENT_CAPACITY_WAIT
from infra.config import load_fleet

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def _after_loss(fleet, region: str, lost: str) -> float:
    return shares_after_loss(fleet.glob.routing.weights(), lost)[region] * fleet.glob.capacity.peak_qps


def test_steady_nodes_carry_the_peak_share_at_the_declared_target_utilisation():
    fleet = load_fleet("prod")
    weights = fleet.glob.routing.weights()
    for r, cfg in fleet.regions.items():
        desired = {p.name: p.desired for p in cfg.gpu_pools}
        nodes = steady_nodes(fleet, r, desired)
        share = shares_after_loss(weights, None)[r] * fleet.glob.capacity.peak_qps
        assert all(nodes[p] >= n for p, n in desired.items())  # never below what the stack declares
        assert node_qps(fleet, cfg, nodes) * cfg.triton.target_gpu_utilization / 100 >= share - 1e-6


def test_a_scale_up_uses_reserved_instances_first_and_only_they_skip_the_capacity_wait():
    fleet = load_fleet("prod")
    cfg = fleet.regions["eu-west-1"]
    running = steady_nodes(fleet, "eu-west-1", {p.name: p.desired for p in cfg.gpu_pools})
    want = wanted_qps(cfg, _after_loss(fleet, "eu-west-1", "us-east-1"))
    with_res = scale_target(fleet, cfg, running, want, True, NOW)
    assert node_qps(fleet, cfg, with_res) >= want - 1e-6
    covered = {lc.pool: lc.nodes for lc in launches(cfg, running, with_res, True, NOW) if lc.reserved}
    # Every guaranteed instance not yet running is taken before any On-Demand one.
    for p in cfg.gpu_pools:
        free = max(0, min(p.max, guaranteed_instances(p, NOW)) - running[p.name])
        assert covered.get(p.name, 0) == min(free, with_res[p.name] - running[p.name])
    # Without reservations nothing is covered: every added node waits for EC2 capacity.
    without = scale_target(fleet, cfg, running, want, False, NOW)
    assert all(not lc.reserved for lc in launches(cfg, running, without, False, NOW))
    assert sum(without.values()) >= sum(running.values()) + 1


def test_a_scale_up_never_passes_a_pools_max():
    fleet = load_fleet("prod")
    cfg = fleet.regions["us-west-2"]
    target = scale_target(fleet, cfg, {p.name: p.min for p in cfg.gpu_pools}, 1e12, True, NOW)
    assert target == {p.name: p.max for p in cfg.gpu_pools}
    assert launches(cfg, target, target, True, NOW) == []


def test_stated_parts_come_from_the_catalog_and_a_reservation_removes_only_the_capacity_wait():
    stated = {s.name: s.seconds for s in CAPACITY_STARTUP}
    reserved, on_demand = stated_parts(True), stated_parts(False)
    assert reserved[INSUFFICIENT_CAPACITY_WAIT.name] == 0
    assert on_demand[INSUFFICIENT_CAPACITY_WAIT.name] == INSUFFICIENT_CAPACITY_WAIT.seconds > 0
    for part in ("node boot", "image pull"):
        assert reserved[part] == on_demand[part] == stated[part]
