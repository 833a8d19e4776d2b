"""The backends table: every backend of this tree by name, a clear refusal for an unknown one or for a rehearsal world
that died with its process, and no silent override."""

from __future__ import annotations

import pytest

from drills.backends import BACKENDS, build_backend, register_backend
from drills.clock import FakeClock
from drills.errors import DrillError, GuardrailError
from drills.scenarios import build_plan


def test_the_tree_backends_are_tabled():
    assert {"aws", "rehearsal", "rehearsal-release"} <= set(BACKENDS)
    assert all(text for _, text in BACKENDS.values())


def test_unknown_and_duplicate_backends_are_refused():
    plan = build_plan("evacuate-region", "prod", "us-east-1")
    with pytest.raises(GuardrailError, match=r"unknown backend 'nope'; known: .*aws"):
        build_backend("nope", plan, {}, FakeClock())
    with pytest.raises(ValueError, match="already defined"):
        register_backend("aws", BACKENDS["aws"][0])


def test_a_release_rehearsal_drill_cannot_be_rebuilt_in_another_process():
    """`drills rollback` of a release rehearsal's journal: its world died with `drills rehearse-release`."""
    plan = build_plan("evacuate-region", "prod", "us-east-1")
    with pytest.raises(DrillError, match="lives only inside `python -m drills rehearse-release`"):
        build_backend("rehearsal-release", plan, {"scale": 0.1}, FakeClock())
