"""`python -m drills release`, `restore` and `release-report`: the same engine, lock, journal, resume and
rollback as `drills run` (resume with `drills resume ID`, undo with `drills rollback ID`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from drills.cli import default_state_dir, execute_plan, execution_args


def _exec_args(p: argparse.ArgumentParser) -> None:
    execution_args(p)
    p.add_argument(
        "--plan-file",
        help="drill plan YAML: window, roles, communication, parameters (poll_seconds, probe_clients, ...)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON (dry run)")


def _run_plan(args: argparse.Namespace, plan) -> int:
    from drills.release.report import write_release_report

    return execute_plan(plan, args, reporters=(write_release_report,))


# ---------------------------------------------------------------- release
def configure_release(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "version",
        help="the candidate model version, published to every region's bucket (python -m model_build publish)",
    )
    p.add_argument("--env", required=True, help="environment, e.g. prod or staging")
    p.add_argument(
        "--canary-region", help="region of the first canary (default: release.canary_region in the global stack)"
    )
    p.add_argument(
        "--canary-weight",
        type=int,
        help="percent of each region's traffic on the candidate while it is a canary (default: release.canary_weight)",
    )
    p.add_argument(
        "--bake",
        type=float,
        dest="bake_seconds",
        help="seconds of traffic on the canary before its gates judge (default: release.bake_seconds)",
    )
    p.add_argument(
        "--no-shadow",
        dest="shadow",
        action="store_false",
        help="skip the weight-0 step that compares scores before any user request reaches the candidate",
    )
    p.add_argument(
        "--manifest",
        help="the candidate's manifest.json for the offline engine check (default: $DRILLS_MANIFEST or build/)",
    )
    _exec_args(p)


def run_release(args: argparse.Namespace) -> int:
    from drills.release.planning import ReleaseOptions, build_release_plan, release_context

    ctx = release_context(
        args.env,
        args.canary_region,
        plan_file=args.plan_file,
        stacks_dir=args.stacks_dir,
        manifest=args.manifest,
        candidate=args.version,
    )
    plan = build_release_plan(
        ctx,
        ReleaseOptions(
            candidate=args.version,
            canary_region=args.canary_region,
            canary_weight=args.canary_weight,
            bake_seconds=args.bake_seconds,
            shadow=args.shadow,
        ),
    )
    return _run_plan(args, plan)


# ---------------------------------------------------------------- restore
def configure_restore(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="environment, e.g. prod or staging")
    p.add_argument("--region", required=True, help="the region to bring back to its last-known-good model version")
    p.add_argument(
        "--adopt",
        action="store_true",
        help="instead: verify the version the region serves now and record it as its last-known-good pointer (first "
        "use)",
    )
    _exec_args(p)


def run_restore(args: argparse.Namespace) -> int:
    from drills.release.planning import build_restore_plan, release_context

    ctx = release_context(args.env, args.region, plan_file=args.plan_file, stacks_dir=args.stacks_dir)
    plan = build_restore_plan(ctx, args.region, adopt=args.adopt, scenario="restore-adopt" if args.adopt else "restore")
    return _run_plan(args, plan)


# ---------------------------------------------------------------- release-report
def configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("drill_id", help="a release, restore or sub-region drill (see `drills status`)")
    p.add_argument("--out", type=Path, help="directory to write to (default: the drill's state directory)")
    p.add_argument("--print", action="store_true", help="also print the Markdown")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_report(args: argparse.Namespace) -> int:
    from drills.journal import load
    from drills.release.report import release_summary, write_release_report

    state = args.state_dir or default_state_dir()
    paths = write_release_report(args.drill_id, state, out=args.out)
    if args.json:
        print(json.dumps(release_summary(load(state, args.drill_id)), indent=2, default=str))
        return 0
    for p in paths:
        print(p)
        if args.print and p.suffix == ".md":
            print(p.read_text())
    return 0
