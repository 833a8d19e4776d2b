"""`python -m drills readiness --env ENV`: evaluate the live fleet, print each check, export the gauges.

Exit 0 when every check passes, 1 naming each failing check, 2 on a usage or config error (argparse, ConfigError).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from drills.readiness.checks import CheckResult, Declared, declared_from, evaluate, prometheus_text
from drills.readiness.view import AwsFleetView, FleetView, load_snapshot


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="environment (a global stack <env>-global exists), e.g. prod")
    p.add_argument("--json", action="store_true", help='print {"env", "ready", "checks": [{name, ok, detail}]}')
    p.add_argument(
        "--prom-file",
        help="write the gauges reco_readiness{check,env} (1 ready, 0 not) in Prometheus text format to this file "
        "(atomically, for node_exporter's textfile collector); '-' for stdout",
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        help="read the live fleet from this FleetSnapshot JSON instead of AWS (a rehearsal or a test writes one)",
    )
    p.add_argument(
        "--max-backlog", type=int, default=0, help="objects pending replication tolerated per region (default 0)"
    )
    p.add_argument("--profile", help="AWS profile (default: the default credential chain)")
    p.add_argument("--org", help="Pulumi organisation of the stacks (default: the backend's)")


def _write_prom(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text)
        return
    path = Path(target)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a scraper never reads a half-written file


def report(env: str, results: list[CheckResult]) -> str:
    lines = [f"readiness of {env}:"]
    lines += [f"  {'ok  ' if r.ok else 'FAIL'} {r.name}: {r.detail}" for r in results]
    failing = [r.name for r in results if not r.ok]
    lines.append("READY" if not failing else f"NOT READY: {', '.join(failing)}")
    return "\n".join(lines)


def declared_for(fleet: Any, max_backlog: int = 0) -> Declared:
    """What readiness compares the live fleet with: the stack files, and the measured throughput of the newest model
    manifest under artifacts/ where there is one (raises model_build's ManifestError on an invalid one)."""
    from infra.invariants import read_manifest

    facts = read_manifest(None)
    return declared_from(fleet, facts.qps_per_gpu if facts else None, max_backlog)


def run(args: argparse.Namespace) -> int:
    from infra.config import ROOT, load_fleet
    from model_build.manifest import ManifestError

    fleet = load_fleet(args.env, args.stacks_dir)
    try:
        declared = declared_for(fleet, args.max_backlog)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    view: FleetView
    if args.snapshot:
        view = _SnapshotFile(args.snapshot)
    else:
        view = AwsFleetView(args.env, args.stacks_dir, ROOT, args.profile, args.org)
    try:
        live = view.snapshot()
    except Exception as e:
        # AWS, Pulumi or the snapshot file could not be read: no verdict rather than a guess (exit 2).
        if type(e).__module__.split(".")[0] not in ("botocore", "boto3", "pulumi", "infra", "json", "requests"):
            raise
        print(f"error: could not read the live fleet of {args.env}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    results = evaluate(live, declared)
    if args.prom_file:
        _write_prom(args.prom_file, prometheus_text(results, args.env))
    if args.json:
        doc = {
            "env": args.env,
            "ready": all(r.ok for r in results),
            "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results],
        }
        print(json.dumps(doc, indent=2))
    elif args.prom_file != "-":
        print(report(args.env, results))
    failing = [r.name for r in results if not r.ok]
    if failing:
        print(f"not ready: {', '.join(failing)}", file=sys.stderr)
    return 0 if not failing else 1


class _SnapshotFile:
    def __init__(self, path: Path):
        self.path = path

    def snapshot(self):
        return load_snapshot(self.path)
