"""What answers on each region's load-balancer address in the rehearsal, behind the one interface the world drives.

`RegionServing` is all `World` needs from serving: start a region (after its bucket holds the model), the region's
serving Triton and repository (faults, the served manifest, the report), its ready and desired servers, the
load-balancer models in front of them (their request logs feed the CloudWatch model; network faults are injected
there), teardown and facts. Two implement it, and a world is handed a factory for one (`World(serving=...)`), so
neither subclasses nor patches the world:

  TritonPerRegion            per region one real Triton and its deep-health sidecar on a pod address, behind the
                             region's load-balancer model on the region's address (`rehearse`), here;
  release_serving.ServingModel  stable and canary tracks of pods behind a load-balancer process
                             (`rehearse-release`).
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from drills.rehearsal.alb_proc import AlbProcess
from drills.rehearsal.pod import PodError, PodSpec, deep_health_argv, fetch_declared
from drills.rehearsal.procs import Child, ProcessError, Supervisor
from drills.rehearsal.repo import ArtifactError, ServingRepo, prepare_serving_repo
from drills.rehearsal.triton import TritonServer

if TYPE_CHECKING:  # the world builds its serving; serving reads the world's started parts
    from drills.rehearsal.world import World


class RegionServing(Protocol):
    def start(self, region: str) -> float:
        """Start the region's serving from its bucket; seconds until it answered."""
        ...

    def servers(self) -> dict[str, TritonServer]:
        """region -> the Triton that answers for it now (the serving stable pod, for tracks)."""
        ...

    def repo(self, region: str) -> ServingRepo | None: ...

    def ready(self, region: str) -> tuple[int, int]:
        """(ready servers, desired servers) in the region."""
        ...

    def albs(self) -> list[AlbProcess]:
        """The load-balancer models serving the regions' addresses (their request logs feed the alarm model)."""
        ...

    def degrade(self, region: str, fault: dict | None) -> None:
        """Set (None: clear) a network fault on the region's load-balancer data path (AlbProcess.fault)."""
        ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


ServingFactory = Callable[["World"], RegionServing]


def start_all(serving: RegionServing, regions: list[str], log: Callable[[str], None]) -> None:
    """Every region's serving, in parallel (each spends most of its ~2 s start-up loading the python stub and ONNX
    Runtime); the first failure is raised once all have finished, so none is left starting."""
    with ThreadPoolExecutor(len(regions)) as pool:
        futures = {r: pool.submit(serving.start, r) for r in regions}
        errors = []
        for r, f in futures.items():
            try:
                dt = f.result()
                log(f"  {r} serving in {dt:.2f} s on {serving.servers()[r].url}")
            except Exception as e:  # noqa: BLE001 - collect, then raise the first with all named
                errors.append((r, e))
    if errors:
        raise errors[0][1]


def start_deep_health(
    sup: Supervisor, name: str, pod: PodSpec, *, address: str, port: int, triton_url: str, timeout: float
) -> Child:
    """The pod's declared deep-health sidecar (pod.deep_health_argv), returned once it accepts connections."""
    child = sup.start(name, deep_health_argv(pod, address=address, port=port, triton_url=triton_url))
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return child
        if not child.alive() or time.monotonic() > deadline:
            sup.stop(child)
            raise ProcessError(f"deep-health sidecar {name} not listening on {address}:{port}: {child.log_tail()}")
        time.sleep(0.05)


POD_NET = "127.0.11."  # region n's pod (Triton and its sidecar) is 127.0.11.<n+1>; its load balancer 127.0.10.<n+1>
SERVICE_NET = "127.0.12."  # region n's in-cluster Triton Service (a listener of its load-balancer model)
SCALE_NETS = tuple(f"127.0.{k}." for k in range(13, 20))  # pods a scale-up adds (release pods start at 127.0.20.)


def service_url(world: World, region: str) -> str:
    """The region's stable Triton Service as its pods reach it: the Service listener of its load-balancer model."""
    return f"http://{SERVICE_NET}{world.regions.index(region) + 1}:{world.ports['http']}"


def region_alb(world: World, region: str, model: str) -> AlbProcess:
    """The region's load balancer in its own process (alb_proc: not behind the drill's GIL), started: the regional
    ALB's listener rules (edge routes with the `_py` stand-in, 404 else; the track header pins only from the stack
    copy's release_tooling_cidrs), the deep-health route, and the region's in-cluster Service listener."""
    return AlbProcess(
        world.sup,
        world.workdir / "regions" / region / "alb",
        {region: (world.region_ip[region], world.ports["http"])},
        seed=world.seed,
        name=f"alb-{region}",
        model=model,
        tooling_cidrs=world.fleet.regions[region].load_balancer.release_tooling_cidrs,
        deep_health_port=world.ports["deep"],
        services={region: (f"{SERVICE_NET}{world.regions.index(region) + 1}", world.ports["http"])},
    ).start()


def pod_sidecar(world: World, region: str, name: str, address: str) -> Child:
    """A pod's declared deep-health sidecar on its address, checking the region through its Service."""
    return start_deep_health(
        world.sup,
        f"deep-health-{name}",
        world.pods[region],
        address=address,
        port=world.ports["deep"],
        triton_url=service_url(world, region),
        timeout=world.scale.ready_timeout,
    )


@dataclass(frozen=True)
class StartedPod:
    server: TritonServer
    repo: ServingRepo
    sidecar: Child
    fetched: str  # the fetch-model script's own line


def start_verified_pod(
    world: World,
    region: str,
    *,
    name: str,
    version: str,
    prefix: str,
    pin: str,
    address: str,
    pdir: Path,
    timings: dict[str, float] | None = None,
) -> StartedPod:
    """One Triton pod as the regional stack declares it: `prefix` (the version's immutable prefix) fetched from the
    region's bucket with the declared fetch-model script, every served file checked against the manifest whose sha256
    the stack pins (`pin`: the verify-model init container; ArtifactError naming the file and both hashes, a fetch
    failure as one too: the pod is refused and never starts), Triton started (its config's model_warmup runs inside
    the load), one inference answered with finite scores (the first request pays ONNX Runtime's lazy initialisation,
    and a pod that cannot rank must not take users), its deep-health sidecar beside it. `timings` gets each part's
    wall seconds."""
    w = world
    assert w.moto is not None  # pods start once the world runs
    t0 = time.monotonic()
    try:
        fetched = fetch_declared(
            w.pods[region],
            bucket=w.buckets[region],
            prefix=prefix,
            version=version,
            dest=pdir / "synced",
            region=region,
            endpoint=w.moto.endpoint,
        )
    except PodError as e:  # a pod whose fetch fails is refused like one whose verification fails
        raise ArtifactError(str(e)) from e
    repo = prepare_serving_repo(pdir / "synced", pdir / "repository", w.pods[region], pin)
    t1 = time.monotonic()
    t = TritonServer(
        w.sup,
        name=name,
        repository=repo.path,
        models=repo.models,
        address=address,
        http_port=w.ports["http"],
        grpc_port=w.ports["grpc"],
        metrics_port=w.ports["metrics"],
        workdir=pdir / "triton",
        pod=w.pods[region],
        ready_timeout=w.scale.ready_timeout,
        exit_timeout=w.scale.triton_exit_timeout,
    )
    t.start()
    t2 = time.monotonic()
    out = t.infer(repo.models[0], w.traffic.batches(n=1, batch=8)[0], timeout=30)
    scores = [float(x) for o in out["outputs"] for x in o["data"]]
    if not scores or not all(math.isfinite(x) for x in scores):
        t.stop()
        raise ProcessError(f"{name}: the first inference gave no finite scores: {scores[:4]}")
    t3 = time.monotonic()
    sidecar = pod_sidecar(w, region, name, address)
    if timings is not None:
        timings.update({"model fetch+verify": t1 - t0, "Triton load+warm-up": t2 - t1, "first good inference": t3 - t2})
    return StartedPod(t, repo, sidecar, fetched)


class TritonPerRegion:
    """Per region one real Triton on a pod address, serving the repository synced from the region's bucket and
    hash-checked against its manifest (`repo.prepare_serving_repo`), its declared deep-health sidecar beside it, and
    the region's load-balancer model (alb_proc: the declared listener rules, the deep-health route, faults, the
    request log) on the region's address. A region may gain pods (`start_pod`, `add_target`: the survivors' scale-up
    of drills/rehearsal/capacity.py) and carry a capacity (`set_capacity`)."""

    def __init__(self, world: World):
        self.world = world
        self.tritons: dict[str, TritonServer] = {}
        self.repos: dict[str, ServingRepo] = {}
        self.proxies: dict[str, AlbProcess] = {}
        self.targets: dict[str, list[tuple[str, str, int, str]]] = {}  # region -> its stable targets, first one first
        self.extra: dict[str, list[TritonServer]] = {}  # region -> the pods a scale-up added
        self.capacity: dict[str, tuple[float, float] | None] = {}  # region -> (rps, queue ms) or None: unlimited

    def pod_address(self, region: str, k: int = 0) -> str:
        """The region's k-th pod: 127.0.11.<n> for the first, 127.0.(12+k).<n> for those a scale-up adds."""
        if not 0 <= k <= len(SCALE_NETS):
            raise ValueError(f"{region}: pod {k} has no address (at most {len(SCALE_NETS)} added pods per region)")
        return f"{POD_NET if k == 0 else SCALE_NETS[k - 1]}{self.world.regions.index(region) + 1}"

    def start_pod(self, region: str, name: str, address: str, timings: dict[str, float] | None = None) -> TritonServer:
        """One pod of the region at its served version, as its stack declares it (`start_verified_pod`)."""
        w = self.world
        model = w.fleet.regions[region].model
        pod = start_verified_pod(
            w,
            region,
            name=name,
            version=model.version,
            prefix=w.model_prefix,
            pin=model.digests.get(model.version, ""),
            address=address,
            pdir=w.workdir / "regions" / region / ("" if name == region else f"pods/{name}"),
            timings=timings,
        )
        if region not in self.repos:
            self.repos[region] = pod.repo
        return pod.server

    def start(self, region: str) -> float:
        w = self.world
        t0 = time.monotonic()
        pod_ip = self.pod_address(region)
        self.tritons[region] = self.start_pod(region, region, pod_ip)
        self.proxies[region] = region_alb(w, region, w.fleet.regions[region].model.name)
        self.targets[region] = [(region, pod_ip, w.ports["http"], w.fleet.regions[region].model.version)]
        self._push(region)
        return time.monotonic() - t0

    def _push(self, region: str) -> None:
        cap = self.capacity.get(region)
        self.proxies[region].set(
            region,
            0,
            {"stable": self.targets[region]},
            capacity_rps=cap[0] if cap else None,
            queue_ms=cap[1] if cap else 0.0,
        )

    def set_capacity(self, region: str, rps: float | None, queue_ms: float = 0.0) -> None:
        """What the region's ready pods carry, in inference requests a second here (None: unlimited)."""
        self.capacity[region] = (rps, queue_ms) if rps is not None else None
        self._push(region)

    def add_target(self, region: str, server: TritonServer, rps: float | None) -> None:
        """A started pod joins the region's stable targets (its TargetGroupBinding registers it) and the region's
        capacity becomes `rps`, in one change."""
        self.extra.setdefault(region, []).append(server)
        self.targets[region] = [
            *self.targets[region],
            (server.name, server.address, self.world.ports["http"], self.world.fleet.regions[region].model.version),
        ]
        cap = self.capacity.get(region)
        self.capacity[region] = (rps, cap[1] if cap else 0.0) if rps is not None else None
        self._push(region)

    def servers(self) -> dict[str, TritonServer]:
        return dict(self.tritons)

    def repo(self, region: str) -> ServingRepo | None:
        return self.repos.get(region)

    def ready(self, region: str) -> tuple[int, int]:
        # One Triton stands for the region's running pods, one more for each scale-up's.
        pods = [self.tritons[region], *self.extra.get(region, [])]
        return sum(1 for t in pods if t.is_ready(0.5)), len(pods)

    def albs(self) -> list[AlbProcess]:
        return list(self.proxies.values())

    def degrade(self, region: str, fault: dict | None) -> None:
        self.proxies[region].fault(region, fault)

    def close(self) -> None:
        for p in self.proxies.values():
            with contextlib.suppress(Exception):  # best effort: the supervisor stops it anyway
                p.stop()
        for t in self.tritons.values():
            with contextlib.suppress(Exception):  # best effort: the supervisor stops the Tritons anyway
                t._session.close()

    def describe(self) -> dict[str, Any]:
        return {}
