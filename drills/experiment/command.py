"""`python -m drills experiment plan|report|start|status|stop`: an A/B experiment as the global stack declares it, its
verdict from an impression/click log, and its window moved to start or stop it now.

  plan    the declared experiments (or one, `--id`): arms, versions, the split each cell aims at (holdout included),
          the window and whether it is running now, and the users per arm a fixed-horizon test needs to see the
          declared minimum detectable effect at the declared alpha (split over the candidates) and power, from a
          baseline CTR (`--baseline-ctr`). Pure: reads the stack files only.
  report  one experiment's figures from an events log (JSONL, drills/experiment/events.py): per cell users,
          impressions, clicks, CTR and NDCG@10 with intervals, the sample-ratio-mismatch check, every comparison's
          lift and always-valid p-value, and the decision (drills/experiment/decision.py). `--json` prints
          {"experiment", "arms": {arm: {users, impressions, clicks, ctr, ndcg10}}, "srm_ok", "decision", ...}.
  start   `--id ID`: the experiment's `start` set to now (UTC, whole seconds, `...Z`) in the global stack file
          stacks/Pulumi.<env>-global.yaml, when it is later than now; asks first on a terminal, `--yes` does not ask
          (without a terminal, --yes is required). Refused (exit 2, nothing written) when the experiment has ended,
          or when the change breaks a rule of the fleet: the whole fleet is validated with the change on a copy of
          the stacks before the file is written (another experiment's window overlapping, ...). Already running:
          exit 0, nothing written. Then prints the next steps: `pulumi up` of each regional stack of the env (the
          arms are served from the `up` that declares the experiment until the first `up` after its end:
          infra.experiments.arm_routes), and clients built from the new declaration send the arm header from start.
  stop    `--id ID [--reason TEXT]`: the running experiment's `end` set to now, validated and written the same way;
          the reason is printed with the change (for its review and commit message). Already ended: exit 0, nothing
          written. Not yet started: exit 2 (end before start breaks the window's rule; remove the declaration
          instead). Then prints the `pulumi up`s that retire its arms.
  status  `--id ID [--events LOG]`: running or not, the window and the time left, each cell's version, share and
          arm header value (`X-Reco-Arm: <id>.<cell>`, what the regions route), and with `--events` the report's
          figures and decision (as `report`), for an operator watching it. `--json` prints {"experiment", "state"
          (not started | running | ended), "running", "start", "end", "seconds_left", "starts_in_seconds", "header",
          "cells": [{cell, version, control, share, header}], "served_until_up_after_end", "regional_stacks",
          "report" (report's document, or null without --events)}.

Only the one value changes in the stack file: comments, quoting, key order and everything else stay byte for byte
(drills/experiment/window.py). The change is a config change like any other: review and commit it.

Exit codes: 0, 2 on a usage or config error (an unknown experiment id, a stack that does not validate, an unreadable
log, a refused start or stop), 1 when a start was not confirmed at the prompt (nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drills.errors import DrillError
from infra.experiments import HOLDOUT, Experiment, expected_split
from infra.names import ARM_HEADER, arm_header_value

if TYPE_CHECKING:
    from drills.experiment.decision import Decision
    from drills.experiment.metrics import ArmTotals
    from infra.config import Fleet


class ExperimentError(DrillError):
    exit_code = 2


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment_command", required=True, metavar="plan|report|start|status|stop")
    plan = sub.add_parser("plan", help="the declared experiments: split, window, users per arm needed")
    report = sub.add_parser(
        "report", help="one experiment's per-arm figures, SRM check and decision from an events log"
    )
    start = sub.add_parser(
        "start",
        help="start an experiment now: its start set to now in the global stack file (the fleet validated first)",
        description="Set the experiment's start to now (UTC) in stacks/Pulumi.<env>-global.yaml, once the whole fleet "
        "validates with the change; then `pulumi up` each regional stack so every region serves the arms. Refused "
        "(exit 2, nothing written) for an ended experiment or a window overlapping another experiment's.",
    )
    status = sub.add_parser(
        "status",
        help="one experiment: running or not, window, time left, arms, versions and arm header values; --events: "
        "its figures and decision",
        description="One experiment as the global stack declares it now: running or not, its window and the time "
        "left, each cell's version, share of users and X-Reco-Arm value, the regional stacks that serve it; with "
        "--events, the report's per-arm figures, sample-ratio check and decision. Reads only.",
    )
    stop = sub.add_parser(
        "stop",
        help="stop a running experiment now: its end set to now in the global stack file (the fleet validated first)",
        description="Set the running experiment's end to now (UTC) in stacks/Pulumi.<env>-global.yaml, once the "
        "whole fleet validates with the change; then `pulumi up` each regional stack to retire the arms. Refused "
        "(exit 2, nothing written) for an experiment that has not started (remove its declaration instead).",
    )
    for q in (plan, report, start, status, stop):
        q.add_argument("--env", required=True, help="environment (a global stack <env>-global exists), e.g. prod")
        if q is not start and q is not stop:
            q.add_argument("--json", action="store_true", help="print JSON instead of tables")
        # Also after the subcommand (the command's own --stacks-dir must come before it otherwise).
        q.add_argument(
            "--stacks-dir", type=Path, default=argparse.SUPPRESS, help="directory of Pulumi.<stack>.yaml files"
        )
    plan.add_argument("--id", help="one experiment (default: every declared one)")
    plan.add_argument(
        "--baseline-ctr",
        type=float,
        default=0.05,
        help="the control's expected CTR, for the sample size (default 0.05)",
    )
    report.add_argument("--id", required=True, help="the experiment's id")
    report.add_argument("--events", type=Path, required=True, help="the impression/click JSONL log")
    for q in (start, status, stop):
        q.add_argument("--id", required=True, help="the experiment's id")
    start.add_argument("--yes", action="store_true", help="do not ask for confirmation (required without a terminal)")
    stop.add_argument("--reason", help="why it stops early (printed with the change, for its review)")
    status.add_argument("--events", type=Path, help="the impression/click JSONL log: add the report's figures")


def _declared(fleet: Fleet, eid: str | None) -> tuple[Experiment, ...]:
    """The fleet's experiments, or the one with id `eid` (ExperimentError naming the declared ones)."""
    declared = fleet.glob.experiments
    if eid is None:
        return declared
    found = tuple(e for e in declared if e.id == eid)
    if not found:
        known = ", ".join(e.id for e in declared) or "none"
        raise ExperimentError(
            f"{fleet.env} declares no experiment {eid!r} (declared: {known}); see the global stack's experiments"
        )
    return found


def _experiments(env: str, stacks_dir: Path, eid: str | None) -> tuple[Experiment, ...]:
    from infra.config import load_fleet

    return _declared(load_fleet(env, stacks_dir), eid)


def plan_doc(experiments: tuple[Experiment, ...], baseline_ctr: float, now: datetime) -> list[dict[str, Any]]:
    from drills.experiment.stats import sample_size_per_arm

    if not 0 < baseline_ctr < 1:
        raise ExperimentError(f"--baseline-ctr is a probability, 0 < p < 1 (got {baseline_ctr})")
    out = []
    for e in experiments:
        alpha = e.alpha / len(e.candidates)  # the primary comparisons share alpha (decision.decide does the same)
        out.append(
            {
                "id": e.id,
                "running": e.is_running(now),
                "start": e.start.isoformat(),
                "end": e.end.isoformat(),
                "arms": [{"name": a.name, "version": a.version, "control": a.control} for a in e.arms],
                "split": {cell: round(f, 4) for cell, f in expected_split(e).items()},
                "primary_metric": e.primary_metric,
                "guardrails": {g.metric: g.max_relative_drop for g in e.guardrails},
                "users_per_arm": sample_size_per_arm(baseline_ctr, e.minimum_detectable_effect, alpha, e.power),
                "sized_for": {
                    "baseline_ctr": baseline_ctr,
                    "relative_mde": e.minimum_detectable_effect,
                    "alpha_per_comparison": alpha,
                    "power": e.power,
                },
            }
        )
    return out


def report_doc(experiment: Experiment, events: Path, now: datetime) -> dict[str, Any]:
    """One look at the whole log (always valid at any single look)."""
    from drills.experiment.decision import decide
    from drills.experiment.events import aggregate, read_events

    try:
        totals = aggregate(read_events(events), experiment.id)
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read the events log {events}: {e}") from None
    return decision_doc(experiment, totals, decide(experiment, totals, now))


def decision_doc(experiment: Experiment, totals: Mapping[str, ArmTotals], d: Decision) -> dict[str, Any]:
    """The report's JSON of a decision over `totals` (one look's, or the last of several: its always-valid p-values
    are then the running minimum over the looks). Comparisons are the primary ones first, then the guardrails'."""

    def num(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 6)

    primary = len(experiment.candidates)
    return {
        "experiment": experiment.id,
        "arms": {
            cell: {k: num(v) if isinstance(v, float) else v for k, v in t.report().items()}
            for cell, t in totals.items()
        },
        "srm_ok": d.srm.ok,
        "srm": {"chi2": round(d.srm.chi2, 3), "p_value": d.srm.p_value, "observed": d.srm.observed},
        "decision": d.verdict,
        "final": d.final,
        "reasons": list(d.reasons),
        "comparisons": [
            {
                "arm": c.arm,
                "metric": c.metric,
                "role": "primary" if i < primary else "guardrail",
                "control": num(c.control.value),
                "candidate": num(c.candidate.value),
                "lift": num(c.lift.value),
                "lift_ci": [num(c.lift.lo), num(c.lift.hi)],
                "always_valid_p": c.sequential.p_value,
            }
            for i, c in enumerate(d.comparisons)
        ],
    }


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m {s % 60}s"


def cells(experiment: Experiment) -> list[dict[str, Any]]:
    """Each cell (the holdout first when there is one): version, share of users, the arm header value."""
    split = expected_split(experiment)
    rows = []
    if experiment.holdout:
        rows.append(("holdout", experiment.control.version, False))
    rows += [(a.name, a.version, a.control) for a in experiment.arms]
    return [
        {
            "cell": cell,
            "version": version,
            "control": control,
            "share": round(split[cell], 4),
            "header": arm_header_value(experiment.id, cell),
        }
        for cell, version, control in rows
    ]


def status_doc(
    env: str, experiment: Experiment, regional_stacks: list[str], now: datetime, events: Path | None = None
) -> dict[str, Any]:
    from drills.experiment.window import stamp

    state = "not started" if now < experiment.start else "running" if now < experiment.end else "ended"
    return {
        "experiment": experiment.id,
        "env": env,
        "now": stamp(now),
        "state": state,
        "running": state == "running",
        "start": stamp(experiment.start),
        "end": stamp(experiment.end),
        "seconds_left": round((experiment.end - now).total_seconds()) if state == "running" else None,
        "starts_in_seconds": round((experiment.start - now).total_seconds()) if state == "not started" else None,
        "header": ARM_HEADER,
        "cells": cells(experiment),
        # Regional stacks brought up since the declaration route these values until the first `up` after the end.
        "served_until_up_after_end": state != "ended",
        "regional_stacks": regional_stacks,
        "report": report_doc(experiment, events, now) if events is not None else None,
    }


def _fleet_experiment(env: str, stacks_dir: Path, eid: str) -> tuple[Experiment, list[str]]:
    """The experiment `eid` and the env's regional stack names (one fleet load: the stacks validate)."""
    from infra.config import load_fleet

    fleet = load_fleet(env, stacks_dir)
    (experiment,) = _declared(fleet, eid)
    return experiment, sorted(fleet.stack_names.values())


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise ExperimentError(f"{question}: no terminal to confirm at; add --yes. Nothing written")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _ups(env: str, stacks: list[str], why: str) -> str:
    """The `pulumi up` step: why, then one command per regional stack, indented under a numbered step."""
    return "\n".join(
        [f"pulumi up each regional stack of {env} ({why}):", *(f"       pulumi up --stack {s}" for s in stacks)]
    )


def run_start(args: argparse.Namespace, now: datetime) -> int:
    from drills.experiment.window import change_window, stamp, utc_seconds

    e, stacks = _fleet_experiment(args.env, args.stacks_dir, args.id)
    at = utc_seconds(now)
    if e.end <= now:
        raise ExperimentError(
            f"cannot start experiment {e.id}: end = {stamp(e.end)} is past (now {stamp(at)}); rule: an experiment "
            "starts before its end. To run it again, declare a new window (and a new salt to reshuffle its users)"
        )
    if e.start <= now:
        print(
            f"experiment {e.id} is already running: since {stamp(e.start)}, until {stamp(e.end)} "
            f"({_duration((e.end - now).total_seconds())} left); nothing written"
        )
        return 0
    path = args.stacks_dir / f"Pulumi.{args.env}-global.yaml"
    print(f"experiment {e.id}: start {stamp(e.start)} -> {stamp(at)} (now), end {stamp(e.end)}, in {path}")
    if not args.yes and not _confirm(f"start experiment {e.id} in {args.env} now?"):
        print("not confirmed; nothing written")
        return 1
    edit = change_window(args.env, args.stacks_dir, e.id, "start", at)
    why = (
        "so every region's edge serves the arms; a stack brought up since the experiment was declared serves them "
        "already, and until a region's up a request with the header gets that region's stable version"
    )
    print(
        f"wrote {edit.path} line {edit.line}: start: {edit.old} -> {edit.new}\n"
        f"experiment {e.id} runs from {stamp(at)} until {stamp(e.end)} ({_duration((e.end - at).total_seconds())})\n"
        "next:\n"
        f'  1. review and commit the change, e.g. "experiment {e.id}: started at {stamp(at)}"\n'
        f"  2. {_ups(args.env, stacks, why)}\n"
        f"  3. clients built from this declaration (drills.client.RankerClient(experiment=...), each call given the "
        f"user's id) send {ARM_HEADER}: {e.id}.<cell> from {stamp(at)}; one built from the previous declaration "
        f"waits for its start, {stamp(e.start)}: reload them\n"
        f"  header values: {', '.join(c['header'] for c in cells(e))}"
    )
    return 0


def run_stop(args: argparse.Namespace, now: datetime) -> int:
    from drills.experiment.window import change_window, stamp, utc_seconds

    e, stacks = _fleet_experiment(args.env, args.stacks_dir, args.id)
    reason = f" ({args.reason})" if args.reason else ""
    if e.end <= now:
        why = "if none ran since its end, its arms are still routed; an up retires them"
        print(f"experiment {e.id} has already ended, at {stamp(e.end)}; nothing written")
        print(f"next: {_ups(args.env, stacks, why)}")
        return 0
    if now < e.start:
        raise ExperimentError(
            f"cannot stop experiment {e.id}: it has not started (start = {stamp(e.start)}); end = now would come "
            "before its start (rule: end after start). To call it off, remove it from the global stack's "
            "experiments and pulumi up the regional stacks, which retires its arms; nothing written"
        )
    # Whole seconds: an experiment started within this second ends a second after its start.
    at = max(utc_seconds(now), e.start + timedelta(seconds=1))
    edit = change_window(args.env, args.stacks_dir, e.id, "end", at)
    print(
        f"wrote {edit.path} line {edit.line}: end: {edit.old} -> {edit.new}\n"
        f"experiment {e.id} stopped{reason}: it ran from {stamp(e.start)} until {stamp(at)} (declared until "
        f"{stamp(e.end)})\n"
        "next:\n"
        f'  1. review and commit the change, e.g. "experiment {e.id}: stopped at {stamp(at)}{reason}"\n'
        f"  2. {_ups(args.env, stacks, 'so the edges retire the arms')}\n"
        f"  3. reload the clients: one built from this declaration sends no {ARM_HEADER} from {stamp(at)}; one built "
        f"from the previous declaration sends it until {stamp(e.end)} (a region whose arms are retired serves such "
        "a request its stable version)"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    if args.experiment_command == "start":
        return run_start(args, now)
    if args.experiment_command == "stop":
        return run_stop(args, now)
    if args.experiment_command == "status":
        experiment, stacks = _fleet_experiment(args.env, args.stacks_dir, args.id)
        sdoc = status_doc(args.env, experiment, stacks, now, args.events)
        if args.json:
            print(json.dumps(sdoc, indent=2))
        else:
            _print_status(sdoc)
        return 0
    if args.experiment_command == "plan":
        doc: Any = plan_doc(_experiments(args.env, args.stacks_dir, args.id), args.baseline_ctr, now)
        if args.json:
            print(json.dumps(doc, indent=2))
        elif not doc:
            print(f"{args.env} declares no experiment (the global stack's `experiments`)")
        else:
            _print_plan(doc)
        return 0
    (experiment,) = _experiments(args.env, args.stacks_dir, args.id)
    doc = report_doc(experiment, args.events, now)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_report(doc)
    return 0


def _print_plan(doc: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from drills.render import console

    c = console()
    for e in doc:
        t = Table(
            title=f"experiment {e['id']} ({'running' if e['running'] else 'not running'}: {e['start']} .. {e['end']})"
        )
        for col in ("cell", "version", "share of users"):
            t.add_column(col)
        versions = {a["name"]: a["version"] + (" (control)" if a["control"] else "") for a in e["arms"]}
        for cell, share in e["split"].items():
            t.add_row(cell, versions.get(cell, "control's version, not compared"), f"{share:.1%}")
        c.print(t)
        s = e["sized_for"]
        print(
            f"{e['users_per_arm']:,} users per arm to detect a {s['relative_mde']:.0%} relative lift of "
            f"{e['primary_metric']} from a {s['baseline_ctr']:.1%} baseline (alpha {s['alpha_per_comparison']:g} per "
            f"comparison, power {s['power']:g}); guardrails: {e['guardrails'] or 'none'}"
        )


def _print_report(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from drills.render import console

    t = Table(title=f"experiment {doc['experiment']}")
    for col in ("cell", "users", "impressions", "clicks", "CTR", "NDCG@10"):
        t.add_column(col)
    for cell, a in doc["arms"].items():
        ctr = "n/a" if a["ctr"] is None else f"{a['ctr']:.4f}"
        ndcg = "n/a" if a["ndcg10"] is None else f"{a['ndcg10']:.4f}"
        t.add_row(cell, str(a["users"]), str(a["impressions"]), str(a["clicks"]), ctr, ndcg)
    console().print(t)
    print(f"sample ratio: {'ok' if doc['srm_ok'] else 'MISMATCH'} (p {doc['srm']['p_value']:.3g})")
    print(f"decision: {doc['decision']}{'' if doc['final'] else ' (not final)'}")
    for r in doc["reasons"]:
        print(f"  {r}")
    sys.stdout.flush()


def _print_status(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from drills.render import console

    if doc["state"] == "running":
        when = f"running since {doc['start']}, until {doc['end']} ({_duration(doc['seconds_left'])} left)"
    elif doc["state"] == "not started":
        when = f"not started: starts {doc['start']} (in {_duration(doc['starts_in_seconds'])}), ends {doc['end']}"
    else:
        when = f"ended at {doc['end']} (ran from {doc['start']})"
    t = Table(title=f"experiment {doc['experiment']} in {doc['env']}: {when}")
    for col in ("cell", "version", "share of users", f"{doc['header']} value"):
        t.add_column(col)
    for c in doc["cells"]:
        version = (
            c["version"] + (" (control)" if c["control"] else "") + (" (control's)" if c["cell"] == HOLDOUT else "")
        )
        t.add_row(c["cell"], version, f"{c['share']:.1%}", c["header"])
    console().print(t)
    if doc["served_until_up_after_end"]:
        print(f"served by the regional stacks brought up since its declaration: {', '.join(doc['regional_stacks'])}")
    else:
        print(f"ended: the first pulumi up of {', '.join(doc['regional_stacks'])} after its end retires its arms")
    if doc["report"] is not None:
        _print_report(doc["report"])
    sys.stdout.flush()
