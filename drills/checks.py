"""Checks: gates between steps and abort conditions, by kind, in a registry.

A check is `fn(run, params, mode, since) -> Verdict`. `mode` is "gate" (after a step: judged on what happened
since the step's action finished, sampling more if too little was seen) or "abort" (every monitor poll: a rolling
window, silent while there is too little data). New kinds (release gates: PSI, KS, error rate from Prometheus)
register with `@check("kind")`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from drills.adapters.base import ProbeResult
from drills.measure import Slo, latency_summary, window_ok

if TYPE_CHECKING:
    from drills.engine import Run


@dataclass
class Verdict:
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


CheckFn = Callable[["Run", dict, str, float | None], Verdict]


def evaluate(run: Run, kind: str, params: dict, mode: str = "gate", since: float | None = None) -> Verdict:
    """Judge one check kind from the run's table (`run.checks`, drills.registry's unless a test gives another)."""
    checks = run.checks
    if kind not in checks:
        return Verdict(False, f"unknown check kind {kind!r} (known: {', '.join(sorted(checks))})")
    try:
        return checks[kind](run, params, mode, since)
    except Exception as e:  # noqa: BLE001 - a check that cannot be evaluated has failed, and says why
        return Verdict(False, f"{kind} could not be evaluated: {type(e).__name__}: {e}")


# ---------------------------------------------------------------- probe statistics (pure)
def window_stats(results: Iterable[ProbeResult]) -> dict[str, Any]:
    """The journal's probe figures: `drills.measure.latency_summary` (`n` is its `requests`), per-region counts and
    the first failures."""
    rs = list(results)
    s = latency_summary(rs)
    by_region: dict[str, int] = {}
    for r in rs:
        by_region[r.region or "?"] = by_region.get(r.region or "?", 0) + 1
    failed = [r for r in rs if not r.ok]
    return {
        "n": s["requests"],
        **{k: s[k] for k in ("ok", "errors", "success_rate", "p50_ms", "p99_ms")},
        "by_region": by_region,
        # The first few failures themselves: an abort must say what failed, not only how often.
        "failures": [
            {"t": r.t, "client": r.client, "region": r.region, "latency_ms": r.latency_ms, "error": r.error}
            for r in failed[:5]
        ],
    }


# ---------------------------------------------------------------- kinds
def _slo(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    slo = Slo(
        success_rate=p["success_rate"],
        p99_ms=p["p99_ms"],
        window_s=float(p.get("window_seconds", 30)),
        min_requests=int(p.get("min_samples", 20)),
    )
    window, need = slo.window_s, slo.min_requests
    if mode == "abort" and run.phase == "failover":
        return Verdict(True, "suspended during the failover window (the RTO measures it)")

    def results() -> list[ProbeResult]:
        # Gate: the last `window` seconds since the step's action finished. Abort: the rolling window, but not
        # reaching back into a failover window that the RTO measurement already judged.
        start = run.clock.now() - window
        floor = since if mode == "gate" else run.steady_since
        return run.monitor.since(max(start, floor) if floor is not None else start)

    rs = results()
    if len(rs) < need:
        if mode == "abort":
            return Verdict(True, f"{len(rs)} probes in the window, fewer than {need}: not judged yet")
        run.wait(window, until=lambda: len(results()) >= need, label="sampling for the SLO gate")
        rs = results()
    st = window_stats(rs)
    if st["n"] < need and mode == "gate":
        return Verdict(False, f"only {st['n']} probes answered in {window:g} s (need {need})", st)
    ok = window_ok(rs, slo) is True
    p99 = f"{st['p99_ms']:.1f} ms" if st["p99_ms"] is not None else "n/a"
    rate = f"{st['success_rate']:.2%}" if st["success_rate"] is not None else "n/a"
    failed = "".join(
        f"; failed: client {f['client']} via {f['region'] or '?'} after {f['latency_ms']:.0f} ms: {f['error']}"
        for f in st["failures"][:3]
    )
    return Verdict(
        ok,
        f"success {rate} over {st['n']} probes, p99 {p99} (objective >= {p['success_rate']:.2%}, <= {p['p99_ms']:g} ms)"
        + ("" if ok else failed),
        st,
    )


def _healthy(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    regions = p.get("regions", "serving")
    if regions == "serving":
        regions = [r for r, s in run.current_shares().items() if s > 0]
    regions = [r for r in regions if r not in set(p.get("exclude", []))]
    status = {r: run.backend.route53.health(r) for r in sorted(regions)}
    bad = [r for r, ok in status.items() if not ok]
    return Verdict(
        not bad,
        f"unhealthy: {', '.join(bad)}" if bad else f"healthy: {', '.join(status) or '(none serving)'}",
        {"health": status},
    )


def _unhealthy(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    """Every listed region's Route 53 health check unhealthy: the fault is seen where failover decides (total-outage).
    Nothing about DNS: with every record unhealthy Route 53 answers with all of them (it fails open)."""
    status = {r: run.backend.route53.health(r) for r in sorted(p["regions"])}
    up = [r for r, ok in status.items() if ok]
    return Verdict(
        not up, f"still healthy: {', '.join(up)}" if up else f"unhealthy: {', '.join(status)}", {"health": status}
    )


def _weights(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    recs = run.backend.route53.records()
    got = {r: recs[r].weight if r in recs else None for r in p["weights"]}
    want = {r: int(w) for r, w in p["weights"].items()}
    return Verdict(
        got == want, f"records carry {got}" + ("" if got == want else f", expected {want}"), {"records": got}
    )


def _roles(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    recs = run.backend.route53.records()
    got = {r: recs[r].failover if r in recs else None for r in p["roles"]}
    return Verdict(
        got == p["roles"],
        f"records carry {got}" + ("" if got == p["roles"] else f", expected {p['roles']}"),
        {"records": got},
    )


def _dns_excludes(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    ans = run.backend.route53.dns_answer()
    share = ans.get(p["region"], 0.0)
    return Verdict(share == 0 and bool(ans), f"answers {ans}" if ans else "no answer at all", {"answer": ans})


def _capacity(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    problems, figures = [], {}
    for region, pools in p["targets"].items():
        groups = {g.pool: g for g in run.backend.capacity.node_groups(region)}
        for pool, want in pools.items():
            g = groups.get(pool)
            figures[f"{region}/{pool}"] = {
                "desired": g.desired if g else None,
                "status": g.status if g else None,
                "target": want,
            }
            if g is None or g.desired < want or g.status != "ACTIVE":
                problems.append(
                    f"{region}/{pool}: "
                    + (f"desired {g.desired} (target {want}), {g.status}" if g else "no node group")
                )
        ready, desired = run.backend.capacity.triton_ready(region)
        figures[f"{region}/triton"] = {"ready": ready, "desired": desired}
        if ready == 0 or ready < desired:
            problems.append(f"{region}: {ready}/{desired} Triton pods ready")
    return Verdict(not problems, "; ".join(problems) or "node groups at target and active, Triton pods ready", figures)


def _rpo(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    rep = run.state.replication or {}
    missing = rep.get("missing", [])
    rpo = rep.get("rpo_seconds")
    if missing:
        return Verdict(False, f"canaries not visible within the wait: {', '.join(missing)}", rep)
    if rpo is None:
        return Verdict(False, "replication was not measured", rep)
    return Verdict(
        rpo <= p["rpo_seconds"], f"slowest replication {rpo:.1f} s (objective <= {p['rpo_seconds']:g} s)", rep
    )


def _deadline(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    start = run.state.moment(p.get("since", "fault"))
    if start is None or run.state.moment(p.get("until", "slo_recovered")) is not None:
        return Verdict(True, "not running")
    elapsed = run.clock.now() - start
    until = {"fault_cleared": "the fault cleared", "slo_recovered": "SLO recovery"}.get(
        p.get("until", "slo_recovered"), p.get("until", "slo_recovered")
    )
    return Verdict(
        elapsed <= p["seconds"],
        f"{elapsed:.0f} s since the {p.get('since', 'fault').replace('_', ' ')} without {until} "
        f"(limit {p['seconds']:g} s)",
    )


# The check kinds a gate or abort condition can name (the engine reads them through drills.registry).
CHECKS: dict[str, CheckFn] = {
    "slo": _slo,
    "healthy": _healthy,
    "unhealthy": _unhealthy,
    "weights_applied": _weights,
    "roles_applied": _roles,
    "dns_excludes": _dns_excludes,
    "capacity_ready": _capacity,
    "rpo": _rpo,
    "deadline": _deadline,
}
