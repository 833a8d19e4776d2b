"""What answers on each region's load-balancer address in the rehearsal, behind the one interface the world drives.

`RegionServing` is all `World` needs from serving: start a region (after its bucket holds the model), the region's
serving Triton and repository (faults, the served manifest, the report), its ready and desired servers, teardown
and facts. Two implement it, and a world is handed a factory for one (`World(serving=...)`), so neither
subclasses nor patches the world:

  TritonPerRegion            one real Triton per region on the region's address (`rehearse`), here;
  release_serving.ServingModel  stable and canary tracks of pods behind a load-balancer process
                             (`rehearse-release`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from drills.rehearsal.pod import fetch_declared
from drills.rehearsal.repo import ServingRepo, prepare_serving_repo
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


class TritonPerRegion:
    """One real Triton per region on the region's load-balancer address, serving the repository synced from the
    region's bucket and hash-checked against its manifest (`repo.prepare_serving_repo`)."""

    def __init__(self, world: World):
        self.world = world
        self.tritons: dict[str, TritonServer] = {}
        self.repos: dict[str, ServingRepo] = {}

    def start(self, region: str) -> float:
        w = self.world
        assert w.moto is not None
        rdir = w.workdir / "regions" / region
        synced = rdir / "synced"
        model = w.fleet.regions[region].model
        fetch_declared(
            w.pods[region],
            bucket=w.buckets[region],
            prefix=w.model_prefix,
            version=model.version,
            dest=synced,
            region=region,
            endpoint=w.moto.endpoint,
        )
        repo = prepare_serving_repo(synced, rdir / "repository", w.pods[region], model.digests.get(model.version, ""))
        self.repos[region] = repo
        t = TritonServer(
            w.sup,
            name=region,
            repository=repo.path,
            models=repo.models,
            address=w.region_ip[region],
            http_port=w.ports["http"],
            grpc_port=w.ports["grpc"],
            metrics_port=w.ports["metrics"],
            workdir=rdir / "triton",
            pod=w.pods[region],
            ready_timeout=w.scale.ready_timeout,
            exit_timeout=w.scale.triton_exit_timeout,
        )
        self.tritons[region] = t
        ready = t.start()
        # One inference before traffic: the first request pays for ONNX Runtime's lazy initialisation (tens
        # of ms), which would otherwise show up as a latency outlier or a client timeout in the records.
        t.infer(repo.models[0], w.traffic.batches(n=1, batch=8)[0], timeout=30)
        return ready

    def servers(self) -> dict[str, TritonServer]:
        return dict(self.tritons)

    def repo(self, region: str) -> ServingRepo | None:
        return self.repos.get(region)

    def ready(self, region: str) -> tuple[int, int]:
        # One Triton stands for the region's pods.
        return (1 if self.tritons[region].is_ready(0.5) else 0), 1

    def close(self) -> None:
        for t in self.tritons.values():
            with contextlib.suppress(Exception):  # best effort: the supervisor stops the Tritons anyway
                t._session.close()

    def describe(self) -> dict[str, Any]:
        return {}
