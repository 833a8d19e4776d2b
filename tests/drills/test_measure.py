"""One definition of every measurement: the engine's probes, the load generator's records and every report compute
percentiles, SLO windows and RTO with drills.measure, and get the same figures from the same requests."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from drills.actions import SwitchTracker
from drills.adapters.base import ProbeResult
from drills.checks import window_stats
from drills.measure import Slo, latency_summary, percentile, rto_parts, slo_recovery, window_ok

ROOT = Path(__file__).resolve().parents[2]


def test_percentile_is_nearest_rank():
    assert percentile([], 99) is None
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 101)), 50) == 50
    assert percentile([4, 1, 3, 2], 50) == 2
    # A p99 is a latency some request had: never interpolated between two.
    values = [1.0, 2.0, 1000.0]
    assert percentile(values, 99) == 1000.0 and percentile(values, 60) == 2.0
    rng = random.Random(7)
    sample = [rng.expovariate(0.1) for _ in range(333)]
    assert all(percentile(sample, q) in sample for q in (1, 50, 90, 99, 99.9, 100))


def _outage(seed: int = 1) -> tuple[list[ProbeResult], float]:
    """8 clients probing every 0.5 s; region a dies at t=100, clients move to b between 104 and 110 (each keeps
    failing until its cached answer expires), one latency spike on b at 112 (bad for one window), then quiet."""
    rng = random.Random(seed)
    fault, out = 100.0, []
    moves = {c: 104.0 + 6.0 * c / 7 for c in range(8)}
    t = 90.0
    while t < 140.0:
        for c in range(8):
            on_a = t < moves[c]
            ok = not (on_a and t >= fault)
            lat = rng.uniform(2, 8) if ok else 1000.0
            if 112.0 <= t < 112.5 and not on_a:
                lat = 400.0
            out.append(
                ProbeResult(
                    t=t + c * 0.01,
                    target="service",
                    kind="infer",
                    ok=ok,
                    latency_ms=lat,
                    region="a" if on_a else "b",
                    client=c,
                )
            )
        t += 0.5
    return out, fault


def test_engine_and_report_give_the_same_figures_for_the_same_requests():
    records, fault = _outage()
    slo = Slo(success_rate=0.99, p99_ms=250.0, window_s=3.0, min_requests=10)

    # Summaries: the journal's probe statistics and the report's latency summary.
    eng = window_stats(records)
    rep = latency_summary(records)
    assert (eng["n"], eng["ok"], eng["errors"]) == (rep["requests"], rep["ok"], rep["errors"])
    assert (eng["success_rate"], eng["p50_ms"], eng["p99_ms"]) == (rep["success_rate"], rep["p50_ms"], rep["p99_ms"])

    # SLO recovered: the engine, polling every 2 s over what it has seen, and the report over every record.
    tracker = SwitchTracker({"a"}, fault)
    fed, recovered, now = 0, None, fault
    while now <= records[-1].t:
        new = [r for r in records[fed:] if r.t <= now]
        tracker.feed(new)
        fed += len(new)
        recovered = tracker.slo_recovered(now, slo)
        now += 2.0
    t_report, violated = slo_recovery(records, fault, slo)
    parts = rto_parts(records, fault, [], [], ttl=5.0, slo=slo, region="a")
    assert violated and parts["slo_violated"]
    assert recovered == t_report == pytest.approx(fault + parts["slo_recovered_s"])
    # Every client had moved by 110, but windows holding the 400 ms spike (112.0-112.47) missed the p99 objective:
    # the SLO is recovered for good at the first window anchored after it.
    assert t_report == 112.5


def test_window_rule():
    slo = Slo(success_rate=0.9, p99_ms=100.0, window_s=1.0, min_requests=3)
    ok = ProbeResult(t=0, target="service", kind="infer", ok=True, latency_ms=5.0, region="a", error=None)
    bad = ProbeResult(t=0, target="service", kind="infer", ok=False, latency_ms=5.0, region="a", error="x")
    slow = ProbeResult(t=0, target="service", kind="infer", ok=True, latency_ms=500.0, region="a", error=None)
    assert window_ok([ok, ok], slo) is None  # too few to judge
    assert window_ok([ok] * 9 + [bad], slo) is True
    assert window_ok([ok] * 8 + [bad] * 2, slo) is False
    assert window_ok([ok] * 9 + [slow], slo) is False  # nearest-rank p99 of 10 is the slowest


def test_slo_recovery_is_the_first_good_window_after_the_last_bad_one():
    slo = Slo(success_rate=1.0, p99_ms=100.0, window_s=1.0, min_requests=1)

    def rec(t: float, ok: bool) -> dict:
        return {"t": t, "ok": ok, "latency_ms": 1.0}

    # one failure at 1.5 among successes every 0.5 s
    recs = [rec(t / 2, t != 3) for t in range(12)]
    t, violated = slo_recovery(recs, 0.0, slo)
    assert violated and t == 2.0  # windows anchored at 0.5, 1.0 and 1.5 hold the failure at 1.5
    t, violated = slo_recovery([rec(x / 2, True) for x in range(12)], 0.0, slo)
    assert not violated and t == 0.0
    # Still violated at the end: no recovery.
    t, violated = slo_recovery([rec(x / 2, x < 6) for x in range(12)], 0.0, slo)
    assert violated and t is None
    with pytest.raises(ValueError, match="send-time order"):
        from drills.measure import SloRecovery

        SloRecovery(slo, 0.0).feed([rec(1.0, True), rec(0.5, True)])


# Percentile-like computations that are not latency statistics: the release gates bin score distributions by
# their quantiles (PSI) and summarise them, which is a property of the scores, not a service measurement.
NOT_MEASUREMENTS = {"drills/release/gates.py"}


def _rank_index(node: ast.AST) -> bool:
    """`values[int(q * len(values))]` and the like: a percentile by indexing at a fraction of the length."""
    return isinstance(node, ast.Subscript) and any(
        isinstance(n, ast.BinOp)
        and isinstance(n.op, ast.Mult)
        and any(isinstance(c, ast.Call) and getattr(c.func, "id", None) == "len" for c in (n.left, n.right))
        for n in ast.walk(node.slice)
    )


def test_no_second_percentile_in_drills():
    found: list[str] = []
    for path in sorted((ROOT / "drills").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "drills/measure.py" or rel in NOT_MEASUREMENTS:
            continue
        found.extend(
            f"{rel}:{getattr(node, 'lineno', '?')}"
            for node in ast.walk(ast.parse(path.read_text()))
            if (isinstance(node, ast.FunctionDef) and "percentile" in node.name)
            or (
                isinstance(node, ast.Attribute)
                and node.attr in {"percentile", "quantile", "quantiles", "nanpercentile"}
            )
            or _rank_index(node)
        )
    assert not found, f"percentiles computed outside drills.measure: {found}"
