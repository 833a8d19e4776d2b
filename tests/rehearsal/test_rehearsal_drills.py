"""The drills engine against the rehearsal backend: scenarios through `start_drill` on one live world (the
region-outage's RTO, traffic and no-loss checks are in test_rehearse_cli.py, on the command's own report).

Reduced scale, stated: staging's two regions, switched to weighted routing 60/40 in a stack copy (so an
evacuation runs too and its rollback has weights to restore), every modelled timing at 1/30 of its configured
value (health-check interval 10 s -> 0.33 s, TTL 30 s -> 1 s, propagation 10 s -> 0.33 s), the failure threshold
as configured (3). Real model_build output (a small training config), real Tritons, real DNS queries, clients
in their own process. One world for the module; each drill restores it, and the last check is that the world's
processes are all gone after teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from drills.errors import GuardrailError
from drills.journal import read_entries
from drills.rehearsal import rehearse as R
from drills.rehearsal.report import rpo, switches
from drills.rehearsal.runner import Session
from infra.config import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PRIMARY, SECONDARY = "us-east-1", "us-west-2"
WEIGHTS = {PRIMARY: 60, SECONDARY: 40}
SCALE = 1 / 30
# Drill parameters in drill seconds: short holds and windows (1 wall second of SLO window = 30 drill seconds).
PARAMS = {"slo_window_seconds": 30, "min_samples": 15, "probe_clients": 6}


def weighted_staging(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(f, dst / f.name)
    p = dst / "Pulumi.staging-global.yaml"
    doc = yaml.safe_load(p.read_text())
    doc["config"]["reco-dr:routing"] = {"mode": "weighted", "regions": {r: {"weight": w} for r, w in WEIGHTS.items()}}
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


@pytest.fixture(scope="module")
def rehearsal(small_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("rehearsal")
    opts = R.Options(
        env="staging",
        scenario="region-outage",
        out=base / "run",
        scale=SCALE,
        rate=40,
        clients=16,
        hold=15,
        model_dir=small_model,
        stacks_dir=weighted_staging(base / "stacks"),
        params=PARAMS,
        seed=3,
    )
    lines: list[str] = []
    prep = R.prepare(opts, lines.append)
    session = Session(lambda: R.world_for(prep, lines.append), lines.append).start()
    world = session.live.world
    try:
        yield prep, session, lines
    finally:
        session.close()
    assert not session.leftovers, "processes left behind"
    assert all(not t.shm_regions() for t in world.serving.servers().values())


def test_artifact_replication_measures_rpo_and_cleans_up(rehearsal):
    prep, session, log = rehearsal
    live = session.live
    plan = R.plan_for(prep, "artifact-replication")
    run = R.drill(session, prep, log.append, plan)
    assert run.outcome.status == "completed", run.outcome.reason
    r = rpo(plan, run.facts, SCALE)
    assert r is not None
    lag = prep.scale.replication_lag
    lags = {(c["source"], c["destination"]): c["lag_wall_s"] for c in r["canaries"]}
    assert set(lags) == {(PRIMARY, SECONDARY), (SECONDARY, PRIMARY)}
    assert all(lag <= v < lag + 1.0 for v in lags.values()), lags  # lag + discovery poll
    assert r["verdict"] == "PASS"
    skew = next(e for e in run.entries if e["type"] == "skew")
    assert skew["skew"] is False and skew["versions"] == ["2026.11.0"]
    # The canaries are gone from every bucket (all versions), as the plan's cleanup step says.
    s3 = live.world.moto.client("s3")
    for c in run.facts["canaries"]:
        for bucket in live.world.buckets.values():
            assert not s3.list_object_versions(Bucket=bucket, Prefix=c["key"]).get("Versions")


def test_interrupted_evacuation_rolls_back_to_the_pre_drill_weights(rehearsal):
    """Evacuate-region goes through config + `pulumi up` (the offline plan re-applied to moto); SIGINT as the second
    shift begins (its stack change in progress: the signal waits for `up`, which a cut-short program run would
    deadlock) makes the engine roll back: config, records and DNS answers are the pre-drill ones again."""
    prep, session, log = rehearsal
    live = session.live
    plan = R.plan_for(prep, "evacuate-region", PRIMARY, {"steps": 2})
    assert [s.name for s in plan.steps if s.name.startswith("shift")] == ["shift-1", "shift-2"]
    world = live.world
    assert world.route53.get_weights() == WEIGHTS
    stop = threading.Event()

    def interrupt_after_first_shift() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            for j in (prep.state_dir / "drills").glob("staging-evacuate-region-*/journal.jsonl"):
                if any(e["type"] == "config_set" for e in read_entries(j)[-2:]) and any(
                    e["type"] == "step_begin" and e["name"] == "shift-2" for e in read_entries(j)
                ):
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the engine's handler rolls back
                    return
            time.sleep(0.05)

    t = threading.Thread(target=interrupt_after_first_shift, daemon=True)
    t.start()
    try:
        run = R.drill(session, prep, log.append, plan)
    finally:
        stop.set()
        t.join()
    assert run.outcome.status == "aborted" and "signal 2" in run.outcome.reason
    done = next(e for e in run.entries if e["type"] == "rollback_done")
    assert done["verified"] and not done["mismatches"]
    # The first shift really happened through the stack: config set, the program re-applied, records changed.
    sw = switches(plan, run.entries, run.records, run.clock, SCALE)
    assert sw[0]["step"] == "shift-1" and sw[0]["values"] == {
        f"routing.regions.{PRIMARY}.weight": 30,
        f"routing.regions.{SECONDARY}.weight": 70,
    }
    assert any(e["type"] == "stack_up" and e.get("by") == "rollback" for e in run.entries)
    # Back to the pre-drill weights everywhere: the stack copy, the records in moto, the DNS answers.
    assert run.facts
    stacks = live.backends[-1].stacks
    assert {r: stacks.get_config(plan.global_stack, f"routing.regions.{r}.weight") for r in WEIGHTS} == WEIGHTS
    assert world.route53.get_weights() == WEIGHTS
    deadline = time.monotonic() + 5
    while world.route53.routing() != pytest.approx({PRIMARY: 0.6, SECONDARY: 0.4}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.route53.routing() == pytest.approx({PRIMARY: 0.6, SECONDARY: 0.4})
    # A planned shift and its rollback lose no request.
    assert run.records and not [r for r in run.records if not r.ok]


def test_scenario_the_env_cannot_run_is_refused_before_anything_changes(rehearsal):
    prep, _live, _log = rehearsal
    with pytest.raises(GuardrailError, match="stack-flip needs routing mode failover"):
        R.plan_for(prep, "stack-flip")


def test_a_survivor_over_its_capacity_scales_up_and_each_part_of_its_new_pod_is_timed(rehearsal):
    """`--capacity-model declared` (last in the module: it adds a pod to the shared world). us-east-1 fails; us-west-2
    takes all of the load, over its HPA target on its one a10g node, and no reservation covers a second: the modelled
    EC2 capacity wait, boot and pull, then a real pod (fetched, verified, loaded and warmed up as declared) whose
    first inference is good. The drill's measure-startup step reads the same pod as the AWS backend reads Kubernetes."""
    import dataclasses

    from drills.adapters.pod_startup import PARTS
    from drills.rehearsal.capacity import REAL

    prep, session, log = rehearsal
    world = session.live.world
    cap = dataclasses.replace(prep, opts=dataclasses.replace(prep.opts, capacity_model="declared"))
    plan = R.plan_for(prep, "region-outage", PRIMARY, params={"hold_seconds": 1300})
    run = R.drill(session, cap, log.append, plan)
    assert run.outcome.status == "completed", run.outcome.reason
    ups = run.facts["capacity"]["scale_ups"]
    served = [u for u in ups if u["region"] == SECONDARY and u["serving_wall"] is not None]
    assert served, (ups, run.facts["capacity"]["windows"])
    u = served[0]
    assert u["pools"] == {"a10g": 1} and u["reserved"] is False and u["error"] is None
    assert u["parts"]["EC2 capacity"] == 600 and u["parts"]["node boot"] == 150 and u["parts"]["image pull"] == 180
    assert all(0 < u["parts"][k] < 30 for k in REAL), u["parts"]  # real, on this machine
    c = u["capacity_part_s"]
    assert c["measured"] == c["without_reservations"] == pytest.approx(c["with_reservations"] + 600)
    # The pod serves: two stable targets now, and the load balancer admits everything again after the drill.
    assert world.serving.ready(SECONDARY) == (2, 2)
    assert world.serving.capacity[SECONDARY] is None
    startups = [e for e in run.entries if e["type"] == "pod_startup" and e["region"] == SECONDARY]
    pods = startups[0]["pods"]
    assert len(pods) == 1 and list(pods[0]["parts"]) == list(PARTS) and pods[0]["total"] > 930
