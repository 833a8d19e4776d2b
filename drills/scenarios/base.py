"""What a scenario is: a name, what `--region` means to it, the routing modes it runs under, and a pure
`build(ctx) -> Plan`. The table of scenarios is drills.scenarios.SCENARIOS."""

from __future__ import annotations

from typing import ClassVar, Literal

from drills.model import Plan
from drills.planning import PlanContext


class Scenario:
    name: ClassVar[str]
    summary: ClassVar[str]
    region_arg: ClassVar[Literal["required", "optional", "ignored"]] = "required"
    modes: ClassVar[tuple[str, ...]] = ("weighted", "failover")
    mode_hint: ClassVar[str] = ""  # what to run instead where the mode does not fit

    def build(self, ctx: PlanContext) -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError
