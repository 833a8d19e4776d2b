"""Model of CloudWatch alarm evaluation over the requests a region's load-balancer model saw (moto stores alarms but
never evaluates them). Pure: no I/O, no clock of its own; every time is whatever the caller passes (drill seconds,
or wall seconds with periods scaled alike), so a declared period of 60 s lasts 6 wall seconds at scale 0.1.

What it models, per alarm (`AlarmSpec`, read from the offline plan by drills/rehearsal/health_model.py):
- the requests: every request the load balancer handled (`AlbRequest`; `requests_from_log` adapts the entries of
  `AlbProcess.requests`), the ones it answered itself (403/404 at the edge, 502 for an injected error or reset, 503
  without targets, 504 for a request no target answered) included, as the ALB's metrics count them;
- periods of `period_s` aligned to the evaluator's origin (CloudWatch aligns them to the minute); a period's datapoint
  is computed when the period has closed (CloudWatch's publication delay of up to a minute is not modelled);
- the datapoint of a period from its requests: for infra.health.ERRORS the 5xx ratio as the declared metric math
  computes it (5xx answers, the targets' and the load balancer's, over all requests; a period without requests has
  no datapoint); for infra.health.LATENCY the infra.health.LATENCY_STATISTIC ("Average") of TargetResponseTime, in
  seconds, over the requests a target answered (a period where none did has no datapoint). The mean is exact here
  as in CloudWatch (sum over count of the ALB's per-request values), so this datapoint is not an approximation;
- M of N: ALARM when at least `datapoints_to_alarm` of the last `evaluation_periods` datapoints breach (strictly
  greater than the threshold: the declared GreaterThanThreshold), OK when fewer do;
- treat_missing_data: `notBreaching` (a missing datapoint counts as good), `breaching` (as bad), `missing` (not
  counted; every datapoint missing is INSUFFICIENT_DATA), `ignore` (not counted; every datapoint missing keeps the
  state);
- an alarm starts in INSUFFICIENT_DATA, as a new CloudWatch alarm does, until its first period closes.

Simplified, stated: with `missing`/`ignore` CloudWatch looks further back than N periods for datapoints; this model
does not. A request counts in the period of its arrival (the log's time): one held by an injected loss or blackhole
counts its 504 there, not when the load balancer's timeout ends it. The evaluator takes the requests it is given:
the caller picks the alarm's region (`AlbRequest.region`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.health import ERRORS, LATENCY, LATENCY_STATISTIC

State = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
OK: State = "OK"
ALARM: State = "ALARM"
INSUFFICIENT_DATA: State = "INSUFFICIENT_DATA"
MISSING_DATA = ("missing", "notBreaching", "breaching", "ignore")

# The latency alarm's statistic, by the name the stacks declare: a contract naming a statistic this model does not
# compute fails here, at import, rather than evaluating the wrong one.
_LATENCY_STATISTIC: Callable[[list[float]], float] = {"Average": statistics.fmean}[LATENCY_STATISTIC]


@dataclass(frozen=True)
class AlarmSpec:
    """One declared ALB alarm, in the units it is declared in (a ratio for 5xx, seconds for latency)."""

    name: str
    region: str
    kind: str  # infra.health.ALARM_KINDS
    period_s: float
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    treat_missing_data: str = "missing"

    def __post_init__(self) -> None:
        if self.kind not in (ERRORS, LATENCY):
            raise ValueError(f"alarm {self.name}: kind {self.kind!r} is not {ERRORS!r} or {LATENCY!r}")
        if not 1 <= self.datapoints_to_alarm <= self.evaluation_periods:
            raise ValueError(f"alarm {self.name}: {self.datapoints_to_alarm} of {self.evaluation_periods} is no M of N")
        if self.treat_missing_data not in MISSING_DATA:
            raise ValueError(f"alarm {self.name}: treat_missing_data {self.treat_missing_data!r} not in {MISSING_DATA}")


@dataclass(frozen=True)
class AlbRequest:
    """One request as a load-balancer model records it: arrival time, the status the load balancer counted, and the
    target's response time (None when no target answered: the load balancer's own 4xx/5xx, a reset, a held request);
    `region` and `path` as the log has them."""

    t: float
    status: int
    latency_ms: float | None = None
    region: str = ""
    path: str = ""


def requests_from_log(entries: Iterable[Sequence[Any]], to_drill: Callable[[float], float]) -> list[AlbRequest]:
    """`AlbProcess.requests` entries ([wall time, region, status, target ms or None, path]) as AlbRequests, their
    times converted by `to_drill` (e.g. `ScaledClock.to_drill`; the identity to stay in wall seconds)."""
    return [
        AlbRequest(to_drill(float(t)), int(status), None if ms is None else float(ms), str(region), str(path))
        for t, region, status, ms, path, *_ in entries
    ]


@dataclass(frozen=True)
class AlarmTransition:
    t: float  # the end of the period whose evaluation changed the state
    name: str
    region: str
    kind: str
    state: State
    reason: str


def datapoint(spec: AlarmSpec, requests: Sequence[Any]) -> float | None:
    """The period's value of the alarm's metric from its requests (anything with `status` and `latency_ms`), or None
    when CloudWatch would have no datapoint."""
    if spec.kind == ERRORS:
        if not requests:
            return None  # RequestCount has no datapoint: the ratio has none (the declared math does not FILL it)
        return sum(1 for r in requests if _get(r, "status") >= 500) / len(requests)
    latencies = [_get(r, "latency_ms") for r in requests if _get(r, "latency_ms") is not None]
    if not latencies:
        return None  # no target answered: TargetResponseTime has no datapoint
    return _LATENCY_STATISTIC(latencies) / 1000  # TargetResponseTime is in seconds


def evaluate(spec: AlarmSpec, window: Sequence[float | None], previous: State) -> tuple[State, str]:
    """The alarm's state after evaluating `window`, its last N datapoints (oldest first, None for missing)."""
    if len(window) != spec.evaluation_periods:
        raise ValueError(f"alarm {spec.name}: {len(window)} datapoints, not {spec.evaluation_periods}")
    present = [v for v in window if v is not None]
    missing = len(window) - len(present)
    breaching = sum(1 for v in present if v > spec.threshold)
    if spec.treat_missing_data == "breaching":
        breaching += missing
    elif spec.treat_missing_data in ("missing", "ignore") and not present:
        state: State = INSUFFICIENT_DATA if spec.treat_missing_data == "missing" else previous
        return state, f"no datapoint in {len(window)} periods"
    reason = f"{breaching} of {len(window)} datapoints above {spec.threshold:g} (alarm at {spec.datapoints_to_alarm})"
    return (ALARM if breaching >= spec.datapoints_to_alarm else OK), reason


@dataclass
class AlarmEvaluator:
    """One alarm over time: `add` requests (any order within open periods), `advance(now)` closes the periods that
    ended by `now` and evaluates the alarm at each period end, appending every state change to `transitions`."""

    spec: AlarmSpec
    origin: float  # the start of the first period
    state: State = INSUFFICIENT_DATA
    datapoints: list[float | None] = field(default_factory=list)  # one per closed period, oldest first
    transitions: list[AlarmTransition] = field(default_factory=list)
    _open: dict[int, list[Any]] = field(default_factory=dict, repr=False)

    def period_of(self, t: float) -> int:
        return math.floor((t - self.origin) / self.spec.period_s)

    def add(self, requests: Iterable[Any]) -> None:
        for r in requests:
            k = self.period_of(_get(r, "t"))
            if k >= len(self.datapoints):  # a request of a closed period arrives too late to count, as in CloudWatch
                self._open.setdefault(k, []).append(r)

    def advance(self, now: float) -> State:
        n = self.spec.evaluation_periods
        while self.origin + (len(self.datapoints) + 1) * self.spec.period_s <= now:
            k = len(self.datapoints)
            self.datapoints.append(datapoint(self.spec, self._open.pop(k, [])))
            # Periods before the alarm existed count as missing datapoints.
            window = ([None] * n + self.datapoints)[-n:]
            state, reason = evaluate(self.spec, window, self.state)
            if state != self.state:
                end = self.origin + (k + 1) * self.spec.period_s
                self.transitions.append(
                    AlarmTransition(end, self.spec.name, self.spec.region, self.spec.kind, state, reason)
                )
                self.state = state
        return self.state


def _get(x: Any, name: str) -> Any:
    return x[name] if isinstance(x, dict) else getattr(x, name)
