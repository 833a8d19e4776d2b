"""Release serving in the rehearsal: stable and canary Triton "Deployments" per region behind a weighted "ALB".

The rehearsal's `World` serves each region's load-balancer address (127.0.10.<n>) through a `serving.RegionServing`.
A release needs what the regional stack declares on AWS (infra/components/triton.py, load_balancer.py): two
tracks per region, each its own pods, and a load balancer splitting the region's requests by the canary weight,
with listener rules pinning a request to one track by the `X-Reco-Track` header. Modelled here:

  pods          real CPU Tritons (drills.rehearsal.triton.TritonServer) on pod addresses 127.0.<20+k>.<n>, each
                serving a repository synced from the region's bucket under the version's immutable prefix and
                hash-checked file by file against its manifest before the server starts
                (`repo.prepare_serving_repo`): the verify-model init container. A mismatch refuses the pod: it
                never starts, the refusal is recorded with the expected and found sha256, and the pods that were
                serving keep serving (a rollout with maxUnavailable 0 stalls).
  Deployment    per track: version, desired pods, the ready pods of the current template (`TrackState`).
  ALB           `alb_proc.AlbProcess`, one child process per region (not behind the drill's GIL) on the region's
                address and HTTP port (what DNS answers), routing by the table `ServingModel` pushes on every
                change (ready pods per track, canary weight): requests with
                `X-Reco-Track` go to that track; others to the canary with probability weight/100 when it has
                ready pods, else to stable; only ready pods are targets (target health). A request that reached no
                server (connection refused/reset: a pod that just died) is sent to another pod, as target
                deregistration makes a lost pod's share go elsewhere; a request that timed out is not retried.
  pulumi up     `ServingModel.apply(region, model_cfg)`, called by the rehearsal stack adapter after the program
                is re-applied to moto: new stable version -> new pods started and ready first, then the proxy
                switched, then the old pods stopped (maxUnavailable 0, blue/green); canary version -> one canary
                pod; canary cleared -> weight 0 first, then its pods stopped.
  A/B arms      `apply(region, model_cfg, arms)` with `arms` = infra.experiments.arm_routes (what the regional
                stack's arm rules declare): a Deployment of one pod per cell version other than the stable one
                (track `infra.arms.arm_track(version)`, as the regional stack labels it), ready before the load
                balancer's table names it; the table maps every header value to its track (the stable track for the
                stable version); an arm no longer routed is unrouted first, then its pods stop.
  node loss     `lose_node(region)`: SIGKILL one stable pod (its node gone); a replacement pod (verified like any)
                starts after `replace_seconds`, as the managed node group's Auto Scaling group replaces the node.

Comparable to AWS: version-pinned V2 scoring through the load balancer (`TritonScoreProbe` with the header),
each pod's /metrics scraped directly (Prometheus scrapes pods, not the load balancer).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drills.adapters.base import TrackState
from drills.rehearsal.alb_proc import AlbProcess
from drills.rehearsal.procs import Child
from drills.rehearsal.repo import ArtifactError, ServingRepo
from drills.rehearsal.serving import region_alb, start_verified_pod
from drills.rehearsal.triton import TritonServer
from infra.arms import ARM_TRACK_PREFIX, arm_track

if TYPE_CHECKING:  # the world builds its serving; serving reads the world's started parts
    from drills.rehearsal.world import World

STABLE, CANARY = "stable", "canary"
POD_NET = 20
# pod k of region n listens on 127.0.<20 + k % 200>.<n+1>


@dataclass
class Pod:
    name: str
    track: str
    version: str
    server: TritonServer
    repo: ServingRepo
    started: float
    sidecar: Child | None = None  # the declared deep-health sidecar beside its Triton

    @property
    def ready(self) -> bool:
        return self.server.state == "ready"


@dataclass
class Deployment:
    version: str
    desired: int
    pods: list[Pod] = field(default_factory=list)  # pods of this template (ready or not)
    refused: str | None = None  # why the last pod of this template was refused (verification)


# ---------------------------------------------------------------- the serving model
class ServingModel:
    """Stable/canary Deployments per region over real Tritons: the world's `serving.RegionServing` in a release
    rehearsal, and the drills' `ServingAdapter` there."""

    def __init__(self, world: World, replicas: dict[str, int] | None = None, replace_seconds: float = 3.0):
        self.world = world
        self.replicas = dict(replicas or {})
        self.replace_seconds = replace_seconds  # wall seconds until a lost node's replacement pod starts
        self.deps: dict[str, dict[str, Deployment]] = {}
        self.weight: dict[str, int] = {}
        self.proxies: dict[str, AlbProcess] = {}
        self._counts: dict[str, list] = {}
        self.events: list[dict] = []  # every pod start/refusal/stop, weight change and node loss, wall-clock dated
        self._slot = 0
        self._locks: dict[str, threading.RLock] = {}
        self._threads: list[threading.Thread] = []
        self.model = next(iter(world.fleet.regions.values())).model.name
        self._handle: dict[str, Pod] = {}  # region -> the stable pod its handle follows
        self.pins: dict[str, dict[str, str]] = {}  # region -> {version: manifest sha256} of the last `up`
        self.arms: dict[str, dict[str, str]] = {}  # region -> {ARM_HEADER value: version} of the last `up`

    def _lock(self, region: str) -> threading.RLock:
        return self._locks.setdefault(region, threading.RLock())

    def _event(self, **kw: Any) -> None:
        self.events.append({"wall": time.time(), **kw})

    # ------------------------------------------------------------ pods
    def _pod_address(self, region: str) -> str:
        self._slot += 1
        return f"127.0.{POD_NET + self._slot % 200}.{self.world.regions.index(region) + 1}"

    def start_pod(self, region: str, track: str, version: str) -> Pod:
        """A pod of `track` at `version` (serving.start_verified_pod: fetched from the region's bucket under the
        version's prefix, verified against the pin of the last `up` or of a restore, started, answering); a refusal
        is recorded with the reason (expected and found sha256) and raised as ArtifactError."""
        w = self.world
        name = f"{region}-{track}-{self._slot + 1}"
        addr = self._pod_address(region)
        pins = self.pins.get(region) or w.fleet.regions[region].model.digests
        try:
            started = start_verified_pod(
                w,
                region,
                name=name,
                version=version,
                prefix=f"{self.model}/{version}",
                pin=pins.get(version, ""),
                address=addr,
                pdir=w.workdir / "regions" / region / "pods" / name,
            )
        except ArtifactError as e:
            self._event(event="refused", region=region, track=track, version=version, pod=name, reason=str(e))
            raise
        t, repo = started.server, started.repo
        pod = Pod(name, track, version, t, repo, time.time(), started.sidecar)
        self._event(
            event="pod-ready",
            region=region,
            track=track,
            version=version,
            pod=name,
            address=addr,
            ready_s=round(t.ready_s[-1], 3),
            served_sha256=dict(repo.served),
            fetched=started.fetched,
        )
        return pod

    def _stop_pods(self, region: str, pods: list[Pod], why: str) -> None:
        for p in pods:
            p.server.stop()
            self._stop_sidecar(p)
            self._event(event="pod-stopped", region=region, track=p.track, version=p.version, pod=p.name, why=why)

    def _rollout(self, region: str, track: str, version: str, desired: int) -> Deployment:
        """New pods for `version`, all ready before they replace the old ones (maxUnavailable 0). A refused pod
        leaves the Deployment at its new version with 0 ready: the old pods keep serving."""
        dep = Deployment(version, desired)
        try:
            for _ in range(desired):
                dep.pods.append(self.start_pod(region, track, version))
        except ArtifactError as e:
            dep.refused = str(e)
        return dep

    # ------------------------------------------------------------ start-up (the world's first pulumi up)
    def start(self, region: str) -> float:
        """The region's stable track at the world's published version, and its load balancer (RegionServing)."""
        t0 = time.monotonic()
        self.start_region(region, self.world.model_prefix.split("/", 1)[1])
        return time.monotonic() - t0

    def start_region(self, region: str, version: str) -> Pod:
        with self._lock(region):
            dep = self._rollout(region, STABLE, version, self.replicas.get(region, 1))
            if dep.refused:
                raise ArtifactError(dep.refused)
            self.deps[region] = {STABLE: dep}
            self.weight[region] = 0
            self.proxies[region] = region_alb(self.world, region, self.model)
            self._push(region)
            self._follow_stable(region)
            return dep.pods[0]

    def _stop_sidecar(self, pod: Pod) -> None:
        if pod.sidecar is not None:
            self.world.sup.stop(pod.sidecar)

    def albs(self) -> list[AlbProcess]:
        return list(self.proxies.values())

    def degrade(self, region: str, fault: dict | None) -> None:
        self.proxies[region].fault(region, fault)

    def _follow_stable(self, region: str) -> None:
        """The region's handle (faults, served manifest, describe: `servers`, `repo`) follows the serving stable pod;
        while none serves, it stays on the last one."""
        pods = self.serving_pods(region, STABLE)
        if pods:
            self._handle[region] = pods[0]

    def servers(self) -> dict[str, TritonServer]:
        return {r: p.server for r, p in self._handle.items()}

    def repo(self, region: str) -> ServingRepo | None:
        p = self._handle.get(region)
        return p.repo if p else None

    # ------------------------------------------------------------ routing
    def serving_pods(self, region: str, track: str) -> list[Pod]:
        """Pods answering for the track: the current template's ready pods, else (rollout stalled or not ready
        yet) the previous template's, which `previous` keeps until the new one is ready."""
        dep = self.deps.get(region, {}).get(track)
        if dep is None:
            return []
        ready = [p for p in dep.pods if p.ready]
        prev = self._previous.get(region) if track == STABLE else None
        return ready or ([p for p in prev.pods if p.ready] if prev else [])

    def _push(self, region: str) -> None:
        """The region's routing table to its load-balancer process: each track's ready pods, the canary weight."""
        proxy = self.proxies.get(region)
        if proxy is None:
            return
        deps = self.deps.get(region, {})
        targets = {
            t: [(p.name, p.server.address, p.server.http_port, p.version) for p in self.serving_pods(region, t)]
            for t in (STABLE, CANARY, *deps)
        }
        stable = deps[STABLE].version if STABLE in deps else None
        arms = {
            value: STABLE if version == stable else arm_track(version)
            for value, version in self.arms.get(region, {}).items()
            if version == stable or arm_track(version) in deps
        }
        # The pins exist while a canary is configured (its Deployment), ready pods or not, as on AWS.
        proxy.set(region, self.weight.get(region, 0), targets, canary=CANARY in deps, arms=arms)

    # ------------------------------------------------------------ pulumi up of the regional stack
    def apply(self, region: str, model: Any, arms: dict[str, str] | None = None) -> None:
        version, canary_version, weight = model.version, (model.canary_version or ""), int(model.canary_weight or 0)
        with self._lock(region):
            self._apply_tracks(region, model, version, canary_version, weight)
            self._apply_arms(region, version, dict(arms or {}))

    def _apply_arms(self, region: str, stable: str, arms: dict[str, str]) -> None:
        """Arm Deployments for the cells' versions (ready first), then the rules; retired arms unrouted, then
        stopped. A refused arm pod leaves its cells unrouted (their requests fall through to the stable version)."""
        deps = self.deps.setdefault(region, {})
        wanted = {arm_track(v): v for v in arms.values() if v != stable}
        for track, v in sorted(wanted.items()):
            if track not in deps:
                dep = self._rollout(region, track, v, 1)
                if dep.refused:
                    self._event(event="rollout-stalled", region=region, track=track, version=v, reason=dep.refused)
                    continue
                deps[track] = dep
        self.arms[region] = arms
        self._push(region)
        for track in [t for t in deps if t.startswith(ARM_TRACK_PREFIX) and t not in wanted]:
            self._stop_pods(region, deps.pop(track).pods, "experiment arm retired")
        self._push(region)

    def _apply_tracks(self, region: str, model: Any, version: str, canary_version: str, weight: int) -> None:
        self.pins[region] = dict(model.digests)  # each Deployment's verify-model gets its version's pin
        deps = self.deps.setdefault(region, {})
        if not canary_version and CANARY in deps:
            self._set_weight(region, 0)  # the listener first: no request goes to pods about to stop
        stable = deps.get(STABLE)
        if stable is None or stable.version != version:
            new = self._rollout(region, STABLE, version, self.replicas.get(region, 1))
            if new.refused:
                self._event(event="rollout-stalled", region=region, track=STABLE, version=version, reason=new.refused)
                # The Deployment says the new version with 0 ready; the old pods keep serving (kept as `previous`).
                new.pods = []
                deps[STABLE] = new
                self._previous.setdefault(region, stable)
            else:
                deps[STABLE] = new
                self._follow_stable(region)
                self._push(region)  # the targets switched before the old pods stop
                prev = self._previous.get(region)
                if prev:
                    del self._previous[region]
                old = (stable.pods if stable is not None else []) + (prev.pods if prev else [])
                self._stop_pods(region, old, f"rolled to {version}")
        if canary_version:
            cur = deps.get(CANARY)
            if cur is None or cur.version != canary_version:
                if cur is not None:
                    self._set_weight(region, 0)
                deps[CANARY] = self._rollout(region, CANARY, canary_version, 1)
                self._push(region)
                if cur is not None:
                    self._stop_pods(region, cur.pods, f"canary now {canary_version}")
            self._set_weight(region, weight)
        elif CANARY in deps:
            gone = deps.pop(CANARY).pods
            self._push(region)
            self._stop_pods(region, gone, "canary cleared")

    @property
    def _previous(self) -> dict[str, Deployment | None]:
        return self.__dict__.setdefault("_prev", {})

    def _set_weight(self, region: str, weight: int) -> None:
        if self.weight.get(region) != weight:
            self.weight[region] = weight
            self._push(region)
            self._event(event="weight", region=region, canary_weight=weight)

    # ------------------------------------------------------------ ServingAdapter
    def tracks(self, region: str) -> dict[str, TrackState]:
        out = {}
        for track, dep in self.deps.get(region, {}).items():
            if track not in (STABLE, CANARY):
                continue  # experiment arms: routed by their header, no share of the release's weighted split
            w = (
                self.weight.get(region, 0)
                if track == CANARY
                else 100 - (self.weight.get(region, 0) if CANARY in self.deps[region] else 0)
            )
            out[track] = TrackState(
                track=track,
                version=dep.version,
                weight=w,
                ready=sum(1 for p in dep.pods if p.ready),
                desired=dep.desired,
            )
        return out

    def restart(self, region: str, track: str) -> None:
        """`kubectl rollout restart`: new pods from the bucket (verified again), then the old ones stop."""
        with self._lock(region):
            cur = self.deps[region][track]
            new = self._rollout(region, track, cur.version, cur.desired)
            if new.refused:
                self._event(
                    event="rollout-stalled", region=region, track=track, version=cur.version, reason=new.refused
                )
                return  # the old pods keep serving; the restart's caller sees no new ready pod of the template
            self.deps[region][track] = new
            self._follow_stable(region)
            self._push(region)
            self._stop_pods(region, cur.pods, "restarted")

    # ------------------------------------------------------------ PodReadiness (capacity adapter)
    def ready(self, region: str) -> tuple[int, int]:
        dep = self.deps.get(region, {}).get(STABLE)
        return (sum(1 for p in dep.pods if p.ready), dep.desired) if dep else (0, 0)

    # ------------------------------------------------------------ metrics (each pod, as Prometheus scrapes them)
    def scrape(self, region: str, track: str) -> dict[str, str]:
        out = {}
        for p in self.serving_pods(region, track):
            # A pod that just died has no metrics; its counters are gone as on AWS.
            with contextlib.suppress(Exception):
                out[p.name] = p.server.metrics()
        return out

    # ------------------------------------------------------------ node loss
    def lose_node(self, region: str) -> dict:
        with self._lock(region):
            dep = self.deps[region][STABLE]
            ready = [p for p in dep.pods if p.ready]
            if len(ready) < 2:
                raise RuntimeError(
                    f"{region} has {len(ready)} ready stable pod(s): losing one would take the region down, "
                    "an outage rather than a node loss"
                )
            victim = ready[-1]
            victim.server.fail("kill")
            self._stop_sidecar(victim)  # the node is gone: both containers
            self._event(event="node-lost", region=region, pod=victim.name)
            dep.pods.remove(victim)
            dep.pods.append(victim)  # stays counted (not ready) until its replacement is ready
            self._follow_stable(region)
            self._push(region)  # target deregistration (until then the proxy routes around the refused connections)

        def replace() -> None:
            time.sleep(self.replace_seconds)
            with self._lock(region):
                if victim not in dep.pods:
                    return
                try:
                    pod = self.start_pod(region, STABLE, dep.version)
                except Exception as e:  # noqa: BLE001 - recorded; the drill sees readiness not recover
                    self._event(event="replacement-failed", region=region, reason=str(e))
                    return
                dep.pods[dep.pods.index(victim)] = pod
                self._push(region)
                self._event(event="node-replaced", region=region, pod=pod.name, lost=victim.name)

        th = threading.Thread(target=replace, name=f"replace-{region}", daemon=True)
        th.start()
        self._threads.append(th)
        return {"region": region, "pod": victim.name}

    # ------------------------------------------------------------ lifecycle / facts
    def close(self) -> None:
        for region, p in self.proxies.items():
            with contextlib.suppress(Exception):  # keep tearing down
                self._counts[region] = p.counts()
                p.stop()
        for th in self._threads:
            th.join(timeout=self.world.scale.ready_timeout)

    def track_counts(self) -> list[dict]:
        out = []
        for region, p in self.proxies.items():
            rows = self._counts[region] if region in self._counts else p.counts()
            for sec, _region, track, version, pinned, n in rows:
                out.append(
                    {
                        "region": region,
                        "second": sec,
                        "track": track,
                        "version": version,
                        "pinned": pinned,
                        "requests": n,
                    }
                )
        return out

    def describe(self) -> dict:
        return {
            r: {
                "weight": self.weight.get(r, 0),
                "tracks": {
                    t: {
                        "version": d.version,
                        "desired": d.desired,
                        "pods": [
                            {"name": p.name, "address": p.server.address, "state": p.server.state} for p in d.pods
                        ],
                        "refused": d.refused,
                    }
                    for t, d in deps.items()
                },
            }
            for r, deps in self.deps.items()
        }


class NodeLoss:
    """FaultAdapter "gpu-node-loss" over the serving model: one stable pod killed, replaced after a delay."""

    kinds = ("gpu-node-loss",)

    def __init__(self, serving: ServingModel):
        self.serving = serving

    def prepare(self, region: str, kind: str) -> dict:
        ready, desired = self.serving.ready(region)
        return {"region": region, "ready_before": ready, "desired": desired}

    def inject(self, region: str, kind: str, handle: dict) -> None:
        handle.update(self.serving.lose_node(region))

    def clear(self, region: str, kind: str, handle: dict) -> None:
        return None  # the replacement is the node group's job (started by lose_node); nothing to undo


def dump_events(serving: ServingModel, path: Path) -> None:
    path.write_text(json.dumps(serving.events, indent=1, default=str))
