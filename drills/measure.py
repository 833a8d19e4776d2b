"""The one definition of every measurement the drills report, used by the engine's monitor, gates and
failover actions, the rehearsal's load generator and every report (pure: no clock, no I/O).

- percentile: nearest rank, no interpolation (a p99 is a latency some request actually had).
- summary: requests, successes, errors, success rate, p50/p99 of the successes.
- SLO window: the forward window [t, t + window_s] anchored at a request's send time t, judged once complete
  (t + window_s <= now) and only with at least `min_requests` requests; it meets the SLO when its success rate and
  the p99 of its successes are within the objective.
- SLO recovered: the anchor of the first window meeting the SLO after the last window that did not (the first one
  at all if none failed), among the windows anchored at or after the fault (or the change) and complete by now.
  Evaluated live (the engine, over what it has seen so far) or afterwards (reports, over every record), the rule
  is the same.
- RTO (`rto_parts`): SLO recovered after the fault, with its parts (detection, DNS change, TTL expiry, first
  success from a survivor, every affected client recovered), errors during the failover and after the window.

Records are anything with `t` (send time), `ok`, `latency_ms`, and for the parts `client` and `region`: the load
generator's RequestRecord, the engine's ProbeResult, or their JSON form (dicts).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def _get(x: Any, name: str, default: Any = None) -> Any:
    return x.get(name, default) if isinstance(x, Mapping) else getattr(x, name, default)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    if not len(values):
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return float(s[k])


@dataclass(frozen=True)
class Slo:
    """The service objective and the window it is judged over."""

    success_rate: float = 0.99
    p99_ms: float = 250.0
    window_s: float = 5.0  # the window over which both are judged
    min_requests: int = 5  # a window with fewer requests is not judged


def plan_slo(objectives: Any, parameters: Any, scale: float = 1.0) -> Slo:
    """A drill plan's SLO: its objectives, judged over `slo_window_seconds` (drill seconds; times `scale` for records
    in wall-clock seconds) with at least `min_samples` requests a window. `parameters`: the plan's Parameters."""
    return Slo(
        success_rate=float(objectives.success_rate),
        p99_ms=float(objectives.p99_ms),
        window_s=float(parameters.slo_window_seconds) * scale,
        min_requests=int(parameters.min_samples),
    )


def latency_summary(records: Iterable[Any]) -> dict[str, Any]:
    """requests, ok, errors, success_rate, p50_ms and p99_ms (of the successes) of some records."""
    recs = list(records)
    lat = [_get(r, "latency_ms") for r in recs if _get(r, "ok")]
    return {
        "requests": len(recs),
        "ok": len(lat),
        "errors": len(recs) - len(lat),
        "success_rate": (len(lat) / len(recs)) if recs else None,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
    }


def client_kind_summary(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Per client kind (a record's `kind`, naive when absent): requests; errors (no answer at all); degraded (the
    fallback ranking answered, no region did); p50_ms and p99_ms of the answers a region gave; extra_requests (the
    requests sent beyond one per ranking: retries and hedges) and amplification (requests sent per ranking)."""
    kinds: dict[str, list[Any]] = {}
    for r in records:
        kinds.setdefault(_get(r, "kind") or "naive", []).append(r)
    out = {}
    for kind, recs in sorted(kinds.items()):
        answered = [_get(r, "latency_ms") for r in recs if _get(r, "ok")]
        degraded = sum(1 for r in recs if not _get(r, "ok") and _get(r, "degraded"))
        sent = sum(int(_get(r, "attempts") or 1) for r in recs)
        out[kind] = {
            "requests": len(recs),
            "errors": len(recs) - len(answered) - degraded,
            "degraded": degraded,
            "p50_ms": percentile(answered, 50),
            "p99_ms": percentile(answered, 99),
            "extra_requests": sent - len(recs),
            "amplification": sent / len(recs),
        }
    return out


def share_by_region(records: Iterable[Any]) -> dict[str, float]:
    recs = [r for r in records if _get(r, "region")]
    out: dict[str, float] = {}
    for r in recs:
        out[_get(r, "region")] = out.get(_get(r, "region"), 0) + 1
    return {k: v / len(recs) for k, v in sorted(out.items())}


def window_ok(window: Sequence[Any], slo: Slo) -> bool | None:
    """SLO verdict for one window of records: None when too few requests to judge."""
    if len(window) < slo.min_requests:
        return None
    s = latency_summary(window)
    return s["success_rate"] >= slo.success_rate and (s["p99_ms"] is None or s["p99_ms"] <= slo.p99_ms)


class SloRecovery:
    """SLO recovery (see the module's rule), evaluated incrementally: `feed` records in send-time order, then
    `judge(now)` judges every window complete by `now` not judged yet. A complete window never changes, so the
    engine can ask at every poll and a report once at the end, with the same answer for the same records."""

    def __init__(self, slo: Slo, start: float):
        self.slo, self.start = slo, start
        self.records: list[Any] = []
        self.times: list[float] = []
        self._next = 0  # index of the first anchor not judged yet
        self.violated = False
        self.recovered: float | None = None

    def feed(self, records: Iterable[Any]) -> None:
        for r in records:
            t = _get(r, "t")
            if self.times and t < self.times[-1]:
                raise ValueError(f"records must come in send-time order ({t} after {self.times[-1]})")
            self.records.append(r)
            self.times.append(t)

    def judge(self, now: float) -> float | None:
        times, w = self.times, self.slo.window_s
        k = max(self._next, bisect.bisect_left(times, self.start))
        while k < len(times) and times[k] + w <= now:
            t = times[k]
            verdict = window_ok(self.records[k : bisect.bisect_right(times, t + w)], self.slo)
            if verdict is False:
                self.violated, self.recovered = True, None
            elif verdict and self.recovered is None:
                self.recovered = t
            k = bisect.bisect_right(times, t)  # the next distinct anchor
        self._next = k
        return self.recovered


def slo_recovery(records: Sequence[Any], start: float, slo: Slo, now: float | None = None) -> tuple[float | None, bool]:
    """(SLO recovered, whether any window after `start` violated the SLO) over every record; `now` defaults to
    the last send time (windows still open then are not judged). None while the SLO is still violated."""
    recs = sorted(records, key=lambda r: _get(r, "t"))
    tracker = SloRecovery(slo, start)
    tracker.feed(recs)
    t = tracker.judge(now if now is not None else (_get(recs[-1], "t") if recs else start))
    return t, tracker.violated


def rto_parts(
    records: Sequence[Any],
    fault_time: float,
    hc_transitions: Sequence[Any],
    dns_changes: Sequence[Any],
    ttl: float,
    slo: Slo,
    *,
    region: str | None = None,
    window_limit_s: float | None = None,
) -> dict[str, Any]:
    """RTO in its parts, from the client's own records (all times in seconds after `fault_time`).

    records: RequestRecord-like (t, client, region, ok, latency_ms); a request still in flight at the fault
    (sent before, completed after) counts as after the fault; hc_transitions: (t, label, healthy);
    dns_changes: (t, after = {record key: share}); ttl: the TTL clients saw; region: the failed region
    (inferred from the records when None: the region with the most failures after the fault).
    `window_limit_s`: the failover window allowed (e.g. the predicted RTO); errors after it are "lost".
    """
    recs = sorted(records, key=lambda r: _get(r, "t"))

    def done(r: Any) -> float:  # when the request completed: one in flight at the fault belongs to the failover
        return _get(r, "t") + (_get(r, "latency_ms") or 0.0) / 1000

    before = [r for r in recs if done(r) < fault_time]
    after_fault = [r for r in recs if done(r) >= fault_time]
    if region is None:
        fails: dict[str, int] = {}
        for r in after_fault:
            if not _get(r, "ok") and _get(r, "region"):
                fails[_get(r, "region")] = fails.get(_get(r, "region"), 0) + 1
        region = max(fails, key=fails.__getitem__) if fails else None

    def rel(t: float | None) -> float | None:
        return None if t is None else t - fault_time

    detect = next(
        (
            _get(tr, "t")
            for tr in sorted(hc_transitions, key=lambda x: _get(x, "t"))
            if _get(tr, "t") >= fault_time and _get(tr, "label") == region and not _get(tr, "healthy")
        ),
        None,
    )
    dns_t = next(
        (
            _get(c, "t")
            for c in sorted(dns_changes, key=lambda x: _get(x, "t"))
            if _get(c, "t") >= fault_time and region not in (_get(c, "after") or {})
        ),
        None,
    )
    ttl_t = None if dns_t is None else dns_t + ttl

    # Clients the fault reached: those with a failed request after it (a client whose cached answer expired
    # and moved it to a survivor before its next request never noticed). Each recovers at its first success
    # from another region after its first failure.
    by_client: dict[Any, list[Any]] = {}
    for r in after_fault:
        by_client.setdefault(_get(r, "client"), []).append(r)
    recover: dict[Any, float | None] = {}
    for c, rs in by_client.items():
        first_fail = next((_get(r, "t") for r in rs if not _get(r, "ok")), None)
        if first_fail is None:
            continue
        recover[c] = next(
            (
                _get(r, "t")
                for r in rs
                if _get(r, "ok") and _get(r, "region") not in (None, region) and _get(r, "t") > first_fail
            ),
            None,
        )
    firsts = [t for t in recover.values() if t is not None]
    first_success = min(firsts) if firsts else None
    all_recovered = max(firsts) if firsts and len(firsts) == len(recover) else None

    slo_t, violated = slo_recovery(recs, fault_time, slo)
    end_failover = slo_t if slo_t is not None else (_get(recs[-1], "t") if recs else fault_time)
    during = [r for r in after_fault if _get(r, "t") <= end_failover]
    errors_during = sum(1 for r in during if not _get(r, "ok"))
    after_recovery = [r for r in after_fault if slo_t is not None and _get(r, "t") > slo_t]
    lost_after = None
    if window_limit_s is not None:
        lost_after = sum(1 for r in after_fault if _get(r, "t") > fault_time + window_limit_s and not _get(r, "ok"))
    errs = [r for r in after_fault if not _get(r, "ok")]
    return {
        "fault_time": fault_time,
        "region": region,
        "detection_s": rel(detect),
        "dns_change_s": rel(dns_t),
        "ttl_expiry_s": rel(ttl_t),
        "first_success_survivor_s": rel(first_success),
        "all_clients_recovered_s": rel(all_recovered),
        "slo_recovered_s": rel(slo_t),
        "slo_violated": violated,
        "clients_affected": len(recover),
        "errors_during_failover": errors_during,
        "errors_after_fault": len(errs),
        "last_error_s": rel(_get(errs[-1], "t")) if errs else None,
        "lost_after_window": lost_after,
        "window_limit_s": window_limit_s,
        "requests": len(recs),
        "before": {**latency_summary(before), "share": share_by_region(before)},
        "after": {**latency_summary(after_recovery), "share": share_by_region(after_recovery)},
        "slo": asdict(slo),
        "ttl_s": ttl,
    }


def timeline(records: Sequence[Any], bin_s: float = 1.0, t0: float | None = None) -> list[dict[str, Any]]:
    """Per time bin: requests, success rate, p99 of successes and traffic share per region (for charts)."""
    recs = sorted(records, key=lambda r: _get(r, "t"))
    if not recs:
        return []
    t0 = _get(recs[0], "t") if t0 is None else t0
    bins: dict[int, list[Any]] = {}
    for r in recs:
        bins.setdefault(int((_get(r, "t") - t0) // bin_s), []).append(r)
    return [
        {"t": t0 + k * bin_s, **latency_summary(rs), "share": share_by_region(rs)} for k, rs in sorted(bins.items())
    ]
