"""Fixtures for the drills tests: no credentials, no network beyond 127.0.0.1, a fake clock.

moto is started once per test module (`aws`), not per test: creating EKS node groups initialises moto's EC2
backend per region, which costs seconds. Tests stay apart by names: every `world` gets its own hosted zone,
buckets and clusters (a uid in each name).
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest


@pytest.fixture(autouse=True)
def _no_aws(no_aws):
    """Every test here runs without real credentials (tests/conftest.py)."""


@pytest.fixture
def clock():
    from drills.clock import FakeClock

    return FakeClock()


@pytest.fixture
def world(aws, tmp_path, clock):
    """make(env, overrides=..., manifests=..., lag=...) -> namespace(stacks, state, backend, clock, uid)."""
    from tests.drills.drills_support import build_test_backend, copy_stacks

    made = []

    def make(
        env: str = "prod",
        overrides: dict | None = None,
        manifests: dict | None = None,
        lag: float = 40.0,
        clients: int = 4,
    ):
        uid = "u" + uuid.uuid4().hex[:8]
        stacks = copy_stacks(tmp_path / f"stacks-{uid}", overrides, uid=uid)
        state = tmp_path / f"state-{uid}"
        b = build_test_backend(
            env, stacks, state, clock, manifests=manifests, replication_lag=lag, clients=clients, uid=uid
        )
        made.append(b)
        return SimpleNamespace(stacks=stacks, state=state, backend=b, clock=clock, uid=uid, env=env)

    yield make
    for b in made:
        b.close()
