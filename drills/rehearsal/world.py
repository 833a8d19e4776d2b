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
4. one real Triton per region on its own loopback address (`127.0.10.<n>`: the region's load balancer),
   all on the same ports, so the DNS answer alone decides which region a client reaches;
5. the models of what moto lacks: the Route 53 health checker (`healthcheck`), the DNS server answering
   the record name by the stored routing policy over healthy records (`dns`), the S3 replicator (`replicator`).

`Scale` shrinks the timings for CI (health-check interval, DNS TTL, replication lag, propagation); the
values stored in moto stay exactly as declared, the models apply the scaled timings, and `describe()`
records both. Nothing listens outside 127.0.0.0/8.

The methods below are what the drills engine's rehearsal adapters call (weights, health, faults,
canaries, traffic, RTO).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drills.measure import Slo, rto_parts
from drills.rehearsal.declared import Applied, apply_declared, records_from_plan
from drills.rehearsal.dns import PolicyDNS, query
from drills.rehearsal.healthcheck import HealthChecker, Transition, specs_from_route53
from drills.rehearsal.loadgen import LoadGenerator, RequestRecord, feature_batches
from drills.rehearsal.moto import MotoServer, replication_config
from drills.rehearsal.procs import PortInUse, ProcessError, Supervisor, check_ports_free, free_port_block
from drills.rehearsal.replicator import Replicator
from drills.rehearsal.repo import (
    ArtifactError,
    ServingRepo,
    manifest_inputs,
    manifest_model,
    prepare_serving_repo,
    read_manifest,
    sync_from_bucket,
    upload_tree,
    verify_tree,
)
from drills.rehearsal.triton import TritonServer, locate

LB_NET = "127.0.10."  # region n's load balancer is 127.0.10.<n+1>; 127.0.0.0/8 is all loopback on Linux
PORTS = 5  # base: moto, base+1: DNS (UDP), base+2..4: Triton HTTP, gRPC, metrics on every region address


@dataclass(frozen=True)
class Scale:
    """Timings of the models. None keeps the declared value (RequestInterval, the global stack's ttl)."""

    hc_interval: float | None = None
    probe_timeout: float | None = None
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
            probe_timeout=0.2,
            ttl=1,
            replication_lag=0.3,
            replication_poll=0.1,
            dns_refresh=0.2,
            ready_timeout=60.0,
            triton_exit_timeout=1,
        )


@dataclass
class Canary:
    region: str
    bucket: str
    key: str
    version_id: str
    t_put: float  # wall clock just before the PUT was sent


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
        self.tritons: dict[str, TritonServer] = {}
        self.repos: dict[str, ServingRepo] = {}
        self.health: HealthChecker | None = None
        self.dns: PolicyDNS | None = None
        self.replicator: Replicator | None = None
        self.buckets: dict[str, str] = {}  # region -> bucket
        self.clusters: dict[str, str] = {}  # region -> EKS cluster name (node groups in moto, for capacity)
        self.health_check_ids: dict[str, str] = {}  # region -> moto health check id
        self.model_prefix = ""
        self.manifest: dict = {}
        self.timings: dict[str, float] = {}
        self._faults: list[dict] = []
        self._started = False

    # ------------------------------------------------------------ ports
    @property
    def ports(self) -> dict[str, int]:
        b = self.base_port or 0
        return {"moto": b, "dns": b + 1, "http": b + 2, "grpc": b + 3, "metrics": b + 4}

    @property
    def dns_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports["dns"])

    def _claim_ports(self) -> None:
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

    def start(self) -> World:
        """Bring everything up; on any failure tear down what started and re-raise."""
        self.sup.__enter__()  # signal handlers + atexit cleanup from here on
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self._started = True
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
        self._claim_ports()
        self.moto = MotoServer(self.sup, port=self.ports["moto"])
        self._step("moto_server", self.moto.start)
        declared = (
            self._declared
            if self._declared is not None
            else self._step("offline plan of the stacks", lambda: plan_declared(self.fleet))
        )
        self._step("create declared AWS objects in moto", lambda: self._apply(declared))
        self._step("publish model to regional buckets", self._publish)
        self._step("start Triton per region", self._start_tritons)
        self._step("health checker, DNS, replicator", self._start_models)

    def close(self) -> None:
        """Stop everything this world started (idempotent)."""
        for part in (self.replicator, self.dns, self.health):
            if part is not None:
                with contextlib.suppress(Exception):  # keep tearing down
                    part.stop()
        for t in self.tritons.values():
            with contextlib.suppress(Exception):  # best effort: the supervisor below stops the Tritons anyway
                t._session.close()
        self.sup.__exit__(None, None, None)  # stops Tritons and moto in parallel, restores signal handlers
        self._started = False

    # ------------------------------------------------------------ setup steps
    def _apply(self, declared: Sequence[Any]) -> None:
        assert self.moto is not None
        moto = self.moto
        r53 = moto.client("route53")

        def s3_for(region: str | None):
            return moto.client("s3", region or "us-east-1")

        self.applied = apply_declared(
            declared,
            r53,
            s3_for,
            applied=self.applied,
            default_zone_name=self.fleet.glob.zone.name,
            eks_for=lambda region: moto.client("eks", region or "us-east-1"),
        )
        self._topology()

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
        self.buckets = {}
        for name, region in ap.buckets.items():
            if region in self.region_ip:
                self.buckets[region] = name
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

    def _start_one(self, region: str) -> float:
        assert self.moto is not None
        rdir = self.workdir / "regions" / region
        synced = rdir / "synced"
        sync_from_bucket(self.moto.client("s3", region), self.buckets[region], self.model_prefix, synced)
        repo = prepare_serving_repo(synced, rdir / "repository")
        self.repos[region] = repo
        t = TritonServer(
            self.sup,
            name=region,
            repository=repo.path,
            models=repo.models,
            address=self.region_ip[region],
            http_port=self.ports["http"],
            grpc_port=self.ports["grpc"],
            metrics_port=self.ports["metrics"],
            workdir=rdir / "triton",
            ready_timeout=self.scale.ready_timeout,
            exit_timeout=self.scale.triton_exit_timeout,
        )
        self.tritons[region] = t
        ready = t.start()
        # One inference before traffic: the first request pays for ONNX Runtime's lazy initialisation (tens
        # of ms), which would otherwise show up as a latency outlier or a client timeout in the records.
        t.infer(repo.models[0], self.batches(n=1, batch=8)[0], timeout=30)
        return ready

    def _start_tritons(self) -> None:
        # In parallel: each spends most of its ~2 s start-up loading the python stub and ONNX Runtime.
        with ThreadPoolExecutor(len(self.regions)) as pool:
            futures = {r: pool.submit(self._start_one, r) for r in self.regions}
            errors = []
            for r, f in futures.items():
                try:
                    self.log(f"  Triton {r} ready in {f.result():.2f} s on {self.tritons[r].url}")
                except Exception as e:  # noqa: BLE001 - collect, then raise the first with all named
                    errors.append((r, e))
        if errors:
            raise errors[0][1]

    def _start_models(self) -> None:
        assert self.moto is not None and self.applied is not None
        r53 = self.moto.client("route53")
        labels = {hid: r for r, hid in self.health_check_ids.items()}

        def specs():
            return specs_from_route53(
                r53, self._hc_endpoint, interval=self.scale.hc_interval, timeout=self.scale.probe_timeout, labels=labels
            )

        def on_transition(tr: Transition) -> None:
            if self.dns:
                self.dns.recompute("health")

        # Health checks are re-read from moto at the DNS propagation interval, so one updated through the
        # Route 53 API (inverted for a control-plane drill, disabled) takes effect like in Route 53.
        self.health = HealthChecker(
            status_file=self.workdir / "health-status.json",
            seed=self.seed,
            on_transition=on_transition,
            source=specs,
            source_interval=self.scale.dns_refresh,
        )
        self.health.start()
        zone_id = self._zone_id()
        targets = {name: self.region_ip[r] for name, r in self.applied.alias_targets().items() if r in self.region_ip}
        self.dns = PolicyDNS(
            host="127.0.0.1",
            port=self.ports["dns"],
            zone=self.applied.zone_names[zone_id],
            source=lambda: _rrsets(r53, zone_id),
            health=self.health.status,
            targets=targets,
            target_healthy=self._target_healthy,
            alias_ttl=self.fleet.glob.ttl,
            ttl_override=self.scale.ttl,
            refresh_interval=self.scale.dns_refresh,
            seed=self.seed,
        )
        self.dns.start()
        self.replicator = Replicator(
            self.moto.client("s3"),
            self._replication_configs,
            lag=self.scale.replication_lag,
            poll=self.scale.replication_poll,
        )
        self.replicator.start()

    def _replication_configs(self) -> dict[str, dict | None]:
        """bucket -> its replication configuration in moto (fields moto drops restored from what was put)."""
        assert self.moto is not None and self.applied is not None
        s3 = self.moto.client("s3")
        return {b: replication_config(s3, b, self.applied.replication.get(b)) for b in self.applied.buckets}

    def _zone_id(self) -> str:
        """The hosted zone holding the service name (the longest zone name it ends with)."""
        assert self.applied is not None
        name = self.fqdn.rstrip(".")
        zones = [(len(z), zid) for zid, z in self.applied.zone_names.items() if name == z or name.endswith("." + z)]
        if not zones:
            raise ProcessError(
                f"no declared hosted zone holds {name}; declared zones: {sorted(self.applied.zone_names.values())}"
            )
        return max(zones)[1]

    def _hc_endpoint(self, cfg: dict) -> tuple[str, int] | None:
        """A health check's target -> the loopback endpoint standing for it (its region's Triton HTTP port)."""
        assert self.applied is not None
        fqdn = (cfg.get("FullyQualifiedDomainName") or "").lower().rstrip(".")
        region = self.applied.alias_targets().get(fqdn)
        if region is None:
            region = next(
                (i["region"] for i in self.applied.hc_info.values() if i["fqdn"] == fqdn and i["region"]), None
            )
        if region in self.region_ip:
            return self.region_ip[region], self.ports["http"]
        ip = cfg.get("IPAddress")
        if ip and ip.startswith("127."):
            return ip, int(cfg.get("Port") or self.ports["http"])
        return None

    def _target_healthy(self, alias_name: str) -> bool:
        """EvaluateTargetHealth: the ELB's target health, approximated by its region's health check."""
        assert self.applied is not None and self.health is not None
        region = self.applied.alias_targets().get(alias_name)
        hid = self.health_check_ids.get(region or "")
        return self.health.status(hid) if hid else True

    # ------------------------------------------------------------ Route 53 side (adapters)
    def records(self) -> list[dict]:
        assert self.moto is not None and self.applied is not None
        zone_id = self._zone_id()
        name = self.fqdn.rstrip(".") + "."
        return [rr for rr in _rrsets(self.moto.client("route53"), zone_id) if rr["Name"] == name and rr["Type"] == "A"]

    def _region_of(self, rr: dict) -> str:
        assert self.applied is not None
        return self.applied.record_regions().get(rr.get("SetIdentifier", ""), rr.get("SetIdentifier", ""))

    def get_weights(self) -> dict[str, int | None]:
        """region -> Weight of its record as stored in Route 53 (moto); None for failover records."""
        return {self._region_of(rr): rr.get("Weight") for rr in self.records()}

    def get_failover(self) -> dict[str, str | None]:
        return {self._region_of(rr): rr.get("Failover") for rr in self.records()}

    def _upsert(self, changes: list[dict]) -> None:
        assert self.moto is not None and self.applied is not None
        zone_id = self._zone_id()
        self.moto.client("route53").change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rr} for rr in changes]},
        )
        if self.dns:
            self.dns.refresh()  # still subject to the modelled propagation for other readers

    def set_weights(self, weights: dict[str, int]) -> None:
        """Route 53 API path: UPSERT the weighted records' weights (the Pulumi path is `reapply`)."""
        unknown = set(weights) - set(self.regions)
        if unknown:
            raise ValueError(f"unknown regions {sorted(unknown)}; this world has {self.regions}")
        changes = []
        for rr in self.records():
            region = self._region_of(rr)
            if region in weights:
                if "Weight" not in rr:
                    raise ValueError(
                        f"record {rr.get('SetIdentifier')} is a {('failover' if rr.get('Failover') else 'simple')}"
                        f" record; weights apply to weighted routing only"
                    )
                changes.append({**rr, "Weight": int(weights[region])})
        self._upsert(changes)

    def set_failover(self, primary: str) -> None:
        """Make `primary` the PRIMARY record and the other the SECONDARY (stack flip, Route 53 API path)."""
        changes = []
        for rr in self.records():
            if "Failover" not in rr:
                raise ValueError("set_failover applies to failover routing only")
            changes.append({**rr, "Failover": "PRIMARY" if self._region_of(rr) == primary else "SECONDARY"})
        self._upsert(changes)

    def reapply(self, declared: Sequence[Any], *, propagate_now: bool = True) -> Applied:
        """Re-create moto's objects from a new offline plan (the stack adapter's `pulumi up`).

        `propagate_now=False` leaves the DNS model to pick the change up at its next zone re-read, i.e. after the
        modelled Route 53 propagation delay (`Scale.dns_refresh`), as a real change reaches the name servers some
        seconds after it is INSYNC in the API; the drills' stack adapter applies that way."""
        self._apply(declared)
        if self.dns and propagate_now:
            self.dns.refresh()
        assert self.applied is not None  # set by _apply
        return self.applied

    def set_inverted(self, region: str, inverted: bool) -> None:
        """Invert the region's health check through the Route 53 API (control-plane drill variant)."""
        assert self.moto is not None and self.health is not None and self.health.source is not None
        self.moto.client("route53").update_health_check(HealthCheckId=self.health_check_ids[region], Inverted=inverted)
        self.health.set_specs(self.health.source())  # no need to wait for the next re-read

    def health_status(self) -> dict[str, bool]:
        """region -> the modelled Route 53 health-check status."""
        assert self.health is not None
        st = self.health.statuses()
        return {r: st[h] for r, h in self.health_check_ids.items() if h in st}

    def hc_transitions(self) -> list:
        return self.health.transitions() if self.health else []

    def dns_changes(self) -> list:
        return self.dns.changes(self.fqdn) if self.dns else []

    def routing(self) -> dict[str, float]:
        """region -> probability that an answer for the name now points at it (the DNS model's outcome)."""
        assert self.dns is not None
        out = self.dns.outcome(self.fqdn)
        if out is None:
            return {}
        assert self.applied is not None
        return {self.applied.record_regions().get(k, k): v for k, v in out.shares.items()}

    def resolve(self, n: int = 1) -> list[str | None]:
        """Ask the DNS server for the name `n` times over UDP; the regions answered (a TestDNSAnswer stand-in)."""
        out = []
        for _ in range(n):
            ips, _ttl, _rc = query(self.fqdn, self.dns_address)
            out.append(self.ip_region.get(ips[0]) if ips else None)
        return out

    # ------------------------------------------------------------ data plane (faults)
    def fail_region(self, region: str, mode: str = "kill") -> float:
        """Inject a data-plane fault into `region`'s Triton; return the wall-clock time of injection."""
        t = time.time()
        self.tritons[region].fail(mode)
        self._faults.append({"region": region, "mode": mode, "t": t})
        self.log(f"fault: {mode} {region} at {t:.3f}")
        return t

    def restore_region(self, region: str) -> float:
        """Undo the region's fault; return seconds until its Triton is ready again."""
        dt = self.tritons[region].restore()
        self._faults.append({"region": region, "mode": "restore", "t": time.time(), "ready_s": dt})
        return dt

    def triton_state(self) -> dict[str, str]:
        return {r: t.state for r, t in self.tritons.items()}

    def triton_ready(self, region: str) -> tuple[int, int]:
        """(ready servers, desired servers) in the region: one Triton stands for the region's pods."""
        return (1 if self.tritons[region].is_ready(0.5) else 0), 1

    def served_manifest(self, region: str) -> tuple[dict, str]:
        """(manifest of the model version the region serves, sha256 of its bytes)."""
        p = self.repos[region].path / "manifest.json"
        return json.loads(p.read_text()), hashlib.sha256(p.read_bytes()).hexdigest()

    # ------------------------------------------------------------ S3 side (adapters)
    def put_canary(self, region: str, key: str | None = None, body: bytes | None = None) -> Canary:
        assert self.moto is not None
        bucket = self.buckets[region]
        key = key or f"drills/canary/{uuid.uuid4().hex}"
        body = body if body is not None else json.dumps({"t": time.time(), "region": region}).encode()
        t = time.time()
        r = self.moto.client("s3", region).put_object(Bucket=bucket, Key=key, Body=body)
        return Canary(region, bucket, key, r["VersionId"], t)

    def replication_of(self, canary: Canary) -> dict[str, dict]:
        """destination region -> {bucket, replicated_at, rpo_s (landing time - PUT time)} for a canary."""
        assert self.replicator is not None
        bucket_region = {b: r for r, b in self.buckets.items()}
        out = {}
        for dest, rec in self.replicator.replicated(canary.bucket, canary.key, canary.version_id).items():
            out[bucket_region.get(dest, dest)] = {
                "bucket": dest,
                "replicated_at": rec.replicated_at,
                "error": rec.error,
                "rpo_s": None if rec.replicated_at is None else rec.replicated_at - canary.t_put,
            }
        return out

    def wait_replicated(self, canary: Canary, timeout: float = 30.0) -> dict[str, dict]:
        assert self.replicator is not None and self.applied is not None
        cfg = self.applied.replication.get(canary.bucket, {})
        dests = [r["Destination"]["Bucket"].split(":::")[-1] for r in cfg.get("Rules", [])]
        self.replicator.wait(canary.bucket, canary.key, canary.version_id, dests, timeout)
        return self.replication_of(canary)

    # ------------------------------------------------------------ traffic
    @property
    def model_name(self) -> str:
        return next(iter(self.repos.values())).models[0]

    def batches(self, n: int = 32, batch: int = 32) -> list:
        # The build's golden rows (its data seed when the manifest records one), not this world's RNG seed.
        m = self.manifest
        seed = (m.get("data") or {}).get("seed") if isinstance(m.get("data"), dict) else m.get("data_seed")
        return feature_batches(manifest_inputs(m), n=n, batch=batch, seed=seed)

    def loadgen(
        self,
        *,
        rate: float,
        duration: float | None = None,
        count: int | None = None,
        clients: int = 8,
        timeout: float = 1.0,
        batch: int = 32,
        stagger: bool = True,
    ) -> LoadGenerator:
        return LoadGenerator(
            dns_server=self.dns_address,
            name=self.fqdn,
            port=self.ports["http"],
            model=self.model_name,
            batches=self.batches(batch=batch),
            rate=rate,
            duration=duration,
            count=count,
            clients=clients,
            timeout=timeout,
            ip_region=self.ip_region,
            stagger=stagger,
            seed=self.seed,
        )

    def loadgen_process(self, *, rate: float, duration: float, clients: int = 8, timeout: float = 1.0, batch: int = 32):
        """The same traffic from a supervised child process (`loadgen_proc.LoadProcess`): its clients do not share this
        process's GIL with the drill machinery, so their latencies are the servers' and the network's, not ours."""
        from drills.rehearsal.loadgen_proc import LoadProcess

        m = self.manifest
        seed = (m.get("data") or {}).get("seed") if isinstance(m.get("data"), dict) else m.get("data_seed")
        return LoadProcess(
            self.sup,
            self.workdir / "loadgen",
            dns_server=self.dns_address,
            name=self.fqdn,
            port=self.ports["http"],
            model=self.model_name,
            inputs=manifest_inputs(m),
            data_seed=seed,
            rate=rate,
            duration=duration,
            clients=clients,
            timeout=timeout,
            ip_region=self.ip_region,
            seed=self.seed,
            batch=batch,
        )

    @property
    def ttl(self) -> int:
        return self.scale.ttl if self.scale.ttl is not None else self.fleet.glob.ttl

    def predicted_rto(self) -> dict[str, float]:
        """interval x threshold (detection) + propagation + TTL: the configuration's prediction."""
        hc = self.fleet.glob.health_check
        interval = self.scale.hc_interval if self.scale.hc_interval is not None else hc.request_interval
        detection = interval * hc.failure_threshold
        return {
            "detection_s": detection,
            "propagation_s": self.scale.dns_refresh,
            "ttl_s": float(self.ttl),
            "total_s": detection + self.scale.dns_refresh + self.ttl,
        }

    def slo(self, window_s: float | None = None) -> Slo:
        """The objectives' success rate and p99, judged over a sliding window: by default the TTL (a one-minute
        window at full scale, shrinking with the scaled timings)."""
        o = self.fleet.glob.objectives
        return Slo(
            success_rate=o.success_rate,
            p99_ms=o.p99_ms,
            window_s=window_s if window_s is not None else max(1.0, float(self.ttl)),
        )

    def rto(
        self,
        records: Sequence[RequestRecord],
        fault_time: float,
        region: str,
        *,
        slo: Slo | None = None,
        window_limit_s: float | None = None,
    ) -> dict[str, Any]:
        out = rto_parts(
            records,
            fault_time,
            self.hc_transitions(),
            self.dns_changes(),
            self.ttl,
            slo or self.slo(),
            region=region,
            window_limit_s=window_limit_s,
        )
        out["predicted"] = self.predicted_rto()
        return out

    # ------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        hc = self.fleet.glob.health_check
        return {
            "env": self.fleet.env,
            "fqdn": self.fqdn,
            "ports": self.ports,
            "moto": self.moto.endpoint if self.moto else None,
            "dns": "{}:{:d}".format(*self.dns_address),
            "regions": {
                r: {
                    "address": self.region_ip[r],
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
                    if (t := self.tritons.get(r))
                    else None,
                    "served": sorted(self.repos[r].served) if r in self.repos else None,
                    "excluded": self.repos[r].excluded if r in self.repos else None,
                }
                for r in self.regions
            },
            "declared": {
                "health_check": {"request_interval": hc.request_interval, "failure_threshold": hc.failure_threshold},
                "ttl": self.fleet.glob.ttl,
                "ignored_types": self.applied.ignored if self.applied else {},
            },
            "scale": asdict(self.scale),
            "model_prefix": self.model_prefix,
            "timings": self.timings,
            "faults": list(self._faults),
            "moto_ready_s": self.moto.ready_s if self.moto else None,
        }


def _rrsets(route53, zone_id: str) -> list[dict]:
    out = []
    for page in route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        out += page["ResourceRecordSets"]
    return out


__all__ = ["ArtifactError", "Canary", "PortInUse", "ProcessError", "Scale", "World", "plan_declared"]
