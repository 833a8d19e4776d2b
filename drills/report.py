"""Summarise a drill from its journal alone: Markdown and JSON.

Contents: what ran (scenario, env, region, backend, status), each objective measured against its target with a
verdict, RTO in its parts (detection, DNS change, TTL / clients moved, first success from the survivors, SLO
recovered) next to the prediction from config, RPO and version skew, the steps with their gates, a timeline of
every journal entry, findings and follow-up actions. Pure: no adapter is called, so a report can be written
anywhere the journal is, any time later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drills.adapters.pod_startup import PARTS as PARTS_STARTUP
from drills.journal import drill_dir, load, summarise

PARTS = [  # (milestone key, label, predicted key)
    ("detected", "detection (fault -> health check unhealthy)", "detection"),
    ("records_in_sync", "config change applied (pulumi up -> records INSYNC)", None),
    ("dns_changed", "DNS change (answers without the region)", "dns_change"),
    ("first_success", "first success from the survivors", None),
    ("drained", "TTL: every client moved (cached answers expired)", "ttl"),
    ("slo_recovered", "SLO recovered (success rate and p99 back within objective)", None),
]

# The engine measures RTO from its own service probes: the figure on AWS, where no client records exist. Where
# clients are recorded (the rehearsal), their figure replaces it (drills.rehearsal.report.with_client_rto).
RTO_PROBES = "RTO, probe-based (fault or change -> SLO recovered, the engine's service probes)"


def _fmt(v: Any, unit: str = "s") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.1f} {unit}".strip()
    return f"{v} {unit}".strip()


def _served_version(region: dict) -> str:
    """A region's row of the skew check: its model version, or why it has none."""
    if region.get("invalid"):
        return f"invalid manifest ({region['invalid']})"
    return region["version"] or "absent"


def _verdict(measured: float | None, target: float, higher_is_better: bool) -> str:
    if measured is None:
        return "N/A"
    return "PASS" if (measured >= target if higher_is_better else measured <= target) else "FAIL"


def build_report(entries: list[dict]) -> dict:
    start = entries[0]
    plan = start["plan"]
    summ = summarise(entries)
    t0 = start["t"]
    obj = plan["objectives"]
    phase_of = {s["name"]: s.get("phase", "steady") for s in plan["steps"]}
    begun = {e["name"]: e for e in entries if e["type"] == "step_begin"}
    steps = [
        {
            "name": e["name"],
            "at": round(begun[e["name"]]["t"] - t0, 1) if e["name"] in begun else None,
            "seconds": e.get("seconds"),
            "phase": phase_of.get(e["name"], "steady"),
            "gates": [
                {"description": g["description"], "ok": g["ok"], "detail": g["detail"]} for g in e.get("gates", [])
            ],
            "probes": e.get("probes", {}),
            "result": e.get("result", {}),
        }
        for e in entries
        if e["type"] == "step_done"
    ]
    done_names = {s["name"] for s in steps}
    unfinished = [n for n in begun if n not in done_names]

    steady = [s["probes"] for s in steps if s["phase"] == "steady" and (s["probes"] or {}).get("n")]
    success = min((p["success_rate"] for p in steady), default=None)
    p99 = max((p["p99_ms"] for p in steady if p.get("p99_ms") is not None), default=None)
    rto_events = [e for e in entries if e["type"] == "rto"]
    rto_vals = [(e.get("rto_seconds") if e.get("kind") == "failover" else e.get("switch_seconds")) for e in rto_events]
    rto = max((v for v in rto_vals if v is not None), default=None) if rto_events else None
    rpo_event = next((e for e in reversed(entries) if e["type"] == "rpo"), None)
    rpo = rpo_event.get("rpo_seconds") if rpo_event else None
    objectives = [
        {
            "objective": "service success rate (steady state, min over steps)",
            "target": f">= {obj['success_rate']:.2%}",
            "measured": None if success is None else round(success, 5),
            "verdict": _verdict(success, obj["success_rate"], True),
        },
        {
            "objective": "service p99 latency (steady state, max over steps)",
            "target": f"<= {obj['p99_ms']:g} ms",
            "measured": None if p99 is None else round(p99, 2),
            "verdict": _verdict(p99, obj["p99_ms"], False),
        },
        {
            "objective": RTO_PROBES,
            "target": f"<= {obj['rto_seconds']:g} s",
            "measured": rto,
            "verdict": _verdict(rto, obj["rto_seconds"], False),
        },
        {
            "objective": "RPO (canary written -> visible in every other region)",
            "target": f"<= {obj['rpo_seconds']:g} s",
            "measured": rpo,
            "verdict": "FAIL" if rpo_event and rpo_event.get("missing") else _verdict(rpo, obj["rpo_seconds"], False),
        },
    ]
    rto_parts = []
    for e in rto_events:
        ms = e.get("milestones", {})
        prev = 0.0
        parts = []
        for key, label, pred in PARTS:
            if key not in ms:
                continue
            at = ms[key]
            dur = None if at is None else round(max(0.0, at - prev), 3)
            parts.append(
                {
                    "part": key,
                    "label": label,
                    "at": at,
                    "duration": dur,
                    "predicted": plan.get("predicted", {}).get(pred) if pred else None,
                }
            )
            if at is not None:
                prev = max(prev, at)
        rto_parts.append(
            {
                "kind": e.get("kind"),
                "region": e.get("region") or ", ".join(e.get("from", [])),
                "total": e.get("rto_seconds") if e.get("kind") == "failover" else e.get("switch_seconds"),
                "clients_hit": e.get("clients_hit"),
                "parts": parts,
            }
        )
    failover_probes = [s["probes"] for s in steps if s["phase"] == "failover" and (s["probes"] or {}).get("n")]
    outage = next((e for e in entries if e["type"] == "outage"), None)
    recovery = next((e for e in reversed(entries) if e["type"] == "recovery"), None)
    skew = next((e for e in reversed(entries) if e["type"] == "skew"), None)
    abort = next((e for e in entries if e["type"] == "abort"), None)
    rb = next((e for e in reversed(entries) if e["type"] == "rollback_done"), None)
    timeline = [{"at": round(e["t"] - t0, 1), "type": e["type"], "detail": _describe(e)} for e in entries]
    report = {
        "drill_id": start["drill_id"],
        "env": plan["env"],
        "scenario": plan["scenario"],
        "region": plan.get("region"),
        "mode": plan["mode"],
        "fqdn": plan["fqdn"],
        "backend": start.get("backend", {}).get("name"),
        "status": summ["status"],
        "started": summ.get("started_iso"),
        "duration_seconds": round(entries[-1]["t"] - t0, 1),
        "roles": plan.get("roles", {}),
        "communication": plan.get("communication", []),
        "title": plan.get("title"),
        # The A/B experiments running when the plan was made: their users' figures include this drill's span.
        "experiments": plan.get("experiments", []),
        "objectives": objectives,
        "rto": rto_parts,
        "predicted_rto": plan.get("predicted", {}),
        "failover_window": failover_probes[0] if failover_probes else None,
        "replication": (
            {"lags": rpo_event.get("lags"), "rpo_seconds": rpo, "missing": rpo_event.get("missing", [])}
            if rpo_event
            else None
        ),
        "total_outage": _total_outage(outage, recovery, steps) if outage or recovery else None,
        "version_skew": (
            {"skew": skew["skew"], "regions": skew["regions"], "versions": skew["versions"]} if skew else None
        ),
        "capacity": _capacity(entries),
        "steps": steps,
        "unfinished_steps": unfinished,
        "abort": ({"reason": abort["reason"], "step": abort.get("step")} if abort else None),
        "rollback": (
            {"verified": rb.get("verified"), "restored": rb.get("restored"), "mismatches": rb.get("mismatches")}
            if rb
            else None
        ),
        "timeline": timeline,
    }
    report["findings"] = findings(report, plan, entries)
    measured = [o for o in objectives if o["verdict"] != "N/A"]
    failed_gates = [g for st in steps for g in st["gates"] if not g["ok"]]
    report["verdict"] = (
        "PASS"
        if summ["status"] == "completed" and not failed_gates and all(o["verdict"] == "PASS" for o in measured)
        else "FAIL"
    )
    return report


def _capacity(entries: list[dict]) -> dict | None:
    """The capacity part of RTO: each Triton pod the survivors added since the fault, its start-up in parts
    (drills/adapters/pod_startup.py PARTS), and the first added pod serving, in seconds after the fault."""
    events = [e for e in entries if e["type"] == "pod_startup"]
    if not events:
        return None
    serving = [p["created"] - e["since"] + p["total"] for e in events for p in e["pods"] if p.get("total") is not None]
    return {
        "regions": {e["region"]: e["pods"] for e in events},
        "pods_added": sum(len(e["pods"]) for e in events),
        "first_added_pod_serving_s": round(min(serving), 1) if serving else None,
    }


def _total_outage(outage: dict | None, recovery: dict | None, steps: list[dict]) -> dict:
    """total-outage: when every region was seen down, what the probes saw while it was, and the recovery after the
    clearing (drills.actions' `outage` and `recovery` measurements)."""
    down = []  # the failover-phase steps before the clearing: every region down
    for s in steps:
        if s["name"] == "clear-fault":
            break
        if s["phase"] == "failover":
            down.append(s["probes"] or {})
    clearing = next((s.get("seconds") for s in steps if s["name"] == "clear-fault"), None)
    n, ok = sum(p.get("n", 0) for p in down), sum(p.get("ok", 0) for p in down)
    keys = ("regions", "detected", "all_down", "first_failure", "dns_answer")
    return {
        "outage": {k: outage.get(k) for k in keys} if outage else None,
        "probes_while_down": {"n": n, "ok": ok, "errors": n - ok},
        "clearing_seconds": clearing,
        "recovery": (
            {k: recovery.get(k) for k in ("ok", "healthy", "dns_answers_every_region", "slo_recovered")}
            if recovery
            else None
        ),
    }


def _describe(e: dict) -> str:
    t = e["type"]
    if t == "start":
        return (
            f"drill {e['drill_id']} started (pid {e.get('pid')} on {e.get('host')}), backend "
            f"{e.get('backend', {}).get('name')}"
        )
    if t == "pre_state":
        return "pre-drill state recorded: weights " + ", ".join(
            f"{r} {v.get('weight') if v.get('weight') is not None else v.get('failover')}"
            for r, v in e.get("records", {}).items()
        )
    if t in ("step_begin",):
        return f"{e['name']} ({e['action']})"
    if t == "step_done":
        gates = e.get("gates", [])
        return f"{e['name']} done in {e.get('seconds')} s; gates " + (
            ", ".join("ok" if g["ok"] else "FAILED" for g in gates) or "none"
        )
    if t == "config_set":
        return f"{e['stack']}: set {e['values']}" + (" (rollback)" if e.get("by") else "")
    if t == "stack_up":
        return f"{e['stack']}: pulumi up {e.get('summary')}"
    if t == "change_applied":
        return f"records in sync {e['t_in_sync'] - e['t_set']:.1f} s after the config change"
    if t in ("detected", "dns_changed"):
        return f"{e['region']}: {t.replace('_', ' ')} {e['after']} s after the fault"
    if t == "rto":
        return f"{e.get('kind')}: milestones {e.get('milestones')}"
    if t in ("abort", "finished"):
        return e.get("reason") or e.get("status", "")
    if t == "rollback_done":
        return "rollback " + ("verified" if e.get("verified") else f"NOT verified: {e.get('mismatches')}")
    skip = {"seq", "type", "t", "wall"}
    return ", ".join(f"{k}={v}" for k, v in e.items() if k not in skip)[:200]


def findings(report: dict, plan: dict, entries: list[dict]) -> list[dict]:
    """Findings with a follow-up action each, from the measurements (rules, not opinions)."""
    out: list[dict] = []

    def add(finding: str, action: str) -> None:
        out.append({"finding": finding, "action": action})

    if report["abort"]:
        add(
            f"the drill stopped at {report['abort']['step']}: {report['abort']['reason']}",
            "find the cause of the abort, fix it, and run the drill again",
        )
    for st in report["steps"]:
        for g in st["gates"]:
            if not g["ok"] and not (report["abort"] and report["abort"]["step"] == st["name"]):
                add(
                    f"check after {st['name']} failed: {g['description']}: {g['detail']}",
                    "find why before the next drill; the report's timeline has the sequence",
                )
    if report["rollback"] and not report["rollback"]["verified"]:
        add(
            f"rollback did not restore the pre-drill state: {report['rollback']['mismatches']}",
            f"restore by hand or run `drills rollback {report['drill_id']}`; do not start another drill in "
            f"{plan['env']} first",
        )
    for o in report["objectives"]:
        if o["verdict"] == "FAIL":
            add(
                f"{o['objective']}: measured {o['measured']} against {o['target']}",
                {
                    "RTO": "shorten detection (health check interval/threshold), the record TTL, or the survivors' "
                    "scale-up time",
                    "RPO": "check S3 Replication Time Control and the replication latency metrics and alarms for the "
                    "slow pair",
                    "service success rate": "look at the failing requests in the step with the lowest success rate: "
                    "capacity, engines or routing",
                    "service p99": "check the survivors' GPU utilisation and HPA/cluster autoscaler reaction during "
                    "the step with the highest p99",
                }[
                    next(
                        k for k in ("RTO", "RPO", "service success rate", "service p99") if o["objective"].startswith(k)
                    )
                ],
            )
    pred = plan.get("predicted", {})
    for r in report["rto"]:
        parts = {p["part"]: p for p in r["parts"]}
        det = parts.get("detected")
        hc = plan["health_check"]
        if (
            det
            and det["at"] is not None
            and pred.get("detection") is not None
            and det["at"] > pred["detection"] + hc["request_interval"]
        ):
            add(
                f"detection took {det['at']:.0f} s, more than interval x threshold = {pred['detection']:g} s plus one "
                "interval",
                "check the health check's endpoint, timeouts and checker regions",
            )
        dr, dns = parts.get("drained"), parts.get("dns_changed")
        if (
            dr
            and dns
            and dr["at"] is not None
            and dns["at"] is not None
            and dr["at"] - dns["at"] > plan["ttl"] + plan["parameters"].get("poll_seconds", 2) * 2
        ):
            add(
                f"clients took {dr['at'] - dns['at']:.0f} s after the DNS change to move, longer than the TTL of "
                f"{plan['ttl']} s",
                "look for clients that cache DNS beyond the TTL (JVM networkaddress.cache.ttl, connection pools pinned "
                "to old addresses)",
            )
    if pred.get("total") is not None and pred["total"] > plan["objectives"]["rto_seconds"]:
        add(
            f"the configuration predicts an RTO of {pred['total']:g} s, above the "
            f"{plan['objectives']['rto_seconds']:g} s objective",
            "lower the TTL or the health check's failure threshold, or revisit the objective",
        )
    if any(e["type"] == "pools_scaling" for e in entries):
        add(
            "the survivors' node groups had to be pre-scaled: at their desired sizes they could not carry the "
            "evacuated share",
            "in an unplanned outage the cluster autoscaler must do this under load: measure its scale-up time "
            "(node-loss drill) or raise min sizes",
        )
    sk = report.get("version_skew")
    if sk and sk["skew"]:
        detail = ", ".join(f"{r}: {_served_version(v)} ({(v['sha256'] or '')[:12]})" for r, v in sk["regions"].items())
        add(
            f"model version skew between regions: {detail}",
            "re-publish the current version to the regions that differ and check replication of the model prefix",
        )
    if report.get("failover_window") and report["failover_window"].get("errors"):
        fw = report["failover_window"]
        add(
            f"{fw['errors']} of {fw['n']} service probes failed during the failover window",
            "expected up to the RTO; to shorten it, see the RTO parts",
        )
    for w in plan.get("warnings", []):
        add(f"plan warning: {w}", "address before the next drill")
    return out


def _total_outage_lines(t: dict) -> list[str]:
    def secs(d: dict) -> str:
        return ", ".join(f"{k} {_fmt(v)}" for k, v in d.items())

    L = ["## Total outage (every region down)", ""]
    o, rec, pr = t["outage"], t["recovery"], t["probes_while_down"]
    if o:
        L.append(
            f"- every region's health check unhealthy {_fmt(o['all_down'])} after the first fault "
            f"({secs(o['detected'] or {})}); first failed probe at {_fmt(o['first_failure'])}"
        )
        L.append(
            "- DNS answers while every region was unhealthy (Route 53 fails open): "
            + (", ".join(f"{k} {v:.0%}" for k, v in (o["dns_answer"] or {}).items()) or "none")
        )
    L.append(
        f"- while every region was down: {pr['n']} service probes, {pr['ok']} answered, {pr['errors']} failed (a "
        "client without a fallback answer fails for the whole outage)"
    )
    if rec:
        L.append(
            f"- after the last region's fault was cleared (the clearing took {_fmt(t['clearing_seconds'])}): SLO "
            f"recovered at {_fmt(rec['slo_recovered'])}; health checks healthy at "
            f"{secs(rec['healthy'] or {})}; DNS answering every region at {_fmt(rec['dns_answers_every_region'])}"
            + ("" if rec["ok"] else " (**not recovered within the deadline**)")
        )
    return [*L, ""]


def render_markdown(r: dict) -> str:
    L = [f"# Drill report: {r['scenario']} on {r['env']}" + (f" ({r['region']})" if r.get("region") else ""), ""]
    if r.get("title"):
        L += [r["title"], ""]
    L += [
        f"- drill id: `{r['drill_id']}`",
        f"- status: **{r['status']}**, verdict: **{r['verdict']}**",
        f"- started: {r['started']} UTC, duration {r['duration_seconds']} s",
        f"- routing: {r['mode']} on {r['fqdn']}; backend: {r['backend']}",
        "- roles: " + ", ".join(f"{k}: {v}" for k, v in r["roles"].items()),
        "- A/B experiments running through it: " + (", ".join(r.get("experiments") or []) or "none"),
        "",
    ]
    L += ["## Objectives", "", "| objective | target | measured | verdict |", "|---|---|---|---|"]
    for o in r["objectives"]:
        L.append(
            f"| {o['objective']} | {o['target']} | {'n/a' if o['measured'] is None else o['measured']} | "
            f"{o['verdict']} |"
        )
    L.append("")
    if r["rto"]:
        p = r["predicted_rto"]
        L += [
            "## RTO in its parts (probe-based: the engine's service probes)",
            "",
            f"Predicted from config: detection {p.get('detection')} s + DNS change {p.get('dns_change')} s + TTL "
            f"{p.get('ttl')} s = {p.get('total')} s.",
            "",
        ]
        for x in r["rto"]:
            L += [
                f"### {x['kind']} ({x['region']}): {_fmt(x['total'])} total, {x['clients_hit']} simulated clients "
                "affected",
                "",
                "| part | at (s after start) | duration (s) | predicted (s) |",
                "|---|---|---|---|",
            ]
            for part in x["parts"]:
                L.append(
                    f"| {part['label']} | {_fmt(part['at'], '')} | {_fmt(part['duration'], '')} | "
                    f"{'' if part['predicted'] is None else part['predicted']} |"
                )
            L.append("")
        if r.get("failover_window"):
            fw = r["failover_window"]
            L += [
                f"During the failover window: {fw['n']} probes, {fw['errors']} errors, p50 "
                f"{_fmt(fw.get('p50_ms'), 'ms')}, p99 {_fmt(fw.get('p99_ms'), 'ms')}.",
                "",
            ]
    if r.get("total_outage"):
        L += _total_outage_lines(r["total_outage"])
    if r.get("replication"):
        rep = r["replication"]
        L += ["## RPO (artifact replication)", "", "| source | destination | lag (s) |", "|---|---|---|"]
        for src, d in (rep["lags"] or {}).items():
            for dst, lag in d.items():
                L.append(f"| {src} | {dst} | {'not seen' if lag is None else lag} |")
        L += [
            "",
            f"RPO measured: {_fmt(rep['rpo_seconds'])}"
            + (f"; missing: {', '.join(rep['missing'])}" if rep["missing"] else ""),
            "",
        ]
    if r.get("version_skew"):
        sk = r["version_skew"]
        L += [
            "## Model versions by region",
            "",
            "| region | version | manifest sha256 | engines |",
            "|---|---|---|---|",
        ]
        for reg, v in sk["regions"].items():
            L.append(f"| {reg} | {_served_version(v)} | {(v['sha256'] or '')[:16]} | {', '.join(v['engines'])} |")
        L += ["", "Skew: " + ("**yes**" if sk["skew"] else "none"), ""]
    if r.get("capacity"):
        cap = r["capacity"]
        L += [
            "## Capacity: Triton pods added since the fault",
            "",
            "| region | pod | node | " + " | ".join(PARTS_STARTUP) + " | total (s) |",
            "|---|---|---|" + "---|" * len(PARTS_STARTUP) + "---|",
        ]
        for reg, pods in cap["regions"].items():
            for pod in pods:
                L.append(
                    f"| {reg} | {pod['pod']} | {pod.get('node') or ''} | "
                    + " | ".join(_fmt(pod["parts"].get(k)) for k in PARTS_STARTUP)
                    + f" | {_fmt(pod.get('total'))} |"
                )
        L += [
            "",
            f"Pods added: {cap['pods_added']}; the first serving {_fmt(cap['first_added_pod_serving_s'])} after "
            "the fault.",
            "",
        ]
    L += [
        "## Steps",
        "",
        "| step | at (s) | duration (s) | probes | success | p99 (ms) | gates |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        pr = s["probes"] or {}
        rate = "" if pr.get("success_rate") is None else f"{pr['success_rate']:.2%}"
        p99 = "" if pr.get("p99_ms") is None else f"{pr['p99_ms']:.1f}"
        gates = "; ".join(("ok: " if g["ok"] else "FAILED: ") + g["detail"] for g in s["gates"])
        L.append(f"| {s['name']} | {s['at']} | {s['seconds']} | {pr.get('n', 0)} | {rate} | {p99} | {gates} |")
    L.append("")
    if r["abort"]:
        L += ["## Abort", "", f"At {r['abort']['step']}: {r['abort']['reason']}", ""]
    if r["rollback"]:
        L += ["## Rollback", ""] + [f"- {x}" for x in r["rollback"]["restored"] or ["(nothing to undo)"]]
        L += [
            "- verified against the pre-drill state: "
            f"{'yes' if r['rollback']['verified'] else 'NO: ' + '; '.join(r['rollback']['mismatches'])}",
            "",
        ]
    L += ["## Findings and follow-up actions", ""]
    L += [f"{i}. {f['finding']}. **Action:** {f['action']}." for i, f in enumerate(r["findings"], 1)] or ["None."]
    L += ["", "## Timeline", "", "| t (s) | event | detail |", "|---|---|---|"]
    for t in r["timeline"]:
        L.append(f"| {t['at']} | {t['type']} | {t['detail'].replace('|', '/')} |")
    L += ["", "## Communication", ""] + [f"- {c}" for c in r["communication"]]
    return "\n".join(L) + "\n"


def write_report(
    drill_id: str, state_dir: Path, out: Path | None = None, formats: tuple[str, ...] = ("md", "json")
) -> list[Path]:
    report = build_report(load(Path(state_dir), drill_id))
    d = Path(out) if out else drill_dir(Path(state_dir), drill_id)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    if "json" in formats:
        p = d / f"{drill_id}.report.json"
        p.write_text(json.dumps(report, indent=2, default=str))
        paths.append(p)
    if "md" in formats:
        p = d / f"{drill_id}.report.md"
        p.write_text(render_markdown(report))
        paths.append(p)
    return paths
