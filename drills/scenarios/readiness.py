"""readiness: the readiness check proven against a fleet that breaks and heals (the rehearsal's own scenario).

Readiness is evaluated (every check of drills/readiness/checks.py, through the backend's `readiness`, as
`python -m drills readiness` does), then one region's served manifest is made to differ (the `served-manifest-differs`
fault: its bytes change, its model does not), readiness must fail on the digest check and on nothing else, the fault is
cleared, and readiness must pass again. The fault exists in the rehearsal's backend only: on AWS the scenario is refused
when the fault is injected (the backend offers no such fault), after the first, read-only check.
"""

from __future__ import annotations

from drills.model import Plan, Step
from drills.planning import PlanContext, fault_step, finish_plan
from drills.scenarios.base import Scenario

FAULT = "served-manifest-differs"


class Readiness(Scenario):
    name = "readiness"
    summary = "readiness passes, fails naming the digest check when one region's served manifest differs, passes again"

    def build(self, ctx: PlanContext) -> Plan:
        region = ctx.region
        assert region

        def check(name: str, expect: list[str], what: str) -> Step:
            return Step(name=name, action="readiness_check", params={"expect": expect}, description=what)

        steps = [
            check("ready", [], "every readiness check passes"),
            fault_step(
                "inject",
                {"region": region, "fault": FAULT},
                f"make the manifest {region} serves differ from the other regions' (its bytes only)",
            ),
            check("not-ready", ["digest"], f"readiness fails on the digest check alone, naming {region}"),
            fault_step("clear", {"region": region, "fault": FAULT}, f"put {region}'s served manifest back"),
            check("ready-again", [], "every readiness check passes again"),
        ]
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches={},
            pre_config={},
            abort=[],
            rollback=[f"put {region}'s served manifest back (recorded in the journal)"],
        )
