"""Pins the Pulumi SDK internals infra.pulumi_runtime relies on: a program's main runs inside a fresh root Stack
whose outputs resolve, the run registers through our monitor, and a reset keeps one run's outputs out of the next."""

from __future__ import annotations

import pulumi

from infra import pulumi_runtime as rt


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.created: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.created.append(args.name)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        return {}, None


class _Monitor(rt.MockMonitor):
    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[str] = []

    def RegisterResource(self, request):
        self.registered.append(request.type)
        return super().RegisterResource(request)


class _Thing(pulumi.ComponentResource):
    def __init__(self, name: str) -> None:
        super().__init__("test:index:Thing", name)
        self.register_outputs({})


def _run(export: dict) -> tuple[dict, _Mocks, _Monitor]:
    mocks = _Mocks()
    monitor = _Monitor(mocks)
    rt.reset()
    root = rt.install_mocks(mocks, project="pin", stack="dev", monitor=monitor)
    assert root is not None and type(root).__name__ == "Stack"

    def main() -> None:
        _Thing("a")
        for k, v in export.items():
            pulumi.export(k, pulumi.Output.from_input(v))

    rt.run_program(main)
    return rt.resolve(dict(root.outputs)), mocks, monitor


def test_a_program_runs_in_a_root_stack_and_its_outputs_resolve():
    outputs, _mocks, monitor = _run({"answer": 42, "nested": {"x": "y"}})
    assert outputs == {"answer": 42, "nested": {"x": "y"}}
    assert "test:index:Thing" in monitor.registered


def test_reset_keeps_one_runs_outputs_out_of_the_next():
    first, _, _ = _run({"only_in_first": 1})
    second, _, _ = _run({"only_in_second": 2})
    assert first == {"only_in_first": 1} and second == {"only_in_second": 2}


def test_the_event_loop_is_the_runtimes():
    loop = rt.event_loop()
    assert loop is rt.event_loop() and not loop.is_closed()


def test_no_other_module_reaches_into_the_sdk_runtime():
    """Private runtime modules (settings, stack, sync_await, mocks internals) are imported by infra/pulumi_runtime.py
    only; everything else uses the public `pulumi` / `pulumi.runtime` API or that module."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    private = re.compile(r"^\s*(from|import)\s+pulumi\.runtime\.\w+", re.M)
    offenders = [
        str(p.relative_to(root))
        for top in ("infra", "drills", "model_build", "tests")
        for p in (root / top).rglob("*.py")
        if p.name != "pulumi_runtime.py" and private.search(p.read_text())
    ]
    assert offenders == []
