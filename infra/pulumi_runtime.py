"""Every use of the Pulumi SDK's private runtime, in one place (tests/infra/test_pulumi_runtime.py pins each).

Why the public API does not suffice: the offline plan (infra.mocks.run_program) runs a whole Pulumi program in
this process and returns its stack outputs, many times in one process (each test, each stack, the rehearsal's
re-apply after every drill step). `pulumi.runtime.set_mocks` and `pulumi.runtime.test` exist for unit tests of
resources declared inside a decorated test function; they neither run a program's `main` as the engine does (root
Stack resource, stack transformations, exported outputs) nor reset the per-process state between two runs. The
engine itself does that through `pulumi.runtime.stack.run_pulumi_func` and the settings' context variables, which
are what this module wraps. A Pulumi upgrade that changes them fails the pinning tests, not a drill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pulumi
from pulumi.runtime import mocks as _mocks
from pulumi.runtime import settings as _settings
from pulumi.runtime.stack import Stack, run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

# The mock monitor the offline plan subclasses (to tell its mocks each resource's full URN).
MockMonitor = _mocks.MockMonitor


def reset() -> None:
    """Forget the previous run: a fresh root Stack next time (outputs of an earlier run must not leak in) and no
    pending outputs of a failed run (they would fail the next, as pulumi.runtime.test also clears them)."""
    _settings.ROOT.set(None)
    _settings.SETTINGS.outputs.clear()


def install_mocks(mocks: pulumi.runtime.Mocks, *, project: str, stack: str, monitor: MockMonitor) -> Stack | None:
    """`pulumi.runtime.set_mocks` with our monitor; returns the root Stack resource it created (typed as a plain
    Resource by the SDK)."""
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    return cast("Stack | None", _settings.get_root_resource())


def run_program(main: Callable[[], None]) -> None:
    """Run a program's `main` to completion as the engine does: inside the root Stack, every resource registered."""
    _sync_await(run_pulumi_func(main))


def resolve(value: Any) -> Any:
    """The plain value of an Output (or of anything holding Outputs), waited for on the runtime's event loop."""
    return _sync_await(pulumi.Output.from_input(value).future())


def event_loop() -> asyncio.AbstractEventLoop:
    """The event loop the runtime resolves Outputs on (where an abandoned Output's error is reported)."""
    return _ensure_event_loop()
