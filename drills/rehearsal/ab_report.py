"""The A/B rehearsal's figures, checks, report (report.json, report.md) and chart (ab-test.png).

report.json:
  experiment        the first experiment (ranker-more-signal): `arms.<cell>.{users,impressions,clicks,ctr,ndcg10}`
                    (drills/experiment/metrics.py's definitions), `srm_ok`, `decision` (its last look's verdict),
                    `comparisons`, `looks` (each look's per-cell CTR and NDCG@10 and always-valid p), `stopped_early`,
                    `arm_stickiness`, `routing`
                    `over_time` (each cell's cumulative figures every 2 s of the log, with 95 % half-widths: the
                    chart's lines)
  experiments       both experiments, each in that shape, by id
  drill             the region-outage drill run through the first: id, status, the experiments its plan recorded,
                    the fault's injection and clearing (wall times)
  checks            each expectation with its verdict; `verdict` PASS only when every one holds
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drills.experiment.events import Click, Impression, aggregate, read_events
from infra.experiments import HOLDOUT, Experiment


def arm_stickiness(events: Sequence[Impression | Click], experiment: Experiment, drilled: str) -> dict[str, Any]:
    """Did every user keep one arm, the one their hash gives, whichever region served them?"""
    from drills.experiment.assignment import assign

    arms: dict[str, set[str]] = {}
    regions: dict[str, set[str]] = {}
    wrong = 0
    for e in events:
        if not isinstance(e, Impression):
            continue
        arms.setdefault(e.user_id, set()).add(e.arm)
        regions.setdefault(e.user_id, set()).add(e.region)
        wrong += e.arm != assign(experiment, e.user_id)
    multi = [u for u, rs in regions.items() if len(rs) > 1]
    return {
        "users": len(arms),
        "users_served_by_two_or_more_regions": len(multi),
        "users_served_by_the_drilled_region_and_another": sum(1 for u in multi if drilled in regions[u]),
        "users_whose_arm_changed": sum(1 for a in arms.values() if len(a) > 1),
        "impressions_not_in_the_users_hashed_arm": wrong,
    }


def routing(
    events: Sequence[Impression | Click], experiment: Experiment, counts: list[dict], wall: list[float]
) -> dict[str, Any]:
    """Impressions per served version (the arm's version, the holdout's: control's) against the requests the load
    balancers' targets of each version answered for users in the experiment's span. An arm rule that did not route
    (the header ignored) leaves its version's targets without requests; a rule routing everyone gives them all."""
    version = {a.name: a.version for a in experiment.arms} | {HOLDOUT: experiment.control.version}
    impressions: dict[str, int] = {}
    for e in events:
        if isinstance(e, Impression):
            impressions[version[e.arm]] = impressions.get(version[e.arm], 0) + 1
    a, z = (wall[0], wall[-1]) if wall else (0.0, 0.0)
    served: dict[str, int] = {}
    for c in counts:
        if not c["pinned"] and a - 1 <= c["second"] <= z + 1:
            served[c["version"]] = served.get(c["version"], 0) + c["requests"]
    # A candidate's version serves its arm's users only: as many requests as impressions (a few more where an
    # answer was lost after the pod served it). Control's version also answers the drill's probes: at least as many.
    control = experiment.control.version
    ok = served.get(control, 0) >= impressions.get(control, 0) and all(
        impressions.get(a.version, 0) <= served.get(a.version, 0) <= 1.1 * impressions.get(a.version, 0) + 50
        for a in experiment.candidates
    )
    return {"impressions_by_version": impressions, "requests_answered_by_version": served, "ok": ok}


def experiment_doc(
    run: Any, experiment: Experiment, counts: list[dict], drilled: str, t_start: float
) -> dict[str, Any]:
    from drills.experiment.command import decision_doc

    # The log read once, for every figure below.
    events = sorted(read_events(run.events), key=lambda e: e.ts) if run.events.exists() else []
    d = run.decision
    if d is None:
        doc: dict[str, Any] = {"experiment": experiment.id, "arms": {}, "decision": None, "srm_ok": False}
    else:  # the last look's decision (over the whole log, carrying the looks' always-valid state)
        doc = decision_doc(experiment, aggregate(events, experiment.id), d)
    doc["looks"] = run.looks
    doc["wall"] = run.wall
    doc["stopped_early"] = bool(d is not None and d.final and not d.verdict.startswith("keep control"))
    doc["arm_stickiness"] = arm_stickiness(events, experiment, drilled)
    doc["routing"] = routing(events, experiment, counts, run.wall)
    doc["events"] = str(run.events)
    doc["over_time"] = over_time(events, experiment.id, t_start)
    return doc


def summarise(
    runs: Mapping[str, Any],
    experiments: Mapping[str, Experiment],
    counts: list[dict],
    drill: dict[str, Any],
    drilled: str,
    primary: str,
    guarded: str,
    t_start: float,
) -> dict[str, Any]:
    """`primary`: the experiment the drill ran through (its candidate should ship); `guarded`: the one whose
    candidate a guardrail should stop."""
    docs = {eid: experiment_doc(run, experiments[eid], counts, drilled, t_start) for eid, run in runs.items()}
    more, bad = docs[primary], docs[guarded]
    lift = next((c["lift"] for c in more.get("comparisons", []) if c["metric"] == "ctr"), None)
    stick = more["arm_stickiness"]
    checks = [
        ("the more-signal candidate ships with a positive CTR lift", more.get("decision") == "ship candidate"
         and lift is not None and lift > 0, f"{more.get('decision')}, lift {lift}"),
        ("the bad-labels candidate is stopped early by a guardrail",
         str(bad.get("decision", "")).startswith("stop: guardrail") and bad["stopped_early"], bad.get("decision")),
        ("the drill through the first experiment completed and recorded it",
         drill.get("status") == "completed" and primary in drill.get("experiments", []),
         f"{drill.get('status')}, experiments {drill.get('experiments')}"),
        ("no user's arm changed, across regions and through the outage",
         stick["users_whose_arm_changed"] == 0 and stick["impressions_not_in_the_users_hashed_arm"] == 0
         and stick["users_served_by_the_drilled_region_and_another"] > 0,
         json.dumps(stick)),
        ("each arm's impressions were served by its version's targets",
         more["routing"]["ok"] and bad["routing"]["ok"],
         f"{more['routing']['requests_answered_by_version']} / {bad['routing']['requests_answered_by_version']}"),
        ("the sample ratio held in both", bool(more.get("srm_ok")) and bool(bad.get("srm_ok")), ""),
    ]  # fmt: skip
    return {
        "experiment": more,
        "experiments": docs,
        "drill": drill,
        "checks": [{"check": c, "ok": bool(ok), "detail": str(detail)} for c, ok, detail in checks],
        "verdict": "PASS" if all(ok for _, ok, _ in checks) else "FAIL",
    }


def write(report: dict[str, Any], runs: Mapping[str, Any], out: Path) -> list[Path]:
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(render(report))
    paths = [out / "report.md", out / "report.json"]
    c = chart(report, out / "ab-test.png")
    if c is not None:
        paths.append(c)
    return paths


def _f(v: Any, fmt: str = ".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def render(r: dict[str, Any]) -> str:
    rh = r["rehearsal"]
    lines = [
        f"# A/B rehearsal on {rh['env']}: {r['verdict']}",
        "",
        f"Scale {rh['scale']}, {rh['rate']:g} rankings/s from {rh['clients']} shoppers (the client library), "
        f"{rh.get('wall_seconds')} wall s; the drill blackholed {rh['region']}. Models: {json.dumps(r['models'])}.",
        "",
        "| check | verdict | detail |",
        "|---|---|---|",
        *(f"| {c['check']} | {'ok' if c['ok'] else 'FAILED'} | {c['detail']} |" for c in r["checks"]),
        "",
    ]
    for eid, e in r["experiments"].items():
        lines += [
            f"## {eid}: {e.get('decision')}",
            "",
            "| cell | users | impressions | clicks | CTR | NDCG@10 |",
            "|---|---|---|---|---|---|",
            *(
                f"| {cell} | {a['users']} | {a['impressions']} | {a['clicks']} | {_f(a['ctr'])} | {_f(a['ndcg10'])} |"
                for cell, a in e["arms"].items()
            ),
            "",
            f"Sample ratio {'ok' if e.get('srm_ok') else 'MISMATCH'}; {len(e['looks'])} looks; "
            f"stopped early: {e['stopped_early']}.",
            "",
            *(f"- {reason}" for reason in e.get("reasons", [])),
            "",
            f"Arm stickiness: {json.dumps(e['arm_stickiness'])}",
            "",
            f"Routing: impressions by version {e['routing']['impressions_by_version']}, requests the targets of each "
            f"version answered {e['routing']['requests_answered_by_version']}",
            "",
        ]
    d = r.get("drill") or {}
    lines += [f"## Drill {d.get('drill_id')}: {d.get('status')} {d.get('reason') or ''}", ""]
    lines += ["## Substitutions and notes", "", *(f"- {n}" for n in rh["notes"]), ""]
    return "\n".join(lines)


def over_time(
    events: Sequence[Impression | Click], experiment_id: str, t0: float, step: float = 2.0
) -> list[dict[str, Any]]:
    """Each cell's cumulative figures every `step` seconds of the log (`events` in time order; seconds since `t0`):
    impressions, CTR and NDCG@10 with their 95 % half-widths (normal approximation): what the chart draws."""
    evs = events
    if not evs:
        return []
    out = []
    first, last = evs[0].ts.timestamp(), evs[-1].ts.timestamp()
    t, i = first + step, 0
    while True:
        while i < len(evs) and evs[i].ts.timestamp() <= t:
            i += 1
        cells = {}
        for cell, a in aggregate(evs[:i], experiment_id).items():
            n, k = a.impressions, a.clicked_impressions
            ctr = a.ctr
            nd = a.ndcg10
            nd_var = (a.ndcg10_sumsq / k - nd * nd) / k if k > 1 else float("nan")
            cells[cell] = {
                "impressions": n,
                "ctr": rounded(ctr),
                "ctr_hw": rounded(1.96 * (ctr * (1 - ctr) / n) ** 0.5) if n else None,
                "ndcg10": rounded(nd),
                "ndcg10_hw": rounded(1.96 * max(nd_var, 0.0) ** 0.5),
            }
        out.append({"t": round(t - t0, 2), "cells": cells})
        if t >= last:
            return out
        t += step


def rounded(v: float) -> float | None:
    return None if v != v else round(v, 6)  # NaN -> None


def chart(r: dict[str, Any], path: Path) -> Path | None:
    """Per experiment, each cell's cumulative CTR and NDCG@10 over time with 95 % bands (from its event log), the
    looks, the first final verdict, and (for the experiment the drill ran through) the fault's span."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exps = r["experiments"]
    if not any(e.get("over_time") for e in exps.values()):
        return None
    fig, axes = plt.subplots(len(exps), 2, figsize=(13, 4.2 * len(exps)), squeeze=False)
    t0 = r["t_start"]
    faults = {e["event"]: e["wall"] - t0 for e in (r.get("drill") or {}).get("fault_events", [])}
    colours = {"control": "#ff7f0e", "candidate": "#1f77b4", HOLDOUT: "#7f7f7f"}
    for row, (eid, e) in zip(axes, exps.items(), strict=True):
        final = next((look["t_wall"] for look in e["looks"] if look["final"]), None)
        for ax, metric, label in ((row[0], "ctr", "CTR"), (row[1], "ndcg10", "NDCG@10 (clicked impressions)")):
            for cell in sorted({c for pt in e["over_time"] for c in pt["cells"]}):
                pts = [
                    (pt["t"], pt["cells"][cell][metric], pt["cells"][cell][f"{metric}_hw"] or 0.0)
                    for pt in e["over_time"]
                    if cell in pt["cells"] and pt["cells"][cell][metric] is not None
                ]
                if not pts:
                    continue
                ts, vs, hw = zip(*pts, strict=True)
                c = colours.get(cell)
                ax.plot(ts, vs, color=c, label=cell)
                ax.fill_between(
                    ts,
                    [max(0.0, v - h) for v, h in zip(vs, hw, strict=True)],
                    [min(1.0, v + h) for v, h in zip(vs, hw, strict=True)],
                    color=c, alpha=0.15, linewidth=0,
                )  # fmt: skip
            if eid == r["experiment"].get("experiment") and "inject" in faults:
                end = faults.get("clear", e["over_time"][-1]["t"])
                ax.axvspan(faults["inject"], end, color="#d62728", alpha=0.08, label="region outage (drill's fault)")
            for look in e["looks"]:
                ax.axvline(look["t_wall"], color="#bbbbbb", linewidth=0.6, linestyle=":")
            if final is not None:
                ax.axvline(final, color="#2ca02c", linewidth=1.2, label=f"decision: {e.get('decision')}")
            ax.set_title(f"{eid}: {label}, cumulative, 95 % band (dotted: looks)", fontsize=9)
            ax.set_xlabel("wall seconds since the run started")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
