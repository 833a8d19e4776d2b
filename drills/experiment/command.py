"""`python -m drills experiment plan|report`: an A/B experiment as the global stack declares it, and its verdict from an
impression/click log.

  plan    the declared experiments (or one, `--id`): arms, versions, the split each cell aims at (holdout included),
          the window and whether it is running now, and the users per arm a fixed-horizon test needs to see the
          declared minimum detectable effect at the declared alpha (split over the candidates) and power, from a
          baseline CTR (`--baseline-ctr`). Pure: reads the stack files only.
  report  one experiment's figures from an events log (JSONL, drills/experiment/events.py): per cell users,
          impressions, clicks, CTR and NDCG@10 with intervals, the sample-ratio-mismatch check, every comparison's
          lift and always-valid p-value, and the decision (drills/experiment/decision.py). `--json` prints
          {"experiment", "arms": {arm: {users, impressions, clicks, ctr, ndcg10}}, "srm_ok", "decision", ...}.

Exit codes: 0, 2 on a usage or config error (an unknown experiment id, a stack that does not validate, an unreadable
log). Starting and stopping an experiment is a change of its window in the global stack (`start`, `end`) and a
`pulumi up`, reviewed like any config change.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.errors import DrillError
from infra.experiments import Experiment, expected_split


class ExperimentError(DrillError):
    exit_code = 2


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment_command", required=True, metavar="plan|report")
    plan = sub.add_parser("plan", help="the declared experiments: split, window, users per arm needed")
    report = sub.add_parser(
        "report", help="one experiment's per-arm figures, SRM check and decision from an events log"
    )
    for q in (plan, report):
        q.add_argument("--env", required=True, help="environment (a global stack <env>-global exists), e.g. prod")
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


def _experiments(env: str, stacks_dir: Path, eid: str | None) -> tuple[Experiment, ...]:
    from infra.config import load_fleet

    declared = load_fleet(env, stacks_dir).glob.experiments
    if eid is None:
        return declared
    found = tuple(e for e in declared if e.id == eid)
    if not found:
        known = ", ".join(e.id for e in declared) or "none"
        raise ExperimentError(
            f"{env} declares no experiment {eid!r} (declared: {known}); see the global stack's experiments"
        )
    return found


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
    from drills.experiment.decision import decide
    from drills.experiment.events import aggregate, read_events

    try:
        totals = aggregate(read_events(events), experiment.id)
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read the events log {events}: {e}") from None
    d = decide(experiment, totals, now)

    def num(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 6)

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
                "control": num(c.control.value),
                "candidate": num(c.candidate.value),
                "lift": num(c.lift.value),
                "lift_ci": [num(c.lift.lo), num(c.lift.hi)],
                "always_valid_p": c.sequential.p_value,
            }
            for c in d.comparisons
        ],
    }


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
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
