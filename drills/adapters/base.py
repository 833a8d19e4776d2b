"""The adapter interfaces. Small on purpose: a backend implements these and nothing else.

Values crossing these interfaces are plain data (dicts, dataclasses of str/int/float) so the engine can journal
them and a second process can act on them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast, runtime_checkable


@dataclass(frozen=True)
class ProbeResult:
    t: float  # clock time the probe was sent
    target: str  # a region, or "service" (through the DNS name, as a client)
    kind: str  # "ready" | "infer"
    ok: bool
    latency_ms: float
    status: int | None = None
    region: str | None = None  # region that answered, where known
    client: int | None = None  # simulated client (service probes)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RecordState:
    """One region's record of the service name in Route 53."""

    region: str
    set_identifier: str
    weight: int | None = None
    failover: str | None = None
    health_check_id: str | None = None
    target: str | None = None  # alias DNS name


@dataclass(frozen=True)
class NodeGroupState:
    region: str
    pool: str
    name: str
    min: int
    desired: int
    max: int
    status: str  # EKS: ACTIVE, UPDATING, DEGRADED, ...


@runtime_checkable
class StackAdapter(Protocol):
    """Pulumi stacks. `path` is a config path inside the project namespace, e.g.
    `routing.regions.us-east-1.weight` or `gpu_pools[0].desired` (Pulumi's --path syntax)."""

    def get_config(self, stack: str, path: str) -> Any: ...

    def set_config(self, stack: str, values: Mapping[str, Any]) -> None:
        """Set several paths at once; the program sees them together at the next `up`."""

    def preview(self, stack: str) -> dict[str, int]:
        """Change summary by operation: {"same": n, "update": n, "create": n, "delete": n, "replace": n}."""

    def up(self, stack: str, message: str) -> dict[str, Any]:
        """Apply the stack's config. Returns {"summary": {op: n}, "outputs": {...}}."""

    def outputs(self, stack: str) -> dict[str, Any]: ...


@runtime_checkable
class Route53Adapter(Protocol):
    def records(self) -> dict[str, RecordState]:
        """The service name's records, by region."""

    def health(self, region: str) -> bool:
        """Route 53's current verdict on the region's health check."""

    def dns_answer(self) -> dict[str, float]:
        """Share of answers each region gets from Route 53 right now (the routing policy over healthy records)."""

    def set_inverted(self, region: str, inverted: bool) -> None:
        """Invert the region's health check (control-plane drill variant only)."""


@runtime_checkable
class S3Adapter(Protocol):
    def bucket_ok(self, region: str) -> bool: ...

    def put_object(self, region: str, key: str, body: bytes) -> str | None:
        """Returns the version id where the bucket is versioned."""

    def head(self, region: str, key: str) -> dict | None:
        """Object metadata ({"etag", "version_id", "replication_status", ...}) or None when absent."""

    def delete_object(self, region: str, key: str) -> None:
        """Delete every version (a canary must not linger as a noncurrent version)."""

    def current_manifest(self, region: str) -> tuple[dict | None, str | None]:
        """(the manifest of the model version the region serves, sha256 of its bytes), or (None, None)."""


@runtime_checkable
class CapacityAdapter(Protocol):
    def node_groups(self, region: str) -> list[NodeGroupState]: ...

    def set_scaling(self, region: str, pool: str, *, min: int | None = None, desired: int | None = None) -> None: ...

    def triton_ready(self, region: str) -> tuple[int, int]:
        """(ready Triton pods, desired Triton pods)."""


@runtime_checkable
class ProbeAdapter(Protocol):
    def ready(self, region: str) -> ProbeResult:
        """GET /v2/health/ready on the region's endpoint."""

    def infer(self, region: str) -> ProbeResult:
        """POST /v2/models/<model>/infer on the region's endpoint."""

    def service(self, client: int) -> ProbeResult:
        """One inference through the service name, as client number `client` (its own DNS cache) sees it."""


@runtime_checkable
class FaultAdapter(Protocol):
    kinds: tuple[str, ...]

    def prepare(self, region: str, kind: str) -> dict:
        """Read-only: what `clear` will need to restore (journaled before `inject` runs)."""

    def inject(self, region: str, kind: str, handle: dict) -> None: ...

    def clear(self, region: str, kind: str, handle: dict) -> None:
        """Undo `inject`; must be safe to call again, and after a crash mid-inject."""


# ---------------------------------------------------------------- release adapters (optional on a Backend)
# A model release and the sub-region drills (drills/release) need four more things from a backend. They are
# optional: a backend without them runs every other drill; a release refuses to start without them.


@dataclass(frozen=True)
class TrackState:
    """One version's deployment in a region, as served now: `stable` or `canary`."""

    track: str
    version: str | None  # the model version its pods serve (None: no such deployment)
    weight: int  # percent of the region's requests the load balancer sends to it now (0..100)
    ready: int  # ready pods (Triton /v2/health/ready)
    desired: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScoreResult:
    """One batch of rows scored by one version: the same rows go to both versions (the drift gates)."""

    region: str
    track: str
    ok: bool
    scores: list[float]  # one per row, in row order (empty when not ok)
    latency_ms: list[float]  # one per HTTP request sent (a batch may be split into several)
    errors: int = 0  # failed HTTP requests
    error: str | None = None


@runtime_checkable
class ServingAdapter(Protocol):
    def tracks(self, region: str) -> dict[str, TrackState]:
        """{"stable": ..., "canary": ...} live: the load balancer's weights and the deployments' versions and
        readiness (AWS: ALB listener + Kubernetes Deployments). No "canary" key when none is deployed."""

    def restart(self, region: str, track: str) -> None:
        """Roll the track's pods so every one reloads its model from the bucket (after an artifact repair)."""


@runtime_checkable
class ScoreProbe(Protocol):
    def scores(self, region: str, track: str, inputs: Mapping[str, Any], batch: int = 256) -> ScoreResult:
        """Score `inputs` (tensor name -> array [rows, ...]) on one version of the region's model, through the
        region's endpoint pinned to that version (AWS: the `X-Reco-Track` header), `batch` rows a request."""


@runtime_checkable
class MetricsSource(Protocol):
    def scrape(self, region: str, track: str) -> dict[str, str]:
        """Triton's Prometheus text (/metrics) from every pod/server of the track, keyed by instance name, so
        counters are differenced per instance (a restarted instance resets its counters)."""


@runtime_checkable
class ArtifactStore(Protocol):
    """The S3 operations a release needs beyond S3Adapter: read a version's files, pin and restore versions."""

    def get_object(self, region: str, key: str, version_id: str | None = None) -> bytes | None: ...

    def list_keys(self, region: str, prefix: str) -> list[str]: ...

    def versions(self, region: str, key: str) -> list[dict]:
        """Every version of `key`, newest first: [{"version_id", "latest", "delete_marker"}] (replicas count too)."""

    def restore_version(self, region: str, key: str, version_id: str) -> str | None:
        """Make an earlier version of `key` current again (a copy of it); returns the new version id."""


class ReleaseS3(S3Adapter, ArtifactStore, Protocol):
    """`Backend.s3` of a backend that runs releases: an S3Adapter that also implements ArtifactStore."""


def release_s3(s3: S3Adapter) -> ReleaseS3:
    """`s3` typed as the ReleaseS3 that a release's steps and undos use. A static cast, no runtime check:
    drills.release.actions.require_release_backend refuses a backend lacking them before any change."""
    return cast("ReleaseS3", s3)


@dataclass
class Backend:
    """A named bundle of adapters. `options` is JSON and recorded in the journal, so `drills rollback` in
    another process can rebuild the same backend with `drills.backends.build_backend(name, fleet, options)`."""

    name: str
    options: dict[str, Any]
    stacks: StackAdapter
    route53: Route53Adapter
    s3: S3Adapter
    capacity: CapacityAdapter
    probes: ProbeAdapter
    faults: FaultAdapter
    extras: dict[str, Any] = field(default_factory=dict)  # backend-specific handles (tests, rehearsal)
    closers: list[Any] = field(default_factory=list)
    # Optional, for model releases and the sub-region drills (drills/release): see the protocols above.
    # `s3` must then also implement ArtifactStore.
    serving: ServingAdapter | None = None
    scores: ScoreProbe | None = None
    metrics: MetricsSource | None = None
    # The fleet's readiness now (drills.readiness: a list of CheckResult); None where the backend cannot evaluate it.
    readiness: Callable[[], list[Any]] | None = None
    # (region, a time on the drill's clock) -> the Triton pods added there since, with their start-up parts
    # (drills/adapters/pod_startup.py: {pod, node, created, parts, total}); None where the backend cannot tell.
    pod_startups: Callable[[str, float], list[dict[str, Any]]] | None = None

    def close(self) -> None:
        for fn in reversed(self.closers):
            with contextlib.suppress(Exception):  # closing is best effort: one failed closer must not stop the others
                fn()
        self.closers.clear()
