"""The Plan: what a drill will do, as data.

A Plan is pure and JSON-serialisable: `drills plan` prints it, `drills run` journals it as the first entry,
and `drills rollback`/`resume` rebuild it from the journal in another process. Steps name an action from the
action registry (`drills.actions`) and checks/abort conditions name a check from the check registry
(`drills.checks`), so the engine needs no scenario-specific code and new scenarios add data, not branches.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objectives(_Model):
    rto_seconds: float
    rpo_seconds: float
    success_rate: float
    p99_ms: float


class EngineCoverage(_Model):
    status: Literal["ok", "missing", "unverified"]
    missing: list[str] = []
    detail: str = ""


class CapacityRow(_Model):
    """One region at one step: N+1 math (GPUs required for its share of peak vs what its pools reach)."""

    region: str
    weight: int
    share: float
    qps: float
    gpus_required: int
    gpus_desired: int  # GPUs at the pools' current desired sizes
    gpus_max: int
    qps_at_desired: float
    ok: bool  # the region's guaranteed GPUs (running or reserved, infra/capacity.py) carry its share
    gpus_guaranteed: int = 0  # per pool max(min, reserved); 0 in journals written before it was recorded
    shortfall: int = 0  # GPUs missing from guaranteed capacity
    prescale: dict[str, int] = {}  # pool name -> desired count needed for this share (only pools that grow)
    engines: EngineCoverage
    gains_share: bool = False  # this step moves traffic onto the region


class Condition(_Model):
    """A check between steps, or an abort condition watched continuously. `kind` names a registered check."""

    kind: str
    params: dict[str, Any] = {}
    description: str
    # A failed blocking gate aborts (and rolls back); a non-blocking one is recorded and judged in the report,
    # for measurements that should complete even when they miss their objective (RPO, a release's quality gates
    # in shadow mode).
    blocking: bool = True


class Step(_Model):
    name: str
    action: str  # a registered action
    description: str
    params: dict[str, Any] = {}
    mutates: bool = False  # changes stack config, infrastructure, objects or injects a fault
    weights: dict[str, int] | None = None  # routing weights once the step is done (display, checks)
    roles: dict[str, str] | None = None  # failover roles once the step is done (failover mode)
    capacity: list[CapacityRow] = []
    checks: list[Condition] = []  # gates evaluated after the action (and after wait_seconds)
    wait_seconds: float = 0.0  # settle/hold after the action with the monitor running
    phase: Literal["steady", "failover"] = "steady"  # during "failover" steady-state SLO aborts are suspended


class Plan(_Model):
    scenario: str
    env: str
    region: str | None
    mode: Literal["weighted", "failover"]
    global_stack: str
    stack_names: dict[str, str]
    fqdn: str
    ttl: int
    health_check: dict[str, int]  # request_interval, failure_threshold
    objectives: Objectives
    parameters: dict[str, Any]
    pre_weights: dict[str, int]
    pre_roles: dict[str, str] | None = None
    touches: dict[str, list[str]] = {}  # stack -> config paths (without the `reco-dr:` namespace) the drill sets
    pre_config: dict[str, dict[str, Any]] = {}  # stack -> path -> value in the config the plan was made from
    steps: list[Step]
    abort_conditions: list[Condition] = []
    rollback: list[str] = []
    predicted: dict[str, float] = {}  # predicted RTO parts from the configuration
    roles: dict[str, str] = {}
    communication: list[str] = []
    window: dict[str, str] | None = None
    title: str | None = None
    warnings: list[str] = []
    notes: list[str] = []
    manifest_source: str | None = None
    # A drill or release refuses to start while the fleet's readiness fails (the backend's `readiness`); a restore
    # does not wait for it: it is the way out of a state readiness reports.
    readiness_gate: bool = True
    # The A/B experiments running when the plan was made (infra/experiments.py ids): the drill or release ran through
    # them, and their reports can say so. Users keep their arm through it: assignment is by user hash, every region.
    experiments: list[str] = []

    def mutations(self) -> list[str]:
        """Human lines for every change the plan would make, for a dry run."""
        out = []
        for s in self.steps:
            if not s.mutates:
                continue
            changes = s.params.get("changes")
            if changes:
                for stack, values in changes.items():
                    kv = ", ".join(f"{k}={v}" for k, v in values.items())
                    out.append(f"{s.name}: stack {stack}: set {kv}; pulumi preview; pulumi up")
            else:
                out.append(f"{s.name}: {s.description}")
        return out
