"""The optional drill plan file (YAML): window, roles, communication and tuning parameters.

The field guides' "plan" phase: who leads, who operates, who watches, where the drill is announced, and when it
may run. Validated strictly (unknown keys are typos and refused) with pydantic.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drills.errors import GuardrailError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parameters(_Strict):
    """Tuning of a drill. Every field has a default; the plan file or CLI flags override them."""

    steps: int = Field(default=4, ge=1, le=20, description="weight-shift steps from the current weight to 0")
    hold_seconds: float = Field(default=300, ge=0, description="hold at the drilled state, probes running")
    settle_seconds: float | None = Field(
        default=None, ge=0, description="wait after each shift; default: the record TTL"
    )
    poll_seconds: float = Field(default=2.0, gt=0, description="monitor poll period (probes, abort conditions)")
    probe_clients: int = Field(default=8, ge=1, le=64, description="simulated clients, each with its own DNS cache")
    slo_window_seconds: float = Field(default=30, gt=0, description="window the SLO (success rate, p99) is judged over")
    min_samples: int = Field(default=20, ge=1, description="fewest probes a window needs before it is judged")
    fault: str = Field(default="triton-down", description="region-outage fault: a data-plane fault kind of the backend")
    failover_deadline_factor: float = Field(
        default=2.0, ge=1, description="abort a failover not at SLO within factor x RTO objective"
    )
    dns_propagation_seconds: float = Field(
        default=10, ge=0, description="allowance for Route 53 to act on a health change (prediction only)"
    )
    capacity_timeout_seconds: float = Field(default=900, gt=0, description="wait for pre-scaled pools to be ready")
    replication_timeout_seconds: float | None = Field(
        default=None, gt=0, description="canary wait; default 2 x RPO objective"
    )
    source_region: str | None = Field(
        default=None, description="artifact-replication: write canaries here only (default: every region)"
    )
    allow_total_outage: str | None = Field(
        default=None,
        description="total-outage: the environment's name, typed again, to allow a drill that takes every region of "
        "it down at once (refused without it)",
    )


class Window(_Strict):
    start: datetime
    end: datetime
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("window.end must be after window.start")
        return self


class Communication(_Strict):
    channel: str | None = None
    notify: list[str] = []
    status_page: bool = False
    cadence_minutes: int | None = Field(default=None, ge=1)
    deploy_freeze: bool = True  # CI's `pulumi up` on main would undo a drill's config mid-way


class DrillFile(_Strict):
    title: str | None = None
    scenario: str | None = None
    env: str | None = None
    region: str | None = None
    window: Window | None = None
    roles: dict[str, str] = {}  # role -> person (lead, operator, observer, scribe, comms)
    communication: Communication = Communication()
    parameters: Parameters = Parameters()


def load_drill_file(path: str | Path | None) -> DrillFile:
    if path is None:
        return DrillFile()
    p = Path(path)
    if not p.exists():
        raise GuardrailError("plan-file", f"drill plan file {p} does not exist")
    try:
        return DrillFile.model_validate(yaml.safe_load(p.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as e:
        if isinstance(e, ValidationError):
            raise GuardrailError("plan-file", f"{p}: {_first_error(e)}") from None
        raise GuardrailError("plan-file", f"{p}: not valid YAML: {e}") from None


def merged_parameters(drill: DrillFile, overrides: dict[str, Any]) -> Parameters:
    """CLI flags over the plan file over the defaults."""
    values = drill.parameters.model_dump()
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Parameters.model_validate(values)
    except ValidationError as e:
        raise GuardrailError("parameters", _first_error(e)) from None


def _first_error(e: ValidationError) -> str:
    """The first validation error as `key = value: rule: ...` (the value left out where the key is missing or the
    value is a whole section)."""
    err = e.errors()[0]
    where = ".".join(map(str, err["loc"]))
    value = err.get("input")
    if err["type"] == "missing" or isinstance(value, dict | list):
        return f"{where}: {err['msg']}"
    return f"{where} = {value!r}: rule: {err['msg']}"


def roles_and_communication(drill: DrillFile, env: str, fqdn: str) -> tuple[dict[str, str], list[str], list[str]]:
    """(roles, communication lines, warnings) with the defaults a plan without a file gets."""
    warnings = []
    roles = dict(drill.roles)
    for role in ("lead", "operator", "observer"):
        if role not in roles:
            roles[role] = "(unassigned)"
    if not drill.roles:
        warnings.append("no roles assigned: pass --plan-file with roles (lead, operator, observer)")
    c = drill.communication
    lines = []
    lines.append(
        f"announce the drill in {c.channel}"
        if c.channel
        else "announce the drill in the team's incident channel (none configured)"
    )
    if c.notify:
        lines.append("notify: " + ", ".join(c.notify))
    if c.deploy_freeze:
        lines.append(f"freeze deployments to {env} for the drill: a `pulumi up` from CI would undo the drill's config")
    if c.status_page:
        lines.append(f"post a maintenance note for {fqdn} on the status page")
    if c.cadence_minutes:
        lines.append(f"status update every {c.cadence_minutes} min and at each step, abort and rollback")
    lines.append("on abort: the engine rolls back automatically; the lead announces the abort and the measured state")
    return roles, lines, warnings
