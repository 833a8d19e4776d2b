"""The tables the engine dispatches on, composed explicitly: every action a plan step can name and every check
kind a gate or abort condition can name, from the modules that define them. Nothing is registered by being
imported; a name defined twice is an error at import, not a silent override.

Scenarios are tabled in drills.scenarios, backends in drills.backends and commands in drills.cli, each the same
way; `$DRILLS_PLUGINS` (drills.plugins) is the one way to add to them from outside this tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from drills import actions, checks
from drills.release import actions as release_actions
from drills.release import checks as release_checks

T = TypeVar("T")


def merged(kind: str, *tables: Mapping[str, T]) -> dict[str, T]:
    out: dict[str, T] = {}
    for table in tables:
        for name, value in table.items():
            if name in out:
                raise ValueError(f"{kind} {name!r} is defined twice")
            out[name] = value
    return out


ACTIONS: dict[str, actions.ActionFn] = merged("action", actions.ACTIONS, release_actions.ACTIONS)
CHECKS: dict[str, checks.CheckFn] = merged("check kind", checks.CHECKS, release_checks.CHECKS)
