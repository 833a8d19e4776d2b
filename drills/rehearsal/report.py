"""The rehearsal's report: the drills report of the engine's journal, plus what only a rehearsal can show.

Written to the run directory:
  report.json    everything below as data ("rto": the client-measured RTO parts and the prediction; "drill": the
                 drills report built from the journal by drills.report.build_report; "traffic"; "rpo"; ...)
  report.md      the same for people, with the drills report (timeline, objectives, findings, actions) inline
  timeline.png   success rate, p99 latency and traffic share per region over time; fault, RTO parts, predicted
                 RTO and the drill's config changes marked (drills/rehearsal/chart.py)
  requests.jsonl one line per client request (the ground truth: time, client, region, status, latency)
  drill/         the engine's own report files (`drills report` output) beside the journal in state/

One RTO is reported: the *clients'* (every request the load generator sent, `drills.measure.rto_parts`), also in the
objectives of the engine's inlined drill report, whose probe-based RTO (the figure on AWS, where no clients are
recorded) is left out where the clients measured the failover. All times are drill seconds (configuration-equivalent;
wall seconds / scale), with wall seconds given too.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from infra.catalog import CAPACITY_STARTUP

PARTS = [  # (key in loadgen.rto_parts, label, predicted time after the fault from the config's parts)
    ("detection_s", "detection: fault -> health check unhealthy", ("detection",)),
    ("dns_change_s", "DNS answer changed: region out of the answers", ("detection", "dns_change")),
    ("first_success_survivor_s", "first success from a survivor (an affected client)", None),
    ("ttl_expiry_s", "TTL expiry: DNS change + TTL", ("detection", "dns_change", "ttl")),
    ("all_clients_recovered_s", "every affected client succeeds on a survivor", ("detection", "dns_change", "ttl")),
    ("slo_recovered_s", "SLO recovered (success rate and p99 over the SLO window) = RTO", None),
]


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(float(v), nd)


def _wall(clock: Any, t: float) -> float:
    return clock.to_wall(t) if clock is not None else t


def _stats(records: list) -> dict:
    from drills.measure import latency_summary, share_by_region

    s = latency_summary(records)
    return {
        **{k: (_r(v, 2) if isinstance(v, float) else v) for k, v in s.items()},
        "share": {k: round(v, 3) for k, v in share_by_region(records).items()},
    }


def fail_open_periods(changes: list[dict], fqdn: str, scale: float) -> list[dict]:
    """When Route 53 failed open for `fqdn` (every record unhealthy: it answers as if all were healthy, see
    drills/rehearsal/dns.py `route`), from the DNS model's own answer changes: wall clock from / to (None: still at
    the end) and the length in drill seconds."""
    name = fqdn.rstrip(".").lower()
    out: list[dict] = []
    start = None
    for c in sorted((c for c in changes if str(c["name"]).rstrip(".").lower() == name), key=lambda c: c["t"]):
        if c["fail_open"] and start is None:
            start = c["t"]
        elif not c["fail_open"] and start is not None:
            out.append({"from_wall": start, "to_wall": c["t"], "drill_s": _r((c["t"] - start) / scale)})
            start = None
    if start is not None:
        out.append({"from_wall": start, "to_wall": None, "drill_s": None})
    return out


# ---------------------------------------------------------------- failover (region-outage)
def failover_rto(plan: Any, facts: dict, records: list, scale: float) -> dict | None:
    """Client-measured RTO parts of the first injected fault, in drill seconds, with the prediction beside."""
    from drills.brownout import REPLICATION
    from drills.drillplan import Parameters
    from drills.measure import plan_slo, rto_parts
    from drills.scenarios.readiness import FAULT as SERVED_MANIFEST_DIFFERS

    events = facts.get("fault_events") or []
    inj = next((e for e in events if e["event"] == "inject"), None)
    # Faults that move no traffic: a replication partition (partition_view), the readiness scenario's manifest
    if inj is None or inj["kind"] in (*REPLICATION, SERVED_MANIFEST_DIFFERS):
        return None
    clear = next((e for e in events if e["event"] == "clear" and e["wall"] >= inj["wall"]), None)
    end = clear["wall"] if clear else (max((r.t for r in records), default=inj["wall"]))
    recs = [r for r in records if r.t < end]  # the failover phase: up to the clearing of the fault
    pred_wall = facts.get("predicted_wall") or {}
    hc_wall = float(plan.health_check["request_interval"]) * scale
    tolerance = hc_wall + 0.5  # the checker's random phase (one interval) + scheduling slack on 2 shared cores
    o = plan.objectives
    slo = plan_slo(o, Parameters.model_validate(plan.parameters), scale)
    # The modelled prediction, or the plan's where it is longer (a fault only an ALB alarm sees: planning.predicted_rto)
    pred_total = max(float(pred_wall.get("total_s", 0.0)), float(plan.predicted.get("total", 0.0)) * scale)
    limit = pred_total + tolerance
    p = rto_parts(
        recs,
        inj["wall"],
        facts.get("hc_transitions") or [],
        facts.get("dns_changes") or [],
        float(facts.get("ttl_wall") or 0),
        slo,
        region=inj["region"],
        window_limit_s=limit,
    )
    after_clear = [r for r in records if r.t >= end] if clear else []
    predicted = dict(plan.predicted)
    parts = []
    for key, label, pred in PARTS:
        w = p.get(key)
        parts.append(
            {
                "part": key.removesuffix("_s"),
                "label": label,
                "wall_s": _r(w, 3),
                "drill_s": _r(None if w is None else w / scale),
                "predicted_drill_s": round(sum(float(predicted.get(k, 0)) for k in pred), 1) if pred else None,
            }
        )
    measured = p.get("slo_recovered_s")
    moved = p.get("all_clients_recovered_s")
    return {
        "kind": "failover",
        "region": inj["region"],
        "fault": inj["kind"],
        "measured_from": "client records (every request the load generator sent)",
        "fault_wall": inj["wall"],
        "cleared_wall": clear["wall"] if clear else None,
        "parts": parts,
        "rto_drill_s": _r(None if measured is None else measured / scale),
        "rto_wall_s": _r(measured, 3),
        "all_clients_moved_drill_s": _r(None if moved is None else moved / scale),
        "predicted": predicted,
        "predicted_modelled_wall": pred_wall,
        "tolerance_drill_s": round(tolerance / scale, 1),
        "objective_s": o.rto_seconds,
        "verdict_objective": None if measured is None else ("PASS" if measured / scale <= o.rto_seconds else "FAIL"),
        "within_prediction": None if moved is None else moved <= pred_total + tolerance,
        "clients_affected": p["clients_affected"],
        "errors_during_failover": p["errors_during_failover"],
        "errors_after_fault": p["errors_after_fault"],
        "lost_after_window": p["lost_after_window"],
        "window_drill_s": round(limit / scale, 1),
        "last_error_drill_s": _r(None if p.get("last_error_s") is None else p["last_error_s"] / scale),
        "before": p["before"],
        "after": p["after"],
        "slo": p["slo"],
        "failback": _stats(after_clear) if clear else None,
        "detection": detection_by_check(
            facts.get("hc_transitions") or [],
            inj["region"],
            inj["wall"],
            clear["wall"] if clear else None,
            scale,
            predicted,
        ),
    }


CHECK_ORDER = ("shallow", "deep", "5xx", "latency", "calculated")  # infra.health.CHILD_KINDS, then the record's


def check_kind(label: str, region: str) -> str | None:
    """The kind of check a health transition's label names for `region` (route53.Route53Model.labels): the region
    alone is the record's own (calculated) check, "<region> <kind>" one it combines; None for another region."""
    if label == region:
        return "calculated"
    head, _, kind = label.partition(" ")
    return kind if head == region and kind else None


def detection_by_check(
    transitions: list[dict], region: str, fault_wall: float, clear_wall: float | None, scale: float, prediction: dict
) -> dict[str, Any]:
    """When each kind of check saw the fault (first unhealthy after it, drill seconds; None: never) and came back
    after the clearing, and what the shallow check alone would have given: its detection plus Route 53's propagation
    and the TTL (the RTO a record carrying only the shallow check would have had), or never."""
    out: dict[str, dict[str, float | None]] = {}
    for kind in CHECK_ORDER:
        mine = sorted((t for t in transitions if check_kind(t["label"], region) == kind), key=lambda t: t["t"])
        if not mine and kind != "calculated":
            continue
        end = clear_wall if clear_wall is not None else float("inf")
        down = next((t["t"] for t in mine if not t["healthy"] and fault_wall <= t["t"] < end), None)
        back = next((t["t"] for t in mine if t["healthy"] and clear_wall is not None and t["t"] >= clear_wall), None)
        out[kind] = {
            "detected_drill_s": _r(None if down is None else (down - fault_wall) / scale),
            "healthy_after_clear_drill_s": _r(
                None if back is None or clear_wall is None else (back - clear_wall) / scale
            ),
        }
    shallow = (out.get("shallow") or {}).get("detected_drill_s")
    rest = float(prediction.get("dns_change", 0)) + float(prediction.get("ttl", 0))
    return {
        "by_check": out,
        "shallow_only": {
            "detected_drill_s": shallow,
            "rto_bound_drill_s": None if shallow is None else _r(shallow + rest),
            "verdict": "never detected: users would have been sent to the region for the whole fault"
            if shallow is None
            else "detected",
        },
    }


def false_positives(transitions: list[dict]) -> dict[str, Any]:
    """Every check that went unhealthy (a quiet soak must have none): label -> times it did."""
    by: dict[str, int] = {}
    for t in transitions:
        if not t["healthy"]:
            by[t["label"]] = by.get(t["label"], 0) + 1
    return {"detections": sum(by.values()), "by_check": dict(sorted(by.items()))}


def by_client_kind(facts: dict, records: list) -> dict[str, dict]:
    """drills.measure.client_kind_summary per kind over the whole run, and over the fault (injection to clearing,
    where the drill injected one) as `during_fault`."""
    from drills.measure import client_kind_summary

    out = client_kind_summary(records)
    events = facts.get("fault_events") or []
    inj = next((e for e in events if e["event"] == "inject"), None)
    if inj is not None:
        clears = [e["wall"] for e in events if e["event"] == "clear" and e["wall"] >= inj["wall"]]
        end = max(clears) if clears else float("inf")  # every fault's (total-outage injects one per region)
        during = client_kind_summary(r for r in records if inj["wall"] <= r.t < end)
        for kind, v in out.items():
            v["during_fault"] = during.get(kind)
    return out


def with_client_rto(drill: dict, fo: dict | None) -> dict:
    """The engine's drill report with one RTO: where the clients measured a failover, their figure is the RTO
    objective's measurement and the probe-based parts are left out (the probes saw the same failover, coarser)."""
    if fo is None:
        return drill
    from drills.report import RTO_PROBES

    client = {
        "objective": "RTO (fault -> SLO recovered, measured from the clients' records)",
        "measured": fo["rto_drill_s"],
        "verdict": fo["verdict_objective"] or "N/A",
    }
    objectives = [{**o, **client} if o["objective"] == RTO_PROBES else o for o in drill["objectives"]]
    return {**drill, "objectives": objectives, "rto": [], "failover_window": None}


# ---------------------------------------------------------------- planned switches (evacuate-region, stack-flip)
def switches(plan: Any, entries: list[dict], records: list, clock: Any, scale: float) -> list[dict]:
    """Per config change applied by the drill: which regions left the answers, when the clients stopped reaching them
    (from their records), errors in between. Times in drill seconds after the change was set."""
    from drills.actions import routing_of
    from infra.capacity import shares_after_loss

    weights = dict(plan.pre_weights)
    roles = dict(plan.pre_roles or {})
    changes: list[dict] = []
    pending = None
    for e in entries:
        if e["type"] == "config_set" and e.get("stack") == plan.global_stack:
            pending = e
        elif e["type"] == "change_applied" and pending is not None:
            w, r = routing_of(pending["values"])

            def share(ws: dict, rs: dict) -> dict:
                return (
                    {k: 1.0 if v == "PRIMARY" else 0.0 for k, v in rs.items()}
                    if plan.mode == "failover"
                    else shares_after_loss(ws, None)
                )

            before = share(weights, roles)
            weights.update(w)
            roles.update(r)
            after = share(weights, roles)
            changes.append(
                {
                    "step": e.get("step"),
                    "by": pending.get("by"),
                    "values": pending["values"],
                    "t_set": e["t_set"],
                    "t_in_sync": e.get("t_in_sync"),
                    "t_answer": e.get("t_answer"),
                    "away": sorted(k for k in before if before[k] > 0 and after.get(k, 0) == 0),
                    "shares_after": {k: round(v, 3) for k, v in after.items()},
                }
            )
            pending = None
    out = []
    for i, c in enumerate(changes):
        t0w = _wall(clock, c["t_set"])
        t1w = (
            _wall(clock, changes[i + 1]["t_set"]) if i + 1 < len(changes) else max((r.t for r in records), default=t0w)
        )
        rs = [r for r in records if t0w <= r.t < t1w]
        to_away = [r.t for r in rs if r.region in c["away"]]
        out.append(
            {
                "step": c["step"],
                "values": c["values"],
                "at_drill_s": round(c["t_set"] - (entries[0]["t"] if entries else 0), 1),
                "away": c["away"],
                "shares_after": c["shares_after"],
                "records_in_sync_drill_s": _r(None if c["t_in_sync"] is None else c["t_in_sync"] - c["t_set"]),
                "dns_changed_drill_s": _r(None if c["t_answer"] is None else c["t_answer"] - c["t_set"]),
                "last_request_to_away_drill_s": _r((max(to_away) - t0w) / scale)
                if to_away
                else (0.0 if c["away"] else None),
                "requests": len(rs),
                "errors": sum(1 for r in rs if not r.ok),
                "share_observed": _stats(rs)["share"],
            }
        )
    return out


# ---------------------------------------------------------------- RPO
def rpo(plan: Any, facts: dict, scale: float) -> dict | None:
    cans = facts.get("canaries") or []
    if not cans:
        return None
    rows = []
    for c in cans:
        for dst, rep in (c.get("replicated") or {}).items():
            lag = rep.get("rpo_s")
            rows.append(
                {
                    "source": c["region"],
                    "destination": dst,
                    "key": c["key"],
                    "lag_wall_s": _r(lag, 3),
                    "lag_drill_s": _r(None if lag is None else lag / scale),
                    "error": rep.get("error"),
                }
            )
    lags = [r["lag_drill_s"] for r in rows if r["lag_drill_s"] is not None]
    worst = max(lags) if lags else None
    out = {
        "measured_from": "the S3 replication model's landing time of each canary version (exact, not polled)",
        "canaries": rows,
        "rpo_drill_s": worst,
        "objective_s": plan.objectives.rpo_seconds,
        "verdict": None if worst is None else ("PASS" if worst <= plan.objectives.rpo_seconds else "FAIL"),
    }
    part = partition_view(plan, facts, scale)
    if part is not None:  # a partition drill: RPO grows by design; the catch-up after the heal is what is judged
        out["partition"] = part
        out["verdict"] = part["verdict"]
    return out


def _fired(t: float | None) -> str:
    return "no" if t is None else f"{t:.1f} s"


def replication_alarm_fired(put: float, landed: float | None, threshold: float, period: float) -> float | None:
    """When the declared ReplicationLatency alarm (Maximum over `period`, 1 of 1, above `threshold`) fires for one
    object put at `put` and landed at `landed` (None: never), all in one clock: the end of the first period (aligned
    to the clock's multiples of `period`, as CloudWatch aligns them) in which the object was pending and older than the
    threshold; None when it landed in time."""
    breach = put + threshold
    if landed is not None and landed <= breach:
        return None
    return math.floor(breach / period) * period + period


def partition_view(plan: Any, facts: dict, scale: float) -> dict | None:
    """A replication-partition drill: how long the region was cut off, each canary to or from it (its exposure: put to
    landing; its catch-up: heal to landing), when the declared replication alarm fired for it, and the verdict: every
    canary landed, each within the RPO objective of the heal."""
    events = facts.get("fault_events") or []
    inj = next((e for e in events if e["event"] == "inject" and e["kind"] == "replication-partition"), None)
    if inj is None:
        return None
    clear = next((e for e in events if e["event"] == "clear" and e["wall"] >= inj["wall"]), None)
    cut, heal, region = inj["wall"], (clear or {}).get("wall"), inj["region"]
    alarm = facts.get("replication_alarm") or {}
    rows = []
    for c in facts.get("canaries") or []:
        for dst, rep in (c.get("replicated") or {}).items():
            if region not in (c["region"], dst):
                continue
            landed = None if rep.get("rpo_s") is None else c["t_put"] + rep["rpo_s"]
            fired = (
                replication_alarm_fired(
                    c["t_put"], landed, float(alarm["threshold_s"]) * scale, float(alarm["period_s"]) * scale
                )
                if alarm
                else None
            )
            rows.append(
                {
                    "source": c["region"],
                    "destination": dst,
                    "exposure_drill_s": _r(None if landed is None else (landed - c["t_put"]) / scale),
                    "catch_up_drill_s": _r(None if landed is None or heal is None else (landed - heal) / scale),
                    "alarm_fired_after_cut_drill_s": _r(None if fired is None else (fired - cut) / scale),
                }
            )
    ups = [r["catch_up_drill_s"] for r in rows]
    ok = bool(rows) and all(u is not None and u <= plan.objectives.rpo_seconds for u in ups)
    return {
        "region": region,
        "cut_drill_s": _r(None if heal is None else (heal - cut) / scale),
        "alarm": alarm or None,
        "canaries": rows,
        "catch_up_drill_s": max((u for u in ups if u is not None), default=None),
        "verdict": "PASS" if ok else "FAIL",
    }


# ---------------------------------------------------------------- the whole report
def build(
    *,
    opts: Any,
    plan: Any,
    model: Any,
    facts: dict,
    records: list,
    entries: list[dict],
    clock: Any,
    notes: list[str],
    wall_seconds: float,
    leftovers: list[int],
    interrupted: str | None,
    error: str | None,
    outcome: Any,
) -> dict:
    from drills.report import build_report

    scale = opts.scale
    d = facts.get("describe") or {}
    # The DNS failover is measured on the naive clients (no retry: what DNS alone gives a client); the resilient
    # ones are reported beside them, by kind.
    naive = [r for r in records if r.kind == "naive"]
    # A total outage has no failover to measure (no survivor): its clients are reported by kind, below.
    fo = failover_rto(plan, facts, naive, scale) if naive and plan.scenario != "total-outage" else None
    drill = with_client_rto(build_report(entries), fo) if entries else None
    first_pod = ((drill or {}).get("capacity") or {}).get("first_added_pod_serving_s")
    if fo and first_pod is not None:
        # The capacity part joins the RTO parts: the first pod a survivor added serves (the drill's measure-startup).
        fo["parts"].append(
            {
                "part": "capacity",
                "label": "capacity: the first pod a survivor added serves (stated boot and pull, real load)",
                "wall_s": round(first_pod * scale, 3),
                "drill_s": first_pod,
                "predicted_drill_s": float(sum(s.seconds for s in CAPACITY_STARTUP)),
            }
        )
    sw = switches(plan, entries, naive, clock, scale) if entries and plan.scenario != "region-outage" else []
    traffic = _stats(naive)
    traffic.update(
        measured_from="the naive clients' records" if len(naive) < len(records) else "every client's records",
        by_client_kind=by_client_kind(facts, records),
        rate_per_s=opts.rate,
        clients=opts.clients,
        resilient_clients=getattr(opts, "resilient_clients", 0),
        request_timeout_s=opts.request_timeout,
        errors_during_failover=fo["errors_during_failover"] if fo else None,
        lost_after_window=fo["lost_after_window"] if fo else None,
        before=fo["before"] if fo else None,
        after=fo["after"] if fo else None,
    )
    cfg_hc = plan.health_check
    rep: dict[str, Any] = {
        "rehearsal": {
            "env": plan.env,
            "scenario": plan.scenario,
            "region": plan.region,
            "mode": plan.mode,
            "fqdn": plan.fqdn,
            "status": outcome.status if outcome else ("interrupted" if interrupted else "failed"),
            "reason": outcome.reason if outcome else (interrupted or error),
            "drill_id": outcome.drill_id if outcome else None,
            "wall_seconds": round(wall_seconds, 1),
            "scale": scale,
            "clock_origin": getattr(clock, "origin", None),  # drill seconds and wall seconds coincide here
            "time_model": (
                f"every modelled timing runs at {scale:g} x its configured value; "
                f"drill seconds = wall seconds / {scale:g} "
                "(the engine's clock runs 1/scale times faster), so figures compare directly with the objectives. "
                "Latencies are real milliseconds. Process start-up and scheduling jitter are not scaled and read "
                f"{1 / scale:g}x longer in drill seconds."
            ),
            "modelled_timings_wall_s": {
                "health_check_interval": (d.get("scale") or {}).get("hc_interval"),
                "failure_threshold": cfg_hc["failure_threshold"],
                "ttl": facts.get("ttl_wall"),
                "propagation": (d.get("scale") or {}).get("dns_refresh"),
                "replication_lag": (d.get("scale") or {}).get("replication_lag"),
            },
            "configured": {
                "health_check_interval_s": cfg_hc["request_interval"],
                "failure_threshold": cfg_hc["failure_threshold"],
                "ttl_s": plan.ttl,
                "propagation_allowance_s": plan.parameters.get("dns_propagation_seconds"),
            },
            "model": {
                "dir": str(model.dir),
                "version": model.version,
                "manifest_sha256": model.manifest_sha256,
                "cache_key": model.key,
                "cache_hit": model.cache_hit,
                "build_seconds": model.build_seconds,
            },
            "world": {
                "ports": d.get("ports"),
                "dns": d.get("dns"),
                "moto": d.get("moto"),
                "timings_s": d.get("timings"),
                "pods": d.get("pods"),
                "substitutions": d.get("substitutions"),
                "declared_in_moto": (d.get("declared") or {}).get("applied_types"),
                "declared_not_applied": (d.get("declared") or {}).get("ignored_types"),
                "regions": {
                    r: {
                        "address": v.get("address"),
                        "bucket": v.get("bucket"),
                        "cluster": v.get("cluster"),
                        "triton_ready_s": (v.get("triton") or {}).get("ready_s"),
                        "triton_rss_mib": (v.get("triton") or {}).get("rss_mib"),
                    }
                    for r, v in (d.get("regions") or {}).items()
                },
            },
            "stack_copy_notes": notes,
            "processes_left_behind": leftovers,
            "interrupted": interrupted,
            "error": error,
            "stack_ups": facts.get("stack_ups"),
            "fault_events": facts.get("fault_events"),
        },
        "rto": fo or {"kind": "switch" if sw else None, "switches": sw},
        "switches": sw,
        "traffic": traffic,
        "rpo": rpo(plan, facts, scale),
        "drill": drill,
        "chart": "timeline.png",
        # The models' own records (wall clock): Route 53 health transitions and DNS answer changes.
        "health_transitions": facts.get("hc_transitions") or [],
        "dns_changes": facts.get("dns_changes") or [],
        "dns_fail_open": fail_open_periods(facts.get("dns_changes") or [], plan.fqdn, scale),
        "alarm_transitions": facts.get("alarm_transitions") or [],
        # Each readiness evaluation the drill made (the readiness scenario: ready, not ready, ready again).
        "readiness": [e["checks"] for e in entries if e.get("type") == "readiness"],
        "health_detections": false_positives(facts.get("hc_transitions") or []),
        # --capacity-model: the survivors' scale-ups and the capacity part of RTO (drills/rehearsal/capacity.py).
        "capacity": facts.get("capacity"),
    }
    rep["findings"] = findings(rep)
    verdicts = [x for x in (drill["verdict"] if drill else "FAIL", (fo or {}).get("verdict_objective") or "PASS") if x]
    if plan.scenario == "quiet":  # a soak passes only without a single detection
        verdicts.append("PASS" if rep["health_detections"]["detections"] == 0 else "FAIL")
    rep["verdict"] = (
        "PASS" if all(v == "PASS" for v in verdicts) and not leftovers and not interrupted and not error else "FAIL"
    )
    return rep


def findings(rep: dict) -> list[dict]:
    """The rehearsal's own findings (the drill report's are in rep["drill"]["findings"]), each with an action."""
    out: list[dict] = []

    def add(f: str, a: str) -> None:
        out.append({"finding": f, "action": a})

    rh = rep["rehearsal"]
    fo = rep["rto"] if rep["rto"].get("kind") == "failover" else None
    if rh["processes_left_behind"]:
        add(
            f"processes left behind after teardown: {rh['processes_left_behind']}",
            "kill them by pid and report a bug in drills/rehearsal/procs.py",
        )
    if fo:
        if fo["within_prediction"] is False:
            add(
                f"the last affected client moved at {fo['all_clients_moved_drill_s']} s, later than the prediction "
                f"{fo['predicted'].get('total')} s + tolerance {fo['tolerance_drill_s']} s",
                "look at the clients that moved last in requests.jsonl: "
                "resolvers caching beyond the TTL, or a slow survivor",
            )
        if fo["lost_after_window"]:
            add(
                f"{fo['lost_after_window']} requests failed after the failover window ({fo['window_drill_s']} s)",
                "failures after the predicted window are lost requests: "
                "check the survivors' capacity and the clients' caches",
            )
        if fo["errors_during_failover"]:
            add(
                f"{fo['errors_during_failover']} of the clients' requests failed during the failover "
                f"({fo['clients_affected']} clients affected): "
                "expected, the price of DNS failover",
                "to shorten it, lower the TTL or the failure threshold; "
                "to hide it, let clients retry on another address",
            )
    for p in rep.get("dns_fail_open") or []:
        add(
            f"Route 53 failed open for {rep['rehearsal']['fqdn']}: every record unhealthy, all answered "
            + (f"for {p['drill_s']} s" if p["drill_s"] is not None else "until the end of the run"),
            "expected when every region is down (total-outage): clients keep resolving every region; only a client "
            "with a fallback answers (drills.client); anywhere else it means every health check failed at once",
        )
    for s in rep.get("switches") or []:
        if s["errors"]:
            add(
                f"{s['errors']} requests failed after the planned change at {s['step']}",
                "a planned move should lose nothing: check the survivors' readiness before each shift",
            )
    return out


def triton_as_declared(pods: dict, substitutions: list) -> list[str]:
    """Markdown: each region's Triton args as its stack declares them, and the substitutions the rehearsal made."""
    if not pods:
        return []
    L = ["", "### Triton, as the regional stacks declare it", ""]
    for r, p in pods.items():
        L.append(f"- {r} ({p['stack']}, {', '.join(p['deployments'])}): `{' '.join(p['args'])}`")
    L += ["", "Run here with these substitutions and no other:", "", "| declared | here | why |", "|---|---|---|"]
    L += [f"| `{a}` | {b} | {c} |" for a, b, c in substitutions]
    return L


def capacity_markdown(cap: dict | None) -> list[str]:
    """The survivors' scale-ups: each part (stated ones modelled in drill seconds, real ones in wall seconds) and the
    capacity part of RTO with and without reservations."""
    if not cap:
        return []
    L = [
        f"## Survivor capacity ({cap['model']})",
        "",
        f"Load in proportion to peak: 1 production QPS = {cap['rps_per_qps']:.3g} requests/s here; a request waits up "
        f"to {cap['queue_ms']:g} ms for a turn, then is shed (503). Nodes at the end: "
        + "; ".join(f"{r} {n}" for r, n in cap["nodes"].items() if n)
        + ".",
        "",
    ]
    if not cap["scale_ups"]:
        return [*L, "No region needed more nodes than it ran.", ""]
    parts = list(dict.fromkeys(k for u in cap["scale_ups"] for k in u["parts"]))
    L += [
        "| region | nodes | capacity | decided (s after fault) | "
        + " | ".join(parts)
        + " | serving (s after fault) | capacity part: measured | with reservations | without |",
        "|---|---|---|---|" + "---|" * len(parts) + "---|---|---|---|",
    ]
    for u in cap["scale_ups"]:
        c = u["capacity_part_s"]
        L.append(
            f"| {u['region']} | {', '.join(f'{n} {p}' for p, n in u['pools'].items())} | "
            f"{'reserved' if u['reserved'] else 'on-demand'} | {_s(u['decided_at_drill_s'])} | "
            + " | ".join(_s(u["parts"].get(k)) for k in parts)
            + f" | {_s(u['serving_at_drill_s'])} | {_s(c['measured'])} | {_s(c['with_reservations'])} | "
            f"{_s(c['without_reservations'])} |" + (f" {u['error']}" if u.get("error") else "")
        )
    return [
        *L,
        "",
        "EC2 capacity, node boot and image pull are stated figures (drill seconds, modelled on the scaled clock: "
        "infra/catalog.py); model fetch+verify, Triton load+warm-up and the first good inference ran here (wall "
        "seconds, not scaled). Substitution: the nodes of one launch are one Triton process carrying all their "
        "throughput (EC2 launches them in parallel).",
        "",
    ]


def render_markdown(rep: dict) -> str:
    from drills.report import render_markdown as drill_md

    rh = rep["rehearsal"]
    t = rep["traffic"]
    L = [
        f"# Rehearsal: {rh['scenario']} on {rh['env']}" + (f" ({rh['region']})" if rh.get("region") else ""),
        "",
        f"- status: **{rh['status']}**"
        + (f" ({rh['reason']})" if rh.get("reason") else "")
        + f", verdict **{rep['verdict']}**",
        f"- drill id: `{rh['drill_id']}`; routing: {rh['mode']} on {rh['fqdn']}; backend: rehearsal (this machine)",
        f"- wall time of the whole run: {rh['wall_seconds']} s (model, world start-up, drill, teardown)",
        f"- **scale {rh['scale']:g}**: {rh['time_model']}",
        "- modelled timings (wall s): "
        + ", ".join(
            f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
            for k, v in rh["modelled_timings_wall_s"].items()
            if v is not None
        ),
        "- configured (drill s): " + ", ".join(f"{k} {v}" for k, v in rh["configured"].items()),
        f"- model: {rh['model']['version']} from {rh['model']['dir']} ("
        + (
            "given with --model-dir"
            if rh["model"]["cache_key"] is None
            else "cached build, key " + rh["model"]["cache_key"]
            if rh["model"]["cache_hit"]
            else f"built in {rh['model']['build_seconds']} s, key {rh['model']['cache_key']}"
        )
        + ", verified)",
        f"- processes left behind: {rh['processes_left_behind'] or 'none'}",
        "",
    ]
    L += [
        "## Client traffic",
        "",
        f"{t['requests']} ranking requests sent ({t['rate_per_s']:g}/s "
        f"from {t['clients']} clients, {t['request_timeout_s']:g} s timeout), "
        f"{t['errors']} failed; share by region: " + ", ".join(f"{k} {v:.0%}" for k, v in t["share"].items()),
        "",
    ]
    kinds = t.get("by_client_kind") or {}
    if len(kinds) > 1:
        L += [
            f"By client kind (the figures above and the RTO are the naive clients'; {t.get('resilient_clients', 0)} "
            "resilient clients ran beside them through `drills.client.RankerClient`):",
            "",
            "| kind | | requests | errors | degraded | p50 (ms) | p99 (ms) | extra requests | amplification |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for kind, k in kinds.items():
            for when, v in (("whole run", k), ("during the fault", k.get("during_fault"))):
                if v:
                    L.append(
                        f"| {kind} | {when} | {v['requests']} | {v['errors']} | {v['degraded']} | {_ms(v['p50_ms'])} "
                        f"| {_ms(v['p99_ms'])} | {v['extra_requests']} | {v['amplification']:.3f} |"
                    )
        L.append("")
    fo = rep["rto"] if rep["rto"].get("kind") == "failover" else None
    if fo:
        b, a = fo["before"], fo["after"]
        L += ["| | requests | success | p50 (ms) | p99 (ms) | share |", "|---|---|---|---|---|---|"]
        for name, s in (("before the fault", b), ("after SLO recovery (until the fault was cleared)", a)):
            L.append(
                f"| {name} | {s['requests']} | {_pct(s['success_rate'])} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | "
                + _share(s["share"])
                + " |"
            )
        L += [
            "",
            f"Errors during the failover: **{fo['errors_during_failover']}** "
            f"({fo['clients_affected']} clients affected); "
            f"failed after the failover window of {fo['window_drill_s']} s "
            f"(predicted RTO + tolerance): **{fo['lost_after_window']}**.",
            "",
        ]
        L += [
            f"## RTO in its parts (fault: {fo['fault']} in {fo['region']}; measured from the clients' records)",
            "",
            "| part | measured (drill s) | measured (wall s) | predicted from config (drill s) |",
            "|---|---|---|---|",
        ]
        for p in fo["parts"]:
            L.append(
                f"| {p['label']} | {_s(p['drill_s'])} | {_s(p['wall_s'], 3)} | "
                f"{'' if p['predicted_drill_s'] is None else p['predicted_drill_s']} |"
            )
        pr = fo["predicted"]
        L += [
            "",
            f"**Predicted RTO from the configuration**: detection {pr.get('detection'):g} s + propagation "
            f"{pr.get('dns_change'):g} s + TTL {pr.get('ttl'):g} s = **{pr.get('total'):g} s**; modelled here "
            f"{fo['predicted_modelled_wall'].get('total_s', 0):.2f} wall s.",
            f"**Measured**: every affected client on a survivor at **{_s(fo['all_clients_moved_drill_s'])} s** "
            f"(within prediction + {fo['tolerance_drill_s']} s tolerance: {_yes(fo['within_prediction'])}); "
            f"SLO recovered (RTO) at **{_s(fo['rto_drill_s'])} s** "
            f"against the objective of {fo['objective_s']:g} s: **{fo['verdict_objective']}**.",
            "",
        ]
        if fo.get("failback"):
            fb = fo["failback"]
            L += [
                f"After the fault was cleared (fail-back): {fb['requests']} requests, {fb['errors']} failed, "
                f"p99 {_ms(fb['p99_ms'])} ms.",
                "",
            ]
        det = fo.get("detection") or {}
        if det.get("by_check"):
            L += [
                f"## Which check saw it (fault {fo['fault']} in {fo['region']})",
                "",
                "| check | unhealthy after the fault (drill s) | healthy again after the clearing (drill s) |",
                "|---|---|---|",
            ]
            for kind, d in det["by_check"].items():
                L.append(
                    f"| {kind} | {_s(d['detected_drill_s']) if d['detected_drill_s'] is not None else 'never'} | "
                    f"{_s(d['healthy_after_clear_drill_s'])} |"
                )
            so = det["shallow_only"]
            L += [
                "",
                "The shallow check alone (/v2/health/ready, what the records carried before the calculated check): "
                + (
                    f"unhealthy at {_s(so['detected_drill_s'])} s, an RTO of at least {_s(so['rto_bound_drill_s'])} s."
                    if so["detected_drill_s"] is not None
                    else f"**{so['verdict']}**."
                ),
                "",
            ]
    for i, checks in enumerate(rep.get("readiness") or [], 1):
        failing = [c["name"] for c in checks if not c["ok"]]
        L += [
            f"Readiness evaluation {i}: **{'READY' if not failing else 'NOT READY: ' + ', '.join(failing)}**",
            "",
            "| check | ok | detail |",
            "|---|---|---|",
            *(f"| {c['name']} | {_yes(c['ok'])} | {c['detail']} |" for c in checks),
            "",
        ]
    L += capacity_markdown(rep.get("capacity"))
    hd = rep.get("health_detections") or {}
    if hd.get("detections") is not None and not fo:
        L += [
            f"Health checks gone unhealthy during the run: **{hd['detections']}**"
            + (f" ({hd['by_check']})" if hd["by_check"] else " (no false positive)"),
            "",
        ]
    if rep.get("switches"):
        L += [
            "## Planned changes, as the clients saw them",
            "",
            "| step | at (drill s) | regions leaving | records in sync (s) | DNS changed (s) | "
            "last request to them (s) | requests | errors | observed share |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in rep["switches"]:
            L.append(
                f"| {s['step']} | {s['at_drill_s']} | {', '.join(s['away']) or '-'} | "
                f"{_s(s['records_in_sync_drill_s'])} | "
                f"{_s(s['dns_changed_drill_s'])} | {_s(s['last_request_to_away_drill_s'])} | "
                f"{s['requests']} | {s['errors']} | "
                + ", ".join(f"{k} {v:.0%}" for k, v in s["share_observed"].items())
                + " |"
            )
        L.append("")
    if rep.get("rpo"):
        r = rep["rpo"]
        L += [
            "## RPO of the artifacts (exact landing times of the canaries)",
            "",
            "| source | destination | lag (drill s) | lag (wall s) |",
            "|---|---|---|---|",
        ]
        L += [
            f"| {c['source']} | {c['destination']} | {_s(c['lag_drill_s'])} | {_s(c['lag_wall_s'], 3)} |"
            for c in r["canaries"]
        ]
        pt = r.get("partition")
        if pt is None:
            L += [
                "",
                f"RPO {_s(r['rpo_drill_s'])} s against the objective of {r['objective_s']:g} s: **{r['verdict']}**.",
            ]
        else:
            a = pt["alarm"] or {}
            L += [
                "",
                f"Replication to and from {pt['region']} was cut for {_s(pt['cut_drill_s'])} s: RPO grew to "
                f"{_s(r['rpo_drill_s'])} s by design. The declared replication alarm (ReplicationLatency above "
                f"{a.get('threshold_s')} s over {a.get('period_s')} s periods), per canary:",
                "",
                "| source | destination | put -> landed (drill s) | heal -> landed (catch-up) | alarm after the cut |",
                "|---|---|---|---|---|",
                *(
                    f"| {c['source']} | {c['destination']} | {_s(c['exposure_drill_s'])} | {_s(c['catch_up_drill_s'])} "
                    f"| {_fired(c['alarm_fired_after_cut_drill_s'])} |"
                    for c in pt["canaries"]
                ),
                "",
                f"Catch-up after the heal {_s(pt['catch_up_drill_s'])} s against the RPO objective of "
                f"{r['objective_s']:g} s: **{pt['verdict']}**.",
            ]
        sk = (rep.get("drill") or {}).get("version_skew")
        if sk:
            L.append(
                "Version skew between the regions' served models: "
                + ("**yes**: " if sk["skew"] else "none: ")
                + ", ".join(f"{g} {v['version']} ({(v['sha256'] or '')[:12]})" for g, v in sk["regions"].items())
                + "."
            )
        L.append("")
    L += ["## Timeline chart", "", "![timeline](timeline.png)", ""]
    if rep.get("chart_failover"):
        L += ["The failover window, closer:", "", "![failover](failover.png)", ""]
    if rep["findings"]:
        L += (
            ["## Rehearsal findings", ""]
            + [f"{i}. {f['finding']}. **Action:** {f['action']}." for i, f in enumerate(rep["findings"], 1)]
            + [""]
        )
    w = rh["world"]
    L += [
        "## The world",
        "",
        f"DNS {w['dns']}, moto {w['moto']}, ports {w['ports']}; start-up (s): "
        + ", ".join(f"{k} {v}" for k, v in (w["timings_s"] or {}).items()),
        "",
        "| region | load balancer address | bucket | EKS cluster | Triton ready (s) | Triton RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r, v in w["regions"].items():
        L.append(
            f"| {r} | {v['address']} | {v['bucket']} | {v['cluster']} | "
            f"{', '.join(f'{x:.1f}' for x in v['triton_ready_s'] or [])} | {v['triton_rss_mib']} |"
        )
    L += triton_as_declared(w.get("pods") or {}, w.get("substitutions") or [])
    applied, ignored = w.get("declared_in_moto") or {}, w.get("declared_not_applied") or {}
    L += [
        "",
        f"Declared AWS resources created in moto: {sum(applied.values())} of {len(applied)} types "
        f"({', '.join(f'{t} x{n}' for t, n in sorted(applied.items()))}).",
        "Declared but not applied (networking, load balancers, Kubernetes objects, alarms: nothing here reads them; "
        "the rehearsal models the load balancers and serving itself): "
        + (", ".join(f"{t} x{n}" for t, n in sorted(ignored.items())) or "none")
        + ".",
    ]
    L += ["", "Stack copy: " + ("; ".join(rh["stack_copy_notes"]) or "identical to stacks/"), ""]
    if rep.get("drill"):
        md = drill_md(rep["drill"])
        md = "\n".join(("#" + line) if line.startswith("#") else line for line in md.splitlines())
        L += ["## The engine's drill report (drill seconds; the same report `python -m drills report` writes)", "", md]
    return "\n".join(L) + "\n"


def _share(d: dict) -> str:
    """Traffic shares as percentages; a share under 1% (one straggler request) is not shown as 0%."""
    return ", ".join(f"{k} {v:.0%}" if v >= 0.01 or v == 0 else f"{k} <1%" for k, v in d.items())


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _s(v: float | None, nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _yes(v: bool | None) -> str:
    return "n/a" if v is None else ("yes" if v else "**no**")


def write(rep: dict, records: list, out: Path, state_dir: Path, entries: list[dict]) -> list[Path]:
    from drills.rehearsal.chart import timeline_chart
    from drills.report import write_report

    out = Path(out)
    paths = []
    with open(out / "requests.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")
    try:
        png = timeline_chart(rep, records, entries, out / "timeline.png")
        if png:
            paths.append(png)
        zoomed = timeline_chart(rep, records, entries, out / "failover.png", zoom=True)
        if zoomed:
            paths.append(zoomed)
            rep["chart_failover"] = "failover.png"
    except Exception as e:  # noqa: BLE001 - a chart failure must not lose the report
        rep["chart"] = None
        rep.setdefault("findings", []).append(
            {
                "finding": f"the timeline chart could not be drawn: {type(e).__name__}: {e}",
                "action": "see the data in report.json and requests.jsonl",
            }
        )
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    (out / "report.md").write_text(render_markdown(rep))
    paths += [out / "report.md", out / "report.json"]
    if entries:
        paths += write_report(entries[0]["drill_id"], state_dir, out=out / "drill")
    return paths


# ---------------------------------------------------------------- --scenario all: the index of the run
def index(
    prep: Any, results: list, skipped: list[tuple[str, str | None]], wall_seconds: float, leftovers: list[int]
) -> dict:
    """One line per scenario of a `--scenario all` run (each has its full report in its own directory)."""
    rows = []
    for res in results:
        rep = res.report or {}
        rh = rep.get("rehearsal", {})
        fo = rep.get("rto") if (rep.get("rto") or {}).get("kind") == "failover" else None
        rows.append(
            {
                "scenario": rh.get("scenario"),
                "region": rh.get("region"),
                "status": res.status,
                "verdict": rep.get("verdict"),
                "report": str(Path(res.out).relative_to(prep.out) / "report.md"),
                "requests": (rep.get("traffic") or {}).get("requests"),
                "errors": (rep.get("traffic") or {}).get("errors"),
                "rto_drill_s": fo["rto_drill_s"] if fo else None,
                "all_clients_moved_drill_s": fo["all_clients_moved_drill_s"] if fo else None,
                "predicted_rto_s": fo["predicted"].get("total") if fo else None,
                "errors_during_failover": fo["errors_during_failover"] if fo else None,
                "planned_changes": len(rep.get("switches") or []),
                "rpo_drill_s": (rep.get("rpo") or {}).get("rpo_drill_s"),
                "engine_objectives": {
                    o["objective"].split(" (")[0]: o["verdict"] for o in (rep.get("drill") or {}).get("objectives", [])
                },
            }
        )
    outage = next((r.report["rto"] for r in results if (r.report or {}).get("rto", {}).get("kind") == "failover"), None)
    return {
        "rehearsal": {
            "env": prep.opts.env,
            "scenario": "all",
            "scale": prep.opts.scale,
            "wall_seconds": round(wall_seconds, 1),
            "model": str(prep.model.dir),
            "processes_left_behind": leftovers,
        },
        "scenarios": rows,
        "skipped": [{"scenario": s, "reason": why} for s, why in skipped],
        "rto": outage or {"note": "no region-outage in this run"},
        "verdict": "PASS" if rows and all(r["verdict"] == "PASS" for r in rows) and not leftovers else "FAIL",
    }


def render_index(rep: dict) -> str:
    rh = rep["rehearsal"]
    L = [
        f"# Rehearsal of every scenario on {rh['env']}",
        "",
        f"- verdict **{rep['verdict']}**; scale {rh['scale']:g} (figures in drill seconds, see each report); "
        f"{rh['wall_seconds']} wall s in all; one world for every drill; "
        f"processes left behind: {rh['processes_left_behind'] or 'none'}",
        f"- model: {rh['model']}",
        "",
        "| scenario | region | status | verdict | requests | failed | RTO (s) | all moved (s) "
        "| predicted (s) | planned changes | RPO (s) | report |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    L.extend(
        f"| {r['scenario']} | {r['region'] or ''} | {r['status']} | {r['verdict']} | "
        f"{r['requests']} | {r['errors']} | "
        f"{_s(r['rto_drill_s'])} | {_s(r['all_clients_moved_drill_s'])} | "
        f"{'' if r['predicted_rto_s'] is None else r['predicted_rto_s']} | "
        f"{r['planned_changes']} | {_s(r['rpo_drill_s'])} | [{r['report']}]({r['report']}) |"
        for r in rep["scenarios"]
    )
    if rep["skipped"]:
        L += ["", "Not run:"] + [f"- {s['scenario']}: {s['reason']}" for s in rep["skipped"]]
    return "\n".join(L) + "\n"
