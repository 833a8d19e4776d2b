"""Gates and abort conditions of a release, registered with the drills engine's check registry.

Each returns a Verdict whose `figures` carry the pure gate's result (drills/release/gates.py: value, threshold,
comparison), so the journal and the report show every gate's figure beside its threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drills.checks import CheckFn, Verdict
from drills.release import artifacts as A
from drills.release.actions import measure, score_pair, state, tracks
from drills.release.gates import GateResult, error_rate_gate, ks_gate, p99_gate, psi_gate

if TYPE_CHECKING:
    from drills.engine import Run


def _v(g: GateResult) -> Verdict:
    return Verdict(g.ok, g.detail, g.to_dict())


def _canary_ready(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    t = tracks(run, p["region"])
    c = t.get("canary")
    ok = c is not None and c.version == p["version"] and c.ready >= 1 and c.ready >= c.desired
    return Verdict(
        ok,
        f"{p['region']} canary: "
        + (f"{c.version}, {c.ready}/{c.desired} pods ready, {c.weight}% of requests" if c else "not deployed"),
        {k: v.to_dict() for k, v in t.items()},
    )


def _traffic_split(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    t = tracks(run, p["region"])
    got = {k: v.weight for k, v in t.items()}
    ok = got.get("canary") == p["canary_weight"] and got.get("stable") == 100 - p["canary_weight"]
    return Verdict(
        ok, f"{p['region']} load balancer weights {got} (expected canary {p['canary_weight']}%)", {"weights": got}
    )


def _stable_serving(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    t = tracks(run, p["region"])
    s = t.get("stable")
    ok = (
        s is not None
        and s.version == p["version"]
        and s.ready >= max(1, s.desired)
        and s.weight == 100
        and "canary" not in t
    )
    return Verdict(
        ok,
        f"{p['region']}: stable "
        + (f"{s.version}, {s.ready}/{s.desired} ready, {s.weight}%" if s else "absent")
        + ("; a canary is still deployed" if "canary" in t else ""),
        {k: v.to_dict() for k, v in t.items()},
    )


def _score_drift(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    pair = score_pair(run, p["region"], int(p["rows"]), int(p["seed"]), since)
    s, c = pair["stable"], pair["canary"]
    if not (s.ok and c.ok):
        bad = [f"{r.track}: {r.errors} failed requests ({r.error})" for r in (s, c) if not r.ok]
        return Verdict(
            False,
            f"{p['region']}: the golden rows could not be scored on both versions: " + "; ".join(bad),
            {"stable_errors": s.errors, "canary_errors": c.errors},
        )
    g = psi_gate(s.scores, c.scores, p["max"]) if p["stat"] == "psi" else ks_gate(s.scores, c.scores, p["max"])
    return _v(g)


def _probe_errors(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    """The candidate answered the golden rows (the only traffic a canary at weight 0 sees)."""
    r = score_pair(run, p["region"], int(p["rows"]), int(p["seed"]), since)[p["track"]]
    n = len(r.latency_ms)
    return _v(error_rate_gate(r.errors, n, p["max"], 1, what=f"{p['region']} {p['track']} golden-row requests failing"))


def _track_errors(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    region, track, need = p["region"], p["track"], int(p["min_requests"])
    m = measure(run, region, track)
    if m["requests"] < need and mode == "gate":
        # Too little evidence yet: keep the monitor running (aborts watched) until enough requests were answered.
        holder: dict[str, Any] = {"m": m}

        def enough() -> bool:
            holder["m"] = measure(run, region, track)
            return holder["m"]["requests"] >= need

        run.wait(
            float(p.get("window", 60)), until=enough, label=f"{region} {track}: {need} requests for the error-rate gate"
        )
        m = holder["m"]
    g = error_rate_gate(
        m["failures"],
        m["requests"],
        p["max"],
        need,
        what=f"{region} {track} error rate over {m['seconds']:g} s",
        figures={"server": m["server"], "probe_errors": m["probe_errors"]},
    )
    return _v(g)


def _track_p99(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    m = measure(run, p["region"], p["track"])
    return _v(
        p99_gate(
            m["p99_ms"],
            p["max_ms"],
            m["p99_source"],
            what=f"{p['region']} {p['track']} p99 latency",
            figures={"server": m["server"]},
        )
    )


def _canary_errors(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    """Abort condition: any region whose canary takes traffic and fails more than the gate allows, judged
    at every monitor poll once enough requests were answered (silent before)."""
    st = state(run)
    figures = {}
    for region, weight in sorted(st.get("active", {}).items()):
        if weight <= 0:
            continue
        try:
            m = measure(run, region, "canary")
        except Exception as e:  # noqa: BLE001 - a failed scrape is not evidence of failed requests
            figures[region] = {"error": f"{type(e).__name__}: {e}"}
            continue
        figures[region] = {"requests": m["requests"], "failures": m["failures"]}
        if m["requests"] >= p["min_requests"] and m["failures"] / m["requests"] > p["max"]:
            return Verdict(
                False,
                f"{region}'s canary failed {m['failures']} of {m['requests']} requests "
                f"({m['failures'] / m['requests']:.2%} > {p['max']:.2%})",
                figures,
            )
    return Verdict(True, "no canary above its error budget" if figures else "no canary takes traffic", figures)


def _lkg_exact(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    region = p["region"]
    ptr = state(run)["lkg"].get(region)
    if ptr is None:
        return Verdict(False, f"{region}: no last-known-good pointer was read")
    differ = A.compare_to_pointer(run.backend.s3, region, ptr)
    s = tracks(run, region).get("stable")
    ok = not differ and s is not None and s.version == ptr["version"]
    return Verdict(
        ok,
        (
            f"{region}: all {len(ptr['files'])} files a pod fetches equal the pointer's sha256 and stable serves "
            f"{ptr['version']}"
            if ok
            else f"{region}: differing files {sorted(differ)}; stable serves {getattr(s, 'version', None)} (pointer "
            f"{ptr['version']})"
        ),
        {"differ": differ, "version": ptr["version"], "manifest_sha256": ptr["manifest_sha256"]},
    )


def _corruption_detected(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    det = state(run).get("detection") or {}
    path = ((det.get("fault") or {}).get("path")) or ""
    named = [x for x in det.get("problems", []) if path and x.startswith(path)]
    ok = not det.get("ok", True) and bool(named)
    return Verdict(
        ok,
        (
            f"verification refuses {path} {det.get('after_fault')} s after the corruption: {named[0]}"
            if ok
            else f"the corrupted file {path or '?'} was NOT caught by verification: {det.get('problems')}"
        ),
        det,
    )


def _regions_exact(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    regions = state(run).get("regions") or {}
    bad = [r for r, v in regions.items() if v.get("exact_at") is None]
    spread = [r for r, v in regions.items() if v.get("saw_corrupt") is not None]
    return Verdict(
        not bad,
        (
            "every other region back to its last-known-good bytes; the corrupt object replicated to "
            f"{', '.join(spread) or 'none'} first"
            if not bad
            else f"not exact: {', '.join(bad)}"
        ),
        regions,
    )


def _node_loss_recovered(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    nl = state(run).get("node_loss") or {}
    ok = nl.get("dropped_at") is not None and nl.get("recovered_at") is not None
    return Verdict(
        ok,
        (
            f"pods dropped to {nl.get('min_ready')}/{nl.get('pre_ready')} at {nl.get('dropped_at')} s and were all "
            f"ready again at {nl.get('recovered_at')} s after the loss"
            if ok
            else f"no loss and recovery observed: {nl}"
        ),
        {k: v for k, v in nl.items() if k != "series"},
    )


def _node_loss_capacity(run: Run, p: dict, mode: str, since: float | None) -> Verdict:
    nl = state(run).get("node_loss") or {}
    need, have = nl.get("gpus_required_at_peak"), nl.get("gpus_serving_min")
    ok = need is not None and have is not None and have >= need
    return Verdict(
        ok,
        f"at its lowest {nl.get('capacity_fraction_min', 0):.0%} of the region's pods served (= {have} of its GPUs at "
        f"desired size; predicted after one node {nl.get('capacity_fraction_predicted', 0):.0%}); its share of peak "
        f"needs {need} GPUs ({nl.get('capacity_fraction_required', 0):.0%}, N+1 math)",
        {
            k: nl.get(k)
            for k in (
                "capacity_fraction_min",
                "capacity_fraction_predicted",
                "capacity_fraction_required",
                "gpus_serving_min",
                "gpus_required_at_peak",
            )
        },
    )


# The gates and abort conditions of releases (composed in drills.registry).
CHECKS: dict[str, CheckFn] = {
    "canary_ready": _canary_ready,
    "traffic_split": _traffic_split,
    "stable_serving": _stable_serving,
    "score_drift": _score_drift,
    "probe_errors": _probe_errors,
    "track_errors": _track_errors,
    "track_p99": _track_p99,
    "canary_errors": _canary_errors,
    "lkg_exact": _lkg_exact,
    "corruption_detected": _corruption_detected,
    "regions_exact": _regions_exact,
    "node_loss_recovered": _node_loss_recovered,
    "node_loss_capacity": _node_loss_capacity,
}
