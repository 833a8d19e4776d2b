"""artifact-replication: RPO of the model artifacts and version skew between regions."""

from __future__ import annotations

from drills.errors import GuardrailError
from drills.model import Condition, Plan, Step
from drills.planning import PlanContext, finish_plan
from drills.scenarios.base import Scenario


class ArtifactReplication(Scenario):
    name = "artifact-replication"
    summary = (
        "write a canary object per region, time its arrival in every other region (RPO), compare current "
        "manifests (version skew)"
    )
    region_arg = "optional"

    def build(self, ctx: PlanContext) -> Plan:
        fleet = ctx.fleet
        regions = sorted(fleet.regions)
        if len(regions) < 2:
            raise GuardrailError("no-survivor", f"{fleet.env} has one region: there is nothing to replicate to")
        source = ctx.params.source_region or ctx.region
        if source and source not in fleet.regions:
            raise GuardrailError("unknown-region", f"source region {source!r} is not in {fleet.env}")
        sources = [source] if source else regions
        rpo = fleet.glob.objectives.rpo_seconds
        timeout = ctx.params.replication_timeout_seconds or 2 * rpo
        steps = [
            bucket_precheck_step(regions),
            canary_write_step(
                sources, f"put a canary object (drills/canary/<drill id>/<source>) in {', '.join(sources)}"
            ),
            measure_replication_step(
                sources,
                timeout,
                rpo,
                f"poll HEAD in every other region until each canary is visible (RPO; gives up after {timeout:g} s)",
                f"every canary visible everywhere within {rpo:g} s (judged in the report; the drill goes on to the "
                "skew check)",
            ),
            Step(
                name="manifest-skew",
                action="manifest_skew",
                params={"regions": regions},
                description="read the current model manifest in each region; report versions and hashes that differ",
            ),
            canary_cleanup_step(),
        ]
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches={},
            pre_config={},
            abort=[],
            rollback=["delete every canary object the journal records, in every region"],
        )


# ---------------------------------------------------------------- steps shared with region-brownout's partition
def bucket_precheck_step(regions: list[str]) -> Step:
    return Step(
        name="precheck",
        action="precheck",
        params={"expect_config": {}, "engines_for": {}, "buckets": regions, "baseline_seconds": 0},
        description="every region's artifact bucket answers",
    )


def canary_write_step(sources: list[str], description: str) -> Step:
    return Step(
        name="canary-write", action="canary_write", mutates=True, params={"sources": sources}, description=description
    )


def measure_replication_step(
    sources: list[str], timeout: float, rpo: float, description: str, judged: str, since_heal: bool = False
) -> Step:
    """Each canary's arrival everywhere, the RPO condition judged in the report (non-blocking); `since_heal`: lags
    from the fault's clearing (a partition drill's catch-up)."""
    params: dict = {"sources": sources, "timeout": timeout}
    if since_heal:
        params["since_heal"] = True
    return Step(
        name="measure-replication",
        action="measure_replication",
        params=params,
        description=description,
        checks=[Condition(kind="rpo", params={"rpo_seconds": rpo}, blocking=False, description=judged)],
    )


def canary_cleanup_step() -> Step:
    return Step(
        name="cleanup",
        action="canary_delete",
        mutates=True,
        params={},
        description="delete the canary objects (every version) in every region",
    )
