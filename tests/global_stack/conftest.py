"""Fixtures for the global program under infra.mocks (the shared offline runner).

StackReference resources are answered with `infra.mocks.regional_outputs(stack)`: what the regional
program exports for that stack's config. `OverridingMocks` lets a test damage one stack's outputs.
"""

from __future__ import annotations

import pytest

from infra import mocks as m
from infra import pulumi_runtime
from infra.config import read_stack_file
from infra.outputs import OutputError


@pytest.fixture(autouse=True, scope="session")
def _quiet_abandoned_output_errors():
    """A run that fails on a bad regional output leaves every derived Output failed with the same OutputError;
    asyncio logs each unretrieved one with a full traceback when it is collected (about 100k lines, seconds
    of formatting). The test asserts on the raised error; the echoes are dropped, anything else still logs."""
    loop = pulumi_runtime.event_loop()
    previous = loop.get_exception_handler()

    def handler(lp, context):
        if isinstance(context.get("exception"), OutputError):
            return
        if previous:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    # Left installed after the session: the abandoned futures are collected as late as interpreter exit.
    loop.set_exception_handler(handler)


class OverridingMocks(m.RecordingMocks):
    """RecordingMocks whose StackReference answers can be edited per regional stack:
    `edits = {"prod-usw2": {"lb_dns_name": None}}` removes that output, any other value replaces it."""

    def __init__(self, stack: str, edits: dict[str, dict]):
        super().__init__(stack)
        self.edits = edits

    def new_resource(self, args):
        rid, state = super().new_resource(args)
        if args.typ == "pulumi:pulumi:StackReference":
            ref = state["name"].split("/")[-1]
            outputs = dict(state["outputs"])
            for k, v in self.edits.get(ref, {}).items():
                if v is None:
                    outputs.pop(k, None)
                else:
                    outputs[k] = v
            state = {**state, "outputs": outputs}
        return rid, state


def run(stack: str, values: dict | None = None, edits: dict[str, dict] | None = None, **overrides) -> m.Plan:
    """Run the program for `stack`; `overrides` replace top-level config keys of its stack file."""
    if overrides:
        values = {**(values or read_stack_file(stack)), **overrides}
    return m.run_program(stack, values=values, mocks=OverridingMocks(stack, edits or {}))


@pytest.fixture
def run_global():
    return run


@pytest.fixture(scope="session")
def prod() -> m.Plan:
    return run("prod-global")


@pytest.fixture(scope="session")
def staging() -> m.Plan:
    return run("staging-global")
