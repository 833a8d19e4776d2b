"""Index report of `drills rehearse-release`: per drill the gates (figure vs threshold, verdict, per step), time to
rollback, last-known-good hashes before/after, the refused pod start, node-loss figures, client traffic; and a
chart (canary share of each region's users' requests and client failures over time, drills marked)."""

from __future__ import annotations

import json
from pathlib import Path

from drills.rehearsal.report import triton_as_declared
from drills.release.report import gate_table


def render(s: dict) -> str:
    L = [
        f"# Release rehearsal on {s['env']}",
        "",
        f"scale {s['scale']}, {s['rate']:g} client requests/s, canary weight {s['canary_weight']} %, "
        f"{s.get('wall_seconds')} wall s; "
        f"processes left behind: {s.get('processes_left_behind') or 'none'}",
        "",
        "## Models",
        "",
    ]
    for k, m in s["models"].items():
        how = "cached" if m["cache_hit"] else f"built in {m['build_seconds']} s"
        L.append(f"- {k}: {m['version']} (manifest sha256 {m['manifest_sha256'][:16]}…, {how})")
    L += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    tr_ = s.get("triton") or {}
    L += triton_as_declared(tr_.get("pods") or {}, tr_.get("substitutions") or [])
    t = s.get("traffic", {}).get("all", {})
    L += [
        "",
        "## Client traffic",
        "",
        f"all: {t.get('requests')} requests, {t.get('failed')} failed, p50 {t.get('p50_ms')} ms, p99 {t.get('p99_ms')} "
        "ms",
        "",
    ]
    for d in s["drills"]:
        rel = d.get("release") or {}
        tr = d.get("traffic") or {}
        L += [
            f"## {d['scenario']} ({d['drill_id']}): {d['status']}" + (f" — {d['reason']}" if d.get("reason") else ""),
            "",
            f"outcome: {rel.get('outcome')}; client requests during the drill: {tr.get('requests')}, failed "
            f"{tr.get('failed')}, p50 {tr.get('p50_ms')} ms, p99 {tr.get('p99_ms')} ms",
            "",
        ]
        L += [*gate_table(rel.get("gates") or []), ""]
        if rel.get("time_to_rollback"):
            L += ["time to rollback: `" + json.dumps(rel["time_to_rollback"], default=str) + "`", ""]
        for k in ("lkg", "hashes", "restore", "corruption", "node_loss", "rpo"):
            if rel.get(k):
                L += [f"{k}:", "", "```json", json.dumps(rel[k], indent=1, default=str)[:6000], "```", ""]
        if d.get("refused_pod_start"):
            L += [
                "refused pod start onto the altered bytes:",
                "",
                "```json",
                json.dumps(d["refused_pod_start"], indent=1),
                "```",
                "",
            ]
        L += ["reports: " + ", ".join(d["paths"]), ""]
    ev = [
        e
        for e in s.get("serving_events", [])
        if e["event"] in ("refused", "rollout-stalled", "node-lost", "node-replaced", "weight")
    ]
    if ev:
        t0 = s.get("t_start", ev[0]["wall"])
        L += ["## Serving events (seconds since the rehearsal started)", ""] + [
            f"- +{e['wall'] - t0:.1f} s {e['event']} {e.get('region')} "
            + ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("wall", "event", "region", "served_sha256"))[:400]
            for e in ev
        ]
    return "\n".join(L) + "\n"


def chart(s: dict, records: list, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    # Users' requests only (routed by the weight); the gates' scoring names its track and is not traffic share.
    counts = [c for c in s.get("track_counts") or [] if not c.get("pinned")]
    if not counts and not records:
        return None
    t0 = min([c["second"] for c in counts] + [r.t for r in records])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, layout="constrained")
    regions = sorted({c["region"] for c in counts})
    for r in regions:
        secs = sorted({c["second"] for c in counts if c["region"] == r})
        share = []
        for sec in secs:
            tot = sum(c["requests"] for c in counts if c["region"] == r and c["second"] == sec)
            can = sum(
                c["requests"] for c in counts if c["region"] == r and c["second"] == sec and c["track"] == "canary"
            )
            share.append(100.0 * can / tot if tot else 0.0)
        a1.plot([x - t0 for x in secs], share, label=r, lw=1)
    a1.set_ylim(0, 100)  # a share; fixed so the drill labels at 95 stay inside when no canary took traffic
    a1.set_ylabel("canary share of users' requests (%)")
    a1.legend(loc="upper right", fontsize=8)
    by: dict[int, list[int]] = {}
    for rec in records:
        k = int(rec.t - t0)
        by.setdefault(k, [0, 0])
        by[k][0] += 1
        by[k][1] += 0 if rec.ok else 1
    xs = sorted(by)
    a2.plot(xs, [by[x][0] for x in xs], label="client requests/s", lw=1)
    a2.plot(xs, [by[x][1] for x in xs], label="failed/s", lw=1, color="red")
    a2.set_ylabel("requests per second")
    a2.set_xlabel("seconds since the first request")
    a2.legend(loc="upper right", fontsize=8)
    for i, d in enumerate(s["drills"]):
        for ax in (a1, a2):
            ax.axvspan(d["wall"][0] - t0, d["wall"][1] - t0, alpha=0.08)
        a1.text(
            d["wall"][0] - t0, 95 - 8 * (i % 3), d["scenario"], fontsize=8, va="top"
        )  # staggered: short drills sit close
    fig.suptitle(f"release rehearsal on {s['env']}")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write(s: dict, records: list, out: Path) -> list[Path]:
    out = Path(out)
    (out / "report.json").write_text(json.dumps(s, indent=1, default=str))
    (out / "report.md").write_text(render(s))
    paths = [out / "report.md", out / "report.json"]
    c = chart(s, records, out / "release-timeline.png")
    if c:
        paths.append(c)
    return paths
