"""Where readiness reads the live fleet from: a FleetView returns a FleetSnapshot (plain data).

AwsFleetView reads AWS with the drills' adapters and boto3: regional stack outputs and config through the Pulumi
Automation API, node groups (EKS), reservations (EC2), the served manifest and its engine records (S3), the running
Triton image (Kubernetes), replication metrics (CloudWatch AWS/S3) and the health checks (Route 53). A rehearsal
implements `snapshot()` from its own world; nothing else is needed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from drills.readiness.checks import FleetSnapshot, PoolLive, RegionLive
from infra.catalog import TRITON_RELEASES


class FleetView(Protocol):
    def snapshot(self) -> FleetSnapshot: ...


def image_tensorrt(image: str) -> str | None:
    """TensorRT of a Triton image from its release tag (infra/catalog.py TRITON_RELEASES), None if unknown."""
    m = re.search(r":(\d\d\.\d\d)", image)
    return TRITON_RELEASES[m[1]]["tensorrt"] if m and m[1] in TRITON_RELEASES else None


def active_reserved(reservations: list[dict], now: datetime) -> int:
    """Instances held by active reservations (EC2 DescribeCapacityReservations items) at `now`."""
    total = 0
    for r in reservations:
        end = r.get("EndDate")
        if r.get("State") == "active" and (end is None or end > now):
            total += int(r.get("TotalInstanceCount", 0))
    return total


class AwsFleetView:
    """The live fleet of `env` in AWS (default credential chain or `profile`)."""

    def __init__(self, env: str, stacks_dir: Path, work_dir: Path, profile: str | None = None, org: str | None = None):
        self.env, self.stacks_dir, self.work_dir, self.profile, self.org = env, stacks_dir, work_dir, profile, org

    def snapshot(self) -> FleetSnapshot:
        import boto3

        from drills.adapters.capacity import EksCapacity, KubernetesPods
        from drills.adapters.kube import EksKube
        from drills.adapters.pulumi_stack import AutomationStackAdapter
        from drills.adapters.s3 import Boto3S3
        from drills.readiness.checks import declared_config
        from infra.config import load_fleet
        from infra.outputs import validate_outputs
        from model_build.manifest import ManifestError, engines_available, parse_manifest

        fleet = load_fleet(self.env, self.stacks_dir)
        session = boto3.Session(profile_name=self.profile)
        stacks = AutomationStackAdapter(self.work_dir, org=self.org)
        out = {r: validate_outputs(s, stacks.outputs(s)) for r, s in fleet.stack_names.items()}
        g_out = stacks.outputs(fleet.global_stack)
        kubes = {r: EksKube(session, r, o.cluster_name) for r, o in out.items()}
        eks = EksCapacity(
            {r: session.client("eks", region_name=r) for r in out},
            {r: o.cluster_name for r, o in out.items()},
            KubernetesPods(kubes),
        )
        s3c = {r: session.client("s3", region_name=r) for r in out}
        s3 = Boto3S3(
            s3c,
            {r: o.bucket_name for r, o in out.items()},
            {r: (c.model.name, c.model.version) for r, c in fleet.regions.items()},
        )
        r53 = session.client("route53", region_name=fleet.glob.control_region)
        now = datetime.now(UTC)
        regions = {}
        for r, o in out.items():
            cfg = fleet.regions[r]
            ec2 = session.client("ec2", region_name=r)
            groups = {g.pool: g for g in eks.node_groups(r)}
            pools = []
            for p in o.gpu_pools:
                g = groups.get(p.name)
                reserved = 0
                if p.reservation and p.reservation.startswith("cr-"):
                    reserved = active_reserved(
                        ec2.describe_capacity_reservations(CapacityReservationIds=[p.reservation])[
                            "CapacityReservations"
                        ],
                        now,
                    )
                elif p.reservation:
                    reserved = active_reserved(
                        ec2.describe_capacity_reservations(
                            Filters=[{"Name": "capacity-reservation-group-arn", "Values": [p.reservation]}]
                        )["CapacityReservations"],
                        now,
                    )
                pools.append(
                    PoolLive(
                        p.name,
                        p.gpus_per_instance,
                        p.compute_capability,
                        g.min if g else 0,
                        g.desired if g else 0,
                        g.max if g else 0,
                        reserved,
                    )
                )
            doc, digest = s3.current_manifest(r)
            engines: dict[str, str] = {}
            engine_trt: dict[str, str] = {}
            if doc is not None:
                try:
                    m = parse_manifest(doc, f"s3://{o.bucket_name}")
                    prefix = f"{cfg.model.name}/{cfg.model.version}/"

                    def read(rel: str, region: str = r, prefix: str = prefix) -> bytes | None:
                        return s3.get_object(region, prefix + rel)

                    engines = engines_available(m, read)
                    engine_trt = {cc: e.tensorrt_version for e in m.engines.values() for cc in e.serves}
                except ManifestError:
                    engines = {}
            deployments = kubes[r].get("/apis/apps/v1/namespaces/triton/deployments")["items"]
            images = {
                c["image"]
                for d in deployments
                for c in d["spec"]["template"]["spec"]["containers"]
                if "tritonserver" in c["image"]
            }
            trt = {image_tensorrt(i) for i in images}
            lag, backlog = self._replication(session.client("cloudwatch", region_name=r), o.bucket_name, now)
            live_cfg = {
                k: stacks.get_config(fleet.stack_names[r], k)
                for k in declared_config(cfg)
                if not k.startswith("gpu_pools.")
            }
            for pl in pools:  # GPU pools: the live node groups and reservations, not the stack's config
                live_cfg[f"gpu_pools.{pl.pool}.min"] = pl.min
                live_cfg[f"gpu_pools.{pl.pool}.max"] = pl.max
                live_cfg[f"gpu_pools.{pl.pool}.reserved_instances"] = pl.reserved_instances
            regions[r] = RegionLive(
                region=r,
                pools=tuple(pools),
                served_version=o.model_version,
                manifest_digest=digest,
                engines=engines,
                engine_tensorrt=engine_trt,
                image_tensorrt=trt.pop() if len(trt) == 1 else None,
                replication_backlog=backlog,
                replication_lag_seconds=lag,
                config=live_cfg,
                # The shallow check: the one whose configuration the stack's `health_check` declares (the record
                # carries the calculated check over it and the deep and metric checks, infra/health.py).
                health_check=self._health_check(
                    r53, ((g_out.get("health_check_children") or {}).get(r) or {}).get("shallow")
                ),
            )
        return FleetSnapshot(self.env, regions)

    @staticmethod
    def _replication(cw: Any, bucket: str, now: datetime) -> tuple[float | None, int | None]:
        """Worst ReplicationLatency and summed OperationsPendingReplication out of `bucket`, last 15 minutes."""
        lag: float | None = None
        backlog: int | None = None
        for metric, stat in (("ReplicationLatency", "Maximum"), ("OperationsPendingReplication", "Maximum")):
            found = cw.list_metrics(
                Namespace="AWS/S3", MetricName=metric, Dimensions=[{"Name": "SourceBucket", "Value": bucket}]
            )["Metrics"]
            values = []
            for m in found:
                points = cw.get_metric_statistics(
                    Namespace="AWS/S3",
                    MetricName=metric,
                    Dimensions=m["Dimensions"],
                    StartTime=now - timedelta(minutes=15),
                    EndTime=now,
                    Period=300,
                    Statistics=[stat],
                )["Datapoints"]
                values += [p[stat] for p in points]
            if metric == "ReplicationLatency":
                lag = max(values) if values else (0.0 if found else None)
            else:
                backlog = int(sum(values)) if values else (0 if found else None)
        return lag, backlog

    @staticmethod
    def _health_check(r53: Any, check_id: str | None) -> dict[str, Any]:
        if not check_id:
            return {}
        c = r53.get_health_check(HealthCheckId=check_id)["HealthCheck"]["HealthCheckConfig"]
        return {
            "type": c.get("Type"),
            "path": c.get("ResourcePath"),
            "port": c.get("Port"),
            "request_interval": c.get("RequestInterval"),
            "failure_threshold": c.get("FailureThreshold"),
        }


def load_snapshot(path: Path) -> FleetSnapshot:
    """A FleetSnapshot from JSON (what `--snapshot` reads: a rehearsal or a test writes one)."""
    doc = json.loads(path.read_text())
    return FleetSnapshot(
        doc["env"],
        {r: RegionLive(**{**v, "pools": tuple(PoolLive(**p) for p in v["pools"])}) for r, v in doc["regions"].items()},
    )
