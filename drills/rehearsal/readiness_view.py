"""The rehearsal world as `drills readiness` sees a fleet (drills/readiness/checks.py FleetSnapshot), so readiness is
evaluated against the rehearsal exactly as against AWS: the same checks over the same kind of snapshot.

Read from the running world: node groups from moto's EKS (the drills' capacity adapter), the manifest each region's
Triton serves (the bytes in its serving repository), replication backlog and lag from the S3 replication model, the
shallow health check's configuration from moto's Route 53, the config the world applied. Substitutions (listed in the
snapshot's `substitutions`): reservations are the stack copy's declared ones (no EC2 reservation API here), every
compute capability is served by the python-backend stand-in (reported as the ONNX fallback, no TensorRT engine), and
replication lag is converted to configuration seconds by the run's time scale.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from drills.readiness.checks import FleetSnapshot, PoolLive, RegionLive, declared_config
from drills.readiness.view import AwsFleetView, image_tensorrt
from infra.capacity import reserved_instances

if TYPE_CHECKING:
    from drills.rehearsal.world import World
    from infra.config import Fleet

SUBSTITUTIONS = [
    "GPU reservations: the stack copy's declared ones (no EC2 reservation API in the rehearsal)",
    "engines: every compute capability served by the python-backend stand-in, reported as the ONNX fallback",
    "replication lag: the S3 model's wall seconds / the run's time scale",
]
REPLICATION_WINDOW_S = 900.0  # configuration seconds of replication history the lag is judged over (AWS view: 15 min)


class WorldFleetView:
    """`snapshot()` of a started world; `capacity`: the drills' capacity adapter over it (node groups in moto);
    `fleet`: the environment as its stack copy declares it now (what the world's `up`s applied: a release rehearsal
    changes versions and pins between its drills, so the world's fleet at start is not it)."""

    def __init__(self, world: World, capacity: Any, fleet: Fleet):
        self.world, self.capacity, self.fleet = world, capacity, fleet

    def snapshot(self) -> FleetSnapshot:
        w = self.world
        scale = w.scale.time
        r53 = w.client("route53")
        assert w.applied is not None, "the world is not started"
        shallow = {i.get("region"): hid for hid, i in w.applied.hc_info.items() if i.get("kind") == "shallow"}
        regions = {}
        now = datetime.now(UTC)
        for r in w.regions:
            cfg = self.fleet.regions[r]
            groups = {g.pool: g for g in self.capacity.node_groups(r)}
            pools = tuple(
                PoolLive(
                    p.name,
                    p.gpu.gpus,
                    p.gpu.compute_capability,
                    groups[p.name].min if p.name in groups else 0,
                    groups[p.name].desired if p.name in groups else 0,
                    groups[p.name].max if p.name in groups else 0,
                    reserved_instances(p, now),
                )
                for p in cfg.gpu_pools
            )
            _doc, digest = w.served_manifest(r)
            backlog, lag = w.storage.replication_backlog(r, REPLICATION_WINDOW_S * scale)
            regions[r] = RegionLive(
                region=r,
                pools=pools,
                served_version=cfg.model.version,
                manifest_digest=digest,
                engines={p.gpu.compute_capability: "onnx-fallback" for p in cfg.gpu_pools},
                engine_tensorrt={},
                image_tensorrt=image_tensorrt(cfg.triton.image),
                replication_backlog=backlog,
                replication_lag_seconds=lag / scale,
                config=declared_config(cfg),
                health_check=AwsFleetView._health_check(r53, shallow.get(r)),
            )
        return FleetSnapshot(self.fleet.env, regions)
