"""Release and sub-region drills in the local rehearsal: `python -m drills rehearse-release`.

The rehearsal's world (moto_server, Route 53 health/DNS/S3 replication models, loopback only) with each region
served by stable and canary Triton tracks behind a weighted load-balancer model (release_serving.py), and the
release engine driven through the rehearsal backend's own adapters plus the release ones:

  backend "rehearsal-release" = drills.rehearsal's backend over this world (stack copy re-applied through the
  offline plan, Route 53/S3/EKS/probes) + `serving` (the tracks), `scores` (TritonScoreProbe through the region's
  load balancer, pinned by `X-Reco-Track`), `metrics` (each pod's /metrics), `capacity.pods` (ready stable pods),
  faults `corrupt-artifact` (ArtifactCorruption on the moto buckets) and `gpu-node-loss` (a pod killed, replaced),
  and a regional stack `up` that applies `model.version/canary_version/canary_weight` to the tracks.

Scenarios (comma-separated run in order in one world): release (a good retrain promoted across every region),
bad-release (the `--bad-labels` build canaried and rolled back), artifact-corruption (a pod start onto the altered
bytes refused, then the drill: detect, restore from the last-known-good pointer, exact hashes), node-loss.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.errors import DrillError
from drills.rehearsal import rehearse as R
from drills.rehearsal.probe_proc import ProbeProcess
from drills.rehearsal.release_serving import NodeLoss, ServingModel
from drills.rehearsal.runner import Session
from model_build.signing import dev_key

SCENARIOS = ("release", "bad-release", "artifact-corruption", "node-loss")
_PROBE_PROCS = itertools.count(1)


def start_release_world(fleet: Any, *, replicas: dict[str, int], **kw: Any) -> Any:
    """`rehearse.start_world` with each region served by stable/canary tracks (`ServingModel`: replicas per region,
    node replacement delay from the scaled TTL)."""
    replace_seconds = max(1.0, 30 * kw["scale"].ttl / max(1, fleet.glob.ttl))
    return R.start_world(fleet, serving=lambda w: ServingModel(w, replicas, replace_seconds), **kw)


def release_session(
    fleet: Any,
    model_dir: Path,
    out: Path,
    stacks_dir: Path,
    scale: Any,
    base_port: int | None,
    replicas: dict[str, int],
    log: Callable[[str], None],
) -> Session:
    """The session of a run in the release world (its world under <out>/world, its stacks' state beside it)."""
    return Session(
        lambda: start_release_world(
            fleet,
            model_dir=model_dir,
            workdir=out / "world",
            stacks_dir=stacks_dir,
            stack_state=out / "stack-state",
            scale=scale,
            base_port=base_port,
            seed=7,
            log=log,
            probe_timeout=1.0,
            replicas=replicas,
        ),
        log,
    )


def serving_of(live: Any) -> ServingModel:
    serving = live.world.serving
    assert isinstance(serving, ServingModel), "a release rehearsal's world is served by tracks"
    return serving


def release_backend(live: Any, options: dict, clock: Any) -> Any:
    """The backend a release rehearsal drives: the rehearsal's, built with the release parts (the same adapters the
    aws backend gets, over this world)."""
    from drills.rehearsal.adapters import ReleaseParts
    from drills.release.adapters import ArtifactCorruption, TritonScoreProbe
    from drills.release.planning import VERSION
    from infra.arms import environment_experiments
    from infra.experiments import arm_routes

    world = live.world
    serving = serving_of(live)
    fleet = world.fleet
    model = next(iter(fleet.regions.values())).model.name
    # The drill's probes timed in their own process (probe_proc): not behind this process's GIL.
    n = next(_PROBE_PROCS)
    probes = ProbeProcess(
        world.sup,
        world.workdir / "probes" / str(n),
        clock,
        endpoints={r: t.url for r, t in serving.servers().items()},
        model=world.traffic.model,
        dns_server=world.dns_address,
        name=world.fqdn,
        port=world.ports["http"],
        ip_region=dict(world.ip_region),
        timeout=live.probe_timeout,
        seed=live.seed,
        body=live.probe_body,
        child_name=f"probes-{n}",
    ).start()

    class SmallBatchProbe(TritonScoreProbe):
        # A CPU pod runs one model instance: a 256-row golden batch holds user requests behind it (measured: 1 s
        # client timeouts while the gates scored); 32-row batches interleave with users' requests.
        def scores(self, region: str, track: str, inputs: Any, batch: int = 32) -> Any:
            return super().scores(region, track, inputs, min(batch, 32))

    def faults(s3: Any, stacks: Any) -> list[Any]:
        def served(region: str) -> tuple[str, str]:
            return model, str(stacks.get_config(fleet.stack_names[region], VERSION))

        return [ArtifactCorruption(s3, served, list(world.regions)), NodeLoss(serving)]

    parts = ReleaseParts(
        serving=serving,
        probes=probes,
        scores=SmallBatchProbe(
            {r: f"http://{world.region_ip[r]}:{world.ports['http']}" for r in world.regions},
            world.traffic.model,
            timeout=10.0,
        ),
        # A regional `up` re-applies the program to moto (buckets, node groups, ...) and, as the Deployments and
        # listener weights do on AWS, to serving.
        # The experiments' arms too (infra.experiments.arm_routes over the global stack copy's `experiments`: what
        # the regional program's arm rules declare at this `up`).
        on_region_up=lambda cfg: serving.apply(
            cfg.region,
            cfg.model,
            arm_routes(environment_experiments(fleet.env, live.stacks_dir), datetime.now(UTC)),
        ),
        faults=faults,
    )
    return R.backend_for(live, options, clock, release=parts)


def backend_factory(plan: Any, options: dict, clock: Any) -> Any:
    """`drills rollback`/`resume` of a release rehearsal's drill from another process: refused with the reason (the
    rehearsal hands its world to the engine as an object; nothing of it outlives its process)."""
    raise DrillError(
        "backend rehearsal-release: its world lives only inside `python -m drills rehearse-release` (the servers "
        "stopped with that process); nothing outside it remains to roll back. Run the rehearsal again."
    )


# ---------------------------------------------------------------- the run
@dataclass
class Options:
    env: str = "prod"
    scenarios: tuple[str, ...] = ("release",)
    out: Path | None = None
    scale: float = 0.1
    rate: float = 60.0
    clients: int = 16
    canary_weight: int = 50
    bake: float | None = None  # drill seconds (default: release.bake_seconds)
    region: str | None = None
    base_port: int | None = None
    stacks_dir: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)
    ready_timeout: float = 90.0


def _log(line: str) -> None:
    print(line, flush=True)


def run(opts: Options, log: Callable[[str], None] = _log) -> dict:
    """Prepare the stack copy and the three model builds, start the world, run each scenario through the engine
    with client traffic, tear everything down, write the reports. Returns the run's summary (also report.json)."""
    from drills.rehearsal.model_cache import ensure_model
    from drills.rehearsal.release_models import candidate
    from infra.config import STACKS_DIR, load_fleet

    # Everything that can refuse the run does so before anything is written or started.
    unknown = [s for s in opts.scenarios if s not in SCENARIOS]
    if unknown or not opts.scenarios:
        raise R.RehearsalError(f"unknown scenario(s) {unknown or opts.scenarios}: choose from {', '.join(SCENARIOS)}")
    src = Path(opts.stacks_dir or STACKS_DIR)
    R.check_run_options(opts.scale, opts.rate, opts.clients, opts.env, src)
    if not 1 <= opts.canary_weight <= 100:
        raise R.RehearsalError(
            f"--canary-weight is a percentage of the canary region's traffic, 1..100 (got {opts.canary_weight})"
        )
    if opts.bake is not None and opts.bake <= 0:
        raise R.RehearsalError(f"--bake must be > 0 drill seconds (got {opts.bake:g})")
    src_fleet = load_fleet(opts.env, src)
    if opts.region and opts.region not in src_fleet.regions:
        raise R.RehearsalError(
            f"--region {opts.region}: not a region of {opts.env} ({', '.join(sorted(src_fleet.regions))})"
        )
    region = opts.region or R.default_region(src_fleet, "region-outage") or sorted(src_fleet.regions)[0]
    replicas = dict.fromkeys(src_fleet.regions, 1)
    node_note = None
    if "node-loss" in opts.scenarios:
        replicas[region], node_note = node_loss_replicas(src_fleet, region)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(opts.out or (R.ROOT / "build" / "rehearsal" / f"{stamp}-{opts.env}-release")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    R.reap_leftovers(log)
    notes = R.prepare_stacks(src, out / "stacks", opts.env)
    notes.append(
        "no TensorRT engine is built or served here: no TensorRT builder and no GPU; every compute capability of the "
        "fleet is declared `model.onnx_fallback_for` in this run's stack copy and the CPU Triton serves model_build's "
        "ONNX file through its python-backend model (ONNX Runtime)"
    )
    notes += [node_note] if node_note else []
    stacks_dir = out / "stacks"
    fleet = load_fleet(opts.env, stacks_dir)
    stable_info = ensure_model(stacks_dir=src, log_dir=out / "logs", log=log)
    cands = {
        k: candidate(stable_info.version, k, stacks_dir=src, log_dir=out / "logs", log=log)
        for k in (["good"] if "release" in opts.scenarios else [])
        + (["bad"] if "bad-release" in opts.scenarios else [])
    }
    notes += R.pin_releases(
        stacks_dir,
        opts.env,
        {i.version: i.manifest_sha256 for i in (stable_info, *cands.values())},
        dev_key()[1].read_text(),
    )
    fleet = load_fleet(opts.env, stacks_dir)
    params = {
        "poll_seconds": max(2.0, round(0.25 / opts.scale, 3)),
        "probe_clients": 4,
        "hold_seconds": 20.0,
        **opts.params,
    }
    from drills.scenarios import build_plan

    scale_plan = build_plan("node-loss", opts.env, region, stacks_dir=stacks_dir, overrides=params)
    scale = R.world_scale(
        fleet, scale_plan, R.Options(env=opts.env, scale=opts.scale, ready_timeout=opts.ready_timeout)
    )
    state = out / "state"
    summary: dict[str, Any] = {
        "env": opts.env,
        "t_start": t_start,
        "scale": opts.scale,
        "rate": opts.rate,
        "canary_weight": opts.canary_weight,
        "notes": notes,
        "models": {"stable": _minfo(stable_info), **{k: _minfo(v) for k, v in cands.items()}},
        "drills": [],
    }
    session = release_session(fleet, stable_info.dir, out, stacks_dir, scale, opts.base_port, replicas, log)
    lg = None
    try:
        live = session.start().live
        w = live.world
        from drills.rehearsal.world import model_build_publisher

        for k, info in cands.items():  # every candidate published to every region's bucket, as model_build publish does
            for r, bucket in w.buckets.items():
                model_build_publisher(info.dir, bucket, "", w.moto.client("s3", r))
            log(f"published the {k} candidate {info.version} to {', '.join(w.buckets.values())}")
        lg = session.traffic(rate=opts.rate, duration=3600, clients=opts.clients, timeout=1.0)
        time.sleep(1.0)
        options = {"scale": opts.scale}
        for sc in opts.scenarios:
            summary["drills"] += _run_scenario(
                sc, session, fleet, stacks_dir, state, out, opts, params, region, cands, options, log
            )
            if any(d.get("interrupted") for d in summary["drills"]):
                summary["interrupted"] = True
                log("interrupted (SIGINT/SIGTERM): the drill rolled back; no further scenario runs, everything stops")
                break
    finally:
        if lg is not None:
            lg.stop()
        if session.live is not None:
            d = session.live.world.describe()
            summary["triton"] = {"pods": d["pods"], "substitutions": d["substitutions"]}
            serving = serving_of(session.live)
            summary["serving_events"] = list(serving.events)
            summary["track_counts"] = serving.track_counts()
        session.close()
        summary["processes_left_behind"] = session.leftovers
    records = lg.records() if lg is not None else []
    summary["traffic"] = _traffic(records, summary["drills"])
    summary["wall_seconds"] = round(time.time() - t_start, 1)
    from drills.rehearsal.release_report import write

    summary["paths"] = [str(p) for p in write(summary, records, out)]
    return summary


def wait_replicated(world: Any, log: Callable[[str], None], timeout: float = 120.0) -> None:
    """Replication drained (after a publish, or the pointers a release wrote), as an operator waits before the next
    release or drill: readiness (every drill's and release's precheck) refuses a fleet with objects pending
    replication."""
    left = world.storage.wait_drained(timeout)
    if left:
        raise R.RehearsalError(f"replication did not drain within {timeout:g} s of the publish: pending {left}")
    log("replication drained: every bucket holds every published version")


MAX_POD_REPLICAS = 4  # CPU Tritons per region this 2-core rehearsal can run beside the others


def node_loss_replicas(fleet: Any, region: str) -> tuple[int, str]:
    """Stable pods for the node-loss region, one per node-sized share of its GPUs: losing one pod here then costs
    the fraction of capacity that losing its biggest node costs on AWS (planning.node_loss_figures)."""
    from drills.release.planning import node_loss_figures

    f = node_loss_figures(fleet, region)
    want = max(1, round(1 / f["ceil_loss_fraction"])) if f["ceil_loss_fraction"] else 1
    if want < 2:
        raise R.RehearsalError(
            f"node-loss in {fleet.env}/{region}: its {f['gpus_desired']} desired GPU(s) are one {f['instance_type']} "
            f"node, so losing it is a region outage, not a node loss (`python -m drills rehearse --env {fleet.env} "
            "--scenario region-outage` drills that); pick a region with two or more nodes (--region) or another env"
        )
    n = min(want, MAX_POD_REPLICAS)
    note = (
        f"node-loss: {region} runs {n} stable pod(s), one per {f['instance_type']} node of its {f['gpus_desired']} "
        f"desired GPUs, so one lost pod costs {1 / n:.0%} of its capacity as one lost node ({f['gpus_per_node']} GPUs) "
        "does on AWS"
    )
    if n < want:
        note += (
            f"; capped at {MAX_POD_REPLICAS} (the fleet's figure is {f['ceil_loss_fraction']:.0%} per node): the "
            "measured fraction is coarser"
        )
    return n, note


def _minfo(i: Any) -> dict:
    return {
        "dir": str(i.dir),
        "version": i.version,
        "cache_hit": i.cache_hit,
        "build_seconds": i.build_seconds,
        "manifest_sha256": i.manifest_sha256,
    }


def _engine(plan: Any, state: Path, session: Session, options: dict, opts: Options) -> Any:
    """One drill on the engine, the world handed over as a backend object (journaled as "rehearsal-release")."""
    from drills.rehearsal.clock import ScaledClock

    live = session.live
    # As an operator waits for the fleet to be ready before the next drill: a publish and a release's last-known-good
    # pointers replicate first (readiness, every drill's and release's precheck, refuses a backlog).
    wait_replicated(live.world, session.log)
    return session.drill(plan, state, lambda clock: release_backend(live, options, clock), ScaledClock(opts.scale))


def _record(sc: str, outcome: Any, state: Path, out: Path, t0: float, extra: dict | None = None) -> dict:
    from drills.journal import load
    from drills.release.report import release_summary, write_release_report
    from drills.report import write_report

    d = out / sc
    d.mkdir(parents=True, exist_ok=True)
    paths = write_report(outcome.drill_id, state, out=d) + write_release_report(outcome.drill_id, state, out=d)
    return {
        "scenario": sc,
        "drill_id": outcome.drill_id,
        "status": outcome.status,
        "reason": outcome.reason,
        "wall": [t0, time.time()],
        "release": release_summary(load(state, outcome.drill_id)),
        "paths": [str(p) for p in paths],
        "interrupted": outcome.interrupted,
        **(extra or {}),
    }


def _run_scenario(
    sc: str,
    session: Session,
    fleet: Any,
    stacks_dir: Path,
    state: Path,
    out: Path,
    opts: Options,
    params: dict,
    region: str,
    cands: dict,
    options: dict,
    log: Callable[[str], None],
) -> list[dict]:
    from drills.release.planning import ReleaseOptions, build_release_plan, build_restore_plan, release_context
    from drills.scenarios import build_plan

    live = session.live
    t0 = time.time()
    res: list[dict] = []
    if sc in ("release", "bad-release"):
        info = cands["good" if sc == "release" else "bad"]
        ctx = release_context(
            opts.env,
            None,
            stacks_dir=stacks_dir,
            manifest=str(info.dir / "manifest.json"),
            candidate=info.version,
            overrides=params,
        )
        plan = build_release_plan(
            ctx,
            ReleaseOptions(
                candidate=info.version,
                canary_weight=opts.canary_weight,
                bake_seconds=opts.bake,
                offline_blocking=sc == "release",
                promote=sc == "release",
                scenario=sc,
            ),
        )
        log(f"{sc}: {info.version}, {len(plan.steps)} steps through the engine")
        outcome = _engine(plan, state, session, options, opts)
        log(f"{sc} {outcome.drill_id}: {outcome.status} {outcome.reason or ''}")
        res.append(_record(sc, outcome, state, out, t0))
    elif sc == "artifact-corruption":
        # Last-known-good pointers first (a release records them; `restore --adopt` on a fleet that never had one).
        for r in sorted(fleet.regions):
            from drills.release.artifacts import read_pointer

            b0 = live.backends[-1] if live.backends else None
            if b0 is not None and read_pointer(b0.s3, r, serving_of(live).model)[0]:
                continue
            ctx = release_context(opts.env, r, stacks_dir=stacks_dir, overrides=params)
            o = _engine(build_restore_plan(ctx, r, adopt=True, scenario="restore-adopt"), state, session, options, opts)
            log(f"restore --adopt {r}: {o.status}")
        refusal = _refusal_demo(live, region, log)
        plan = build_plan("artifact-corruption", opts.env, region, stacks_dir=stacks_dir, overrides=params)
        outcome = _engine(plan, state, session, options, opts)
        log(f"artifact-corruption {outcome.drill_id}: {outcome.status} {outcome.reason or ''}")
        res.append(_record(sc, outcome, state, out, t0, {"refused_pod_start": refusal}))
    elif sc == "node-loss":
        plan = build_plan("node-loss", opts.env, region, stacks_dir=stacks_dir, overrides=params)
        outcome = _engine(plan, state, session, options, opts)
        log(f"node-loss {outcome.drill_id}: {outcome.status} {outcome.reason or ''}")
        res.append(_record(sc, outcome, state, out, t0))
    return res


def _refusal_demo(live: Any, region: str, log: Callable[[str], None]) -> dict:
    """A pod start onto the altered bytes, before the drill: the corruption fault injected through the backend's
    own adapter, a rollout restart of the region's stable track attempted, the fault cleared. Shows that
    verification refuses the file (expected vs found sha256) and that the serving pods never changed."""
    from drills.clock import SystemClock

    b = live.backends[-1] if live.backends else release_backend(live, {}, SystemClock())
    s = serving_of(live)
    before = [p.name for p in s.serving_pods(region, "stable")]
    h = b.faults.prepare(region, "corrupt-artifact")
    b.faults.inject(region, "corrupt-artifact", h)
    n = len(s.events)
    try:
        s.restart(region, "stable")
    finally:
        b.faults.clear(region, "corrupt-artifact", h)
    refused = [e for e in s.events[n:] if e["event"] == "refused"]
    after = [p.name for p in s.serving_pods(region, "stable")]
    out = {
        "region": region,
        "key": h["key"],
        "good_sha256": h["good_sha256"],
        "refused": bool(refused),
        "reason": refused[0]["reason"] if refused else None,
        "serving_pods_before": before,
        "serving_pods_after": after,
    }
    log(
        f"artifact-corruption: a pod start onto the altered {h['path']} in {region} was "
        + ("REFUSED by hash" if refused else "NOT refused")
        + f"; serving pods unchanged: {before == after}"
    )
    return out


def _traffic(records: list, drills: list[dict]) -> dict:
    """Client figures of the whole run and of each drill's wall-clock span (drills.measure's one percentile)."""
    from drills.measure import latency_summary

    def stats(rs: list) -> dict:
        s = latency_summary(rs)
        return {
            "requests": s["requests"],
            "failed": s["errors"],
            **{k: None if s[k] is None else round(s[k], 1) for k in ("p50_ms", "p99_ms")},
        }

    out = {"all": stats(records)}
    for d in drills:
        a, z = d["wall"]
        out[d["scenario"]] = stats([r for r in records if a <= r.t <= z])
        d["traffic"] = out[d["scenario"]]
    return out


# ---------------------------------------------------------------- command
def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run model releases and the drills below a region end to end on this machine: the rehearsal world "
        "(moto_server, Route 53/DNS/S3 replication models) with stable and canary Triton tracks per region behind a "
        "weighted load-balancer model, the stable build plus a retrained (good) and a --bad-labels (bad) build, client "
        "traffic through DNS, each scenario through the drills engine, everything torn down, a report per scenario and "
        "an index with a chart."
    )
    p.add_argument("--env", default="prod", help="environment (default prod: 3 regions; staging: 2)")
    p.add_argument(
        "--scenario",
        default="release,bad-release",
        help=f"comma-separated, run in order in one world: {', '.join(SCENARIOS)} (default release,bad-release)",
    )
    p.add_argument("--region", help="region for artifact-corruption / node-loss (default: the one with most traffic)")
    p.add_argument("--out", type=Path, help="run directory (default build/rehearsal/<UTC time>-<env>-release)")
    p.add_argument("--scale", type=float, default=0.1, help="time scale in (0, 1] as for `rehearse` (default 0.1)")
    p.add_argument("--rate", type=float, default=60.0, help="client ranking requests per wall second (default 60)")
    p.add_argument("--clients", type=int, default=16, help="clients, each with its own DNS cache (default 16)")
    p.add_argument(
        "--canary-weight",
        type=int,
        default=50,
        help="percent of a region's requests on the canary (default 50: enough requests for release.gates.min_requests "
        "within a scaled bake at this rate)",
    )
    p.add_argument(
        "--bake",
        type=float,
        help="drill seconds of traffic on each canary before its gates judge (default release.bake_seconds)",
    )
    p.add_argument("--base-port", type=int, help="first of 5 consecutive ports (default: a free block)")


def run_command(args: argparse.Namespace) -> int:
    s = run(
        Options(
            env=args.env,
            scenarios=tuple(x.strip() for x in args.scenario.split(",") if x.strip()),
            out=args.out,
            scale=args.scale,
            rate=args.rate,
            clients=args.clients,
            canary_weight=args.canary_weight,
            bake=args.bake,
            region=args.region,
            base_port=args.base_port,
            stacks_dir=args.stacks_dir,
        )
    )
    for p in s["paths"]:
        print(f"report: {p}")
    if s.get("interrupted"):
        return 130
    ok = all(_expected(d) for d in s["drills"]) and not s.get("processes_left_behind")
    return 0 if ok else 1


def _expected(d: dict) -> bool:
    """A drill went as drilled: release promoted; bad-release rolled back by a gate; the others completed."""
    if d["scenario"] == "bad-release":
        return d["release"].get("outcome") == "rolled back"
    return d["status"] == "completed"
