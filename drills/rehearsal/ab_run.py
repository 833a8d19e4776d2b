"""The A/B rehearsal: `python -m drills rehearse --env prod --scenario ab-test`.

Two experiments of ranker versions, one after the other, in the release rehearsal's world (moto_server, the Route 53,
DNS and replication models, real CPU Tritons behind the load-balancer model, loopback only):

  ranker-more-signal   control: the stable build; candidate: a build trained on six times the signal
                       (release_models "more"); 10 % holdout; primary metric CTR, guardrail NDCG@10. A region-outage
                       drill runs through it (the drills engine; its plan records the experiment as running), its
                       fault `blackhole`: the region's whole data path, arm pods included, unreachable, as a region
                       outage is on AWS (`triton-down` here would stop only the stable pods). Every user must keep
                       their arm.
  ranker-bad-labels    control: the stable build; candidate: the `--bad-labels` build; guardrails CTR and NDCG@10;
                       declared from the start, started when the first ends.

What runs is what the stacks declare: both experiments are written into the global stack copy's `experiments` (every
version pinned in every region's `model.digests`, so the fleet validates as on AWS); each regional `up` serves the
cells `infra.experiments.arm_routes` gives (an arm Deployment per non-stable version, the header rules in the load
balancer model), the shoppers are the project's client library (drills.client.RankerClient, given the experiment: it
sets `X-Reco-Arm` from the user's hash), and every ranking a region served is logged as an impression with the clicks
a simulated shopper made on it (drills/experiment/shoppers.py: the planted click probabilities). Starting and stopping
an experiment is its window's edit in the global stack copy (drills/experiment/window.py, as `python -m drills
experiment start|stop` does it) and a regional `up` per region, as on AWS.

Every `LOOK_SECONDS` wall seconds the log so far is judged (drills/experiment/decision.py, always-valid: looking often
is allowed); an experiment stops at its first final verdict or after `max_seconds`.

Expected, and the run's exit code 0 only then: the more-signal candidate ships with a positive lift; the bad-labels
candidate is stopped by a guardrail before its time is up; the drill completed; no user's arm changed (across regions
and through the outage); the load balancer served each arm's impressions from that arm's version (its per-version
counts); the sample ratio held in both.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from drills.experiment.window import change_window, stamp, utc_seconds
from drills.rehearsal import rehearse as R
from drills.rehearsal.ab_report import rounded
from drills.rehearsal.release_run import release_backend, release_session, serving_of, wait_replicated
from drills.rehearsal.runner import Session
from infra.config import PROJECT
from model_build.signing import dev_key

SCENARIO = "ab-test"
MORE, BAD = "ranker-more-signal", "ranker-bad-labels"
LOOK_SECONDS = 10.0
CATALOGUE_REQUESTS = 4096  # golden ranking requests the shoppers cycle through (their users: ~1,000 distinct)
CLICK_SEED = 20261206


@dataclass
class Options:
    env: str = "prod"
    out: Path | None = None
    scale: float = 0.1
    rate: float = 50.0  # shoppers' ranking requests per wall second
    clients: int = 16
    max_seconds: float = 300.0  # wall seconds an experiment may run before it is judged at its end
    region: str | None = None  # the region the drill blackholes (default: the one with most traffic)
    base_port: int | None = None
    stacks_dir: Path | None = None
    ready_timeout: float = 90.0


def experiments_config(control: str, more: str, bad: str, t0: datetime) -> list[dict[str, Any]]:
    """The two experiments as the global stack declares them (JSON-ready): the first runs from t0, the second is
    declared for the next day and started (its start moved to now) when the first ends."""
    day = timedelta(days=1)

    def arms(candidate: str) -> list[dict[str, Any]]:
        return [
            {"name": "control", "version": control, "weight": 50, "control": True},
            {"name": "candidate", "version": candidate, "weight": 50},
        ]

    return [
        {
            "id": MORE,
            "arms": arms(more),
            "holdout": 10,
            "start": stamp(t0),
            "end": stamp(t0 + day),
            "primary_metric": "ctr",
            "guardrails": [{"metric": "ndcg10", "max_relative_drop": 0.1}],
            "minimum_detectable_effect": 0.03,
        },
        {
            "id": BAD,
            "arms": arms(bad),
            "start": stamp(t0 + day),
            "end": stamp(t0 + 2 * day),
            "primary_metric": "ctr",
            "guardrails": [
                {"metric": "ctr", "max_relative_drop": 0.05},
                {"metric": "ndcg10", "max_relative_drop": 0.1},
            ],
            "minimum_detectable_effect": 0.03,
        },
    ]


def _global_file(stacks_dir: Path, env: str) -> Path:
    return stacks_dir / f"Pulumi.{env}-global.yaml"


def declare_experiments(stacks_dir: Path, env: str, experiments: list[dict[str, Any]]) -> None:
    """Write the global stack copy's `experiments`, then validate the fleet (nothing is left half-written)."""
    from infra.config import load_fleet

    p = _global_file(stacks_dir, env)
    before = p.read_text()
    doc = yaml.safe_load(before)
    doc["config"][f"{PROJECT}:experiments"] = experiments
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        load_fleet(env, stacks_dir)
    except Exception:
        p.write_text(before)
        raise


def _log(line: str) -> None:
    print(line, flush=True)


class _Experiment:
    """One experiment's run: its shoppers' traffic, its looks, its events log."""

    def __init__(self, eid: str, out: Path) -> None:
        self.id = eid
        self.events = out / "events" / f"{eid}.jsonl"
        self.looks: list[dict[str, Any]] = []
        self.state: Any = None
        self.decision: Any = None
        self.wall: list[float] = []

    def look(self, experiment: Any, t0: float) -> Any:
        from drills.experiment.decision import decide
        from drills.experiment.events import aggregate, read_events

        totals = aggregate(read_events(self.events), experiment.id) if self.events.exists() else {}
        d = decide(experiment, totals, datetime.now(UTC), self.state)
        self.state, self.decision = d.sequential, d
        primary = {c.arm: c for c in d.comparisons if c.metric == experiment.primary_metric}
        self.looks.append(
            {
                "t_wall": round(time.time() - t0, 1),
                "verdict": d.verdict,
                "final": d.final,
                "arms": {
                    cell: {"impressions": t.impressions, "ctr": rounded(t.ctr), "ndcg10": rounded(t.ndcg10)}
                    for cell, t in totals.items()
                },
                "always_valid_p": {arm: c.sequential.p_value for arm, c in primary.items()},
            }
        )
        return d


def run(opts: Options, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Prepare the stack copy and the three builds, start the world, run both experiments (the drill through the
    first), tear everything down, write the report. Returns the report (also report.json)."""
    from drills.rehearsal.model_cache import ensure_model
    from drills.rehearsal.release_models import candidate
    from infra.config import STACKS_DIR, load_fleet

    src = Path(opts.stacks_dir or STACKS_DIR)
    R.check_run_options(opts.scale, opts.rate, opts.clients, opts.env, src)
    if opts.max_seconds < 2 * LOOK_SECONDS:
        raise R.RehearsalError(f"max_seconds is at least {2 * LOOK_SECONDS:g} wall seconds (got {opts.max_seconds:g})")
    src_fleet = load_fleet(opts.env, src)
    if len(src_fleet.regions) < 2:
        raise R.RehearsalError(f"{opts.env} has one region: the ab-test drills a region's loss through the experiment")
    if opts.region and opts.region not in src_fleet.regions:
        raise R.RehearsalError(f"--region {opts.region}: not a region of {opts.env} ({', '.join(src_fleet.regions)})")
    region = opts.region or R.default_region(src_fleet, "region-outage") or sorted(src_fleet.regions)[0]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(opts.out or (R.ROOT / "build" / "rehearsal" / f"{stamp}-{opts.env}-{SCENARIO}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    R.reap_leftovers(log)
    stacks_dir = out / "stacks"
    notes = R.prepare_stacks(src, stacks_dir, opts.env)
    stable = ensure_model(stacks_dir=src, log_dir=out / "logs", log=log)
    cands = {k: candidate(stable.version, k, stacks_dir=src, log_dir=out / "logs", log=log) for k in ("more", "bad")}
    notes += R.pin_releases(
        stacks_dir,
        opts.env,
        {i.version: i.manifest_sha256 for i in (stable, *cands.values())},
        dev_key()[1].read_text(),
    )
    t0 = datetime.now(UTC).replace(microsecond=0)
    declare_experiments(
        stacks_dir, opts.env, experiments_config(stable.version, cands["more"].version, cands["bad"].version, t0)
    )
    notes.append(
        f"the global stack copy declares two experiments ({MORE}, {BAD}); the shoppers are the client library's "
        "RankerClient with the experiment, their clicks drawn from the data generator's planted click probabilities "
        "(position-based model, examination 1/k): what real users would do is the one thing simulated"
    )
    fleet = load_fleet(opts.env, stacks_dir)
    from drills.scenarios import build_plan

    params = {"poll_seconds": max(2.0, round(0.25 / opts.scale, 3)), "probe_clients": 4, "hold_seconds": 60.0}

    def drill_plan() -> Any:  # built when it starts: the experiments it records are those running then
        return build_plan(
            "region-outage", opts.env, region, stacks_dir=stacks_dir, overrides={**params, "fault": "blackhole"}
        )

    scale = R.world_scale(
        fleet, drill_plan(), R.Options(env=opts.env, scale=opts.scale, ready_timeout=opts.ready_timeout)
    )
    session = release_session(
        fleet, stable.dir, out, stacks_dir, scale, opts.base_port, dict.fromkeys(fleet.regions, 1), log
    )
    report: dict[str, Any] = {
        "rehearsal": {
            "scenario": SCENARIO,
            "env": opts.env,
            "scale": opts.scale,
            "rate": opts.rate,
            "clients": opts.clients,
            "region": region,
            "notes": notes,
        },
        "models": {
            "stable": stable.version,
            **{k: {"version": v.version, "cache_hit": v.cache_hit} for k, v in cands.items()},
        },
    }
    runs = {MORE: _Experiment(MORE, out), BAD: _Experiment(BAD, out)}
    drill: dict[str, Any] = {}
    counts: list[dict] = []
    try:
        live = session.start().live
        w = live.world
        from drills.clock import SystemClock
        from drills.rehearsal.world import model_build_publisher

        for info in cands.values():
            for r, bucket in w.buckets.items():
                model_build_publisher(info.dir, bucket, "", w.moto.client("s3", r))
        log(f"published {', '.join(i.version for i in cands.values())} to every region's bucket")
        wait_replicated(w, log)
        _up_all(release_backend(live, {"scale": opts.scale}, SystemClock()), fleet, "serve the experiments' arms", log)
        _experiment(
            runs[MORE], session, fleet, stacks_dir, opts, t_start, log, stable.dir, drill_plan=drill_plan, drill=drill
        )
        change_window(opts.env, stacks_dir, BAD, "start", utc_seconds(datetime.now(UTC)))
        log(f"{BAD}: started (its start moved to now in the global stack copy)")
        _experiment(runs[BAD], session, fleet, stacks_dir, opts, t_start, log, stable.dir)
        _up_all(release_backend(live, {"scale": opts.scale}, SystemClock()), fleet, "retire the arms", log)
    finally:
        if session.live is not None:
            serving = serving_of(session.live)
            counts = serving.track_counts()
            report["serving_events"] = list(serving.events)
        session.close()
        report["rehearsal"]["processes_left_behind"] = session.leftovers
    from drills.rehearsal.ab_report import summarise, write

    load = load_fleet(opts.env, stacks_dir).glob.experiments
    report["t_start"] = t_start
    report.update(
        summarise(runs, {e.id: e for e in load}, counts, drill, region, primary=MORE, guarded=BAD, t_start=t_start)
    )
    report["rehearsal"]["wall_seconds"] = round(time.time() - t_start, 1)
    report["paths"] = [str(p) for p in write(report, runs, out)]
    return report


def _up_all(backend: Any, fleet: Any, why: str, log: Callable[[str], None]) -> None:
    """A regional `pulumi up` per region (the arms each serves follow the global stack's experiments)."""
    try:
        for stack in sorted(fleet.stack_names.values()):
            backend.stacks.up(stack, f"ab-test: {why}")
            log(f"pulumi up {stack}: {why}")
    finally:
        backend.close()


def _experiment(
    run: _Experiment,
    session: Session,
    fleet: Any,
    stacks_dir: Path,
    opts: Options,
    t_start: float,
    log: Callable[[str], None],
    model_dir: Path,
    drill_plan: Callable[[], Any] | None = None,
    drill: dict[str, Any] | None = None,
) -> None:
    """Shoppers' traffic for one experiment, looks until a final verdict (the drill run once traffic flows, when
    given), then the experiment stopped: its end moved to now."""
    import threading

    from drills.rehearsal.clock import ScaledClock
    from infra.config import load_fleet

    live = session.live
    experiment = next(e for e in load_fleet(fleet.env, stacks_dir).glob.experiments if e.id == run.id)
    # The client library's settings as `rehearse --client-mix` gives them (the plain per-region names, the release's
    # fallback ranking), with the rehearsal's wall-second request budget: a CPU Triton scores 32 rows in ms, not us.
    base = R.resilient_setup(live.world, model_dir, opts.clients)
    resilient = dataclasses.replace(base, deadline_ms=1000.0, attempt_timeout_ms=400.0)
    lg = session.traffic(
        rate=opts.rate,
        duration=opts.max_seconds + 60,
        clients=0,
        timeout=1.0,
        resilient=resilient,
        shoppers={
            "experiment": experiment.model_dump_json(),
            "events": str(run.events),
            "requests": CATALOGUE_REQUESTS,
            "seed": CLICK_SEED,
        },
    )
    run.wall = [time.time()]
    log(f"{run.id}: shoppers sending {opts.rate:g} rankings/s; a look every {LOOK_SECONDS:g} s")
    th = None
    if drill_plan is not None and drill is not None:

        def go() -> None:
            plan = drill_plan()
            backends: list[Any] = []

            def backend(clock: Any) -> Any:
                backends.append(release_backend(live, {"scale": opts.scale}, clock))
                return backends[-1]

            outcome = session.drill(plan, stacks_dir.parent / "state", backend, ScaledClock(opts.scale))
            drill.update(
                {
                    "scenario": plan.scenario,
                    "fault": "blackhole",
                    "drill_id": outcome.drill_id,
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "experiments": list(plan.experiments),
                    # Wall times of the fault's injection and clearing (the world's fault adapter records them).
                    "fault_events": [
                        {"event": e.get("event"), "wall": e.get("wall")}
                        for b in backends
                        for e in b.extras["world_faults"].events
                    ],
                }
            )

        time.sleep(LOOK_SECONDS)
        drill["wall"] = [time.time()]
        th = threading.Thread(target=go, name="ab-drill", daemon=True)
        th.start()
    deadline = run.wall[0] + opts.max_seconds
    while True:
        time.sleep(LOOK_SECONDS)
        d = run.look(experiment, t_start)
        log(f"{run.id} look {len(run.looks)}: {d.verdict} " + "; ".join(d.reasons)[:300])
        drilling = th is not None and th.is_alive()
        if (d.final and not drilling) or time.time() >= deadline:
            break
    if th is not None and drill is not None:
        th.join()
        drill["wall"].append(time.time())
        log(f"drill {drill.get('drill_id')}: {drill.get('status')} {drill.get('reason') or ''}")
    lg.stop()
    run.wall.append(time.time())
    err = lg.error()
    if err:
        raise R.RehearsalError(f"{run.id}: {err}")
    # A last look at the whole log (the shoppers' requests in flight at the stop included), with the looks' state:
    # the report's figures and its decision are then one look's.
    d = run.look(experiment, t_start)
    log(f"{run.id} last look ({len(run.looks)}) at the whole log: {d.verdict}")
    change_window(fleet.env, stacks_dir, run.id, "end", utc_seconds(datetime.now(UTC)))
    log(f"{run.id}: stopped at its verdict ({run.decision.verdict}); its end moved to now in the global stack copy")
