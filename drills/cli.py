"""`python -m drills`: plan, run, resume, rollback, resolve, status, report.

Subcommands are the table COMMANDS at the end of this file; a command defined in another module (release,
rehearse) is imported only when it runs or its help is shown, so `drills run` never loads the rehearsal's
simulators. Plugins named in $DRILLS_PLUGINS may add commands with `register_command`. Exit codes: 0 done,
1 the drill aborted (and was rolled back) or failed its objectives, 2 usage or config error, 3 refused by a
guardrail (nothing changed), 4 rollback failed (state recorded in the journal).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drills.errors import DrillError, GuardrailError
from infra.config import ROOT, STACKS_DIR

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: `configure` adds its arguments, `run(args)` returns the exit code; `load()` gives both. Every
    command gets the common options (--state-dir, --stacks-dir) too."""

    name: str
    help: str
    load: Callable[[], tuple[Configure, Run]]


def _in(module: str, configure: str, run: str) -> Callable[[], tuple[Configure, Run]]:
    def load() -> tuple[Configure, Run]:
        m = importlib.import_module(module)
        return getattr(m, configure), getattr(m, run)

    return load


def register_command(name: str, help: str, configure: Configure, run: Run) -> None:
    """For plugins named in $DRILLS_PLUGINS: add a subcommand."""
    if name in COMMANDS:
        raise ValueError(f"command {name!r} is already defined")
    COMMANDS[name] = Command(name, help, lambda: (configure, run))


def default_state_dir() -> Path:
    return Path(os.environ.get("DRILLS_STATE_DIR") or ROOT / ".drills")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="journals, locks and reports (default: $DRILLS_STATE_DIR or .drills/ at the project root)",
    )
    p.add_argument(
        "--stacks-dir", type=Path, default=STACKS_DIR, help="directory of Pulumi.<stack>.yaml files (default: stacks/)"
    )


def _scenario_args(p: argparse.ArgumentParser) -> None:
    from drills.scenarios import SCENARIOS

    p.add_argument("scenario", help="one of: " + ", ".join(sorted(SCENARIOS)))
    p.add_argument("--env", required=True, help="environment (a global stack <env>-global exists), e.g. prod, staging")
    p.add_argument(
        "--region",
        help="the region the scenario acts on (evacuate-region, region-outage: required; total-outage: not taken)",
    )
    p.add_argument("--plan-file", help="drill plan YAML: window, roles, communication, parameters (see drills/plans/)")
    p.add_argument(
        "--manifest",
        help="model manifest.json for the engine and throughput checks (default: $DRILLS_MANIFEST or the newest under "
        "artifacts/)",
    )
    p.add_argument("--steps", type=int, help="weight-shift steps (default 4)")
    p.add_argument("--hold", type=float, dest="hold_seconds", help="hold seconds at the drilled state (default 300)")
    p.add_argument(
        "--fault",
        metavar="KIND[=VALUE]",
        help="region-outage: triton-down (default) or hc-invert; region-brownout (required): errors=F, latency=MS, "
        "loss=F, reset=F, blackhole, bandwidth=B, unload, slow-model=MS, replication-partition (drills/brownout.py; "
        "the AWS backend offers triton-down and hc-invert only: brownouts run in the rehearsal or beside an FIS "
        "experiment)",
    )
    p.add_argument(
        "--allow-total-outage",
        metavar="ENV",
        help="total-outage: the environment's name, typed again, to allow a drill that takes every region down at "
        "once (refused without it; in production a game day with the shop's fallback in place)",
    )


def _plan(args: argparse.Namespace):
    from drills.scenarios import build_plan

    return build_plan(
        args.scenario,
        args.env,
        args.region,
        plan_file=args.plan_file,
        stacks_dir=args.stacks_dir,
        manifest=args.manifest,
        overrides={
            "steps": args.steps,
            "hold_seconds": args.hold_seconds,
            "fault": args.fault,
            "allow_total_outage": args.allow_total_outage,
        },
    )


# ---------------------------------------------------------------- plan
def _configure_plan(p: argparse.ArgumentParser) -> None:
    _scenario_args(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def _run_plan(args: argparse.Namespace) -> int:
    plan = _plan(args)
    if args.json:
        print(plan.model_dump_json(indent=2))
    else:
        from drills.render import print_plan

        print_plan(plan)
    return 0


# ---------------------------------------------------------------- run
def _backend_options(pairs: list[str] | None) -> dict:
    out = {}
    for kv in pairs or []:
        if "=" not in kv:
            raise GuardrailError("usage", f"--backend-opt takes KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def execution_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that changes an environment through the engine (run, release, restore)."""
    p.add_argument("--execute", action="store_true", help="really do it (default: a dry run that changes nothing)")
    p.add_argument("--confirm", metavar="ENV", help="with --execute: the environment's name, typed again")
    p.add_argument(
        "--backend",
        default="aws",
        help="adapters to run through: aws (default), rehearsal, rehearsal-release, "
        "or one a $DRILLS_PLUGINS module adds",
    )
    p.add_argument(
        "--backend-opt",
        action="append",
        metavar="KEY=VALUE",
        help="backend option (repeatable); recorded in the journal for rollback",
    )
    p.add_argument("--ignore-window", action="store_true", help="run outside the plan file's window")
    p.add_argument("--report-dir", type=Path, help="where to write the reports (default: the drill's state directory)")


def _configure_run(p: argparse.ArgumentParser) -> None:
    _scenario_args(p)
    execution_args(p)


def _check_window(plan, ignore: bool) -> None:
    if not plan.window or ignore:
        return
    now = datetime.now(UTC)
    start, end = (datetime.fromisoformat(plan.window[k]) for k in ("start", "end"))
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if not start <= now <= end:
        raise GuardrailError(
            "window",
            f"now ({now:%Y-%m-%d %H:%M} UTC) is outside the drill window {plan.window['start']} .. "
            f"{plan.window['end']}; pass --ignore-window to override",
        )


def execute_plan(plan, args: argparse.Namespace, reporters: tuple[Callable[..., list[Path]], ...] = ()) -> int:
    """A dry run (the plan, every change it would make, the lock; `--json`: the plan as JSON) unless
    `--execute --confirm ENV`; then the engine runs it and the drill report plus `reporters`' are written."""
    from drills.lock import lock_status
    from drills.render import console, print_plan
    from drills.report import write_report

    state = args.state_dir or default_state_dir()
    c = console()
    if not args.execute:
        if getattr(args, "json", False):
            print(plan.model_dump_json(indent=2))
            return 0
        print_plan(plan, c)
        c.print("[bold]DRY RUN[/bold]: nothing was changed. It would make these changes:")
        for line in plan.mutations():
            c.print(f"  - {line}")
        held = lock_status(state, plan.env)
        c.print(
            f"lock for {plan.env}: " + (f"held by drill {held['drill_id']} (pid {held['pid']})" if held else "free")
        )
        c.print(f"to do it: add --execute --confirm {plan.env}")
        return 0
    if args.confirm != plan.env:
        raise GuardrailError(
            "confirm",
            f"--execute changes {plan.env}: confirm with --confirm {plan.env}"
            + (f" (got {args.confirm!r})" if args.confirm else ""),
        )
    _check_window(plan, args.ignore_window)
    from drills.engine import start_drill

    outcome = start_drill(
        plan, state, backend_name=args.backend, backend_options=_backend_options(args.backend_opt), log=c.print
    )
    paths = [p for w in (write_report, *reporters) for p in w(outcome.drill_id, state, out=args.report_dir)]
    c.print(
        f"{plan.scenario} {outcome.drill_id}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else "")
    )
    c.print("reports: " + ", ".join(str(p) for p in paths))
    return outcome.exit_code


def _run_run(args: argparse.Namespace) -> int:
    return execute_plan(_plan(args), args)


# ---------------------------------------------------------------- resume / rollback
def _configure_drill_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("drill_id", help="the drill's id (see `drills status`)")
    p.add_argument(
        "--backend-opt", action="append", metavar="KEY=VALUE", help="override a backend option recorded in the journal"
    )


def _configure_resume(p: argparse.ArgumentParser) -> None:
    _configure_drill_id(p)
    p.add_argument("--confirm", metavar="ENV", required=True, help="the drill's environment, typed again")


def _run_resume(args: argparse.Namespace) -> int:
    from drills.engine import resume_drill
    from drills.render import console
    from drills.report import write_report

    state = args.state_dir or default_state_dir()
    c = console()
    outcome = resume_drill(
        args.drill_id, state, confirm=args.confirm, options_override=_backend_options(args.backend_opt), log=c.print
    )
    write_report(outcome.drill_id, state)
    c.print(f"drill {outcome.drill_id}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""))
    return outcome.exit_code


def _run_rollback(args: argparse.Namespace) -> int:
    from drills.engine import rollback_drill
    from drills.render import console
    from drills.report import write_report

    state = args.state_dir or default_state_dir()
    c = console()
    outcome = rollback_drill(args.drill_id, state, options_override=_backend_options(args.backend_opt), log=c.print)
    write_report(outcome.drill_id, state)
    c.print(f"drill {outcome.drill_id}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""))
    return outcome.exit_code


def _configure_resolve(p: argparse.ArgumentParser) -> None:
    p.add_argument("drill_id", help="the drill whose rollback failed (see `drills status`)")
    p.add_argument("--confirm", metavar="ENV", required=True, help="the drill's environment, typed again")
    p.add_argument(
        "--reason",
        required=True,
        help="what you put right by hand and how you checked it (journaled with the drill)",
    )
    p.add_argument("--operator", help="who resolved it (journaled; default: your login name)")


def _run_resolve(args: argparse.Namespace) -> int:
    from drills.engine import resolve_drill
    from drills.render import console
    from drills.report import write_report

    state = args.state_dir or default_state_dir()
    outcome = resolve_drill(args.drill_id, state, confirm=args.confirm, reason=args.reason, operator=args.operator)
    write_report(outcome.drill_id, state)
    console().print(f"drill {outcome.drill_id}: {outcome.status} ({outcome.reason})")
    return outcome.exit_code


# ---------------------------------------------------------------- status / report
def _configure_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="only this environment")
    p.add_argument("--json", action="store_true")


def _run_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from drills.journal import list_drills
    from drills.lock import lock_status
    from drills.render import console

    state = args.state_dir or default_state_dir()
    drills = [d for d in list_drills(state) if not args.env or d["env"] == args.env]
    envs = sorted({d["env"] for d in drills} | ({args.env} if args.env else set()))
    locks = {e: lock_status(state, e) for e in envs}
    if args.json:
        print(json.dumps({"locks": locks, "drills": drills}, indent=2))
        return 0
    c = console()
    for e, held in locks.items():
        if held:
            alive = (
                "running"
                if held.get("alive")
                else "ROLLBACK FAILED (roll it back again, or fix by hand and `drills resolve` it)"
                if held.get("state") == "rollback-failed"
                else "STALE (process gone: resume or roll back the drill)"
            )
            c.print(f"{e}: locked by {held['drill_id']} pid {held['pid']} on {held.get('host')}: {alive}")
    t = Table(title=f"Drills in {state}")
    for col in ("drill id", "env", "scenario", "region", "started (UTC)", "status", "last step"):
        t.add_column(col)
    for d in drills:
        t.add_row(
            d["drill_id"],
            d["env"],
            d["scenario"],
            d.get("region") or "",
            d.get("started_iso", ""),
            d["status"],
            d.get("last_step") or "",
        )
    c.print(t)
    if not drills:
        c.print("no drills recorded")
    return 0


def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("drill_id")
    p.add_argument("--format", choices=("md", "json", "both"), default="both")
    p.add_argument("--out", type=Path, help="directory to write to (default: the drill's state directory)")
    p.add_argument("--print", action="store_true", help="also print the Markdown")


def _run_report(args: argparse.Namespace) -> int:
    from drills.report import write_report

    state = args.state_dir or default_state_dir()
    fmts = ("md", "json") if args.format == "both" else (args.format,)
    paths = write_report(args.drill_id, state, out=args.out, formats=fmts)
    for p in paths:
        print(p)
        if args.print and p.suffix == ".md":
            print(p.read_text())
    return 0


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "plan",
            "print a drill's plan (objectives, steps, weights, capacity checks, aborts, rollback); no cloud calls",
            lambda: (_configure_plan, _run_plan),
        ),
        Command("run", "run a drill: a dry run unless --execute --confirm ENV", lambda: (_configure_run, _run_run)),
        Command("resume", "continue a crashed drill from its journal", lambda: (_configure_resume, _run_resume)),
        Command(
            "rollback",
            "restore the pre-drill state recorded in a drill's journal (after a crash)",
            lambda: (_configure_drill_id, _run_rollback),
        ),
        Command(
            "resolve",
            "after a failed rollback, once the environment was put right by hand: journal who and why, end the drill "
            "as resolved and release the environment's lock (refused unless the drill's rollback failed)",
            lambda: (_configure_resolve, _run_resolve),
        ),
        Command("status", "running and past drills, locks", lambda: (_configure_status, _run_status)),
        Command(
            "report",
            "write a drill's report (Markdown and JSON) from its journal",
            lambda: (_configure_report, _run_report),
        ),
        Command(
            "release",
            "roll a published model version through the fleet: canary, region by region, promotion; "
            "automatic rollback at the first failed gate (dry run unless --execute --confirm ENV)",
            _in("drills.release.commands", "configure_release", "run_release"),
        ),
        Command(
            "restore",
            "bring a region back to its last-known-good model version and verify exact hashes "
            "(dry run unless --execute --confirm ENV)",
            _in("drills.release.commands", "configure_restore", "run_restore"),
        ),
        Command(
            "release-report",
            "write a release's summary (gates with figures, time to rollback, hashes, RPO) from its journal",
            _in("drills.release.commands", "configure_report", "run_report"),
        ),
        Command(
            "readiness",
            "evaluate the live fleet: guaranteed capacity for N+1, engines and TensorRT, served digest parity, "
            "replication, config and health-check drift (exit 0 ready, 1 naming each failing check)",
            _in("drills.readiness.command", "configure", "run"),
        ),
        Command(
            "experiment",
            "A/B experiments of ranker versions: `plan` (declared split, window, users per arm needed), `report` "
            "(per-arm CTR and NDCG@10, sample-ratio check, decision from an impression/click log), `start`/`stop` "
            "(the window moved to now in the global stack), `status`",
            _in("drills.experiment.command", "configure", "run"),
        ),
        Command(
            "rehearse",
            "run a drill end to end on this machine (Triton per region, DNS failover, client traffic) and report it",
            _in("drills.rehearsal.command", "configure", "run"),
        ),
        Command(
            "rehearse-release",
            "run model releases (good promoted, bad rolled back) and the sub-region drills "
            "(artifact-corruption, node-loss) on this machine against real Tritons, and report them",
            _in("drills.rehearsal.release_run", "configure", "run_command"),
        ),
    )
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, the other commands are listed but not loaded (their modules are not imported)."""
    ap = argparse.ArgumentParser(
        prog="python -m drills", description="Disaster-recovery drills for reco-dr: plan, execute, summarise."
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if only is None or cmd.name == only:
            configure, run = cmd.load()
            configure(p)
            p.set_defaults(_run=run)
        _common(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    from drills.plugins import load_plugins

    load_plugins()
    argv = sys.argv[1:] if argv is None else argv
    named = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(named).parse_args(argv)
    from infra.config import ConfigError

    try:
        return args._run(args)
    except DrillError as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except ConfigError as e:  # a stack file a command reads does not validate: one line, as infra.plan prints it
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
