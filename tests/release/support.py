"""Test backend for releases: the drills' moto world (tests/drills/drills_support.py) plus test implementations
of the release adapters, driven by one fake fleet.

- `make_repo(dir, version, behaviour=...)`: a small but real model repository that model_build's `verify`
  accepts (a tiny ONNX graph with the ranker's signature, a Triton config, a manifest with hashes, metrics and
  engine entries), published with model_build's own `publish` into each region's moto bucket. `behaviour`
  (recorded in the manifest's `training`) says how the fake servers answer for that version:
    good               scores sigmoid(dense @ w), w drawn from `w_seed` (two good versions differ slightly)
    bad-labels         a model trained on shuffled labels: every score near the base rate (AUC 0.5 offline)
    errors-under-load  good scores on the golden rows, but 5% of user requests fail (a defect only traffic shows)
- `FakeFleet`: what the regional stacks' `pulumi up` does to serving: stable and canary Deployments per region
  (versions, weights, readiness after a rollout delay on the fake clock, the bytes their pods loaded from the
  bucket at start), users' traffic at a fixed rate split by the region's canary weight (counted as Triton counters
  per pod, and every failed user request recorded), a node that can be lost and replaced.
- `FleetServing`, `FleetScores`, `FleetMetrics`, `FleetPods`, `FleetNodeLoss`: the adapters over it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from drills.adapters.base import ScoreResult, TrackState
from drills.adapters.capacity import EksCapacity
from drills.adapters.faults import CompositeFaults
from drills.adapters.local_stack import LocalStackAdapter
from drills.release import metrics as M
from drills.release.adapters import ArtifactCorruption
from drills.release.planning import VERSION
from infra.config import load_fleet
from model_build.manifest import load_manifest
from model_build.signing import manifest_digest
from tests.signing import sign

MODEL = "ranker"
# Fast release parameters on the fake clock (a plan file's `parameters`).
FAST = {
    "poll_seconds": 5,
    "probe_clients": 2,
    "min_samples": 4,
    "slo_window_seconds": 20,
    "hold_seconds": 10,
    "capacity_timeout_seconds": 300,
    "replication_timeout_seconds": 200,
}


# ---------------------------------------------------------------- a real (tiny) model repository
def _onnx(path: Path, w: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sparse = helper.make_tensor_value_info("sparse_ids", TensorProto.INT32, ["batch", 8])
    dense = helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", 8])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])
    g = helper.make_graph(
        [helper.make_node("MatMul", ["dense", "w"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["score"])],
        "ranker",
        [sparse, dense],
        [score],
        [numpy_helper.from_array(w.astype(np.float32).reshape(8, 1), "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    onnx.save(m, str(path))


CONFIG = """name: "ranker_onnx"
platform: "onnxruntime_onnx"
max_batch_size: 4096
input { name: "sparse_ids" data_type: TYPE_INT32 dims: 8 }
input { name: "dense" data_type: TYPE_FP32 dims: 8 }
output { name: "score" data_type: TYPE_FP32 dims: 1 }
default_model_filename: "model.onnx"
"""


def weights(w_seed: int) -> np.ndarray:
    base = np.array([0.9, -0.6, 0.3, 0.5, 1.1, 0.2, -0.3, 0.25])
    return base + 0.02 * np.random.default_rng(w_seed).standard_normal(8)


def make_repo(
    root: Path,
    version: str,
    behaviour: str = "good",
    *,
    w_seed: int = 1,
    ccs: tuple[str, ...] = ("8.0", "8.6", "8.9", "9.0"),
    onnx_fallback: bool = True,
    auc: float | None = None,
    ndcg: float | None = None,
) -> Path:
    """A repository model_build.manifest.verify() accepts. With `onnx_fallback`, every compute capability is
    served by the ONNX model on purpose (no TensorRT here); without it, the engines are listed but not built."""
    from model_build.manifest import file_entry, write_manifest
    from tests.manifests import SEED, manifest

    d = root / f"{version}"
    if (d / "manifest.json").exists():
        return d
    (d / "ranker_onnx" / "1").mkdir(parents=True)
    _onnx(d / "ranker_onnx" / "1" / "model.onnx", weights(w_seed))
    (d / "ranker_onnx" / "config.pbtxt").write_text(CONFIG)
    files = [
        file_entry(d, "ranker_onnx/1/model.onnx", "onnx"),
        file_entry(d, "ranker_onnx/config.pbtxt", "triton-config"),
    ]
    bad = behaviour == "bad-labels"
    m = manifest(
        version,
        name=MODEL,
        not_built=() if onnx_fallback else ccs,
        onnx_fallback=ccs if onnx_fallback else (),
        files=files,
        validation_auc=auc if auc is not None else (0.5 if bad else 0.76),
        validation_ndcg_at_10=ndcg if ndcg is not None else (0.45 if bad else 0.66),
        data={"seed": SEED, "bad_labels": bad},
        training={"behaviour": behaviour, "w_seed": str(w_seed), "bad_labels": bad},
        created_at=datetime.now(UTC).isoformat(),
    )
    write_manifest(d, m)
    sign(d)
    return d


def publish(backend: Any, repo: Path, regions: list[str] | None = None) -> None:
    """model_build's own publish (checksums, If-None-Match, manifest last) into each region's moto bucket."""
    import boto3

    from model_build.publish import publish as mb_publish

    version = str(load_manifest(repo).model["version"])
    stacks = load_fleet(backend.options["env"], backend.stacks.stacks_dir).stack_names
    for r, bucket in backend.extras["outputs"].items():
        if regions is None or r in regions:
            mb_publish(repo, bucket["bucket_name"], s3=boto3.client("s3", region_name=r), log=lambda s: None)
            # The publish PR pins the release's manifest digest in the region's stack config.
            backend.stacks.set_config(stacks[r], {f'model.digests["{version}"]': manifest_digest(repo)})


# ---------------------------------------------------------------- the fake fleet
@dataclass
class Track:
    version: str
    behaviour: str
    w_seed: int
    desired: int
    ready_at: float
    loaded: dict[str, str]  # path -> sha256 of the bytes the pods loaded from the bucket at start
    generation: int
    previous: Track | None = None  # what serves until this rollout is ready (maxUnavailable 0)


@dataclass
class RegionState:
    stable: Track | None = None
    canary: Track | None = None
    weight: int = 0
    counters: dict[str, dict[str, float]] = field(default_factory=dict)  # instance -> Triton counters
    lost_until: float | None = None


class FakeFleet:
    def __init__(
        self, backend: Any, clock: Any, *, rollout_seconds: float = 20.0, rate_rps: float = 20.0, pods: int = 2
    ):
        self.b, self.clock, self.rollout, self.rate, self.pods = backend, clock, rollout_seconds, rate_rps, pods
        self.regions: dict[str, RegionState] = {}
        self.t = clock.now()
        self.user_requests = 0.0
        self.user_failures: list[dict] = []  # every failed user request (region, track, version, t)
        self.loads: list[dict] = []  # every pod start: region, track, version, loaded hashes
        self.gen = 0
        from infra.capacity import shares_after_loss
        from infra.config import load_fleet

        self.fleet = load_fleet(backend.options["env"], Path(backend.options["stacks_dir"]))
        self.shares = shares_after_loss(self.fleet.glob.routing.weights(), None)

    # -------------------------------------------------------- pulumi up of a regional stack
    def _start(self, region: str, version: str, desired: int, previous: Track | None) -> Track:
        from drills.release.artifacts import MANIFEST, pinned_versions, prefix, sha256
        from model_build.manifest import Manifest

        s3 = self.b.s3
        # As the pods' fetch-model does: at the S3 versions a restore pinned for this version, else the current ones.
        pinned = pinned_versions(s3, region, MODEL, version)
        raw = s3.get_object(region, prefix(MODEL, version) + MANIFEST, pinned.get(MANIFEST))
        if raw is None:  # Triton with --exit-on-error: the pods never become ready
            return Track(version, "missing", 0, desired, float("inf"), {}, self._next(), previous)
        man = Manifest.model_validate_json(raw)
        loaded = {}
        for f in man.files:
            body = s3.get_object(region, prefix(MODEL, version) + f.path, pinned.get(f.path))
            loaded[f.path] = sha256(body or b"")
        tr = man.training
        t = Track(
            version,
            tr.get("behaviour", "good"),
            int(tr.get("w_seed", 1)),
            desired,
            self.clock.now() + self.rollout,
            loaded,
            self._next(),
            previous,
        )
        self.loads.append({"region": region, "version": version, "loaded": loaded, "t": self.clock.now()})
        return t

    def _next(self) -> int:
        self.gen += 1
        return self.gen

    def apply(self, region: str, cfg: Any) -> None:
        self.advance()
        st = self.regions.setdefault(region, RegionState())
        m = cfg.model
        if st.stable is None or st.stable.version != m.version:
            prev = st.stable if st.stable is not None and self.clock.now() >= st.stable.ready_at else None
            st.stable = self._start(region, m.version, self.pods, prev)
        if m.canary_version:
            if st.canary is None or st.canary.version != m.canary_version:
                st.canary = self._start(region, m.canary_version, 1, None)
        else:
            st.canary = None
        st.weight = m.canary_weight if m.canary_version else 0

    def restart(self, region: str, track: str) -> None:
        self.advance()
        st = self.regions[region]
        cur = getattr(st, track)
        setattr(st, track, self._start(region, cur.version, cur.desired, cur))

    # -------------------------------------------------------- what serves now
    def serving(self, region: str, track: str) -> Track | None:
        st = self.regions.get(region)
        t = getattr(st, track) if st else None
        if t is None:
            return None
        if self.clock.now() < t.ready_at:
            return t.previous  # the rollout is not ready: the old pods still serve
        return t

    def scores(self, track: Track, dense: np.ndarray) -> np.ndarray:
        if track.behaviour == "bad-labels":
            return 0.34 + 0.004 * np.random.default_rng(len(dense)).standard_normal(len(dense))
        return 1.0 / (1.0 + np.exp(-(dense.astype(np.float64) @ weights(track.w_seed))))

    def error_rate(self, track: Track) -> float:
        return 0.05 if track.behaviour == "errors-under-load" else 0.0

    # -------------------------------------------------------- users' traffic as Triton counters
    def advance(self) -> None:
        """Users' requests since the last call: `rate_rps` x the region's share, split by the canary weight;
        every failure is recorded as a user-visible failed request."""
        now = self.clock.now()
        dt, self.t = max(0.0, now - self.t), now
        if dt == 0:
            return
        for region, st in self.regions.items():
            n = self.rate * self.shares.get(region, 0.0) * dt
            for track, share in (("stable", 100 - st.weight), ("canary", st.weight)):
                t = self.serving(region, track)
                if t is None or share == 0:
                    continue
                req = n * share / 100.0
                fail = req * self.error_rate(t)
                c = st.counters.setdefault(
                    f"{region}-{track}-{t.version}-{t.generation}",
                    {"success": 0.0, "failure": 0.0, "inferences": 0.0, "request_us": 0.0, "queue_us": 0.0},
                )
                c["success"] += req - fail
                c["failure"] += fail
                c["inferences"] += 32 * req
                c["request_us"] += (req - fail) * 4000.0
                c["queue_us"] += (req - fail) * 200.0
                self.user_requests += req
                if fail >= 0.5 or (fail > 0 and not self.user_failures):
                    self.user_failures.append(
                        {"region": region, "track": track, "version": t.version, "t": now, "n": fail}
                    )

    def metrics_text(self, region: str, track: str) -> dict[str, str]:
        self.advance()
        st = self.regions.get(region)
        t = self.serving(region, track)
        if st is None or t is None:
            return {}
        key = f"{region}-{track}-{t.version}-{t.generation}"
        c = st.counters.setdefault(
            key, {"success": 0.0, "failure": 0.0, "inferences": 0.0, "request_us": 0.0, "queue_us": 0.0}
        )
        return {key: M.render(c, "ranker_onnx", quantiles_us={"0.5": 3000.0, "0.99": 9000.0}, gpu_utilization=0.4)}


# ---------------------------------------------------------------- adapters over the fake fleet
class FleetServing:
    def __init__(self, fleet: FakeFleet):
        self.fleet = fleet

    def tracks(self, region: str) -> dict[str, TrackState]:
        st = self.fleet.regions.get(region)
        out: dict[str, TrackState] = {}
        if st is None:
            return out
        for name in ("stable", "canary"):
            t = getattr(st, name)
            if t is None:
                continue
            ready = t.desired if self.fleet.clock.now() >= t.ready_at else 0
            if name == "stable" and st.lost_until is not None and self.fleet.clock.now() < st.lost_until:
                ready = max(0, ready - 1)
            weight = st.weight if name == "canary" else 100 - st.weight
            out[name] = TrackState(track=name, version=t.version, weight=weight, ready=ready, desired=t.desired)
        return out

    def restart(self, region: str, track: str) -> None:
        self.fleet.restart(region, track)


class FleetScores:
    def __init__(self, fleet: FakeFleet):
        self.fleet = fleet
        self.calls = 0

    def scores(self, region: str, track: str, inputs: Mapping[str, Any], batch: int = 256) -> ScoreResult:
        self.calls += 1
        t = self.fleet.serving(region, track)
        rows = len(inputs["dense"])
        n = -(-rows // batch)
        if t is None:
            return ScoreResult(region, track, False, [], [1.0] * n, errors=n, error="no such track")
        s = self.fleet.scores(t, np.asarray(inputs["dense"]))
        return ScoreResult(region, track, True, [float(x) for x in s], [3.0] * n)


class FleetMetrics:
    def __init__(self, fleet: FakeFleet):
        self.fleet = fleet

    def scrape(self, region: str, track: str) -> dict[str, str]:
        return self.fleet.metrics_text(region, track)


class FleetPods:
    """CapacityAdapter's pod readiness over the fake fleet (stable pods; a lost node takes one away)."""

    def __init__(self, fleet: FakeFleet):
        self.fleet = fleet

    def ready(self, region: str) -> tuple[int, int]:
        t = FleetServing(self.fleet).tracks(region).get("stable")
        return (t.ready, t.desired) if t else (0, 0)


class FleetNodeLoss:
    """FaultAdapter "gpu-node-loss": one node (one pod here) gone until its replacement is ready."""

    kinds = ("gpu-node-loss",)

    def __init__(self, fleet: FakeFleet, replace_seconds: float = 45.0):
        self.fleet, self.replace = fleet, replace_seconds

    def prepare(self, region: str, kind: str) -> dict:
        return {"region": region, "replace_seconds": self.replace}

    def inject(self, region: str, kind: str, handle: dict) -> None:
        self.fleet.regions[region].lost_until = self.fleet.clock.now() + self.replace

    def clear(self, region: str, kind: str, handle: dict) -> None:
        st = self.fleet.regions.get(region)
        if st and st.lost_until is not None and self.fleet.clock.now() >= st.lost_until:
            st.lost_until = None


# ---------------------------------------------------------------- assembly
def release_backend(
    env: str,
    stacks: Path,
    state: Path,
    clock: Any,
    *,
    uid: str,
    stable_repo: Path,
    lag: float = 40.0,
    rollout_seconds: float = 20.0,
    rate_rps: float = 200.0,
) -> tuple[Any, FakeFleet]:
    """The drills' test backend with the release adapters: publishes `stable_repo` everywhere and brings every
    region up on it through its regional stack (the applier), as a fleet at steady state."""
    from infra.config import load_fleet
    from tests.drills.drills_support import build_test_backend

    # No manifests seeded by the drills' world: the published repository is the truth.
    b = build_test_backend(
        env,
        stacks,
        state,
        clock,
        replication_lag=lag,
        clients=FAST["probe_clients"],
        uid=uid,
        manifests=dict.fromkeys(load_fleet(env, stacks).regions),
    )
    b.options.update(env=env)
    fleet = FakeFleet(b, clock, rollout_seconds=rollout_seconds, rate_rps=rate_rps)

    def region_applier(adapter: Any, stack: str, cfg: Any) -> dict:
        fleet.apply(cfg.region, cfg)
        return adapter.outputs(stack)

    assert isinstance(b.stacks, LocalStackAdapter) and isinstance(b.capacity, EksCapacity)
    b.stacks.appliers["region"] = region_applier
    b.serving, b.scores, b.metrics = FleetServing(fleet), FleetScores(fleet), FleetMetrics(fleet)
    b.capacity.pods = FleetPods(fleet)
    f = load_fleet(env, stacks)

    def served(region: str) -> tuple[str, str]:
        return MODEL, str(b.stacks.get_config(f.stack_names[region], VERSION))

    b.faults = CompositeFaults(b.faults, ArtifactCorruption(b.s3, served), FleetNodeLoss(fleet))
    b.extras["fleet"] = fleet
    publish(b, stable_repo)
    for stack in f.stack_names.values():
        b.stacks.up(stack, "seed")
    clock.sleep(rollout_seconds + 1)
    return b, fleet


def plan_file(tmp: Path, **extra: Any) -> Path:
    import yaml

    p = tmp / "plan.yaml"
    p.write_text(yaml.safe_dump({"parameters": {**FAST, **extra}}))
    return p


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst
