"""Printing plans and results for people (rich). Machines use `--json`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from drills.model import Plan


def console() -> Console:
    c = Console()
    if not c.is_terminal:  # keep piped output readable, not squeezed to 80 columns
        c = Console(width=160, no_color=True)
    return c


def _weights(w: dict[str, int] | None) -> str:
    return " / ".join(f"{r} {v}" for r, v in w.items()) if w else ""


def print_plan(plan: Plan, out: Console | None = None) -> None:
    c = out or console()
    o = plan.objectives
    c.print(
        f"[bold]Drill plan: {plan.scenario}[/bold] — env {plan.env}"
        + (f", region {plan.region}" if plan.region else "")
        + (f" — {plan.title}" if plan.title else "")
    )
    c.print(
        f"routing: {plan.mode} on {plan.fqdn} (TTL {plan.ttl} s; health check every "
        f"{plan.health_check['request_interval']} s, "
        f"{plan.health_check['failure_threshold']} failures)"
    )
    c.print(
        f"pre-drill weights: {_weights(plan.pre_weights)}" + (f"; roles: {plan.pre_roles}" if plan.pre_roles else "")
    )
    c.print(
        f"objectives: RTO <= {o.rto_seconds:g} s, RPO <= {o.rpo_seconds:g} s, success rate >= {o.success_rate:.2%}, "
        f"p99 <= {o.p99_ms:g} ms"
    )
    p = plan.predicted
    c.print(
        f"predicted RTO from config: detection {p['detection']:g} s + DNS change {p['dns_change']:g} s + TTL "
        f"{p['ttl']:g} s = {p['total']:g} s"
    )
    if plan.window:
        c.print(f"window: {plan.window['start']} to {plan.window['end']} ({plan.window['timezone']})")

    t = Table(title="Steps", show_lines=False)
    for col in ("#", "step", "what", "weights after", "wait s"):
        t.add_column(col, overflow="fold")
    for i, s in enumerate(plan.steps, 1):
        t.add_row(str(i), s.name, s.description, _weights(s.weights), f"{s.wait_seconds:g}" if s.wait_seconds else "")
    c.print(t)

    cap = [s for s in plan.steps if s.capacity]
    if cap:
        t = Table(title="Capacity check per step (N+1 math: GPUs required for the share of peak vs pool sizes)")
        for col in (
            "step",
            "region",
            "weight",
            "share",
            "QPS",
            "GPUs required",
            "GPUs desired",
            "GPUs max",
            "pre-scale to",
            "engines",
            "capacity",
        ):
            t.add_column(col, no_wrap=col in ("step", "region"))
        for s in cap:
            for r in s.capacity:
                verdict = "ok" if r.ok else f"SHORT {r.shortfall} guaranteed GPUs"
                if r.ok and r.gpus_required > r.gpus_desired:
                    verdict = "ok at max (pre-scale)"
                pre = ", ".join(f"{k} {v}" for k, v in r.prescale.items()) if r.gains_share else ""
                t.add_row(
                    s.name,
                    r.region + (" +" if r.gains_share else ""),
                    str(r.weight),
                    f"{r.share:.1%}",
                    f"{r.qps:,.0f}",
                    str(r.gpus_required),
                    str(r.gpus_desired),
                    str(r.gpus_max),
                    pre,
                    r.engines.status,
                    verdict,
                )
            t.add_section()
        c.print(t)
        c.print("(+ marks a region that gains share at that step: the capacity and engine guardrails apply to it)")

    c.print("[bold]Checks between steps[/bold] (a failed check aborts the drill and rolls it back)")
    groups: dict[tuple[str, ...], list[str]] = {}
    for s in plan.steps:
        if s.checks:
            groups.setdefault(tuple(chk.description for chk in s.checks), []).append(s.name)
    for descs, names in groups.items():
        c.print(f"  after {', '.join(names)}:")
        for d in descs:
            c.print(f"    - {d}")
    c.print("[bold]Abort conditions (watched continuously)[/bold]")
    for a in plan.abort_conditions or []:
        c.print(f"  - {a.description}")
    if not plan.abort_conditions:
        c.print("  - none beyond step gates (no traffic is moved)")
    c.print("[bold]Rollback (automatic on abort, error, SIGINT/SIGTERM; `drills rollback ID` after a crash)[/bold]")
    for line in plan.rollback:
        c.print(f"  - {line}")
    c.print("[bold]Roles[/bold]: " + ", ".join(f"{k}: {v}" for k, v in plan.roles.items()))
    c.print("[bold]Communication[/bold]")
    for line in plan.communication:
        c.print(f"  - {line}")
    for n in plan.notes:
        c.print(f"note: {n}")
    for w in plan.warnings:
        c.print(f"[yellow]warning: {w}[/yellow]")
