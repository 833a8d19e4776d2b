"""What a run's steps hand to later steps and to checks: one typed object, rebuilt from the journal on resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# The moments a check may measure from or to (the "deadline" abort condition's `since` and `until`).
Moment = Literal["fault", "fault_cleared", "slo_recovered"]


@dataclass
class RunState:
    fault: dict[str, Any] | None = None  # the (earliest) fault injected and not cleared: {t, region, kind, handle}
    # Every fault injected and not cleared, by region (total-outage injects one per region): {t, region, kind, handle}
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    fault_cleared_at: float | None = None
    slo_recovered_at: float | None = None  # the SLO met again after the fault (drills.measure's rule)
    last_change: dict[str, Any] | None = None  # timings of the last config change: t_set, t_in_sync, t_answer, ...
    canaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # region -> {key, t_put, version_id}
    replication: dict[str, Any] | None = None  # the RPO measurement (lags, missing, rpo_seconds)
    # A release's own state (baselines, score probes, active canaries, pointers read): drills.release.actions.state
    release: dict[str, Any] = field(default_factory=dict)

    def fault_added(self, fault: dict[str, Any]) -> None:
        """A fault injected (or, on resume, prepared): `fault` stays the earliest one not cleared."""
        self.faults[fault["region"]] = fault
        self.fault = min(self.faults.values(), key=lambda f: f["t"])

    def fault_removed(self, region: str) -> None:
        """A fault cleared (`fault` itself stays until the recovery is observed, as region-outage relies on)."""
        self.faults.pop(region, None)

    def handle(self, region: str) -> dict[str, Any]:
        """What `prepare` returned for the fault in `region` (its own, not another region's)."""
        f = self.faults.get(region) or (self.fault if self.fault and self.fault.get("region") == region else None)
        return dict((f or {}).get("handle") or {})

    def moment(self, name: Moment) -> float | None:
        if name == "fault":
            return self.fault["t"] if self.fault else None
        return self.fault_cleared_at if name == "fault_cleared" else self.slo_recovered_at
