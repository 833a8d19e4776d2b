"""The table of scenarios and the one entry point that turns (scenario, env, region, plan file) into a Plan.

A scenario (drills.scenarios.base.Scenario) is a class with a `name`, what `--region` means to it, the routing modes
it can run under, and a pure `build(ctx) -> Plan`. A new one is added to SCENARIOS below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drills.drillplan import load_drill_file, merged_parameters
from drills.errors import GuardrailError
from drills.manifest import find_manifest
from drills.model import Plan
from drills.planning import PlanContext
from drills.release.scenarios import ArtifactCorruption, BadRelease, NodeLoss, Restore
from drills.scenarios.base import Scenario
from drills.scenarios.brownout import Quiet, RegionBrownout
from drills.scenarios.evacuate import EvacuateRegion
from drills.scenarios.flip import StackFlip
from drills.scenarios.outage import RegionOutage
from drills.scenarios.readiness import Readiness
from drills.scenarios.replication import ArtifactReplication
from drills.scenarios.total_outage import TotalOutage
from infra.config import ROOT, STACKS_DIR, ConfigError, envs, load_fleet

# Every scenario, by name: the core ones and those below a region (drills.release).
SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls
    for cls in (
        EvacuateRegion,
        RegionOutage,
        RegionBrownout,
        Quiet,
        Readiness,
        TotalOutage,
        ArtifactReplication,
        StackFlip,
        BadRelease,
        ArtifactCorruption,
        NodeLoss,
        Restore,
    )
}


def get(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise GuardrailError("unknown-scenario", f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name]()


def build_plan(
    scenario: str,
    env: str,
    region: str | None = None,
    *,
    plan_file: str | Path | None = None,
    stacks_dir: Path = STACKS_DIR,
    manifest: str | None = None,
    overrides: dict[str, Any] | None = None,
    root: Path = ROOT,
) -> Plan:
    """Pure: read the stacks, check the guardrails, return the plan. Raises GuardrailError, never calls a cloud."""
    sc = get(scenario)
    drill = load_drill_file(plan_file)
    for what, cli, filed in (("scenario", scenario, drill.scenario), ("env", env, drill.env)):
        if filed and filed != cli:
            raise GuardrailError("plan-file", f"the drill plan file is for {what} {filed!r}, not {cli!r}")
    if drill.region and region and drill.region != region:
        raise GuardrailError("plan-file", f"the drill plan file is for region {drill.region!r}, not {region!r}")
    region = region or drill.region
    known = envs(stacks_dir)
    if env not in known:
        raise GuardrailError(
            "unknown-env", f"unknown environment {env!r}; known: {', '.join(known) or '(none)'} (from {stacks_dir})"
        )
    try:
        fleet = load_fleet(env, stacks_dir)
    except ConfigError as e:
        raise GuardrailError("config", f"the {env} stacks do not validate: {e}") from None
    if sc.region_arg == "required" and not region:
        raise GuardrailError("region-required", f"{sc.name} needs --region, one of {', '.join(sorted(fleet.regions))}")
    if region and region not in fleet.regions:
        raise GuardrailError(
            "unknown-region", f"{env} has no region {region!r}; its regions: {', '.join(sorted(fleet.regions))}"
        )
    if sc.region_arg == "ignored" and region:
        raise GuardrailError("region-not-applicable", f"{sc.name} does not take --region")
    mode = fleet.glob.routing.mode
    if mode not in sc.modes:
        raise GuardrailError(
            "mode",
            f"{sc.name} needs routing mode {' or '.join(sc.modes)}; {env} routes in {mode} mode. "
            f"{sc.mode_hint}".strip(),
        )
    versions = sorted({r.model.version for r in fleet.regions.values()})
    facts = find_manifest(manifest, versions[0] if len(versions) == 1 else None, root)
    ctx = PlanContext(
        fleet=fleet,
        region=region,
        params=merged_parameters(drill, overrides or {}),
        drill=drill,
        manifest=facts,
    )
    if facts is None:
        ctx.warnings.append(
            "no model manifest found (--manifest or $DRILLS_MANIFEST): engines are verified at precheck from each "
            "region's bucket"
        )
    elif planned := sorted(facts.engine_ccs - facts.built):
        ctx.warnings.append(
            f"the manifest {facts.source} lists engines not built ({', '.join(planned)}): "
            "precheck requires them built in each region's bucket"
        )
    if len(versions) > 1:
        ctx.warnings.append(f"regions configure different model versions: {', '.join(versions)}")
    return sc.build(ctx)
