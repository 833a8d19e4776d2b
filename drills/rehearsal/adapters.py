"""The drills adapters for the rehearsal backend: the same protocols the AWS adapters implement, over a `World`.

Each adapter reuses the AWS/local implementation where the world offers the same API (moto speaks boto3) and
replaces only what moto lacks by the world's models:

  RehearsalStacks   StackAdapter: `LocalStackAdapter` over the run's own copy of the stack files. `preview` and
                    `up` run the stack's Pulumi program offline (`infra.mocks.run_program` with the changed
                    config) and `up` applies what it declares to moto (`World.reapply`), so a weight shift or a
                    flip is a config change plus a re-applied program, one source of truth, as on AWS.
  RehearsalRoute53  Route53Adapter: `Boto3Route53` on moto for the records; health from the world's Route 53
                    health-check model, the DNS answer from its DNS model (moto has neither).
  RehearsalS3       S3Adapter (+ ArtifactStore): `Boto3S3` on moto; writes go through `World.put_canary` so the
                    PUT time is exact; the current manifest is the one the region's Triton serves.
  EksCapacity       CapacityAdapter: the EKS node groups the regional programs declared, in moto; Triton
                    readiness from the world (one Triton stands for the region's pods).
  TritonHttpProbe   ProbeAdapter: the drills' own V2 probe against the real Tritons, through the world's DNS
                    server (`DnsClients`: one stub-resolver cache per simulated client, honouring the TTL).
  WorldFaults       FaultAdapter: data-plane faults on the region's Triton process (kill, stall, unload);
                    `hc-invert` (control-plane variant) through `HealthCheckInversion` on the Route 53 API.

`make_backend(world, ...)` bundles them into a `drills.adapters.base.Backend` named "rehearsal" (its factory,
drills.rehearsal.command.backend_factory, is in the table drills.backends.BACKENDS).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drills import brownout
from drills.adapters.base import Backend
from drills.adapters.capacity import EksCapacity
from drills.adapters.faults import CompositeFaults, HealthCheckInversion
from drills.adapters.local_stack import LocalStackAdapter
from drills.adapters.probes import TritonHttpProbe
from drills.adapters.route53 import Boto3Route53
from drills.adapters.s3 import Boto3S3
from drills.clock import Clock
from drills.errors import DrillError
from drills.journal import atomic_write
from drills.rehearsal.declared import records_from_plan
from drills.rehearsal.loadgen import CachingResolver
from drills.scenarios.readiness import FAULT as SERVED_MANIFEST_DIFFERS

if TYPE_CHECKING:  # the adapters are built over a started world; the world imports none of them
    from drills.rehearsal.world import World

# infra.mocks drives the Pulumi runtime through process-global settings: one offline program run at a time.
_PROGRAM_LOCK = threading.Lock()


def offline_plan(stack: str, stacks_dir: Path) -> Any:
    """The stack's Pulumi program run offline under mocks (what `pulumi preview` would show it declares)."""
    import pulumi

    from infra.mocks import run_program

    with _PROGRAM_LOCK:
        try:
            return run_program(stack, stacks_dir=Path(stacks_dir))
        except pulumi.RunError as e:  # a config error inside the program: the sentence, not the traceback
            raise DrillError(f"pulumi up would fail: the program of {stack} refused its config: {e}") from None


def _digests(declared: list[dict]) -> dict[str, str]:
    return {
        r.get("urn") or f"{r['type']}::{r['name']}": hashlib.sha256(
            json.dumps(r["inputs"], sort_keys=True, default=str).encode()
        ).hexdigest()
        for r in declared
    }


# ---------------------------------------------------------------- stacks
class RehearsalStacks(LocalStackAdapter):
    """Stack config of record: the run's copy of the stack files. Up = the program's offline plan applied to moto."""

    def __init__(
        self, world: World, stacks_dir: Path, state_dir: Path, on_region_up: Callable[[Any], None] | None = None
    ):
        """`on_region_up(cfg)`: what else a regional `up` changes in this world beyond the declared AWS objects (the
        release rehearsal: its stable/canary Deployments and listener weights)."""
        super().__init__(stacks_dir, state_dir, appliers={"global": self._apply, "region": self._apply_region})
        self.world = world
        self.on_region_up = on_region_up
        self._plans: dict[str, tuple[str, Any]] = {}  # stack -> (config digest, offline plan)
        self.ups: list[dict] = []  # every up: stack, wall time, summary (the report's timeline)

    def _plan(self, stack: str) -> Any:
        digest = hashlib.sha256(
            json.dumps(self._config(self._doc(stack)), sort_keys=True, default=str).encode()
        ).hexdigest()
        hit = self._plans.get(stack)
        if hit is None or hit[0] != digest:
            hit = (digest, offline_plan(stack, self.stacks_dir))
            self._plans[stack] = hit
        return hit[1]

    def _declared_file(self, stack: str) -> Path:
        return self.state_dir / "declared" / f"{stack}.json"

    def mark_applied(self, stack: str, declared: list[dict], outputs: dict) -> None:
        """Record what the world was brought up with as this stack's applied state (its first `pulumi up`)."""
        atomic_write(self._applied_file(stack), json.dumps(self._config(self._doc(stack)), sort_keys=True))
        atomic_write(self._declared_file(stack), json.dumps(_digests(declared), sort_keys=True))
        self.seed_outputs(stack, self._as_applied(outputs))

    def preview(self, stack: str) -> dict[str, int]:
        """What `up` would change, by resource: the program's declared resources now vs at the last `up`."""
        self._validated(stack)
        now = _digests(records_from_plan(self._plan(stack)))
        f = self._declared_file(stack)
        before = json.loads(f.read_text()) if f.exists() else {}
        out = {"same": 0, "update": 0, "create": 0, "delete": 0}
        for urn, d in now.items():
            out["same" if before.get(urn) == d else "update" if urn in before else "create"] += 1
        out["delete"] = sum(1 for urn in before if urn not in now)
        return out

    def _apply(self, adapter: LocalStackAdapter, stack: str, cfg: Any) -> dict:
        plan = self._plan(stack)
        declared = records_from_plan(plan)
        t0 = time.time()
        self.world.reapply(declared, propagate_now=False)
        atomic_write(self._declared_file(stack), json.dumps(_digests(declared), sort_keys=True))
        self.ups.append({"stack": stack, "wall": t0, "seconds": round(time.time() - t0, 3)})
        return self._as_applied(plan.outputs)

    def _apply_region(self, adapter: LocalStackAdapter, stack: str, cfg: Any) -> dict:
        out = self._apply(adapter, stack, cfg)
        if self.on_region_up is not None:
            self.on_region_up(cfg)
        return out

    def _as_applied(self, outputs: dict) -> dict:
        """The program's outputs with the mocks' ids replaced by the ids moto gave the applied objects."""
        out = dict(outputs)
        ap = self.world.applied
        if ap is not None and out.get("zone_id") in ap.zones:
            out["zone_id"] = ap.zones[out["zone_id"]]
        if isinstance(out.get("health_check_ids"), dict):
            out["health_check_ids"] = {
                r: self.world.health_check_ids.get(r, h) for r, h in out["health_check_ids"].items()
            }
        return out


# ---------------------------------------------------------------- Route 53
class RehearsalRoute53(Boto3Route53):
    """Records from moto through boto3 (as on AWS, no read cache: moto has no API budget); health and answers from
    the world's models, which stand for Route 53's checkers and name servers."""

    def __init__(self, world: World):
        assert world.applied is not None, "the world has not started"
        regions: dict[str, str | None] = {r: name for name, r in world.applied.alias_targets().items()}
        super().__init__(
            world.client("route53"),
            world.route53.zone_id(),
            world.fqdn,
            regions,
            dict(world.health_check_ids),
            answer_samples=0,
            cache_seconds=0.0,
        )
        self.world = world

    def health(self, region: str) -> bool:
        # The model reports what Route 53 would: inversion and disabling already applied.
        return bool(self.world.route53.health_status().get(region, False))

    def dns_answer(self) -> dict[str, float]:
        return self.world.route53.routing()

    def set_inverted(self, region: str, inverted: bool) -> None:
        self.world.route53.set_inverted(region, inverted)
        self._inverted[region] = inverted


# ---------------------------------------------------------------- S3
class RehearsalS3(Boto3S3):
    """Artifact buckets in moto. The world's replicator copies objects by the stored replication rules."""

    def __init__(self, world: World, models: Mapping[str, tuple[str, str]]):
        super().__init__({r: world.client("s3", r) for r in world.regions}, dict(world.buckets), dict(models))
        self.world = world
        self.canaries: list[Any] = []  # drills.rehearsal.storage.Canary, for the exact RPO in the report

    def put_object(self, region: str, key: str, body: bytes) -> str | None:
        c = self.world.storage.put_canary(region, key=key, body=body)
        self.canaries.append(c)
        return c.version_id

    def current_manifest(self, region: str) -> tuple[dict | None, str | None]:
        # What the region's Triton serves (synced from its bucket and hash-checked when it started), not just
        # what the bucket holds: version skew is about what answers requests.
        if self.world.serving.repo(region) is not None:
            return self.world.served_manifest(region)
        return super().current_manifest(region)


# ---------------------------------------------------------------- probes
class DnsClients:
    """`Resolver` for the drills' service probes: client n resolves the name through the world's DNS server with its
    own cache, kept for the answer's TTL (the first answer for a random part of it, as clients already running
    would), so probes move between regions as real clients do."""

    def __init__(self, dns_server: tuple[str, int], name: str, ip_region: dict[str, str], port: int, seed: int = 7):
        self.dns_server, self.name, self.ip_region, self.port, self.seed = dns_server, name, ip_region, port, seed
        self._resolvers: dict[int, CachingResolver] = {}

    @classmethod
    def for_world(cls, world: World, seed: int = 7) -> DnsClients:
        return cls(world.dns_address, world.fqdn, dict(world.ip_region), world.ports["http"], seed)

    def resolve(self, client: int) -> tuple[str | None, str | None]:
        r = self._resolvers.get(client)
        if r is None:
            r = self._resolvers[client] = CachingResolver(
                self.dns_server, stagger=random.Random(self.seed * 1000 + client)
            )
        try:
            ip, _ = r.resolve(self.name)
        except Exception:  # noqa: BLE001 - no answer is a failed probe, as getaddrinfo failing is
            return None, None
        return self.ip_region.get(ip), f"http://{ip}:{self.port}"


# ---------------------------------------------------------------- faults
FAULT_MODES = {"triton-down": "kill", "triton-stall": "stall", "triton-unload": "unload"}


class WorldFaults:
    """Data-plane faults on a region; nothing here calls Route 53 or changes a stack.

    triton-down   SIGKILL the server (a crash: connections refused) -- the AWS adapter scales the pods to 0
    triton-stall  SIGSTOP its process group (a hang: requests and health probes time out)
    triton-unload unload the model (a gray failure: readiness blips, inference fails; Route 53 may not notice)
    drills.brownout's kinds (region-brownout, `KIND[=VALUE]`): the network ones on the region's load-balancer model's
    data path (world.degrade), `unload` as triton-unload, `replication-partition` in the S3 replication model.
    Every injection and clearing is recorded with its wall time (`events`): the client-side RTO starts there.
    """

    kinds = (*FAULT_MODES, *brownout.KINDS, SERVED_MANIFEST_DIFFERS)

    def __init__(self, world: World):
        self.world = world
        self.events: list[dict] = []

    def prepare(self, region: str, kind: str) -> dict:
        if kind == SERVED_MANIFEST_DIFFERS:
            # The bytes to put back, in the handle the engine journals before the injection (a rollback may run
            # in another process).
            return {"mode": "manifest", "original": self.world.served_manifest_path(region).read_text()}
        if kind in FAULT_MODES:
            return {"mode": FAULT_MODES[kind], "state_before": self.world.triton_state().get(region)}
        f = brownout.parse(kind)
        if f.kind in brownout.NETWORK:
            return {"mode": "network", "fault": f.lb()}
        if f.kind in brownout.REPLICATION:
            return {"mode": "replication"}
        return {"mode": "unload", "state_before": self.world.triton_state().get(region)}

    def inject(self, region: str, kind: str, handle: dict) -> None:
        if handle["mode"] == "manifest":
            self.world.alter_served_manifest(region, None)
            t = time.time()
        elif handle["mode"] == "network":
            t = self.world.degrade(region, handle["fault"])
        elif handle["mode"] == "replication":
            t = self.world.partition_replication(region, True)
        else:
            t = self.world.fail_region(region, handle["mode"])
        self.events.append({"event": "inject", "region": region, "kind": kind, "wall": t})

    def clear(self, region: str, kind: str, handle: dict) -> None:
        # Safe to repeat and after a crash mid-inject: restoring a ready region does nothing.
        t = time.time()
        ready_s = 0.0
        if handle.get("mode") == "manifest":
            self.world.alter_served_manifest(region, handle["original"].encode())
        elif handle.get("mode") == "network":
            self.world.degrade(region, None)
        elif handle.get("mode") == "replication":
            self.world.partition_replication(region, False)
        elif self.world.triton_state().get(region) not in ("ready", None):
            ready_s = self.world.restore_region(region)
        self.events.append({"event": "clear", "region": region, "kind": kind, "wall": t, "ready_s": round(ready_s, 3)})


# ---------------------------------------------------------------- the bundle
def make_backend(
    world: World,
    *,
    stacks_dir: Path,
    state_dir: Path,
    clock: Clock,
    options: dict,
    probe_timeout: float = 1.0,
    seed: int = 7,
    probe_body: dict | None = None,
    release: ReleaseParts | None = None,
) -> Backend:
    """A drills Backend over a started world. The world itself is not closed by the backend (its owner does).
    With `release`, the backend a release rehearsal drives (named "rehearsal-release")."""
    fleet = world.fleet
    stacks = RehearsalStacks(world, stacks_dir, state_dir, release.on_region_up if release else None)
    route53 = RehearsalRoute53(world)
    s3 = RehearsalS3(world, {r: (c.model.name, c.model.version) for r, c in fleet.regions.items()})
    capacity = EksCapacity(
        {r: world.client("eks", r) for r in world.regions},
        dict(world.clusters),
        world.serving,  # ready and desired servers per region: the pods
    )
    probes: Any
    if release:
        probes, closers = release.probes, [release.probes.stop]
    else:
        probes = TritonHttpProbe(
            # each region through its load balancer, as the drills probe a region on AWS
            {r: f"http://{world.region_ip[r]}:{world.ports['http']}" for r in world.regions},
            world.traffic.model,
            clock,
            DnsClients.for_world(world, seed),
            timeout=probe_timeout,
            body=probe_body,
        )
        closers = [probes.session.close]
    faults_world = WorldFaults(world)
    faults = CompositeFaults(
        faults_world, HealthCheckInversion(route53), *(release.faults(s3, stacks) if release else ())
    )

    # What `drills readiness` evaluates on AWS, over this world (readiness_view.py), against the stack copy as it is
    # now (a release rehearsal changes versions and pins between its drills).
    def readiness() -> list[Any]:
        from drills.readiness.checks import declared_from, evaluate
        from drills.rehearsal.readiness_view import WorldFleetView
        from infra.config import load_fleet

        now = load_fleet(fleet.env, stacks_dir)
        return evaluate(WorldFleetView(world, capacity, now).snapshot(), declared_from(now))

    b = Backend(
        "rehearsal-release" if release else "rehearsal",
        options,
        stacks,
        route53,
        s3,
        capacity,
        probes,
        faults,
        extras={"world": world, "world_faults": faults_world, "stacks": stacks},
        closers=closers,
        serving=release.serving if release else None,
        scores=release.scores if release else None,
        metrics=release.metrics if release else None,
        readiness=readiness,
    )
    return b


@dataclass
class ReleaseParts:
    """What a release rehearsal's backend has beyond the rehearsal's own: its stable/canary serving (also the pods and
    the Triton metrics), the drill's probes in their own process, version-pinned scoring, a hook run after each
    regional `up`, and the faults below a region (built once the backend's S3 and stacks exist)."""

    serving: Any
    probes: Any
    scores: Any
    on_region_up: Callable[[Any], None]
    faults: Callable[[Any, Any], list[Any]]

    @property
    def metrics(self) -> Any:
        return self.serving
