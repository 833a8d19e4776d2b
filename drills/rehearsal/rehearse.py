"""`python -m drills rehearse`: one drill scenario, end to end, against the rehearsal backend on this machine.

Order (each step printed as it happens):
  1. copy the stack files into the run directory (the drills change this copy, never stacks/), plan the drill
     from it with the drills' own planner: a scenario the environment cannot run stops here, nothing started;
  2. the model: model_build's output, cached by content hash (built on first use, ~25 s), verified;
  3. the offline plan of the global and regional Pulumi programs (infra.mocks), and the world started from it
     (moto_server, declared Route 53/S3/EKS objects, the model published to every region's bucket by
     model_build.publish, one Triton per region, the health-check, DNS and replication models);
  4. client traffic (real feature batches, resolved through the DNS with TTL caches) for the whole drill;
  5. the drill through the drills engine (`start_drill`, backend "rehearsal"), with --execute semantics and no
     --confirm: the environment it changes is this run's own (its stack copy, its moto, its processes);
  6. traffic stopped, every process stopped (also on Ctrl-C and on any failure), the report written.

Time runs scaled: every modelled timing (health-check interval, TTL, propagation, replication lag) at `scale`
times its configured value, the engine on a `ScaledClock` in configuration-equivalent "drill seconds"
(see drills/rehearsal/clock.py). `--scale 1` is real time.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from drills.errors import DrillError
from drills.rehearsal.runner import Session
from infra.config import PROJECT, ROOT, STACKS_DIR, load_fleet
from model_build.signing import dev_key

if TYPE_CHECKING:  # the adapters are built over a started world; the world imports none of them
    from drills.rehearsal.world import World

ALL = "all"
SCENARIO_ORDER = ("region-outage", "evacuate-region", "stack-flip", "artifact-replication")
DEFAULT_SCALE = 0.1
DEFAULT_RATE = 50.0
DEFAULT_CLIENTS = 32
DEFAULT_REPLICATION_LAG = (
    20.0  # drill seconds: S3 replication typically lands in seconds to a minute (RTC: 15 min at 99.99%)
)


class RehearsalError(DrillError):
    """The rehearsal could not run (bad input, a port in use, a server that did not start). Nothing is left running."""

    exit_code = 2


@dataclass
class Options:
    env: str = "prod"
    scenario: str = "region-outage"
    region: str | None = None
    out: Path | None = None
    scale: float = DEFAULT_SCALE
    rate: float = DEFAULT_RATE
    clients: int = DEFAULT_CLIENTS  # naive clients (see loadgen)
    resilient_clients: int = 0  # clients through drills.client.RankerClient beside them (--client-mix)
    request_timeout: float = 1.0  # a client's budget per ranking request (wall seconds: latency is not scaled)
    base_port: int | None = None
    hold: float | None = None  # drill seconds
    steps: int | None = None
    fault: str | None = None
    replication_lag: float = DEFAULT_REPLICATION_LAG
    ready_timeout: float = 90.0
    model_dir: Path | None = None
    rebuild_model: bool = False
    plan_file: str | None = None
    stacks_dir: Path = STACKS_DIR
    state_dir: Path | None = None
    seed: int = 7
    params: dict[str, Any] = field(default_factory=dict)  # further drill Parameters (drill seconds)
    model_cache: Path | None = None  # default build/model-cache
    keep_going: bool = False  # --scenario all: run the next scenario after one that did not complete
    capacity_model: str = "off"  # drills/rehearsal/capacity.py MODES: survivors carry what their nodes carry


@dataclass
class Result:
    exit_code: int
    out: Path
    status: str
    report: dict | None = None
    paths: list[Path] = field(default_factory=list)


def default_out(env: str, scenario: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ROOT / "build" / "rehearsal" / f"{stamp}-{env}-{scenario}"


class Progress:
    """Timestamped progress lines on a rich console (seconds since the rehearsal started)."""

    def __init__(self, console: Any = None):
        from drills.render import console as make_console

        self.c = console or make_console()
        self.t0 = time.monotonic()

    def __call__(self, line: str) -> None:
        self.c.print(f"[dim]{time.monotonic() - self.t0:7.1f}s[/dim] {line}", highlight=False)


# ---------------------------------------------------------------- the stack copy
def check_run_options(scale: float, rate: float, clients: int, env: str, stacks_dir: Path) -> None:
    """What every rehearsal command refuses before it writes or starts anything."""
    from infra.config import envs

    if not 0 < scale <= 1:
        raise RehearsalError(
            f"--scale must be in (0, 1] (1 = real time; 0.1 = every configured timing at a tenth), got {scale}"
        )
    if rate <= 0 or clients < 1:
        raise RehearsalError(f"--rate must be > 0 and --clients >= 1 (got {rate:g} and {clients})")
    if env not in envs(stacks_dir):
        raise RehearsalError(
            f"unknown environment {env!r}; known: {', '.join(envs(stacks_dir))} (from {stacks_dir}). "
            "Nothing was started."
        )
    load_fleet(env, Path(stacks_dir))  # a stack that does not validate: ConfigError, one line, nothing written


CLIENT_KINDS = ("naive", "resilient")


def parse_client_mix(text: str) -> dict[str, int]:
    """`naive=N,resilient=M` -> {"naive": N, "resilient": M} (a kind left out: 0). RehearsalError names the part,
    its value and the rule."""
    mix = dict.fromkeys(CLIENT_KINDS, 0)
    seen: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        kind, eq, value = part.partition("=")
        kind = kind.strip()
        if not eq or kind not in CLIENT_KINDS:
            raise RehearsalError(
                f"--client-mix: {part!r} is not KIND=COUNT with KIND one of {', '.join(CLIENT_KINDS)} "
                "(e.g. naive=16,resilient=16)"
            )
        if kind in seen:
            raise RehearsalError(f"--client-mix: {kind} is given twice; give each kind once")
        seen.add(kind)
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 0:
            raise RehearsalError(f"--client-mix: {kind}={value.strip()!r} is not a whole number >= 0")
        mix[kind] = n
    if mix["naive"] < 1:
        raise RehearsalError(
            f"--client-mix: naive={mix['naive']}: at least one naive client is needed (the naive clients measure the "
            "DNS failover, the RTO the resilient ones are compared with)"
        )
    return mix


def resilient_setup(world: World, model_dir: Path, clients: int) -> Any:
    """The resilient clients' settings: the plain per-region names the global stack declares, and the release's
    fallback ranking with the sha256 its manifest lists (the client refuses it otherwise)."""
    from drills.rehearsal.loadgen import Resilient
    from model_build.fallback import FALLBACK
    from model_build.manifest import load_manifest

    entry = next((f for f in load_manifest(model_dir).files if f.path == FALLBACK), None)
    if entry is None:
        raise RehearsalError(f"{model_dir} has no {FALLBACK} in its manifest: rebuild the model (--rebuild-model)")
    return Resilient(
        clients=clients,
        regional_names=dict(world.regional_names),
        fallback_path=str(model_dir / FALLBACK),
        fallback_sha256=entry.sha256,
    )


def reap_leftovers(log: Callable[[str], None]) -> None:
    """Stop what a SIGKILLed earlier rehearsal left running (its children carry its identity)."""
    from drills.rehearsal.procs import reap_orphans

    reaped = reap_orphans()
    if reaped:
        log(
            f"stopped {len(reaped)} processes left running by an earlier rehearsal that was killed (SIGKILL): "
            f"pids {reaped}"
        )


LOOPBACK_TOOLING = "127.0.0.0/16"  # the config's narrowest accepted width that holds 127.0.0.1


def prepare_stacks(src: Path, dst: Path, env: str) -> list[str]:
    """Copy every stack file into the run, with two declared differences in the env's regional stacks, each returned
    as a note for the report: the ONNX fallback for every compute capability (the CPU Triton runs model_build's ONNX
    file through ONNX Runtime: no TensorRT engine can run here), so the engine guardrail and the precheck judge what
    is served; and the release tooling's source range at the load balancer (`load_balancer.release_tooling_cidrs`:
    the drills' pinned scoring runs on this machine's loopback), so the track-header pins exist as on AWS."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in Path(src).glob("Pulumi.*.yaml"):
        shutil.copy(f, dst / f.name)
    notes = []
    fleet = load_fleet(env, dst)
    for region, cfg in fleet.regions.items():
        stack = fleet.stack_names[region]
        p = dst / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(p.read_text())
        changed = []
        model = dict(doc["config"].get(f"{PROJECT}:model") or {})
        ccs = sorted(set(cfg.compute_capabilities))
        if sorted(model.get("onnx_fallback_for") or []) != ccs:
            model["onnx_fallback_for"] = ccs
            doc["config"][f"{PROJECT}:model"] = model
            changed.append(
                f"model.onnx_fallback_for = {ccs} (CPU Triton serves the ONNX file with ONNX Runtime; TensorRT "
                "engines cannot run here)"
            )
        lb = dict(doc["config"].get(f"{PROJECT}:load_balancer") or {})
        if not lb.get("release_tooling_cidrs"):
            lb["release_tooling_cidrs"] = [LOOPBACK_TOOLING]
            doc["config"][f"{PROJECT}:load_balancer"] = lb
            changed.append(
                f"load_balancer.release_tooling_cidrs = [{LOOPBACK_TOOLING}] (the release tooling's scoring runs on "
                "this machine's loopback)"
            )
        if changed:
            p.write_text(yaml.safe_dump(doc, sort_keys=False))
            notes += [f"{stack}: {c} in the rehearsal's stack copy" for c in changed]
    load_fleet(env, dst)  # still valid
    return notes


def pin_releases(stacks_dir: Path, env: str, releases: dict[str, str], public_key_pem: str) -> list[str]:
    """Pin the rehearsal's builds in the env's regional stack copies, as the PR that publishes a release does:
    `model.signer` the key model_build signed them with (here the development key; on AWS the build workflow's
    Sigstore identity), `model.digests[version]` each build's manifest sha256 (`releases`: version -> digest).
    Returns the report's note; the declared verify-model then refuses any other manifest, signed or not."""
    from model_build.signing import key_fingerprint

    pem = public_key_pem
    fleet = load_fleet(env, stacks_dir)
    for stack in fleet.stack_names.values():
        p = stacks_dir / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(p.read_text())
        model = dict(doc["config"].get(f"{PROJECT}:model") or {})
        model["signer"] = {"kind": "key", "public_key": pem}
        model["digests"] = {**(model.get("digests") or {}), **releases}
        doc["config"][f"{PROJECT}:model"] = model
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
    load_fleet(env, stacks_dir)  # still valid
    pins = ", ".join(f"{v} {d[:12]}" for v, d in sorted(releases.items()))
    return [
        f"{env} regional stacks: model.signer = the key model_build signed with here (sha256:"
        f"{key_fingerprint(pem)[:16]}, offline signing) instead of the build workflow's Sigstore identity; "
        "model.digests pins the "
        f"rehearsal's builds ({pins}) in the stack copy"
    ]


def default_region(fleet: Any, scenario: str) -> str | None:
    """The region a scenario acts on when none is given: the one carrying the most traffic (weighted: highest weight,
    ties by name; failover: the PRIMARY), i.e. the outage that hurts most."""
    from drills.scenarios import SCENARIOS

    sc = SCENARIOS.get(scenario)
    if sc is None or sc.region_arg != "required":
        return None
    r = fleet.glob.routing
    if r.mode == "failover":
        return next(k for k, v in r.regions.items() if v.failover == "PRIMARY")
    w = r.weights()
    return sorted(w, key=lambda k: (-w[k], k))[0]


def drill_parameters(opts: Options) -> dict[str, Any]:
    """Drill parameters in drill seconds. The monitor polls every 0.2 wall seconds at most (its 8 probe clients take
    tens of ms a round; faster would only load the 2 cores), i.e. every 2 drill seconds at the default scale."""
    p: dict[str, Any] = {"poll_seconds": max(2.0, round(0.2 / opts.scale, 3))}
    if opts.hold is not None:
        p["hold_seconds"] = opts.hold
    if opts.steps is not None:
        p["steps"] = opts.steps
    if opts.fault is not None:
        p["fault"] = opts.fault
    p.update(opts.params)
    return p


def world_scale(fleet: Any, plan: Any, opts: Options) -> Any:
    from drills.rehearsal.world import Scale

    s = opts.scale
    hc = fleet.glob.health_check
    return Scale(
        hc_interval=hc.request_interval * s,
        probe_timeout=None,
        time=s,
        ttl=max(1, round(fleet.glob.ttl * s)),
        replication_lag=opts.replication_lag * s,
        replication_poll=min(0.2, max(0.05, opts.replication_lag * s / 10)),
        dns_refresh=float(plan.parameters["dns_propagation_seconds"]) * s,
        ready_timeout=opts.ready_timeout,
        triton_exit_timeout=2,
    )


def declared_resources(fleet: Any, stacks_dir: Path) -> tuple[list[dict], dict[str, tuple[list[dict], dict]]]:
    """Declared resources of the env's global and regional stacks from the run's stack copy (offline plans)."""
    from drills.rehearsal.adapters import offline_plan
    from drills.rehearsal.declared import records_from_plan

    out: list[dict] = []
    per: dict[str, tuple[list[dict], dict]] = {}
    for stack in [fleet.global_stack, *fleet.stack_names.values()]:
        plan = offline_plan(stack, stacks_dir)
        recs = records_from_plan(plan)
        per[stack] = (recs, plan.outputs)
        out += recs
    return out, per


# ---------------------------------------------------------------- live worlds (for the backend factory)
@dataclass
class LiveWorld:
    world: World
    stacks_dir: Path
    stack_state: Path
    probe_timeout: float
    seed: int
    probe_body: dict | None
    backends: list[Any] = field(default_factory=list)
    stacks: Any = None  # the RehearsalStacks the world was seeded with (its applied state)


def probe_body(world: World) -> dict:
    """One real feature row as the drills' probe request (the probes then rank what clients rank)."""
    from drills.rehearsal.triton import v2_infer_body

    return json.loads(v2_infer_body(world.traffic.batches(n=1, batch=1)[0]))


def backend_for(live: LiveWorld, options: dict, clock: Any, release: Any = None) -> Any:
    """The drills Backend over a live world (`release`: drills.rehearsal.adapters.ReleaseParts: rehearse-release)."""
    from drills.rehearsal.adapters import make_backend

    b = make_backend(
        live.world,
        stacks_dir=live.stacks_dir,
        state_dir=live.stack_state,
        clock=clock,
        options=options,
        probe_timeout=live.probe_timeout,
        seed=live.seed,
        probe_body=live.probe_body,
        release=release,
    )
    live.backends.append(b)
    return b


def start_world(
    fleet: Any,
    *,
    model_dir: Path,
    workdir: Path,
    stacks_dir: Path,
    stack_state: Path,
    scale: Any,
    base_port: int | None,
    seed: int,
    log: Callable[[str], None],
    probe_timeout: float,
    publisher: Any = None,
    serving: Any = None,
) -> LiveWorld:
    """Offline plans -> World (started) -> the stack adapter's applied state seeded from the same plans.

    `serving`: the world's serving factory (default one Triton per region; rehearse-release: its tracks)."""
    from drills.rehearsal.adapters import RehearsalStacks
    from drills.rehearsal.serving import TritonPerRegion
    from drills.rehearsal.world import World, model_build_publisher

    world = World(
        fleet,
        model_dir=model_dir,
        workdir=workdir,
        base_port=base_port,
        scale=scale,
        seed=seed,
        publisher=publisher or model_build_publisher,
        serving=serving or TritonPerRegion,
        log=log,
    )
    # The ports first (a port in use stops the run at once, before seconds of offline planning); start() checks again.
    world.claim_ports()
    t0 = time.monotonic()
    log(
        f"offline plan of {fleet.global_stack} and {', '.join(fleet.stack_names.values())} "
        "(Pulumi programs under mocks) ..."
    )
    declared, per = declared_resources(fleet, stacks_dir)
    log(f"offline plan: {len(declared)} declared resources in {time.monotonic() - t0:.1f} s")
    world.timings["offline plan of the stacks"] = round(time.monotonic() - t0, 3)
    world.start(declared)
    try:
        stacks = RehearsalStacks(world, stacks_dir, stack_state)
        for stack, (recs, outputs) in per.items():
            stacks.mark_applied(stack, recs, outputs)
        live = LiveWorld(world, stacks_dir, stack_state, probe_timeout, seed, probe_body(world), stacks=stacks)
    except BaseException:
        world.close()
        raise
    return live


# ---------------------------------------------------------------- the run
def _explain_start_failure(e: BaseException, opts: Options) -> str:
    from drills.rehearsal.procs import PortInUse, ProcessError
    from drills.rehearsal.repo import ArtifactError

    if isinstance(e, PortInUse):
        return (
            f"the world could not start: {e}. Nothing is left running. What to do: stop whatever holds that port, or "
            "pass --base-port N for another block of 5 ports (N..N+4 on 127.0.0.1 and the regions' 127.0.10.x)."
        )
    if isinstance(e, ArtifactError):
        return (
            f"the world refused the model: {e}. Nothing is left running. What to do: rebuild the model "
            "(--rebuild-model, or `python -m model_build --out DIR` for --model-dir)."
        )
    if isinstance(e, ProcessError):
        return (
            f"the world could not start: {e}\nNothing is left running. What to do: read the log named above; if the "
            f"machine is just slow, raise --ready-timeout (now {opts.ready_timeout:g} s)."
        )
    return f"the world could not start: {type(e).__name__}: {e}. Nothing is left running."


@dataclass
class Prepared:
    """Everything decided before any process starts: the run directory, the stack copy, the plan, the model."""

    opts: Options
    out: Path
    stacks_dir: Path
    stack_state: Path
    state_dir: Path
    fleet: Any
    plan: Any
    model: Any
    notes: list[str]
    scale: Any  # drills.rehearsal.world.Scale
    plans: list[tuple[str, Any, str | None]] = field(
        default_factory=list
    )  # --scenario all: (scenario, plan or None, why not)


@dataclass
class DrillRun:
    outcome: Any
    records: list
    entries: list[dict]
    clock: Any
    facts: dict = field(default_factory=dict)
    interrupted: str | None = None
    error: str | None = None


def plan_for(prep: Prepared, scenario: str | None = None, region: str | None = None, params: dict | None = None) -> Any:
    """A plan from the run's stack copy (the drills planner, guardrails included), with the model's manifest."""
    from drills.scenarios import build_plan

    o = prep.opts
    scenario = scenario or o.scenario
    if scenario == ALL:
        scenario = next(sc for sc, p, _ in prep.plans if p is not None)
    region = region or (o.region if scenario == o.scenario else None) or default_region(prep.fleet, scenario)
    overrides = {**drill_parameters(o), **(params or {})}
    return build_plan(
        scenario,
        o.env,
        region,
        plan_file=o.plan_file,
        stacks_dir=prep.stacks_dir,
        overrides=overrides,
        manifest=str(prep.model.dir / "manifest.json") if prep.model else None,
    )


def prepare(opts: Options, log: Callable[[str], None]) -> Prepared:
    """Validate, copy the stacks, plan (refusals here start nothing), get the verified model, plan with its manifest."""
    from drills.errors import GuardrailError
    from drills.rehearsal.model_cache import CACHE_ROOT, ensure_model

    check_run_options(opts.scale, opts.rate, opts.clients, opts.env, Path(opts.stacks_dir))
    out = Path(opts.out or default_out(opts.env, opts.scenario)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log(f"rehearsal of [bold]{opts.scenario}[/bold] on [bold]{opts.env}[/bold] -> {out}")
    reap_leftovers(log)
    stacks_dir = out / "stacks"
    notes = prepare_stacks(opts.stacks_dir, stacks_dir, opts.env)
    fleet = load_fleet(opts.env, stacks_dir)
    prep = Prepared(
        opts,
        out,
        stacks_dir,
        out / "stack-state",
        Path(opts.state_dir).resolve() if opts.state_dir else out / "state",
        fleet,
        None,
        None,
        notes,
        None,
    )
    if opts.scenario == ALL:
        # Every scenario the environment can run; the others are listed with the guardrail's reason.
        for sc in SCENARIO_ORDER:
            try:
                prep.plans.append((sc, plan_for(prep, sc), None))
            except GuardrailError as e:
                prep.plans.append((sc, None, str(e)))
                log(f"{sc}: not runnable on {opts.env}: {e}")
        if not any(p for _, p, _ in prep.plans):
            raise RehearsalError(f"no scenario can run on {opts.env}; nothing was started")
    else:
        plan_for(
            prep
        )  # guardrails (a scenario the env cannot run, capacity, ...) raise GuardrailError: nothing started yet
    prep.model = ensure_model(
        model_dir=opts.model_dir,
        cache_root=opts.model_cache or CACHE_ROOT,
        rebuild=opts.rebuild_model,
        stacks_dir=opts.stacks_dir,
        log_dir=out / "logs",
        log=log,
    )
    prep.notes += pin_releases(
        stacks_dir, opts.env, {prep.model.version: prep.model.manifest_sha256}, dev_key()[1].read_text()
    )
    prep.fleet = fleet = load_fleet(opts.env, stacks_dir)
    prep.plan = plan_for(prep)
    if opts.scenario == ALL:  # again, now with the model's manifest
        prep.plans = [(sc, plan_for(prep, sc) if p is not None else None, why) for sc, p, why in prep.plans]
    (out / "plan.json").write_text(prep.plan.model_dump_json(indent=1))
    prep.scale = scale = world_scale(fleet, prep.plan, opts)
    log(
        f"scale {opts.scale:g}: health check every {scale.hc_interval:g} s "
        f"(configured {fleet.glob.health_check.request_interval} s, "
        f"threshold {fleet.glob.health_check.failure_threshold}), TTL {scale.ttl} s "
        f"(configured {fleet.glob.ttl} s), propagation "
        f"{scale.dns_refresh:g} s, replication lag {scale.replication_lag:g} s; the engine runs in drill seconds "
        f"(1 drill second = {opts.scale:g} wall seconds)"
    )
    return prep


def world_for(prep: Prepared, log: Callable[[str], None]) -> LiveWorld:
    """Start the world for a prepared rehearsal; start-up failures become a RehearsalError saying what to do."""
    from drills.rehearsal.procs import PortInUse, ProcessError
    from drills.rehearsal.repo import ArtifactError
    from drills.rehearsal.triton import TritonUnavailable

    o = prep.opts
    try:
        live = start_world(
            prep.fleet,
            model_dir=prep.model.dir,
            workdir=prep.out / "world",
            stacks_dir=prep.stacks_dir,
            stack_state=prep.stack_state,
            scale=prep.scale,
            base_port=o.base_port,
            seed=o.seed,
            log=log,
            probe_timeout=min(o.request_timeout, 1.0),
        )
    except (PortInUse, ProcessError, ArtifactError, TritonUnavailable) as e:
        raise RehearsalError(_explain_start_failure(e, o)) from None
    d = live.world.describe()
    log(
        "world up: "
        + ", ".join(
            f"{r} {v['address']} (Triton ready in {v['triton']['ready_s'][0]:.1f} s)" for r, v in d["regions"].items()
        )
        + f"; DNS {d['dns']}; moto {d['moto']}"
    )
    return live


def survivor_scaler(world: Any, o: Options, log: Callable[[str], None]) -> Any:
    """The modelled autoscaler over the world's node groups in moto (drills/rehearsal/capacity.py)."""
    from drills.adapters.capacity import EksCapacity
    from drills.rehearsal.capacity import SurvivorScaler
    from drills.rehearsal.serving import TritonPerRegion

    if not isinstance(world.serving, TritonPerRegion):
        raise RehearsalError("--capacity-model needs the per-region serving of `rehearse` (not a release's tracks)")
    eks = EksCapacity({r: world.client("eks", r) for r in world.regions}, dict(world.clusters), world.serving)
    return SurvivorScaler(
        world,
        world.serving,
        rate=o.rate,
        scale=o.scale,
        reservations=o.capacity_model == "declared",
        node_groups=lambda r: {g.pool: (g.desired, g.max) for g in eks.node_groups(r)},
        set_desired=lambda r, pool, n: eks.set_scaling(r, pool, desired=n),
        log=log,
    )


def drill(session: Session, prep: Prepared, log: Callable[[str], None], plan: Any = None) -> DrillRun:
    """Client traffic + one drill through the engine (backend "rehearsal" over the session's world) + traffic stopped.
    Ctrl-C inside the drill makes the engine roll back (its own handler); the outcome then says "aborted"."""
    from drills.journal import load
    from drills.rehearsal.clock import ScaledClock

    o = prep.opts
    plan = plan or prep.plan
    live = session.live
    world = live.world
    run = DrillRun(None, [], [], None)
    lg = None
    scaler: Any = None
    try:
        bound = _drill_bound(plan) * o.scale + 120.0  # wall seconds: the traffic stops by then at the latest
        resilient = resilient_setup(world, prep.model.dir, o.resilient_clients) if o.resilient_clients else None
        if o.capacity_model != "off":
            scaler = survivor_scaler(world, o, log)
            scaler.prepare()
        lg = session.traffic(
            rate=o.rate, duration=bound, clients=o.clients, timeout=o.request_timeout, resilient=resilient
        )
        log(
            f"traffic: {o.rate:g} ranking requests/s (32 real feature rows each) from {o.clients} clients resolving "
            f"{world.fqdn} through the DNS model (a separate process)"
            + (
                f", and {o.resilient_clients} resilient clients (drills.client.RankerClient) over "
                f"{', '.join(resilient.regional_names.values())}"
                if resilient
                else ""
            )
        )
        time.sleep(min(2.0, max(0.5, 5 * o.scale)))  # a little steady traffic before the drill starts
        run.clock = ScaledClock(o.scale)
        if scaler is not None:
            scaler.start()
        # The world is handed to the engine as a backend object; these options are what the journal records, so
        # that `drills rollback` in another process can start a fresh world (drills.rehearsal.command).
        options = {
            "stacks_dir": str(prep.stacks_dir),
            "stack_state": str(prep.stack_state),
            "model_dir": str(prep.model.dir),
            "workdir": str(prep.out / "world-rollback"),
            "scale": o.scale,
            "seed": o.seed,
            "replication_lag": o.replication_lag,
            "ready_timeout": o.ready_timeout,
            "probe_timeout": min(o.request_timeout, 1.0),
        }
        log(
            f"drill: {plan.scenario}" + (f" of {plan.region}" if plan.region else "") + f", {len(plan.steps)} steps, "
            "executed (no --confirm: the rehearsal changes only its own copy of the environment)"
        )

        def backend(clock: Any) -> Any:
            b = backend_for(live, options, clock)
            if scaler is not None:  # the pods the modelled autoscaler added, as the AWS backend reads them
                b.pod_startups = scaler.pod_startups(clock)
            return b

        run.outcome = session.drill(plan, prep.state_dir, backend, run.clock)
        log(
            f"drill {run.outcome.drill_id}: {run.outcome.status}"
            + (f" ({run.outcome.reason})" if run.outcome.reason else "")
        )
    except KeyboardInterrupt:
        run.interrupted = "interrupted (Ctrl-C / SIGINT)"
    except SystemExit as e:
        run.interrupted = f"terminated (exit {e.code})"
    except DrillError:
        raise
    except Exception as e:  # noqa: BLE001 - reported; the caller tears everything down
        import traceback

        run.error = f"{type(e).__name__}: {e}"
        (prep.out / "error.txt").write_text(traceback.format_exc())
        log(f"[red]drill failed[/red]: {run.error} (traceback in {prep.out / 'error.txt'})")
    finally:
        if scaler is not None:
            scaler.stop()
        if lg is not None:
            lg.stop()
            run.records = lg.records()
            died = lg.error()
            if died and not run.error:
                run.error = died
                log(f"[red]traffic failed[/red]: {died}")
        try:
            run.facts = _facts(live)
        except Exception as e:  # noqa: BLE001 - facts are for the report
            run.facts = {"error": f"{type(e).__name__}: {e}"}
        if scaler is not None and run.clock is not None:
            injected = [e["wall"] for e in run.facts.get("fault_events", []) if e.get("event") == "inject"]
            run.facts["capacity"] = scaler.report(run.clock.to_drill, injected[0] if injected else None)
    if run.interrupted:
        log(f"[red]{run.interrupted}[/red]: stopping traffic and every process")
    if run.outcome is not None:
        run.entries = load(prep.state_dir, run.outcome.drill_id)
    return run


def run(opts: Options, log: Callable[[str], None] | None = None) -> Result:
    """The whole rehearsal: prepare, world, drill(s), teardown (always), report(s)."""
    from drills.rehearsal.report import build, index, write

    log = log or Progress()
    t_start = time.time()
    prep = prepare(opts, log)
    todo = (
        [(sc, p) for sc, p, _ in prep.plans if p is not None] if opts.scenario == ALL else [(opts.scenario, prep.plan)]
    )
    session = Session(lambda: world_for(prep, log), log)
    runs: list[tuple[str, Any, DrillRun]] = []
    stopped: DrillRun | None = None
    try:
        session.start()
        for sc, plan in todo:
            dr = drill(session, prep, log, plan)
            runs.append((sc, plan, dr))
            if dr.interrupted or dr.error or dr.outcome is None:
                break  # Ctrl-C or a failure of the rehearsal itself: stop here whatever --keep-going says
            if dr.outcome.status != "completed" and not opts.keep_going and len(runs) < len(todo):
                log(
                    f"[yellow]{sc} ended {dr.outcome.status}: the remaining scenarios are skipped "
                    "(--keep-going runs them)[/yellow]"
                )
                break
    except KeyboardInterrupt:
        stopped = DrillRun(None, [], [], None, interrupted="interrupted (Ctrl-C / SIGINT)")
        log(f"[red]{stopped.interrupted}[/red]: stopping every process")
    except SystemExit as e:
        stopped = DrillRun(None, [], [], None, interrupted=f"terminated (exit {e.code})")
        log(f"[red]{stopped.interrupted}[/red]: stopping every process")
    finally:
        session.close()
    leftovers = session.leftovers
    if not runs:
        runs.append((todo[0][0], todo[0][1], stopped or DrillRun(None, [], [], None)))
    results = []
    for sc, plan, dr in runs:
        out = prep.out / sc if opts.scenario == ALL else prep.out
        out.mkdir(parents=True, exist_ok=True)
        report = build(
            opts=opts,
            plan=plan,
            model=prep.model,
            facts=dr.facts,
            records=dr.records,
            entries=dr.entries,
            clock=dr.clock,
            notes=prep.notes,
            wall_seconds=time.time() - t_start,
            leftovers=leftovers,
            interrupted=dr.interrupted or (stopped.interrupted if stopped else None),
            error=dr.error,
            outcome=dr.outcome,
        )
        paths = write(report, dr.records, out, prep.state_dir, dr.entries)
        for p in paths:
            log(f"report: {p}")
        status = (
            dr.outcome.status
            if dr.outcome is not None
            else ("interrupted" if (dr.interrupted or stopped) else "failed")
        )
        code = dr.outcome.exit_code if dr.outcome is not None else (130 if (dr.interrupted or stopped) else 1)
        results.append(Result(code or (1 if leftovers else 0), out, status, report, paths))
    if opts.scenario != ALL:
        return results[0]
    skipped = [(sc, why) for sc, p, why in prep.plans if p is None] + [
        (sc, "not run: an earlier scenario stopped the run") for sc, _ in todo[len(runs) :]
    ]
    rep = index(prep, results, skipped, time.time() - t_start, leftovers)
    paths = write_index(prep.out, rep)
    code = next((r.exit_code for r in results if r.exit_code), 0) or (1 if len(runs) < len(todo) else 0)
    res = Result(code, prep.out, "completed" if not code else "failed", rep, paths)
    res.children = results  # type: ignore[attr-defined]  # per-scenario results, only on a --scenario all run
    return res


def write_index(out: Path, rep: dict) -> list[Path]:
    from drills.rehearsal.report import render_index

    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    (out / "report.md").write_text(render_index(rep))
    return [out / "report.md", out / "report.json"]


def _drill_bound(plan: Any) -> float:
    """An upper bound of the drill's length in drill seconds, from its steps' waits and timeouts (traffic bound)."""
    total = 600.0
    for s in plan.steps:
        total += s.wait_seconds + float(s.params.get("timeout", 0) or 0) + float(s.params.get("deadline", 0) or 0)
        total += float(s.params.get("baseline_seconds", 0) or 0) + 3 * plan.parameters.get("slo_window_seconds", 30)
    return total


def _facts(live: LiveWorld) -> dict[str, Any]:
    """What the report needs from the live world, read before it is torn down."""
    w = live.world
    b = live.backends[-1] if live.backends else None
    out: dict[str, Any] = {
        "describe": w.describe(),
        "predicted_wall": w.route53.predicted_rto(),
        "hc_transitions": [asdict(t) for t in w.route53.hc_transitions()],
        "alarm_transitions": [asdict(t) for t in w.route53.alarm_transitions()],
        "dns_changes": [asdict(c) for c in w.route53.dns_changes()],
        "ttl_wall": w.route53.ttl,
        "ip_region": dict(w.ip_region),
        "fault_events": list(b.extras["world_faults"].events) if b else [],
        "stack_ups": list(b.extras["stacks"].ups) if b else [],
        "canaries": [],
        # The declared ReplicationLatency alarm (global stack), which the report evaluates over the canaries' landings.
        "replication_alarm": next(
            (
                {"threshold_s": i["threshold"], "period_s": i["period"], "evaluation_periods": i["evaluationPeriods"]}
                for i in (r.get("inputs") or {} for r in w.route53.declared)
                if i.get("metricName") == "ReplicationLatency"
            ),
            None,
        ),
    }
    if b is not None:
        for c in b.s3.canaries:
            try:
                rep = w.storage.replication_of(c)
            except Exception:  # noqa: BLE001 - best effort: a canary that cannot be read shows no replication
                rep = {}
            out["canaries"].append({"region": c.region, "key": c.key, "t_put": c.t_put, "replicated": rep})
    return out
