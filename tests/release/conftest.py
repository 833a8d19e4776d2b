"""Fixtures for the release tests: no credentials, moto once per module, a fake clock, one small published
model repository per version per session (building the real ranker takes ~25 s; these take milliseconds)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest


@pytest.fixture(autouse=True)
def _no_aws(no_aws):
    """Every test here runs without real credentials (tests/conftest.py)."""


@pytest.fixture(scope="session")
def repos(tmp_path_factory):
    """repos(version, behaviour="good", **kw) -> a verified model repository directory (cached)."""
    from tests.release.support import make_repo

    root = tmp_path_factory.mktemp("repos")
    return lambda version, behaviour="good", **kw: make_repo(
        root / behaviour / ("fb" if kw.get("onnx_fallback", True) else "eng"), version, behaviour, **kw
    )


@pytest.fixture
def clock():
    from drills.clock import FakeClock

    return FakeClock()


@pytest.fixture
def release_world(aws, tmp_path, clock, repos):
    """make(env="prod", stable="2026.11.0", **kw) -> namespace(backend, fleet, stacks, state, clock, plan_file, env)."""
    from drills.plugins import load_plugins
    from tests.drills.drills_support import copy_stacks
    from tests.release.support import plan_file, release_backend

    load_plugins()
    made = []

    def make(env: str = "prod", stable: str = "2026.11.0", **kw):
        uid = "r" + uuid.uuid4().hex[:8]
        stacks = copy_stacks(tmp_path / f"stacks-{uid}", None, uid=uid)
        state = tmp_path / f"state-{uid}"
        b, fleet = release_backend(env, stacks, state, clock, uid=uid, stable_repo=repos(stable, w_seed=1), **kw)
        made.append(b)
        return SimpleNamespace(
            backend=b,
            fleet=fleet,
            stacks=stacks,
            state=state,
            clock=clock,
            env=env,
            plan_file=plan_file(tmp_path / f"stacks-{uid}"),
            uid=uid,
        )

    yield make
    for b in made:
        b.close()
