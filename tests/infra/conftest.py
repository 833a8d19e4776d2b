"""Shared fixtures: each stack's program is run once under infra.mocks and the Plan reused by every test."""

from __future__ import annotations

import copy

import pytest

from infra.config import RegionConfig, list_stacks, load_stack, read_stack_file
from infra.mocks import Plan, run_program


def pytest_configure(config):
    # pulumi_aws warns at import about its own deprecated aliases (BucketV2, ...); the program uses none.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws")


REGIONAL_STACKS = [s for s in list_stacks() if isinstance(load_stack(s), RegionConfig)]
_CACHE: dict[str, Plan] = {}


def plan_of(stack: str) -> Plan:
    if stack not in _CACHE:
        _CACHE[stack] = run_program(stack)
    return _CACHE[stack]


@pytest.fixture(scope="session")
def use1() -> Plan:
    return plan_of("prod-use1")


@pytest.fixture(scope="session")
def euw1() -> Plan:
    return plan_of("prod-euw1")


@pytest.fixture(params=REGIONAL_STACKS)
def regional(request) -> tuple[str, Plan, RegionConfig]:
    cfg = load_stack(request.param)
    assert isinstance(cfg, RegionConfig)  # REGIONAL_STACKS holds regional stacks only
    return request.param, plan_of(request.param), cfg


@pytest.fixture
def values():
    """A fresh, mutable copy of prod-use1's config values (un-namespaced), for rule tests."""
    return copy.deepcopy(read_stack_file("prod-use1"))


@pytest.fixture(scope="session")
def plan_for():
    return plan_of


@pytest.fixture(scope="session")
def as_manifest():
    """A recorded Kubernetes resource as the manifest the provider would apply."""
    return lambda rec: {k: v for k, v in rec.inputs.items() if k in ("apiVersion", "kind", "metadata", "spec", "data")}
