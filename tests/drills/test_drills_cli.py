"""`python -m drills`: plan output, dry run, confirmation, refusals, and a drill process killed mid-shift then
rolled back by `drills rollback` in another process."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from drills.cli import COMMANDS, build_parser, main
from tests.drills.drills_support import ROOT, copy_stacks


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_plan_prints_weights_and_capacity_checks(capsys):
    rc, out, _ = run_cli(capsys, "plan", "evacuate-region", "--env", "prod", "--region", "us-east-1")
    assert rc == 0
    for text in (
        "us-east-1 0 / us-west-2 50 / eu-west-1 50",
        "GPUs required",
        "Capacity check per step",
        "shift-4",
        "Abort conditions",
        "Rollback",
        "pre-scale",
        "predicted RTO",
    ):
        assert text in out, text


def test_plan_json(capsys):
    rc, out, _ = run_cli(capsys, "plan", "region-outage", "--env", "staging", "--region", "us-east-1", "--json")
    plan = json.loads(out)
    assert rc == 0 and plan["scenario"] == "region-outage" and plan["mode"] == "failover"


def test_refusals_exit_3_with_a_reason(capsys, tmp_path):
    stacks = copy_stacks(
        tmp_path / "s",
        {
            "prod-global": {
                "routing": {
                    "mode": "weighted",
                    "regions": {"us-east-1": {"weight": 0}, "us-west-2": {"weight": 100}, "eu-west-1": {"weight": 0}},
                }
            }
        },
    )
    rc, _, err = run_cli(
        capsys, "plan", "evacuate-region", "--env", "prod", "--region", "us-west-2", "--stacks-dir", str(stacks)
    )
    assert rc == 3 and "REFUSED (last-weighted-region)" in err and "only region of prod with weight > 0" in err
    rc, _, err = run_cli(capsys, "plan", "evacuate-region", "--env", "nope", "--region", "us-east-1")
    assert rc == 3 and "unknown environment 'nope'" in err
    rc, _, err = run_cli(capsys, "run", "stack-flip", "--env", "prod")
    assert rc == 3 and "failover" in err


def test_run_is_a_dry_run_unless_executed_and_confirmed(capsys, tmp_path):
    stacks = copy_stacks(tmp_path / "s")
    before = {p.name: p.read_bytes() for p in stacks.iterdir()}
    state = tmp_path / "state"
    base = [
        "run",
        "evacuate-region",
        "--env",
        "prod",
        "--region",
        "us-east-1",
        "--stacks-dir",
        str(stacks),
        "--state-dir",
        str(state),
    ]
    rc, out, _ = run_cli(capsys, *base)
    assert rc == 0 and "DRY RUN" in out and "nothing was changed" in out and "routing.regions.us-east-1.weight=0" in out
    rc, _, err = run_cli(capsys, *base, "--execute")
    assert rc == 3 and "--confirm prod" in err
    rc, _, err = run_cli(capsys, *base, "--execute", "--confirm", "staging")
    assert rc == 3 and "got 'staging'" in err
    assert {p.name: p.read_bytes() for p in stacks.iterdir()} == before
    assert not state.exists()  # no lock, no journal


def test_every_command_has_help(capsys):
    assert {"plan", "run", "resume", "rollback", "status", "report"} <= set(COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([name, "--help"])
        assert e.value.code == 0
    assert "--confirm" in capsys.readouterr().out


def test_register_command_hook(capsys):
    from drills.cli import register_command

    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="x")

    register_command("hello-test", "a plugin's subcommand", configure, lambda a: print(f"hi {a.name}") or 0)
    try:
        rc, out, _ = run_cli(capsys, "hello-test", "--name", "rehearsal")
        assert rc == 0 and out.strip() == "hi rehearsal"
    finally:
        COMMANDS.pop("hello-test")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_PROFILE")}
    env.update(
        PYTHONPATH=str(ROOT),
        DRILLS_PLUGINS="tests.drills.drills_test_plugin",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def _journal(state: Path) -> tuple[str, list[dict]] | None:
    d = state / "drills"
    if not d.exists() or not any(d.iterdir()):
        return None
    drill = next(d.iterdir())
    lines = (drill / "journal.jsonl").read_text().splitlines()
    return drill.name, [json.loads(x) for x in lines if x.strip().endswith("}")]


def test_drill_killed_mid_shift_is_rolled_back_by_drills_rollback(tmp_path, capsys):
    stacks = copy_stacks(tmp_path / "stacks", {"prod-global": {"ttl": 1}})
    world, state = tmp_path / "world", tmp_path / "state"
    plan_file = tmp_path / "drill.yaml"
    plan_file.write_text(
        yaml.safe_dump(
            {
                "roles": {"lead": "a", "operator": "b", "observer": "c"},
                "parameters": {
                    "steps": 4,
                    "hold_seconds": 60,
                    "settle_seconds": 0.5,
                    "poll_seconds": 0.2,
                    "probe_clients": 4,
                    "slo_window_seconds": 1,
                    "min_samples": 4,
                    "capacity_timeout_seconds": 10,
                },
            }
        )
    )
    pre = yaml.safe_load((stacks / "Pulumi.prod-global.yaml").read_text())
    common = [
        "--env",
        "prod",
        "--region",
        "us-east-1",
        "--stacks-dir",
        str(stacks),
        "--state-dir",
        str(state),
        "--plan-file",
        str(plan_file),
    ]
    opts = ["--backend", "test", "--backend-opt", f"stacks_dir={stacks}", "--backend-opt", f"state_dir={world}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "drills", "run", "evacuate-region", *common, "--execute", "--confirm", "prod", *opts],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            j = _journal(state)
            if j and any(e["type"] == "step_done" and e["name"] == "shift-2" for e in j[1]):
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.05)
        else:
            pytest.fail("the drill never finished shift-2")
        proc.send_signal(signal.SIGKILL)  # no handler can run: the journal is all that is left
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    journal = _journal(state)
    assert journal is not None
    drill_id, entries = journal
    assert entries[-1]["type"] not in ("finished", "rollback_done")
    mid = yaml.safe_load((stacks / "Pulumi.prod-global.yaml").read_text())["config"]["reco-dr:routing"]["regions"]
    assert {r: v["weight"] for r, v in mid.items()} in (
        {"us-east-1": 20, "us-west-2": 40, "eu-west-1": 40},
        {"us-east-1": 10, "us-west-2": 45, "eu-west-1": 45},
    )

    rc, out, _ = run_cli(capsys, "status", "--state-dir", str(state))
    assert rc == 0 and "STALE" in out and drill_id in out
    # a new drill is refused while the crashed one has not been rolled back
    again = subprocess.run(
        [sys.executable, "-m", "drills", "run", "region-outage", *common, "--execute", "--confirm", "prod", *opts],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (
        again.returncode == 3 and "unfinished-drill" in again.stderr and f"drills rollback {drill_id}" in again.stderr
    )

    rb = subprocess.run(
        [sys.executable, "-m", "drills", "rollback", drill_id, "--state-dir", str(state)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert yaml.safe_load((stacks / "Pulumi.prod-global.yaml").read_text()) == pre  # exact pre-drill weights
    journal = _journal(state)
    assert journal is not None
    entries = journal[1]
    assert entries[-1] == {**entries[-1], "type": "finished", "status": "rolled-back"}
    done = next(e for e in entries if e["type"] == "rollback_done")
    assert done["verified"] and any("prod-global" in x for x in done["restored"])
    report = json.loads((state / "drills" / drill_id / f"{drill_id}.report.json").read_text())
    assert report["status"] == "rolled-back" and report["rollback"]["verified"] and report["verdict"] == "FAIL"
    assert "shift-2" in [s["name"] for s in report["steps"]]
    assert not (state / "locks" / "prod.lock").exists()
    rc, out, _ = run_cli(capsys, "report", drill_id, "--state-dir", str(state), "--format", "md", "--print")
    assert rc == 0 and "rolled-back" in out and "## Rollback" in out


def test_drills_plan_loads_no_simulator_and_no_pulumi():
    """`drills plan` imports neither the rehearsal's simulators (moto, the DNS server, Triton) nor the Pulumi SDK:
    the command table loads a command's module only when it runs, and drills read names from infra.names."""
    code = (
        "import sys\n"
        "from drills.cli import main\n"
        "rc = main(['plan', 'evacuate-region', '--env', 'prod', '--region', 'us-east-1'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('moto', 'dnslib', 'pulumi', 'pulumi_aws')\n"
        "             or m.startswith(('drills.rehearsal', 'drills.rehearsal.release_run', 'infra.components')))\n"
        "print('LOADED', bad)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout.splitlines()[-1]
