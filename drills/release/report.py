"""The release summary, from the journal alone (like drills/report.py, beside its report): every gate with its
figure and threshold, the outcome, the time to rollback in its parts, last-known-good pointers, and for the
sub-region drills the hashes before/after a restore, the RPO and the node-loss figures.

Time to rollback (a failed gate or abort -> the candidate takes no traffic):
  detected          the failed gate's verdict (the engine's `abort` entry), measured from the candidate's first
                    traffic (the `stack_up` that gave it weight) : how long users were exposed
  canary_removed    `abort` -> the first rollback `pulumi up` of the canary region returned: its weight is 0
  rollback_done     `abort` -> every touched stack restored and verified against the recorded pre-release state
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drills.journal import drill_dir, load, summarise


def _gate_rows(entries: list[dict]) -> list[dict]:
    rows = []
    for e in entries:
        if e["type"] != "step_done":
            continue
        for g in e.get("gates", []):
            f = g.get("figures") or {}
            rows.append(
                {
                    "step": e["name"],
                    "gate": g.get("kind"),
                    "description": g.get("description"),
                    "ok": g.get("ok"),
                    "blocking": g.get("blocking", True),
                    "value": f.get("value"),
                    "threshold": f.get("threshold"),
                    "op": f.get("op"),
                    "detail": g.get("detail"),
                }
            )
    return rows


def release_summary(entries: list[dict]) -> dict[str, Any]:
    start = entries[0]
    plan = start["plan"]
    t0 = start["t"]
    summ = summarise(entries)
    pre = next((s for s in plan["steps"] if s["action"] == "release_precheck"), None)
    rel = (pre or {}).get("params", {}).get("release", {})
    verdicts = next((e for e in entries if e["type"] == "candidate_verdicts"), None)
    abort = next((e for e in entries if e["type"] == "abort"), None)
    out: dict[str, Any] = {
        "drill_id": start["drill_id"],
        "scenario": plan["scenario"],
        "env": plan["env"],
        "status": summ["status"],
        "candidate": rel.get("candidate"),
        "stable": rel.get("stable"),
        "canary_region": rel.get("canary_region"),
        "canary_weight": rel.get("canary_weight"),
        "order": rel.get("order"),
        "candidate_verdicts": (verdicts or {}).get("verdicts", []),
        "gates": _gate_rows(entries),
        "abort": {"step": abort.get("step"), "reason": abort.get("reason"), "at": round(abort["t"] - t0, 3)}
        if abort
        else None,
    }
    # Outcome of a release or a bad-release drill.
    promoted = any(e["type"] == "lkg_written" for e in entries) and summ["status"] == "completed"
    refused = summ["status"] == "refused"
    out["outcome"] = (
        "promoted"
        if promoted
        else "refused before any traffic moved"
        if refused
        else "rolled back"
        if abort
        else summ["status"]
    )
    if plan["scenario"] == "bad-release" and abort:
        caught = abort.get("step") != "expect-caught"
        out["drill_objective"] = (
            "met: a canary gate caught the bad candidate"
            if caught and not refused
            else "NOT met: the bad candidate passed every canary gate"
            if not caught
            else "not exercised: the candidate was refused before the canary"
        )
    # Time to rollback.
    if abort and rel:
        stack = plan["stack_names"].get(rel.get("canary_region", ""), "")
        first_traffic = next(
            (
                e
                for e in entries
                if e["type"] == "config_set"
                and not e.get("by")
                and int((e.get("values") or {}).get("model.canary_weight", 0) or 0) > 0
            ),
            None,
        )
        t_traffic = next(
            (
                e["t"]
                for e in entries
                if first_traffic
                and e["type"] == "stack_up"
                and e["seq"] > first_traffic["seq"]
                and e["stack"] == first_traffic["stack"]
            ),
            None,
        )
        removed = next(
            (e for e in entries if e["type"] == "stack_up" and e.get("by") == "rollback" and e["stack"] == stack), None
        )
        done = next((e for e in entries if e["type"] == "rollback_done"), None)
        out["time_to_rollback"] = {
            "exposed_seconds": round(abort["t"] - t_traffic, 3) if t_traffic is not None else 0.0,
            "canary_removed_seconds": round(removed["t"] - abort["t"], 3) if removed else None,
            "rollback_done_seconds": round(done["t"] - abort["t"], 3) if done else None,
            "verified": done.get("verified") if done else None,
            "candidate_took_traffic": t_traffic is not None,
        }
    lkg = [e for e in entries if e["type"] == "lkg_written"]
    if lkg:
        out["lkg"] = {
            e["region"]: {
                "version": e["version"],
                "manifest_sha256": e["manifest_sha256"],
                "pointer_version_id": e.get("version_id"),
            }
            for e in lkg
        }
    restored = [e for e in entries if e["type"] == "restored"]
    if restored:
        out["restore"] = {
            e["region"]: {
                "version": e["version"],
                "pinned": e.get("pinned"),
                "restarted": e.get("restarted"),
                "rpo_seconds": e.get("rpo_seconds"),
                "hashes_before": e.get("hashes_before"),
                "hashes_after": e.get("hashes_after"),
            }
            for e in restored
        }
    det = next((e for e in entries if e["type"] == "corruption_detected"), None)
    if det:
        out["corruption"] = {
            "region": det["region"],
            "version": det["version"],
            "detected_after_fault_seconds": det.get("after_fault"),
            "problems": det.get("problems"),
        }
    reg = next((e for e in reversed(entries) if e["type"] == "regions_verified"), None)
    if reg:
        out["other_regions"] = reg["regions"]
    nl = next((e for e in reversed(entries) if e["type"] == "node_loss"), None)
    if nl:
        out["node_loss"] = {k: v for k, v in nl.items() if k not in ("seq", "type", "t", "wall")}
    return out


def gate_table(gates: list[dict]) -> list[str]:
    """Markdown rows: every gate judged, per step, with its figure against its threshold and what it saw."""
    rows = ["| step | gate | value | threshold | verdict | detail |", "|---|---|---|---|---|---|"]
    for g in gates:
        thr = "" if g["threshold"] is None else f"{g['op']} {_fmt(g['threshold'])}"
        verdict = "PASS" if g["ok"] else ("FAIL" if g["blocking"] else "MISSED (not blocking)")
        rows.append(
            f"| {g['step']} | {g['gate']} | {'' if g['value'] is None else _fmt(g['value'])} | {thr} | {verdict} | "
            f"{str(g['detail']).replace('|', '/')} |"
        )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(s: dict[str, Any]) -> str:
    L = [
        f"# Release summary: {s['scenario']} on {s['env']}",
        "",
        f"- drill id: `{s['drill_id']}`, status **{s['status']}**, outcome **{s['outcome']}**",
    ]
    if s.get("candidate"):
        L.append(
            f"- candidate **{s['candidate']}**; stable "
            + ", ".join(f"{r} {v}" for r, v in (s.get("stable") or {}).items())
            + f"; canary {s.get('canary_region')} at {s.get('canary_weight')}%; order "
            f"{' -> '.join(s.get('order') or [])}"
        )
    if s.get("drill_objective"):
        L.append(f"- drill objective: **{s['drill_objective']}**")
    if s.get("abort"):
        L.append(f"- stopped at `{s['abort']['step']}` ({s['abort']['at']} s): {s['abort']['reason']}")
    L.append("")
    if s.get("candidate_verdicts"):
        L += [
            "## Candidate checks (before any traffic moves)",
            "",
            "| check | verdict | enforced | detail |",
            "|---|---|---|---|",
        ]
        for v in s["candidate_verdicts"]:
            L.append(
                f"| {v['name']} | {'PASS' if v['ok'] else 'FAIL'} | {'yes' if v['blocking'] else 'recorded'} | "
                f"{v['detail'].replace('|', '/')} |"
            )
        L.append("")
    if s["gates"]:
        L += ["## Gates", "", *gate_table(s["gates"]), ""]
    if s.get("time_to_rollback"):
        t = s["time_to_rollback"]
        L += [
            "## Time to rollback",
            "",
            f"- candidate exposed to user traffic for {_fmt(t['exposed_seconds'])} s before the failed gate"
            if t["candidate_took_traffic"]
            else "- the candidate never took user traffic (caught at weight 0)",
            "- failed gate -> canary weight 0 (rollback `pulumi up` of the canary region done): "
            f"{_fmt(t['canary_removed_seconds'])} s",
            f"- failed gate -> rollback verified against the pre-release state: {_fmt(t['rollback_done_seconds'])} s "
            f"(verified: {t['verified']})",
            "",
        ]
    if s.get("lkg"):
        L += ["## Last-known-good pointers written", "", "| region | version | manifest sha256 |", "|---|---|---|"]
        L += [f"| {r} | {v['version']} | {v['manifest_sha256'][:16]} |" for r, v in s["lkg"].items()] + [""]
    if s.get("corruption"):
        c = s["corruption"]
        L += [
            "## Corruption",
            "",
            f"{c['region']} {c['version']}: refused by verification {c['detected_after_fault_seconds']} s after the "
            "fault:",
            "",
        ]
        L += [f"- {p}" for p in c["problems"][:5]] + [""]
    if s.get("restore"):
        L += ["## Restore to the last-known-good version", ""]
        for r, v in s["restore"].items():
            L += [
                f"### {r}: {v['version']} (RPO {_fmt(v['rpo_seconds'])} s; fetch pinned to the pointer's S3 "
                f"versions for {v['pinned'] or 'nothing'}; pods restarted: {v['restarted']})",
                "",
                "What a pod's fetch gets, before and after the restore (the altered object stays the key's current "
                "version, as evidence; nothing under the published prefix is written):",
                "",
                "| file | sha256 before | sha256 after |",
                "|---|---|---|",
            ]
            for path, before in sorted((v.get("hashes_before") or {}).items()):
                after = (v.get("hashes_after") or {}).get(path)
                mark = "" if before == after else " **(pinned)**"
                L.append(f"| {path} | {str(before)[:16]} | {str(after)[:16]}{mark} |")
            L.append("")
    if s.get("other_regions"):
        L += [
            "## Other regions (replication of the corrupt object, then each region's own pins)",
            "",
            "| region | corrupt seen (s) | exact again (s) | pinned here | note |",
            "|---|---|---|---|---|",
        ]
        for r, v in s["other_regions"].items():
            L.append(
                f"| {r} | {_fmt(v.get('saw_corrupt'))} | {_fmt(v.get('exact_at'))} | "
                f"{sorted(v.get('pinned') or {}) or 'no'} | {v.get('note', '')} |"
            )
        L.append("")
    if s.get("node_loss"):
        n = s["node_loss"]
        f = n.get("figures", {})
        L += [
            "## Node loss",
            "",
            f"- pods ready before {n.get('pre_ready')}, lowest {n.get('min_ready')} (at {n.get('dropped_at')} s), all "
            f"ready again at {n.get('recovered_at')} s",
            f"- region inference during the loss: {n.get('samples')} samples, {n.get('infer_errors')} errors, p50 "
            f"{_fmt(n.get('infer_p50_ms'))} ms, p99 {_fmt(n.get('infer_p99_ms'))} ms; "
            f"readiness probe failures {n.get('ready_probe_failures')}",
            f"- N+1 figures: {f.get('gpus_desired')} GPUs at desired, one {f.get('instance_type')} node = "
            f"{f.get('gpus_per_node')} GPUs, "
            f"{f.get('gpus_after_loss')} after the loss vs {f.get('gpus_required_at_peak')} required for "
            f"{_fmt(f.get('share'))} of peak; "
            f"lowest capacity {_fmt(n.get('capacity_fraction_min'))} of the region's pods (predicted "
            f"{_fmt(n.get('capacity_fraction_predicted'))}, "
            f"required {_fmt(n.get('capacity_fraction_required'))}) = {_fmt(n.get('gpus_serving_min'))} GPUs serving: "
            f"{'covered' if n.get('covered_peak_through_loss') else 'NOT covered'}",
            "",
        ]
    return "\n".join(L) + "\n"


def write_release_report(drill_id: str, state_dir: Path, out: Path | None = None) -> list[Path]:
    s = release_summary(load(Path(state_dir), drill_id))
    d = Path(out) if out else drill_dir(Path(state_dir), drill_id)
    d.mkdir(parents=True, exist_ok=True)
    pj, pm = d / f"{drill_id}.release.json", d / f"{drill_id}.release.md"
    pj.write_text(json.dumps(s, indent=2, default=str))
    pm.write_text(render_markdown(s))
    return [pj, pm]
