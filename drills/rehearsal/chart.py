"""The rehearsal's timeline chart (matplotlib, Agg: no display needed).

Four panels over drill seconds since the first client request, all from the clients' own records (with a client
mix: the naive clients' lines, and the resilient clients' success, served-or-fallback and p99 beside them):
  1. success rate per time bin, with the SLO's success-rate objective;
  2. latency of the successful requests per bin (p50 and p99; log scale), with the p99 objective;
  3. traffic share per region (which region answered, or was asked and failed), stacked.
Marked on every panel: the fault and its clearing (shaded between), each measured RTO part, the predicted RTO
from the configuration (dashed), each configuration change the drill applied, and the drill's steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drills.measure import percentile

REGION_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
PART_STYLES = {  # part -> (colour, linestyle, label)
    "detection": ("#d62728", (0, (4, 2)), "detected"),
    "dns_change": ("#9467bd", (0, (4, 2)), "DNS changed"),
    "first_success_survivor": ("#17becf", "-.", "first success on a survivor"),
    "ttl_expiry": ("#7f7f7f", ":", "TTL expired"),
    "all_clients_recovered": ("#2ca02c", "-.", "all clients moved"),
    "slo_recovered": ("#2ca02c", "-", "SLO recovered (RTO)"),
}


def _bins(records: list, t0: float, bin_wall: float) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in records:
        out.setdefault(int((r.t - t0) // bin_wall), []).append(r)
    return out


def timeline_chart(rep: dict, records: list, entries: list[dict], path: Path, zoom: bool = False) -> Path | None:
    """The chart of the whole run; `zoom=True`: the failover window only (fault - 20 s .. predicted RTO + 40 s, drill
    seconds), with finer time bins, so the RTO parts are told apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not records:
        return None
    rh = rep["rehearsal"]
    scale = float(rh["scale"])
    origin = rh.get("clock_origin")
    t0 = min(r.t for r in records)

    def x_wall(w: float) -> float:
        return (w - t0) / scale

    def x_drill(t: float) -> float:  # a journal time (drill seconds) -> chart x
        return x_wall(origin + (t - origin) * scale) if origin is not None else t - entries[0]["t"]

    rate = float(rep["traffic"].get("rate_per_s") or 50)
    fo0 = rep["rto"] if rep["rto"].get("kind") == "failover" else None
    if zoom and fo0 is None:
        return None
    # ~25 requests a bin (a p99 over fewer is one request's latency); ~12 in the zoom, where timing matters more.
    bin_wall = max(0.1, 12.0 / rate) if zoom else max(0.2, 25.0 / rate)
    # With a client mix, the black lines are the naive clients' (the DNS failover); the resilient clients' success
    # (a region answered) and served (a region or the fallback answered) rates and p99 are drawn beside them.
    resilient = [r for r in records if r.kind == "resilient"]
    naive = [r for r in records if r.kind == "naive"] or records
    bins = _bins(naive, t0, bin_wall)
    ks = sorted(bins)
    xs = np.array([(k + 0.5) * bin_wall / scale for k in ks])
    succ = np.array([100.0 * sum(r.ok for r in bins[k]) / len(bins[k]) for k in ks])

    def pct(rs: list, q: float) -> float:
        v = percentile([r.latency_ms for r in rs if r.ok], q)
        return np.nan if v is None else v

    p99 = np.array([pct(bins[k], 99) for k in ks])
    p50 = np.array([pct(bins[k], 50) for k in ks])
    rbins = _bins(resilient, t0, bin_wall)
    rks = sorted(rbins)
    rxs = np.array([(k + 0.5) * bin_wall / scale for k in rks])
    regions = sorted({r.region for r in records if r.region})
    share = {g: np.array([sum(1 for r in bins[k] if r.region == g) / len(bins[k]) for k in ks]) for g in regions}
    none = np.array([sum(1 for r in bins[k] if not r.region) / len(bins[k]) for k in ks])

    fig, axes = plt.subplots(4, 1, figsize=(14, 11), sharex=True, gridspec_kw={"height_ratios": [1, 1, 1.2, 0.55]})
    ax_s, ax_l, ax_r, ax_d = axes
    obj = (rep.get("drill") or {}).get("objectives") or []
    plan_obj = {o["objective"].split(" (")[0]: o["target"] for o in obj}
    fo = rep["rto"] if rep["rto"].get("kind") == "failover" else None

    ax_s.plot(
        xs, succ, color="black", lw=1.4, drawstyle="steps-mid", label="success rate" + (" (naive)" if rks else "")
    )
    if rks:
        r_ok = np.array([100.0 * sum(r.ok for r in rbins[k]) / len(rbins[k]) for k in rks])
        r_served = np.array([100.0 * sum(r.ok or r.degraded for r in rbins[k]) / len(rbins[k]) for k in rks])
        ax_s.plot(rxs, r_ok, color="#2ca02c", lw=1.3, drawstyle="steps-mid", label="resilient: a region answered")
        ax_s.plot(
            rxs, r_served, color="#2ca02c", lw=1.0, ls=":", drawstyle="steps-mid", label="resilient: region or fallback"
        )
    slo_rate = fo["slo"]["success_rate"] * 100 if fo else None
    if slo_rate is None and "service success rate" in plan_obj:
        slo_rate = float(plan_obj["service success rate"].split()[-1].rstrip("%"))
    if slo_rate is not None:
        ax_s.axhline(slo_rate, color="#d62728", lw=0.8, ls="--", label=f"objective {slo_rate:g}%")
    ax_s.set_ylim(-5, 105)
    ax_s.set_ylabel("success rate (%)")

    ax_l.plot(xs, p99, color="#d62728", lw=1.3, drawstyle="steps-mid", label="p99")
    ax_l.plot(xs, p50, color="#1f77b4", lw=1.0, drawstyle="steps-mid", label="p50")
    if rks:
        r99 = np.array([pct(rbins[k], 99) for k in rks])
        ax_l.plot(rxs, r99, color="#2ca02c", lw=1.2, drawstyle="steps-mid", label="p99 (resilient)")
    if fo:
        ax_l.axhline(
            fo["slo"]["p99_ms"], color="#d62728", lw=0.8, ls="--", label=f"p99 objective {fo['slo']['p99_ms']:g} ms"
        )
    elif "service p99 latency" in plan_obj:
        v = float(plan_obj["service p99 latency"].split()[1])
        ax_l.axhline(v, color="#d62728", lw=0.8, ls="--", label=f"p99 objective {v:g} ms")
    ax_l.set_yscale("log")
    ax_l.set_ylabel("latency of successes (ms)")

    stack = [share[g] for g in regions] + [none]
    colours = [REGION_COLOURS[i % len(REGION_COLOURS)] for i in range(len(regions))] + ["#bbbbbb"]
    ax_r.stackplot(xs, *stack, labels=[*regions, "no answer (DNS)"], colors=colours, alpha=0.85, step="mid")
    # Failed requests, by the region they were sent to: hatched over the share.
    fail = np.array([sum(1 for r in bins[k] if not r.ok) / len(bins[k]) for k in ks])
    ax_r.plot(xs, fail, color="black", lw=1.0, drawstyle="steps-mid", label="failed (any region)")
    ax_r.set_ylim(0, 1.0)
    ax_r.set_ylabel("clients' traffic\nby region")

    # What the DNS model answered (Route 53's policy over healthy records): the clients follow it one TTL later.
    changes = sorted(rep.get("dns_changes") or [], key=lambda c: c["t"])
    if changes:
        cx = [max(0.0, x_wall(c["t"])) for c in changes] + [float(xs[-1])]
        low = np.zeros(len(cx))
        for i, g in enumerate(regions):
            high = low + np.array([c["after"].get(g, 0.0) for c in changes] + [changes[-1]["after"].get(g, 0.0)])
            ax_d.fill_between(cx, low, high, step="post", color=colours[i], alpha=0.85)
            low = high
    ax_d.set_ylim(0, 1.0)
    ax_d.set_ylabel("DNS answer\nshare")
    ax_d.plot(
        [],
        [],
        color="none",
        label="what the DNS model answered\n(region colours as above);\nclients follow within a TTL",
    )
    ax_d.set_xlabel(f"drill seconds since traffic started (wall seconds / {scale:g}; scale {scale:g})")

    marks: list[tuple[float, str, Any, Any]] = []
    if fo:
        xf = x_wall(fo["fault_wall"])
        for ax in axes:
            ax.axvline(xf, color="#d62728", lw=2.0)
        end = x_wall(fo["cleared_wall"]) if fo.get("cleared_wall") else xs[-1]
        for ax in axes:
            ax.axvspan(xf, end, color="#d62728", alpha=0.06)
        marks.append((xf, f"fault: {fo['fault']} in {fo['region']}", "#d62728", "-"))
        if fo.get("cleared_wall"):
            xc = x_wall(fo["cleared_wall"])
            marks.append((xc, "fault cleared", "#2ca02c", (0, (1, 1))))
        for p in fo["parts"]:
            if p["drill_s"] is None or p["part"] not in PART_STYLES:
                continue
            colour, ls, label = PART_STYLES[p["part"]]
            marks.append((xf + p["drill_s"], f"{label} +{p['drill_s']:.0f} s", colour, ls))
        pred = fo["predicted"].get("total")
        if pred is not None:
            marks.append((xf + pred, f"predicted RTO +{pred:g} s (config)", "black", "--"))
    for s in rep.get("switches") or []:
        if origin is None or not entries:
            break
        # Many changes (an evacuation has 8): one legend entry per kind, the step names are on the share panel.
        x = x_drill(entries[0]["t"] + s["at_drill_s"])
        marks.append((x, "config change + pulumi up (step named below)", "#8c564b", "-"))
        if s.get("dns_changed_drill_s") is not None:
            marks.append(
                (x + s["dns_changed_drill_s"], "DNS answer changed (modelled propagation)", "#9467bd", (0, (4, 2)))
            )
        if s["away"] and s.get("last_request_to_away_drill_s"):
            marks.append(
                (
                    x + s["last_request_to_away_drill_s"],
                    f"last request to {', '.join(s['away'])} after {s['step']}: "
                    f"+{s['last_request_to_away_drill_s']:.0f} s (TTL)",
                    "#2ca02c",
                    "-.",
                )
            )
    seen: set[str] = set()
    for x, label, colour, ls in marks:
        for ax in axes:
            ax.axvline(x, color=colour, ls=ls, lw=1.3)
        if label not in seen:
            seen.add(label)
            ax_s.plot([], [], color=colour, ls=ls, lw=1.3, label=label)
    # The drill's steps, as thin dotted boundaries with their names along the top of the share panel.
    if entries and origin is not None:
        last_x, level = None, 0
        for e in entries:
            if e["type"] == "step_begin":
                x = x_drill(e["t"])
                if xs[0] - 5 <= x <= xs[-1] + 5:
                    for ax in axes:
                        ax.axvline(x, color="#999999", ls=":", lw=0.7)
                    # Steps that start close together get their names at alternating heights, so both stay legible.
                    level = (level + 1) % 3 if last_x is not None and x - last_x < 0.03 * (xs[-1] - xs[0]) else 0
                    last_x = x
                    ax_r.text(
                        x,
                        0.98 - 0.32 * level,
                        " " + e["name"],
                        rotation=90,
                        va="top",
                        ha="left",
                        fontsize=7,
                        color="#222222",
                        bbox={"facecolor": "white", "alpha": 0.6, "lw": 0, "pad": 0.5},
                        clip_on=True,
                    )
    for ax in axes:
        ax.grid(alpha=0.25)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    if zoom:
        assert fo0 is not None  # a zoom without a failover returned None above
        xf = x_wall(fo0["fault_wall"])
        ax_s.set_xlim(xf - 20, xf + float(fo0["predicted"].get("total") or 60) + 40)
    title = f"Rehearsal: {rh['scenario']} on {rh['env']}" + (f" ({rh['region']})" if rh.get("region") else "")
    if zoom:
        title += ": the failover window"
    sub = f"{rep['traffic']['requests']} requests, {rep['traffic']['errors']} failed"
    if fo:
        sub += (
            f"; RTO (SLO recovered) {fo['rto_drill_s']} s, all clients moved {fo['all_clients_moved_drill_s']} s, "
            f"predicted {fo['predicted'].get('total'):g} s; errors during failover {fo['errors_during_failover']}"
        )
    if rep.get("switches"):
        sub += (
            f"; {len(rep['switches'])} planned config changes, "
            f"{sum(x['errors'] for x in rep['switches'])} errors after them"
        )
    fig.suptitle(f"{title}\n{sub}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
