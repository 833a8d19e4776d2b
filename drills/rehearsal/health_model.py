"""Route 53's view of a region's health in the rehearsal: the endpoint checks probed, the CloudWatch-metric checks
followed from the alarm model, the calculated check the record carries evaluated from its children.

What the stacks declare (infra/health.py): per region a shallow and a deep endpoint check, two CLOUDWATCH_METRIC
checks on the region's ALB alarms, and one CALCULATED check over the four, which the region's record carries. moto
stores the checks but evaluates none, so:

- endpoint checks (HTTPS, HTTPS_STR_MATCH) are probed by `healthcheck.HealthChecker` through the region's
  load-balancer model, like Route 53's checkers through the ALB;
- each ALB alarm is evaluated by `cloudwatch.AlarmEvaluator` over the requests the load-balancer model logged
  (`AlbProcess.requests`), with its declared period, M of N, threshold and treat_missing_data, the period scaled
  like every other timing; a metric check is unhealthy while its alarm is in ALARM and reports its declared
  `InsufficientDataHealthStatus` while the alarm has too little data (`metric_check_healthy`);
- a calculated check is healthy while at least HealthThreshold of its children are (`calculated_healthy`);
  `Inverted` flips it, as in Route 53.
Every status change of every check is a `healthcheck.Transition`, labelled with the region for the record's own
check (what drills.measure's detection reads) and "<region> <kind>" for a child, so the report can say when each
kind of check saw a fault. The alarms' own state changes are kept too (`alarm_transitions`).
Route 53's fail-open (every record unhealthy: all answered) is drills/rehearsal/dns.py `route`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drills.adapters.route53 import calculated_healthy, metric_check_healthy
from drills.rehearsal.cloudwatch import AlarmEvaluator, AlarmSpec, requests_from_log
from drills.rehearsal.healthcheck import HealthChecker, Transition
from infra.health import ALARM_KINDS, DEEP_HEALTH_PATH, LATENCY

T_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def declared_alarms(resources: Iterable[Mapping[str, Any]], kinds: Mapping[str, str], scale: float) -> list[AlarmSpec]:
    """The declared CloudWatch alarms that metric checks follow, as AlarmSpecs with their period times `scale`
    (wall seconds). `kinds`: alarm name -> its kind (infra.health.ALARM_KINDS), from the checks that name it;
    alarms no check follows (the people-only ones) are not evaluated."""
    out = []
    for r in resources:
        i = r.get("inputs") or {}
        if r.get("type") != T_ALARM or i.get("name") not in kinds:
            continue
        queries = i.get("metricQueries") or []
        period = next((q["metric"]["period"] for q in queries if q.get("metric")), None) or i.get("period")
        if period is None:
            raise ValueError(f"alarm {i['name']}: no period in its declaration")
        out.append(
            AlarmSpec(
                name=i["name"],
                region=str(r.get("region") or ""),
                kind=kinds[i["name"]],
                period_s=float(period) * scale,
                evaluation_periods=int(i["evaluationPeriods"]),
                datapoints_to_alarm=int(i.get("datapointsToAlarm") or i["evaluationPeriods"]),
                threshold=float(i["threshold"]),
                treat_missing_data=i.get("treatMissingData") or "missing",
            )
        )
    return out


@dataclass
class _Derived:
    """A check Route 53 computes instead of probing: a metric check (alarm) or a calculated one (children)."""

    id: str
    label: str
    kind: str
    alarm: str | None = None
    insufficient: str = "LastKnownStatus"
    children: tuple[str, ...] = ()
    threshold: int = 0
    inverted: bool = False
    healthy: bool = True  # a new check is healthy until it has data, as in Route 53


class HealthModel:
    """Every check of the zone, as Route 53 reports it: `status(id)` for the DNS model, `transitions()` for reports.

    `hc_info`: moto check id -> its declared facts (declared.Applied.hc_info); `labels`: check id -> label;
    `alarms`: the AlarmSpecs the metric checks follow; `logs()`: the load-balancer models whose request logs feed
    them (anything with `requests(since) -> (next, entries)`); `tick`: wall seconds between alarm evaluations."""

    def __init__(
        self,
        checker: HealthChecker,
        hc_info: Mapping[str, Mapping[str, Any]],
        labels: Mapping[str, str],
        alarms: Iterable[AlarmSpec],
        logs: Callable[[], Iterable[Any]],
        *,
        tick: float = 0.25,
        on_change: Callable[[], None] | None = None,
    ):
        self.checker, self.logs, self.tick, self.on_change = checker, logs, tick, on_change
        self._lock = threading.RLock()
        self._transitions: list[Transition] = []
        origin = time.time()
        self.evaluators = {a.name: AlarmEvaluator(a, origin) for a in alarms}
        self.derived: dict[str, _Derived] = {}
        for hid, info in hc_info.items():
            label = labels.get(hid, str(info.get("region") or hid))
            if info.get("type") == "CLOUDWATCH_METRIC":
                alarm = str(info.get("alarm"))
                if alarm not in self.evaluators:
                    raise ValueError(f"health check {info.get('name')} follows alarm {alarm!r}, which is not declared")
                self.derived[hid] = _Derived(
                    hid, label, str(info.get("kind")), alarm=alarm, insufficient=str(info.get("insufficient_data"))
                )
            elif info.get("type") == "CALCULATED":
                self.derived[hid] = _Derived(
                    hid,
                    label,
                    "calculated",
                    children=tuple(info.get("children") or ()),
                    threshold=int(info.get("health_threshold") or 0),
                )
        self._since: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ reading
    def status(self, hid: str) -> bool:
        with self._lock:
            d = self.derived.get(hid)
            if d is None:
                return self.checker.status(hid)
            return d.healthy != d.inverted

    def statuses(self) -> dict[str, bool]:
        with self._lock:
            out = self.checker.statuses()
            out.update({hid: d.healthy != d.inverted for hid, d in self.derived.items()})
            return out

    def transitions(self) -> list[Transition]:
        with self._lock:
            return sorted([*self.checker.transitions(), *self._transitions], key=lambda t: t.t)

    def alarm_transitions(self) -> list[Any]:
        with self._lock:
            return sorted((t for e in self.evaluators.values() for t in e.transitions), key=lambda t: t.t)

    def alarm_states(self) -> dict[str, str]:
        with self._lock:
            return {name: e.state for name, e in self.evaluators.items()}

    def set_inverted(self, hid: str, inverted: bool) -> None:
        """Inverted set through the Route 53 API on a computed check: its reported status flips at once (a transition,
        and the DNS model told), as in Route 53."""
        with self._lock:
            d = self.derived[hid]
            if d.inverted == inverted:
                return
            d.inverted = inverted
            self._transitions.append(
                Transition(time.time(), hid, d.label, d.healthy != inverted, "configuration changed (inverted)", 0)
            )
        if self.on_change is not None:
            with contextlib.suppress(Exception):  # a listener's bug must not stop the model
                self.on_change()
        self.evaluate()  # a calculated check over this one follows

    # ------------------------------------------------------------ evaluating
    def evaluate(self, reason: str = "") -> None:
        """Recompute every computed check from the alarms' states and the children's statuses; record changes."""
        changed = False
        with self._lock:
            now = time.time()
            for d in self.derived.values():  # metric checks first: calculated ones read them
                if d.alarm is not None:
                    ev = self.evaluators[d.alarm]
                    changed |= self._set(d, metric_check_healthy(ev.state, d.insufficient, d.healthy), now, reason)
            for d in self.derived.values():
                if d.alarm is None:
                    kids = [self.status(c) for c in d.children]
                    why = reason or f"{sum(kids)} of {len(kids)} children healthy (needs {d.threshold})"
                    changed |= self._set(d, calculated_healthy(kids, d.threshold), now, why)
        if changed and self.on_change is not None:
            with contextlib.suppress(Exception):  # a listener's bug must not stop the model
                self.on_change()

    def _set(self, d: _Derived, healthy: bool, now: float, reason: str) -> bool:
        if healthy == d.healthy:
            return False
        d.healthy = healthy
        self._transitions.append(Transition(now, d.id, d.label, healthy != d.inverted, reason, 0))
        return True

    def poll(self, now: float | None = None) -> None:
        """Feed the alarms the requests logged since the last poll, close the periods ended by `now`, evaluate."""
        now = time.time() if now is None else now
        for src in list(self.logs()):
            key = id(src)
            with contextlib.suppress(OSError):  # a load-balancer model restarting: read it next time
                nxt, entries = src.requests(self._since.get(key, 0))
                self._since[key] = nxt
                by_region: dict[str, list[list]] = {}
                for e in entries:
                    by_region.setdefault(str(e[1]), []).append(e)
                with self._lock:
                    for ev in self.evaluators.values():
                        mine = by_region.get(ev.spec.region, [])
                        if ev.spec.kind == LATENCY:  # the stable target group's response time: not the sidecar's
                            mine = [e for e in mine if str(e[4]).split("?", 1)[0] != DEEP_HEALTH_PATH]
                        ev.add(requests_from_log(mine, lambda t: t))
        with self._lock:
            for ev in self.evaluators.values():
                ev.advance(now)
        self.evaluate()

    def start(self) -> HealthModel:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="health-model", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            with contextlib.suppress(Exception):  # keep modelling through a transient error
                self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def alarm_kinds(hc_info: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """alarm name -> kind, from the metric checks that follow them."""
    out = {}
    for info in hc_info.values():
        if info.get("type") == "CLOUDWATCH_METRIC" and info.get("kind") in ALARM_KINDS:
            out[str(info["alarm"])] = str(info["kind"])
    return out
