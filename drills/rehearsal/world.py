"""The rehearsal backend ("the world"): a fleet's AWS side and data plane, running on this machine.

`World(fleet, model_dir=..., workdir=...)` brings up, in order, and tears down in reverse (also on an
exception during start-up, on SIGINT/SIGTERM and at interpreter exit, through `procs.Supervisor`):

1. a real `moto_server` on 127.0.0.1 (the AWS APIs);
2. the Route 53 zone, health checks and records and the S3 buckets, versioning and replication
   configuration, created in moto from what the Pulumi programs declare (`declared.apply_declared` over
   the offline plan of the global and regional stacks, `infra.mocks.run_program`), not from a second
   description;
3. the model: the model_build output is verified against its manifest, published to every region's bucket
   under `<name>/<version>/` (by `model_build.publish` unless another publisher is given), synced back from each
   bucket and prepared as that region's serving
   repository (`repo.prepare_serving_repo`: only what the CPU Triton loads, hashes checked);
4. per region a real Triton and its declared deep-health sidecar on a pod address, behind the region's
   load-balancer model on its own loopback address (`127.0.10.<n>`), all on the same ports, so the DNS answer
   alone decides which region a client reaches (`serving`);
5. the models of what moto lacks: the Route 53 health checker (`healthcheck`), the DNS server answering
   the record name by the stored routing policy over healthy records, and each plain per-region name
   (`regional_names`) with its region's address whatever its health (`dns`), the S3 replicator (`replicator`).

`Scale` shrinks the timings for CI (health-check interval, DNS TTL, replication lag, propagation); the
values stored in moto stay exactly as declared, the models apply the scaled timings, and `describe()`
records both. Nothing listens outside 127.0.0.0/8.

`World` holds the lifecycle and the topology (which bucket, cluster and health check is whose) and composes
the parts, each in its own module, that the drills' rehearsal adapters call:

  world.route53   route53.Route53Model    records, weights, health checks, the DNS model, failover timing (RTO)
  world.storage   storage.Storage         artifact buckets, replication, canaries (RPO)
  world.serving   serving.RegionServing   what answers on each region's address (a factory picks it)
  world.traffic   traffic.Traffic         client traffic of the served model's signature
  world.fail_region / restore_region      data-plane faults on the serving Tritons
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drills.rehearsal.declared import Applied, apply_declared, records_from_plan
from drills.rehearsal.moto import POLICY_SUBSTITUTIONS, MotoServer
from drills.rehearsal.pod import SUBSTITUTIONS, PodSpec, declared_pod
from drills.rehearsal.procs import PortInUse, ProcessError, Supervisor, check_ports_free, free_port_block
from drills.rehearsal.repo import (
    ArtifactError,
    manifest_inputs,
    manifest_model,
    manifest_seed,
    read_manifest,
    upload_tree,
    verify_tree,
)
from drills.rehearsal.route53 import Route53Model
from drills.rehearsal.serving import RegionServing, ServingFactory, TritonPerRegion, start_all
from drills.rehearsal.storage import Storage
from drills.rehearsal.traffic import Traffic
from drills.rehearsal.triton import locate
from infra.names import deploy_role_name, role_arn
from model_build.manifest import Manifest

LB_NET = "127.0.10."  # region n's load balancer is 127.0.10.<n+1>; 127.0.0.0/8 is all loopback on Linux
# base: moto, base+1: DNS (UDP), base+2..4: HTTP (load balancers and Tritons), gRPC, metrics, base+5: deep health
PORTS = 6


@dataclass(frozen=True)
class Scale:
    """Timings of the models. None keeps the declared value (RequestInterval, the global stack's ttl)."""

    hc_interval: float | None = None
    probe_timeout: float | None = None
    time: float = 1.0  # the factor on the declared timings: CloudWatch alarm periods are scaled by it
    ttl: int | None = None
    replication_lag: float = 2.0
    replication_poll: float = 0.2
    dns_refresh: float = 0.5  # modelled Route 53 propagation delay of record changes
    ready_timeout: float = 90.0  # per Triton
    triton_exit_timeout: int = 2

    @classmethod
    def ci(cls) -> Scale:
        return cls(
            hc_interval=0.25,
            time=0.025,  # 10 s -> 0.25 s, as hc_interval
            probe_timeout=0.2,
            ttl=1,
            replication_lag=0.3,
            replication_poll=0.1,
            dns_refresh=0.2,
            ready_timeout=60.0,
            triton_exit_timeout=1,
        )


Publisher = Callable[[Path, str, str, Any], Any]  # (model_dir, bucket, prefix, s3 client)


def model_build_publisher(model_dir: Path, bucket: str, prefix: str, s3) -> Any:
    """model_build's own publish (verified build, SHA-256 checksums, If-None-Match, manifest last), to the
    immutable prefix `<model>/<version>` it derives from the manifest, which is `prefix` here too."""
    from model_build.publish import publish

    return publish(Path(model_dir), bucket, s3=s3, log=lambda s: None)


def plain_publisher(model_dir: Path, bucket: str, prefix: str, s3) -> Any:
    """A plain upload, manifest last: for model directories that are not a complete model_build output
    (the tests' tiny model); the serving side still checks every hash against the manifest."""
    return upload_tree(s3, bucket, prefix, model_dir)


def plan_declared(fleet) -> list[dict]:
    """Declared resources of the fleet's global and regional stacks, from their offline plan (mocks)."""
    from infra.mocks import run_program

    out: list[dict] = []
    for stack in [fleet.global_stack, *fleet.stack_names.values()]:
        out += records_from_plan(run_program(stack))
    return out


class World:
    def __init__(
        self,
        fleet,
        *,
        model_dir: Path | str,
        workdir: Path | str,
        declared: Sequence[Any] | None = None,
        base_port: int | None = None,
        scale: Scale = Scale(),
        seed: int | None = None,
        publisher: Publisher = model_build_publisher,
        serving: ServingFactory = TritonPerRegion,
        log: Callable[[str], None] = lambda s: None,
    ):
        self.fleet, self.model_dir, self.workdir = fleet, Path(model_dir), Path(workdir)
        self.scale, self.seed, self.log, self.publisher = scale, seed, log, publisher
        self._declared = list(declared) if declared is not None else None
        self.base_port = base_port
        self.regions: list[str] = list(fleet.regions)
        self.region_ip = {r: f"{LB_NET}{i + 1}" for i, r in enumerate(self.regions)}
        self.ip_region = {ip: r for r, ip in self.region_ip.items()}
        self.fqdn = fleet.glob.fqdn
        self.sup = Supervisor(self.workdir / "logs")
        self.moto: MotoServer | None = None
        self.applied: Applied | None = None
        # The topology: region -> its bucket, EKS cluster (node groups in moto, for capacity), health check id.
        self.buckets: dict[str, str] = {}
        self.clusters: dict[str, str] = {}
        self.health_check_ids: dict[str, str] = {}
        # region -> what its declared Triton pods run (args, verify-model command, models), from the offline plan
        self.pods: dict[str, PodSpec] = {}
        self.model_prefix = ""
        self.manifest: Manifest  # the model_build output's, read first thing in start() (read_manifest)
        self.timings: dict[str, float] = {}
        self._faults: list[dict] = []
        self.serving: RegionServing = serving(self)
        # Built in start(), once moto listens and the model's signature is read.
        self._route53: Route53Model | None = None
        self._storage: Storage | None = None
        self._traffic: Traffic | None = None

    # ------------------------------------------------------------ the parts
    @property
    def route53(self) -> Route53Model:
        assert self._route53 is not None, "the world has not started"
        return self._route53

    @property
    def storage(self) -> Storage:
        assert self._storage is not None, "the world has not started"
        return self._storage

    @property
    def traffic(self) -> Traffic:
        assert self._traffic is not None, "the world has not started"
        return self._traffic

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client of the world's moto_server (the AWS APIs here)."""
        assert self.moto is not None, "the world has not started"
        return self.moto.client(service, region)

    @property
    def regional_names(self) -> dict[str, str]:
        """region -> its plain per-region name (`<record>-<region short>.<zone>`), from the records the global
        stack declares (`Applied.regional_names`): the world's DNS answers each with its region's address, healthy or
        not, for resilient clients that pick the region themselves. Empty when the declared records have none."""
        assert self.applied is not None, "the world has not started"
        names = self.applied.regional_names()
        return {r: names[r] for r in self.regions if r in names}

    # ------------------------------------------------------------ ports
    @property
    def ports(self) -> dict[str, int]:
        b = self.base_port or 0
        return {"moto": b, "dns": b + 1, "http": b + 2, "grpc": b + 3, "metrics": b + 4, "deep": b + 5}

    @property
    def dns_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports["dns"])

    def claim_ports(self) -> None:
        """Pick a free block of ports (unless given) and check that every one is free, before anything starts."""
        hosts = ["127.0.0.1", *self.region_ip.values()]
        if self.base_port is None:
            self.base_port = free_port_block(PORTS, hosts)
        p = self.ports
        check_ports_free(
            [("127.0.0.1", p["moto"])]
            + [(ip, p[k]) for ip in self.region_ip.values() for k in ("http", "grpc", "metrics")],
            udp=[("127.0.0.1", p["dns"])],
        )

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, declared: Sequence[Any] | None = None) -> World:
        """Bring everything up (`declared`: the stacks' declared resources, when the caller planned them already);
        on any failure tear down what started and re-raise."""
        if declared is not None:
            self._declared = list(declared)
        self.sup.__enter__()  # signal handlers + atexit cleanup from here on
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _step(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        self.log(f"{name} ...")
        out = fn()
        self.timings[name] = round(time.monotonic() - t0, 3)
        self.log(f"{name}: {self.timings[name]:.2f} s")
        return out

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        locate()  # fail before starting anything when the Triton wheel is missing
        # A corrupted or partial model_build output stops the run before any process starts.
        self.manifest = read_manifest(self.model_dir)
        self._step("verify model artifacts", lambda: verify_tree(self.model_dir))
        self.claim_ports()
        from infra.mocks import ACCOUNT_ID  # the account the offline plan's ARNs name

        # Every request stands for the release tooling (the env's deploy role) where a bucket policy names principals.
        self.moto = MotoServer(
            self.sup, port=self.ports["moto"], principal=role_arn(ACCOUNT_ID, deploy_role_name(self.fleet.env))
        )
        self._step("moto_server", self.moto.start)
        moto = self.moto
        self._route53 = Route53Model(
            self.fleet,
            moto.client("route53"),
            region_ip=self.region_ip,
            dns_address=self.dns_address,
            http_port=self.ports["http"],
            scale=self.scale,
            workdir=self.workdir,
            seed=self.seed,
            logs=lambda: self.serving.albs(),
        )
        self._storage = Storage(
            lambda region: moto.client("s3", region or "us-east-1"),
            lag=self.scale.replication_lag,
            poll=self.scale.replication_poll,
        )
        m = self.manifest
        seed = manifest_seed(m)
        self._traffic = Traffic(
            inputs=manifest_inputs(m),
            data_seed=seed,
            model=lambda: next(r for r in (self.serving.repo(x) for x in self.regions) if r).models[0],
            dns_address=self.dns_address,
            fqdn=self.fqdn,
            http_port=self.ports["http"],
            ip_region=self.ip_region,
            seed=self.seed,
            sup=self.sup,
            workdir=self.workdir,
        )
        declared = (
            self._declared
            if self._declared is not None
            else self._step("offline plan of the stacks", lambda: plan_declared(self.fleet))
        )
        self._step("create declared AWS objects in moto", lambda: self._apply(declared))
        self._step("publish model to regional buckets", self._publish)
        self._step("start serving per region", lambda: start_all(self.serving, self.regions, self.log))
        self._step("health checker, DNS, replicator", self._start_models)

    def close(self) -> None:
        """Stop everything this world started (idempotent)."""
        for stop in (
            self._storage.stop if self._storage else None,
            self._route53.stop if self._route53 else None,
            self.serving.close,
        ):
            if stop is not None:
                with contextlib.suppress(Exception):  # keep tearing down
                    stop()
        self.sup.__exit__(None, None, None)  # stops Tritons and moto in parallel, restores signal handlers

    # ------------------------------------------------------------ setup steps
    def _apply(self, declared: Sequence[Any]) -> None:
        assert self.moto is not None
        moto = self.moto
        self.applied = apply_declared(
            declared,
            moto.client("route53"),
            lambda region: moto.client("s3", region or "us-east-1"),
            applied=self.applied,
            default_zone_name=self.fleet.glob.zone.name,
            eks_for=lambda region: moto.client("eks", region or "us-east-1"),
            clients=moto.client,
            put_bucket_policies=True,  # moto_server.py evaluates them as S3 does for HTTPS clients
        )
        self._topology()
        records = [r for r in declared if isinstance(r, dict)]
        stacks = {str(r.get("urn", "")).split("::")[0].removeprefix("urn:pulumi:") for r in records}
        for region, stack in self.fleet.stack_names.items():
            if region in self.region_ip and stack in stacks:  # a re-applied stack's pods change with it
                self.pods[region] = declared_pod(records, stack)
        missing = [r for r in self.regions if r not in self.pods]
        if missing:
            raise ProcessError(f"no declared Triton pod for {missing}: apply the plans of every regional stack")
        self.route53.update(self.applied, self.health_check_ids, records)
        self.storage.update(self.applied, self.buckets)

    def _topology(self) -> None:
        ap = self.applied
        assert ap is not None
        sid_region = ap.record_regions()
        self.health_check_ids = {}
        for rr in ap.records:
            region = sid_region.get(rr.get("SetIdentifier", ""))
            if region in self.region_ip and rr.get("HealthCheckId"):
                self.health_check_ids[region] = rr["HealthCheckId"]
        for hid, info in ap.hc_info.items():
            if info.get("region") in self.region_ip:
                self.health_check_ids.setdefault(info["region"], hid)
        self.clusters = {region: name for name, region in ap.clusters.items() if region in self.region_ip}
        self.buckets = {region: name for name, region in ap.buckets.items() if region in self.region_ip}
        missing = {
            r: [
                what
                for what, m in (
                    ("record", r not in sid_region.values()),
                    ("health check", r not in self.health_check_ids),
                    ("bucket", r not in self.buckets),
                )
                if m
            ]
            for r in self.regions
        }
        missing = {r: m for r, m in missing.items() if m}
        if missing:
            raise ProcessError(
                f"the declared resources do not cover every region of {self.fleet.env}: {missing}; "
                f"apply the plans of {self.fleet.global_stack} and every regional stack"
            )

    def _publish(self) -> None:
        assert self.moto is not None
        name, version = manifest_model(self.manifest)
        self.model_prefix = f"{name}/{version}"  # model_build publish's immutable version prefix
        for region, bucket in self.buckets.items():
            self.publisher(self.model_dir, bucket, self.model_prefix, self.moto.client("s3", region))

    def _start_models(self) -> None:
        self.route53.start()
        self.storage.start()

    def reapply(self, declared: Sequence[Any], *, propagate_now: bool = True) -> Applied:
        """Re-create moto's objects from a new offline plan (the stack adapter's `pulumi up`).

        `propagate_now=False` leaves the DNS model to pick the change up at its next zone re-read, i.e. after the
        modelled Route 53 propagation delay (`Scale.dns_refresh`), as a real change reaches the name servers some
        seconds after it is INSYNC in the API; the drills' stack adapter applies that way."""
        self._apply(declared)
        if propagate_now:
            self.route53.propagate()
        assert self.applied is not None  # set by _apply
        return self.applied

    # ------------------------------------------------------------ data plane (faults)
    def fail_region(self, region: str, mode: str = "kill") -> float:
        """Inject a data-plane fault into `region`'s serving Triton; return the wall-clock time of injection."""
        t = time.time()
        self.serving.servers()[region].fail(mode)
        self._faults.append({"region": region, "mode": mode, "t": t})
        self.log(f"fault: {mode} {region} at {t:.3f}")
        return t

    def degrade(self, region: str, fault: dict | None) -> float:
        """Set (None: clear) a network fault on the region's load-balancer data path; return the wall-clock time."""
        t = time.time()
        self.serving.degrade(region, fault)
        self._faults.append({"region": region, "mode": "network", "fault": fault, "t": t})
        self.log(f"network fault {fault} on {region} at {t:.3f}")
        return t

    def partition_replication(self, region: str, cut: bool) -> float:
        """Cut (or heal) artifact replication to and from `region`; return the wall-clock time."""
        t = time.time()
        self.storage.partition(region, cut)
        self._faults.append({"region": region, "mode": "replication-partition", "cut": cut, "t": t})
        self.log(f"replication to and from {region} {'cut' if cut else 'healed'} at {t:.3f}")
        return t

    def served_manifest_path(self, region: str) -> Path:
        repo = self.serving.repo(region)
        assert repo is not None, f"{region} serves nothing yet"
        return repo.path / "manifest.json"

    def alter_served_manifest(self, region: str, original: bytes | None) -> None:
        """Make the manifest the region serves differ in its bytes (a trailing newline: the same JSON), or with
        `original`, put those bytes back."""
        path = self.served_manifest_path(region)
        path.write_bytes(path.read_bytes() + b"\n" if original is None else original)
        self._faults.append({"region": region, "mode": "served-manifest", "restored": original is not None})

    def restore_region(self, region: str) -> float:
        """Undo the region's fault; return seconds until its Triton is ready again."""
        dt = self.serving.servers()[region].restore()
        self._faults.append({"region": region, "mode": "restore", "t": time.time(), "ready_s": dt})
        return dt

    def triton_state(self) -> dict[str, str]:
        return {r: t.state for r, t in self.serving.servers().items()}

    def served_manifest(self, region: str) -> tuple[dict, str]:
        """(manifest of the model version the region serves, sha256 of its bytes)."""
        p = self.served_manifest_path(region)
        return json.loads(p.read_text()), hashlib.sha256(p.read_bytes()).hexdigest()

    # ------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        hc = self.fleet.glob.health_check
        servers = self.serving.servers()
        return {
            "env": self.fleet.env,
            "fqdn": self.fqdn,
            "ports": self.ports,
            "moto": self.moto.endpoint if self.moto else None,
            "dns": "{}:{:d}".format(*self.dns_address),
            "regions": {
                r: {
                    "address": self.region_ip[r],
                    "regional_name": self.applied.regional_names().get(r) if self.applied else None,
                    "bucket": self.buckets.get(r),
                    "cluster": self.clusters.get(r),
                    "health_check_id": self.health_check_ids.get(r),
                    "triton": {
                        "url": t.url,
                        "state": t.state,
                        "ready_s": t.ready_s,
                        "rss_mib": round(t.rss_mib(), 1),
                        "pids": t.pids(),
                    }
                    if (t := servers.get(r))
                    else None,
                    "served": sorted(repo.served) if (repo := self.serving.repo(r)) else None,
                    "excluded": repo.excluded if repo else None,
                }
                for r in self.regions
            },
            "declared": {
                "health_check": {"request_interval": hc.request_interval, "failure_threshold": hc.failure_threshold},
                "ttl": self.fleet.glob.ttl,
                "applied_types": dict(self.applied.applied_types) if self.applied else {},
                "ignored_types": dict(self.applied.ignored) if self.applied else {},
            },
            "scale": asdict(self.scale),
            "model_prefix": self.model_prefix,
            "timings": self.timings,
            "faults": list(self._faults),
            "moto_ready_s": self.moto.ready_s if self.moto else None,
            "serving": self.serving.describe(),
            "pods": {r: asdict(p) for r, p in self.pods.items()},
            "substitutions": [list(x) for x in (*SUBSTITUTIONS, *POLICY_SUBSTITUTIONS)],
        }


__all__ = ["ArtifactError", "PortInUse", "ProcessError", "Scale", "World", "plan_declared"]
