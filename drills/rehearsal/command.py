"""`python -m drills rehearse` (drills.cli's table names `configure` and `run`) and the "rehearsal" backend's factory
(drills.backends' table).

Backend "rehearsal": adapters over a `World` (drills/rehearsal/adapters.py). Within `python -m drills rehearse`
the factory wraps the world that command started (looked up by the key in the backend options). In another
process (`drills rollback ID` / `drills resume ID` of a rehearsal drill, whose world died with its process) it
starts a fresh world from the journaled options (the run's stack copy, model, scale), as AWS would still hold
what the first process applied, and the engine then restores the stack copy and re-applies it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from drills.rehearsal import rehearse as R

# Run only when named, never by `--scenario all`: total-outage takes every region down (drills.scenarios.total_outage).
# region-brownout needs its --fault; quiet is a soak of its own length; readiness breaks and heals a region.
# ab-test: two A/B experiments with a drill through the first (drills/rehearsal/ab_run.py), in the release world.
NAMED_ONLY = ("total-outage", "region-brownout", "quiet", "readiness", "ab-test")
SCENARIOS = (*R.SCENARIO_ORDER, *NAMED_ONLY, R.ALL)


def backend_factory(plan: Any, options: dict, clock: Any) -> Any:
    """For `drills rollback ID` / `drills resume ID` of a rehearsal drill in another process (the rehearsal itself
    hands its world to the engine as an object): a fresh world from the journaled options."""
    from drills.errors import DrillError
    from drills.rehearsal.model_cache import verify_model
    from infra.config import load_fleet

    for k in ("stacks_dir", "stack_state", "model_dir", "workdir", "scale"):
        if k not in options:
            raise DrillError(
                f"rehearsal backend: option {k!r} missing; this journal was not written by `drills rehearse`"
            )
    fleet = load_fleet(plan.env, Path(options["stacks_dir"]))
    verify_model(Path(options["model_dir"]))
    opts = R.Options(
        env=plan.env,
        scale=float(options["scale"]),
        replication_lag=float(options.get("replication_lag", R.DEFAULT_REPLICATION_LAG)),
        ready_timeout=float(options.get("ready_timeout", 90.0)),
    )
    live = R.start_world(
        fleet,
        model_dir=Path(options["model_dir"]),
        workdir=Path(options["workdir"]) / time.strftime("%Y%m%dT%H%M%S"),
        stacks_dir=Path(options["stacks_dir"]),
        stack_state=Path(options["stack_state"]),
        scale=R.world_scale(fleet, plan, opts),
        base_port=None,
        seed=int(options.get("seed", 7)),
        log=lambda s: None,
        probe_timeout=float(options.get("probe_timeout", 1.0)),
    )
    b = R.backend_for(live, options, clock)
    b.closers.insert(0, live.world.close)  # closers run in reverse: the world goes last
    return b


# ---------------------------------------------------------------- `python -m drills rehearse`
def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run a drill scenario end to end on this machine: the cached model_build output published to one bucket per "
        "region in a moto_server, one real Triton per region, Route 53 health checks, DNS and S3 replication modelled, "
        "client traffic through the DNS name, the drill through the drills engine (executed: the environment is this "
        "run's own copy, so no --confirm), everything torn down, and a report with a timeline chart. The journal and "
        "lock live in <out>/state unless --state-dir is given; --stacks-dir is where the stack files are copied from."
    )
    p.add_argument(
        "--env", default="prod", help="environment (default prod: 3 regions, weighted; staging: 2 regions, failover)"
    )
    p.add_argument(
        "--scenario",
        default="region-outage",
        choices=SCENARIOS,
        help="drill scenario (default region-outage); `all`: every scenario the environment's routing allows, one "
        "after the other in one world, a report each plus an index (ab-test, only when named: two A/B experiments of "
        "ranker versions with a region-outage drill through the first, drills/rehearsal/ab_run.py; total-outage only "
        "when named: every region down "
        "for --hold drill seconds, allowed here because the environment is this run's own copy)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="with --scenario all: run the next scenario after one that did not complete",
    )
    p.add_argument(
        "--region",
        help="region the scenario acts on (default: the one carrying most traffic; stack-flip: the secondary)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="run directory for the report, chart, logs and state "
        "(default build/rehearsal/<UTC time>-<env>-<scenario>)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=R.DEFAULT_SCALE,
        help="time scale in (0, 1]: every modelled timing (health-check interval, TTL, propagation, replication lag) "
        "at SCALE x its configured value, figures reported in configuration-equivalent seconds "
        f"(default {R.DEFAULT_SCALE:g}: prod region-outage in about 2 minutes; 1 = real time)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=R.DEFAULT_RATE,
        help=f"client ranking requests per wall second (default {R.DEFAULT_RATE:g})",
    )
    p.add_argument(
        "--clients",
        type=int,
        default=R.DEFAULT_CLIENTS,
        help=f"clients, each with its own DNS cache (default {R.DEFAULT_CLIENTS})",
    )
    p.add_argument(
        "--client-mix",
        metavar="naive=N,resilient=M",
        help="two client populations side by side on the same faults (replaces --clients): naive clients send to "
        "what DNS answered, no retry; resilient ones use drills.client.RankerClient over the plain per-region names "
        "(retry on another region, ejection, the release's fallback ranking); report.json gains "
        "traffic.by_client_kind",
    )
    p.add_argument(
        "--request-timeout", type=float, default=1.0, help="client timeout per request, wall seconds (default 1)"
    )
    p.add_argument(
        "--base-port",
        type=int,
        help="first of 5 consecutive ports (moto, DNS, Triton HTTP/gRPC/metrics); default: a free block",
    )
    p.add_argument("--hold", type=float, help="hold at the drilled state, drill seconds (default: the plan's, 300)")
    p.add_argument("--steps", type=int, help="evacuate-region: weight-shift steps (default 4)")
    p.add_argument(
        "--fault",
        metavar="KIND[=VALUE]",
        help="region-outage: triton-down (default: the region's Triton killed), triton-stall (SIGSTOPped), "
        "triton-unload, hc-invert (the control-plane variant); region-brownout (required): errors=FRACTION, "
        "latency=MS, loss=FRACTION, reset=FRACTION, blackhole, bandwidth=BYTES_PER_S, unload",
    )
    p.add_argument(
        "--capacity-model",
        choices=("off", "declared", "no-reservations"),
        default="off",
        help="region-outage and the brownouts: off (default: every region carries any load), declared (--rate stands "
        "for the environment's peak; each region admits what its nodes carry, and a survivor over it scales up "
        "through the declared node groups, reservations as declared: report.json gains `capacity`), "
        "no-reservations (the same with every pool's reservations ignored)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        help="quiet: how long the soak holds, in drill minutes (default: the plan's hold, 5 minutes)",
    )
    p.add_argument(
        "--replication-lag",
        type=float,
        default=R.DEFAULT_REPLICATION_LAG,
        help=f"modelled S3 replication lag, drill seconds (default {R.DEFAULT_REPLICATION_LAG:g})",
    )
    p.add_argument(
        "--ready-timeout", type=float, default=90.0, help="wall seconds a Triton may take to become ready (default 90)"
    )
    p.add_argument(
        "--model-dir", type=Path, help="serve this model_build output instead of the cached build (verified first)"
    )
    p.add_argument(
        "--rebuild-model", action="store_true", help="rebuild the cached model even if its inputs are unchanged"
    )
    p.add_argument("--plan-file", help="drill plan YAML (roles, communication, parameters), as for `drills run`")


def _summary(res: Any) -> None:
    from rich.table import Table

    from drills.render import console

    c = console()
    rep = res.report or {}
    rh = rep.get("rehearsal", {})
    t = Table(
        title=f"Rehearsal {rh.get('scenario')} on {rh.get('env')}: {res.status}, verdict {rep.get('verdict')} "
        f"(scale {rh.get('scale')}, {rh.get('wall_seconds')} wall s)"
    )
    t.add_column("figure")
    t.add_column("value")
    tr = rep.get("traffic") or {}
    kinds = tr.get("by_client_kind") or {}
    t.add_row(
        "requests sent / failed" + (" (naive clients: no retry)" if len(kinds) > 1 else ""),
        f"{tr.get('requests')} / {tr.get('errors')}",
    )
    for kind, k in kinds.items():
        if kind != "naive":
            d = k.get("during_fault") or k
            t.add_row(
                f"{kind} clients{' during the fault' if k.get('during_fault') else ''}: requests / failed / degraded",
                f"{d['requests']} / {d['errors']} / {d['degraded']} (p99 {d['p99_ms'] or 0:.1f} ms, "
                f"{d['extra_requests']} extra requests)",
            )
    fo = rep.get("rto") if (rep.get("rto") or {}).get("kind") == "failover" else None
    if fo:
        t.add_row(
            "errors during failover / after the window", f"{fo['errors_during_failover']} / {fo['lost_after_window']}"
        )
        for p in fo["parts"]:
            pred = "" if p["predicted_drill_s"] is None else f" (predicted {p['predicted_drill_s']:g})"
            t.add_row(
                f"  {p['label']}",
                "n/a" if p["drill_s"] is None else f"{p['drill_s']:.1f} s{pred}  [{p['wall_s']:.2f} wall s]",
            )
        t.add_row(
            "RTO measured vs predicted (drill s)",
            f"{fo['rto_drill_s']} (SLO recovered) / all moved {fo['all_clients_moved_drill_s']} "
            f"vs predicted {fo['predicted'].get('total'):g}; "
            f"objective {fo['objective_s']:g}: {fo['verdict_objective']}",
        )
        for name, s in (("before the fault", fo["before"]), ("after recovery", fo["after"])):
            t.add_row(
                f"p50 / p99 {name}",
                f"{s['p50_ms'] or 0:.1f} / {s['p99_ms'] or 0:.1f} ms over {s['requests']} requests, share "
                + ", ".join(f"{k} {v:.0%}" for k, v in s["share"].items()),
            )
    for s in rep.get("switches") or []:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in s["shares_after"].items())
        left = (
            f"; {', '.join(s['away'])} out, last request to it +{s['last_request_to_away_drill_s']} s"
            if s["away"]
            else ""
        )
        t.add_row(
            f"change {s['step']}",
            f"to {shares}: records in sync +{s['records_in_sync_drill_s']} s, DNS changed "
            f"+{s['dns_changed_drill_s']} s{left}; {s['requests']} requests, {s['errors']} errors",
        )
    if rep.get("rpo"):
        t.add_row(
            "RPO (drill s)",
            f"{rep['rpo']['rpo_drill_s']} vs objective {rep['rpo']['objective_s']:g}: {rep['rpo']['verdict']}",
        )
    drill = rep.get("drill") or {}
    for o in drill.get("objectives", []):
        t.add_row(f"objective: {o['objective']}", f"{o['measured']} ({o['target']}): {o['verdict']}")
    t.add_row("processes left behind", str(rh.get("processes_left_behind") or "none"))
    t.add_row("report", str(res.out / "report.md"))
    c.print(t)


def _ab_test(args: argparse.Namespace) -> int:
    """`--scenario ab-test`: its own run (drills/rehearsal/ab_run.py); exit 0 only when every expectation held."""
    from drills.rehearsal import ab_run
    from drills.render import console

    r = ab_run.run(
        ab_run.Options(
            env=args.env,
            out=args.out,
            scale=args.scale,
            rate=args.rate,
            clients=args.clients,
            region=args.region,
            base_port=args.base_port,
            stacks_dir=args.stacks_dir,
            ready_timeout=args.ready_timeout,
        )
    )
    c = console()
    for eid, e in r["experiments"].items():
        arms = ", ".join(
            f"{cell} {a['impressions']} imp CTR {a['ctr'] if a['ctr'] is not None else 'n/a'}"
            for cell, a in e["arms"].items()
        )
        c.print(f"{eid}: {e.get('decision')} (srm ok: {e.get('srm_ok')}): {arms}")
    for ch in r["checks"]:
        c.print(f"  {'ok' if ch['ok'] else '[red]FAILED[/red]'}  {ch['check']}: {ch['detail']}")
    c.print(f"verdict {r['verdict']}; report: {r['paths'][0]}")
    return 0 if r["verdict"] == "PASS" and not r["rehearsal"].get("processes_left_behind") else 1


def run(args: argparse.Namespace) -> int:
    from drills.errors import GuardrailError

    if args.scenario == "ab-test":
        return _ab_test(args)

    mix = R.parse_client_mix(args.client_mix) if args.client_mix else {"naive": args.clients, "resilient": 0}
    opts = R.Options(
        env=args.env,
        scenario=args.scenario,
        region=args.region,
        out=args.out,
        scale=args.scale,
        rate=args.rate,
        clients=mix["naive"],
        resilient_clients=mix["resilient"],
        request_timeout=args.request_timeout,
        base_port=args.base_port,
        hold=args.minutes * 60 if args.minutes is not None else args.hold,
        steps=args.steps,
        fault=args.fault,
        replication_lag=args.replication_lag,
        ready_timeout=args.ready_timeout,
        model_dir=args.model_dir,
        rebuild_model=args.rebuild_model,
        plan_file=args.plan_file,
        stacks_dir=args.stacks_dir,
        state_dir=args.state_dir,
        keep_going=args.keep_going,
        capacity_model=args.capacity_model,
        # The rehearsal's environment is its own copy (no --confirm either): it allows total-outage for it.
        params={"allow_total_outage": args.env} if args.scenario == "total-outage" else {},
    )
    try:
        res = R.run(opts)
    except GuardrailError as e:
        raise GuardrailError(e.code, f"{e.args[0]} The rehearsal started nothing.") from None
    for child in getattr(res, "children", [res]):
        _summary(child)
    if getattr(res, "children", None):
        _index_summary(res)
    return res.exit_code


def _index_summary(res: Any) -> None:
    from drills.render import console

    c = console()
    rep = res.report
    c.print(
        f"[bold]all scenarios on {rep['rehearsal']['env']}: verdict {rep['verdict']}[/bold] "
        f"({rep['rehearsal']['wall_seconds']} wall s)"
    )
    for r in rep["scenarios"]:
        c.print(
            f"  {r['scenario']}: {r['status']}, {r['verdict']}, {r['requests']} requests, "
            f"{r['errors']} failed -> {r['report']}"
        )
    for s in rep["skipped"]:
        c.print(f"  {s['scenario']}: not run: {s['reason']}")
    c.print(f"index: {res.out / 'report.md'}")
