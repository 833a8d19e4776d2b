"""Triton Inference Server serving the ranker from the regional bucket.

One Deployment (with its PDB and HPA) per GPU pool rather than one per region: each pool is one GPU type
and compute capability, so each Deployment scales against its own pool's ceiling, a bad engine for one
capability degrades one pool instead of the region, and the HPA's replica bounds map to GPUs that exist.
All of them carry the same `app.kubernetes.io/name: triton` label, so one Service and one
TargetGroupBinding put every ready pod of the region behind the load balancer.

Gray release: when the stack configures `model.canary_version`, a second set of Deployments (one per pool,
`triton-<pool>-canary`, with their PDB and HPA) serves that version from its own immutable prefix beside the
stable ones. Canary pods are labelled `app.kubernetes.io/name: triton-canary`, so the stable Service (and
everything that selects `triton`: the stable TargetGroupBinding, the drills' readiness and fault adapters) never
picks them up; their own Service and TargetGroupBinding register them in the canary target group, and the
load balancer's weighted forward action (infra/components/load_balancer.py) splits the traffic. Every pod carries
`reco-dr/track` (stable | canary) and `reco-dr/model-version`, which the metrics pipeline turns into series
labels: the release gates, alerts and dashboard tell the two versions apart by them.

A/B experiments: every arm version the region serves (a version an experiment's cell is served other than the
stable one, infra/arms.py) gets the canary's set of its own: per pool a Deployment `triton-<pool>-arm-<hash>` (PDB,
HPA from one replica), serving that version from its prefix, verified against its pinned digest; a Service and a
TargetGroupBinding into the version's arm target group, where the load balancer's arm header rules send the cell's
requests. Its pods are labelled `app.kubernetes.io/name: triton-arm-<hash>` and `reco-dr/track: arm-<hash>`
(infra.names.app_name, infra.arms.arm_track), so no stable or canary selector ever picks them up.

Deep health: every stable pod runs a small sidecar beside Triton (infra/health.py DEEP_HEALTH_SCRIPT, the Triton
image's own python3) that answers DEEP_HEALTH_PATH with one inference through the region's stable Service. A third
TargetGroupBinding puts the stable pods' sidecar port in the load balancer's deep-health target group, which the
global stack's Route 53 deep check probes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import pulumi
import pulumi_kubernetes as k8s

from infra.arms import arm_track
from infra.capacity import replica_bounds
from infra.components.gpu_pools import CC_LABEL, GPU_TOLERATION, POOL_LABEL
from infra.config import GpuPool, Model
from infra.config import Triton as TritonConfig
from infra.health import DEEP_HEALTH_CONTAINER, DEEP_HEALTH_PORT, DEEP_HEALTH_PORT_NAME, deep_health_argv
from infra.names import (
    APP,
    CANARY,
    FETCH_CONTAINER,
    LIVE_PATH,
    NAMESPACE,
    PORTS,
    READY_PATH,
    SERVICE_ACCOUNT,
    STABLE,
    TRACK_LABEL,
    TRITON_CONTAINER,
    VERIFY_CONTAINER,
    app_name,
    pins_key,
    served_models,
)

# Triton's own Prometheus metric (0..1 per GPU), served to the HPA through the custom metrics API.
GPU_UTIL_METRIC = "nv_gpu_utilization"


# The model repository reaches Triton through two init containers, so that no pod ever serves bytes other than
# the ones the manifest names: `fetch-model` copies the version's immutable prefix from the bucket to a local
# volume (the AWS CLI, pinned; at a restore's pinned S3 versions, see FETCH_SCRIPT), `verify-model` checks every
# file against manifest.json (sha256 and size; engines added later by a build Job only with a matching record;
# nothing unexpected) with the Triton image's own python3, then links the models this pod serves into
# SERVING_DIR, the only repository Triton reads: build artifacts published beside them (checkpoint/, golden/,
# jobs/, the python-backend model) are verified but never polled.
# A corrupted or tampered object fails the pod before Triton starts; the rollout stalls on it
# (maxUnavailable 0) while the old pods keep serving. Replication copies a corrupt object as faithfully as a good
# one, so this check runs on every pod start, not only at publish time.
# Not pinned by digest: the only published digest found for 2.22.35 is Docker Hub's amazon/aws-cli index, and this is
# the ECR Public copy, whose digest was not verifiable here (tests/infra/test_pods_nodes.py allow-lists it).
AWS_CLI_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.22.35"
# argv: bucket, the version's prefix (`<model>/<version>/`), the local directory, the region's fetch-pins key
# (infra.names.pins_key), the version. The prefix is synced; then, if a restore pinned this version, every pinned
# file is fetched again at its pinned S3 version id: a restore points pods at the last-known-good bytes instead of
# copying them over a published key (which the bucket policy refuses). Shell builtins and the CLI only: the image
# has no JSON tool. A missing pins object is normal; any other error reading it fails the pod.
FETCH_SCRIPT = r"""
set -eu
bucket=$1 prefix=$2 dest=$3 pins=$4 version=$5 tmp=${TMPDIR:-/tmp}
aws s3 sync --only-show-errors --exact-timestamps "s3://$bucket/$prefix" "$dest"
if ! aws s3api get-object --bucket "$bucket" --key "$pins" "$tmp/pins" >/dev/null 2>"$tmp/pins.err"; then
  case "$(cat "$tmp/pins.err")" in
    *NoSuchKey*) echo "fetch-model: $version synced (no fetch pins in s3://$bucket/$pins)"; exit 0 ;;
    *) cat "$tmp/pins.err" >&2; exit 1 ;;
  esac
fi
{
  read -r pinned digest
  if [ "$pinned" != "$version" ]; then
    echo "fetch-model: $version synced (the fetch pins name $pinned)"
    exit 0
  fi
  n=0
  while read -r vid rel; do
    aws s3api get-object --bucket "$bucket" --key "$prefix$rel" --version-id "$vid" "$dest/$rel" >/dev/null
    n=$((n + 1))
  done
  echo "fetch-model: $version, $n files at the S3 versions a restore pinned (manifest $digest)"
} < "$tmp/pins"
"""
MODEL_DIR = "/models"
SERVING_DIR = f"{MODEL_DIR}/serving"
# argv: the verified version's directory, the serving repository to build, then the Triton models it serves.
VERIFY_SCRIPT = r"""
import hashlib, json, os, sys
root, serving, pinned, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
mpath = os.path.join(root, "manifest.json")
got = sha(mpath) if os.path.isfile(mpath) else "(no manifest.json)"
if got != pinned:
    sys.exit(f"verify-model: refusing to serve {root}: manifest.json sha256 {got} is not the digest the stack pins "
             f"for this version ({pinned}); a manifest rewritten with its model is refused here")
if not os.path.isfile(os.path.join(root, "model.sig")):
    sys.exit(f"verify-model: refusing to serve {root}: no model.sig (the release is unsigned)")
try:
    m = json.load(open(mpath))
except Exception as e:
    sys.exit(f"verify-model: no readable manifest.json in {root}: {e}")
bad, seen = [], {"manifest.json", "model.sig"}
for f in m.get("files", []):
    p = os.path.join(root, f["path"])
    seen.add(f["path"])
    if not os.path.isfile(p):
        bad.append(f"{f['path']}: missing")
        continue
    size, got = os.path.getsize(p), sha(p)
    if size != f["size"] or got != f["sha256"]:
        want = f"{f['sha256']} ({f['size']} bytes)"
        bad.append(f"{f['path']}: sha256 {got} ({size} bytes) differs from the manifest's {want}")
for e in (m.get("engines") or {}).values():
    if e.get("status") == "built" or not os.path.exists(os.path.join(root, e["file"])):
        continue
    seen.update({e["file"], e["record"]})
    try:
        r = json.load(open(os.path.join(root, e["record"])))
        ok = r["file"] == e["file"] and r["sha256"] == sha(os.path.join(root, e["file"]))
    except Exception:
        ok = False
    if not ok:
        bad.append(f"{e['file']}: no engine record that matches it")
for d, _, names in os.walk(root):
    for n in names:
        rel = os.path.relpath(os.path.join(d, n), root)
        if rel not in seen:
            bad.append(f"{rel}: not in the manifest")
for name in models:
    if not os.path.isfile(os.path.join(root, name, "config.pbtxt")):
        bad.append(f"{name}: declared to serve, but the version has no such model (no {name}/config.pbtxt)")
if bad:
    sys.exit("verify-model: refusing to serve " + root + ": " + "; ".join(bad))
for name in models:  # hard links: the verified bytes themselves, no copy, on the same volume
    for d, _, names in os.walk(os.path.join(root, name)):
        os.makedirs(os.path.join(serving, os.path.relpath(d, root)), exist_ok=True)
        for n in names:
            src = os.path.join(d, n)
            os.link(src, os.path.join(serving, os.path.relpath(src, root)))
print(f"verify-model: {len(seen)} files match manifest.json ({m['model']['name']} {m['model']['version']}); "
      f"serving {', '.join(models)} from {serving}")
"""


def version_prefix(model: Model) -> str:
    """The contract with model_build's publish step: the repository root of one immutable model version is
    `s3://<bucket>/<model name>/<model version>/` (holding `<model name>/config.pbtxt`, engines, fallback); this is
    its key prefix. Rolling out a model is a config change of `model.version`, which rolls the Deployments."""
    return f"{model.name}/{model.version}/"


def deployment_name(pool: str, track: str = STABLE) -> str:
    """`triton-<pool>`, `triton-<pool>-canary`, or `triton-<pool>-arm-<hash>` for an arm's track."""
    return f"{APP}-{pool}" if track == STABLE else f"{APP}-{pool}-{track}"


def selector_labels(pool: str, track: str = STABLE) -> dict[str, str]:
    # The stable selector is what it always was: a Deployment's selector is immutable, so changing it would
    # force a replace (all pods at once) instead of a rolling update.
    return {"app.kubernetes.io/name": app_name(track), "app.kubernetes.io/instance": deployment_name(pool, track)}


def pod_labels(pool: GpuPool, model: Model, track: str = STABLE) -> dict[str, str]:
    return {
        **selector_labels(pool.name, track),
        POOL_LABEL: pool.name,
        "app.kubernetes.io/part-of": "reco-dr",
        "reco-dr/model-version": model.version,
        TRACK_LABEL: track,
    }


def canary_model(model: Model) -> Model | None:
    """The Model the canary Deployments serve (same name, the canary's version), or None without a canary."""
    if not model.canary_version:
        return None
    return model.model_copy(update={"version": model.canary_version, "canary_version": None, "canary_weight": 0})


def arm_model(model: Model, version: str) -> Model:
    """The Model an arm version's Deployments serve (same name and pins, that version). ValueError when the stack does
    not pin the version (infra.arms.regional_arms refuses that first, as a config error)."""
    if model.digest(version) is None:
        raise ValueError(f"arm version {version!r} has no pinned digest in model.digests")
    return model.model_copy(update={"version": version, "canary_version": None, "canary_weight": 0})


def local_repository(model: Model) -> str:
    return f"{MODEL_DIR}/{model.name}/{model.version}"


def pod_models(pool: GpuPool, model: Model) -> list[str]:
    """The Triton models the pool's pods load (infra.names.served_models for the pool's compute capability)."""
    return served_models(model.name, pool.gpu.compute_capability, model.onnx_fallback_for)


# Pod Security Standards "restricted" (enforced on the namespace, see namespace_manifest): every container runs as
# the image's non-root user with no privilege escalation, no capabilities and the runtime's default seccomp
# profile (set on the pod), and a read-only root filesystem; what they write goes to emptyDirs: /models (the fetched
# and verified version), /tmp (the CLI's cache, HOME) and /dev/shm (Triton's shared memory).
POD_SECURITY_LEVEL = "restricted"
POD_SECURITY_VERSION = "latest"


def container_security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pinned_digest(model: Model) -> str:
    """The manifest sha256 stack config pins for the version this Deployment serves (config validation guarantees
    one for `version` and `canary_version`)."""
    digest = model.digest(model.version)
    assert digest is not None  # Model's validator: every served version is pinned
    return digest


def model_init_containers(pool: GpuPool, bucket: str, model: Model, triton: TritonConfig, region: str) -> list[dict]:
    """Fetch the version's prefix from the bucket, verify it against its manifest and link the models this pool
    serves into SERVING_DIR (see VERIFY_SCRIPT)."""
    local = local_repository(model)
    sec = container_security_context()
    mount = [{"name": "models", "mountPath": MODEL_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    return [
        {
            "name": FETCH_CONTAINER,
            "image": AWS_CLI_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": [
                "/bin/sh",
                "-c",
                FETCH_SCRIPT,
                "fetch-model",
                bucket,
                version_prefix(model),
                local,
                pins_key(model.name, region),
                model.version,
            ],
            # IRSA's webhook adds the role to init containers too; HOME for the CLI's cache as the non-root user.
            "env": [
                {"name": "AWS_REGION", "value": region},
                {"name": "AWS_DEFAULT_REGION", "value": region},
                {"name": "HOME", "value": "/tmp"},
            ],
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": sec,
            "volumeMounts": mount,
        },
        {
            "name": VERIFY_CONTAINER,
            "image": triton.image,
            "imagePullPolicy": "IfNotPresent",
            # The pinned manifest digest is the trust root here: the stack config is reviewed and signed-off, the
            # manifest lists every file's sha256, and the release tooling verified the signature before pinning.
            "command": [
                "python3",
                "-c",
                VERIFY_SCRIPT,
                local,
                SERVING_DIR,
                pinned_digest(model),
                *pod_models(pool, model),
            ],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            "securityContext": sec,
            "volumeMounts": mount,
        },
    ]


def triton_args(pool: GpuPool, model: Model) -> list[str]:
    """Triton reads only SERVING_DIR, built by verify-model from the verified copy, and loads exactly the models
    this pool serves: explicit control, one --load-model each, and it exits if any of them cannot load."""
    return [
        "tritonserver",
        f"--model-repository={SERVING_DIR}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in pod_models(pool, model)),
        # Refuse to start half-loaded: a declared model that cannot load must fail the pod, not serve a subset.
        "--exit-on-error=true",
        "--strict-readiness=true",
        "--disable-auto-complete-config",
        f"--http-port={PORTS['http']}",
        f"--grpc-port={PORTS['grpc']}",
        f"--metrics-port={PORTS['metrics']}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        # Latency quantiles per model (nv_inference_request_summary_us{quantile="0.99"}): the release gates and
        # the p99 alert read the server's own p99 instead of inferring one from cumulative counters.
        "--metrics-config=summary_latencies=true",
    ]


def deep_health_container(triton: TritonConfig, models: Sequence[str]) -> dict:
    """The deep-health sidecar: DEEP_HEALTH_SCRIPT against the region's stable Triton Service (so its check crosses
    the pods' network as users' requests do: infra/health.py), on the models the region's pods serve (`models`: the
    TensorRT model, and the ONNX fallback where a pool's capability has no engine; the Service may answer from any
    pool's pod).

    No readiness probe, on purpose: a pod is ready only when all its containers are, so a probe here would take the
    pod out of the Service and of both target groups when its deep check fails. The failing pod would then vanish
    from the deep-health target group behind the healthy ones, and Route 53 would never see what users of that pod
    still get. The deep check judges the region; Triton's own readiness alone decides whether a pod serves. The
    liveness probe only restarts a sidecar that stopped listening, never one that answers DEEP-FAIL."""
    return {
        "name": DEEP_HEALTH_CONTAINER,
        "image": triton.image,  # its python3 runs the script, as it runs verify-model: no other image to pin
        "imagePullPolicy": "IfNotPresent",
        "command": deep_health_argv(
            f"http://{app_name(STABLE)}.{NAMESPACE}.svc.cluster.local:{PORTS['http']}", ",".join(models)
        ),
        # The root filesystem is read-only, as in every container here: anything python3 writes goes to /tmp.
        "env": [{"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": DEEP_HEALTH_PORT_NAME, "containerPort": DEEP_HEALTH_PORT, "protocol": "TCP"}],
        # One cached check a second at most (DEEP_HEALTH_CACHE_S): a stdlib HTTP server and one small JSON row. The
        # CPU limit is far above that, so throttling never adds to the latency the check measures.
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "250m", "memory": "128Mi"},
        },
        "livenessProbe": {
            "tcpSocket": {"port": DEEP_HEALTH_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment_manifest(
    pool: GpuPool,
    triton: TritonConfig,
    model: Model,
    bucket: str,
    region: str,
    track: str = STABLE,
    region_models: Sequence[str] = (),
) -> dict:
    """One pool's Triton Deployment for `track`; `model.version` is the version that track serves. `region_models`:
    the models every pool of the region serves, for the deep-health sidecar (default: this pool's)."""
    labels = pod_labels(pool, model, track)
    sel = selector_labels(pool.name, track)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(pool.name, track), "namespace": NAMESPACE, "labels": labels},
        "spec": {
            # No `replicas`: the HPA owns it (server-side apply leaves the field to it).
            "selector": {"matchLabels": sel},
            # Never drop below current capacity during a rollout: surge one pod, take none away first.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": 1200,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORTS["metrics"]),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    # No Kubernetes API token: nothing in the pod calls the API server. IRSA keeps working: the EKS
                    # pod identity webhook (github.com/aws/amazon-eks-pod-identity-webhook, README) mutates pods of an
                    # annotated service account by adding its own projected `aws-iam-token` volume (a
                    # serviceAccountToken source with audience sts.amazonaws.com) plus AWS_ROLE_ARN and
                    # AWS_WEB_IDENTITY_TOKEN_FILE, independent of the default token mount this field turns off.
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 60,
                    "nodeSelector": {POOL_LABEL: pool.name, CC_LABEL: pool.gpu.compute_capability},
                    "tolerations": [GPU_TOLERATION],
                    "topologySpreadConstraints": [
                        # Spread across zones so one AZ loss costs a share of capacity, not all of it. ScheduleAnyway:
                        # a zone without GPU capacity (common for p5) must not leave pods pending.
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": sel},
                        },
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": sel},
                        },
                    ],
                    "securityContext": pod_security_context(),
                    "initContainers": model_init_containers(pool, bucket, model, triton, region),
                    "containers": [
                        {
                            "name": TRITON_CONTAINER,
                            "image": triton.image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": triton_args(pool, model),
                            "env": [
                                # Triton reads the verified local copy; the region stays for any S3 access of its
                                # backends.
                                {"name": "AWS_REGION", "value": region},
                                {"name": "AWS_DEFAULT_REGION", "value": region},
                                # The root filesystem is read-only: anything Triton or its backends cache goes to
                                # the /tmp emptyDir.
                                {"name": "HOME", "value": "/tmp"},
                            ],
                            "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in PORTS.items()],
                            "resources": {
                                "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
                                "limits": {"memory": "12Gi", "nvidia.com/gpu": "1"},
                            },
                            # Engines load at start (from the verified local copy): allow up to 10 minutes before
                            # liveness applies.
                            "startupProbe": {
                                "httpGet": {"path": LIVE_PATH, "port": "http"},
                                "periodSeconds": 10,
                                "failureThreshold": 60,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": LIVE_PATH, "port": "http"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 3,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": READY_PATH, "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 3,
                                "failureThreshold": 2,
                            },
                            # Let the ALB deregister the pod before Triton stops accepting requests.
                            "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 15"]}}},
                            "securityContext": container_security_context(),
                            "volumeMounts": [
                                {"name": "dshm", "mountPath": "/dev/shm"},
                                {"name": "models", "mountPath": MODEL_DIR, "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        },
                        # Only the stable pods are in the deep-health target group: the region's health is the
                        # version it serves; a canary is judged by the release gates, which roll it back.
                        *(
                            [deep_health_container(triton, list(region_models) or pod_models(pool, model))]
                            if track == STABLE
                            else []
                        ),
                    ],
                    "volumes": [
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                        # Node disk, sized for a version's engines; gone with the pod, refetched and reverified by
                        # the next.
                        {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }


def pdb_manifest(pool: GpuPool, track: str = STABLE) -> dict:
    sel = selector_labels(pool.name, track)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": deployment_name(pool.name, track), "namespace": NAMESPACE, "labels": sel},
        # Node drains (upgrades, scale-in) take one Triton pod of a pool at a time.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": sel}},
    }


def hpa_manifest(pool: GpuPool, triton: TritonConfig, track: str = STABLE) -> dict:
    lo, hi = replica_bounds(pool, triton)
    if track != STABLE:
        # A canary starts with a small share (or none: the shadow comparison): one pod per pool, so it does not
        # hold GPUs the stable version needs; it may grow to the stable bounds if its share does. So does an
        # experiment's arm, warm before the experiment starts.
        lo = 1
    target = f"{triton.target_gpu_utilization * 10}m"  # utilisation is 0..1; 70 % -> 700m
    name = deployment_name(pool.name, track)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": selector_labels(pool.name, track)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": lo,
            "maxReplicas": hi,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": GPU_UTIL_METRIC},
                        "target": {"type": "AverageValue", "averageValue": target},
                    },
                }
            ],
            "behavior": {
                # Scale up fast (a failover shifts a region's traffic here within a minute), down slowly.
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 600,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                },
            },
        },
    }


def service_ports(track: str = STABLE) -> dict[str, int]:
    """The Service's ports by name: Triton's, and on the stable track the deep-health sidecar's (the deep-health
    TargetGroupBinding names it)."""
    return {**PORTS, DEEP_HEALTH_PORT_NAME: DEEP_HEALTH_PORT} if track == STABLE else dict(PORTS)


def service_manifest(track: str = STABLE) -> dict:
    name = app_name(track)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": name},
            "ports": [
                {"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in service_ports(track).items()
            ],
        },
    }


def namespace_manifest() -> dict:
    # The controller injects a readiness gate into pods here: a rollout waits until the new pod is healthy
    # in the target group, not only in Kubernetes, before the next old pod goes.
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        # Pod Security Admission: pods that break the "restricted" profile are refused (enforce) and reported (audit,
        # warn). "latest" follows the cluster's own Kubernetes version, which moves with `kubernetes_version`.
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled",
                **{
                    f"pod-security.kubernetes.io/{mode}{suffix}": value
                    for mode in ("enforce", "audit", "warn")
                    for suffix, value in (("", POD_SECURITY_LEVEL), ("-version", POD_SECURITY_VERSION))
                },
            },
        },
    }


def service_account_manifest(role_arn: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": SERVICE_ACCOUNT,
            "namespace": NAMESPACE,
            "annotations": {"eks.amazonaws.com/role-arn": role_arn},
        },
        # No pod of this account calls the Kubernetes API (the pods also opt out themselves, see
        # deployment_manifest); IRSA's token is the webhook's own projected volume, unaffected.
        "automountServiceAccountToken": False,
    }


def target_group_binding_manifest(target_group_arn: str, track: str = STABLE, port: str = "http") -> dict:
    """Registers the track's pods in a target group, on the Service port `port` (service_ports): Triton's HTTP port,
    or the deep-health sidecar's (stable track) for the deep-health target group."""
    name = app_name(track)
    return {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": name if port == "http" else f"{name}-{port}", "namespace": NAMESPACE},
        # No `networking` block: Pulumi owns the security-group rules (nodes accept Triton's HTTP port and the
        # deep-health port from the ALB only).
        "spec": {
            "serviceRef": {"name": name, "port": service_ports(track)[port]},
            "targetGroupARN": target_group_arn,
            "targetType": "ip",
        },
    }


@dataclass
class TritonArgs:
    pools: list[GpuPool]
    triton: TritonConfig
    model: Model
    region: str
    bucket_name: pulumi.Input[str]
    role_arn: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    deep_health_target_group_arn: pulumi.Input[str]  # the stable pods' deep-health sidecars register there
    # The canary target group (load balancer), present exactly when `model.canary_version` is configured.
    canary_target_group_arn: pulumi.Input[str] | None = None
    # {arm version: its target group's ARN} (load balancer): the experiments' arm versions the region serves.
    arm_target_group_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class TritonServing(pulumi.ComponentResource):
    def __init__(self, name: str, args: TritonArgs, provider: k8s.Provider, opts: pulumi.ResourceOptions | None = None):
        super().__init__("reco-dr:regional:TritonServing", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        # A component's depends_on does not reach its children: pods must wait for GPU nodes, the device
        # plugin and the metrics adapter, the TargetGroupBinding for the controller that serves its CRD.
        # Callers pass depends_on as a list of resources, never a single resource or an Output.
        deps = list(cast("Sequence[pulumi.Resource]", opts.depends_on or [])) if opts else []
        ns_m = namespace_manifest()
        self.namespace = ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=ns_m["metadata"], opts=o)
        on_ns = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns])
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=pulumi.Output.from_input(args.role_arn).apply(lambda a: service_account_manifest(a)["metadata"]),
            automount_service_account_token=service_account_manifest("")["automountServiceAccountToken"],
            opts=on_ns,
        )
        svc_m = service_manifest()
        self.service = k8s.core.v1.Service(f"{name}-svc", metadata=svc_m["metadata"], spec=svc_m["spec"], opts=on_ns)

        self.deployments = {}
        tracks = [(STABLE, args.model, args.target_group_arn, self.service)]
        canary = canary_model(args.model)
        if canary is not None:
            if args.canary_target_group_arn is None:
                raise ValueError("model.canary_version is set but the load balancer has no canary target group")
            c_svc = service_manifest(CANARY)
            self.canary_service = k8s.core.v1.Service(
                f"{name}-canary-svc", metadata=c_svc["metadata"], spec=c_svc["spec"], opts=on_ns
            )
            tracks.append((CANARY, canary, args.canary_target_group_arn, self.canary_service))
        # The experiments' arm versions: the canary's set each, named by the version's track (infra.arms.arm_track).
        self.arm_tracks: list[str] = []
        for version, arm_arn in sorted(args.arm_target_group_arns.items()):
            track = arm_track(version)
            a_svc = service_manifest(track)
            svc = k8s.core.v1.Service(f"{name}-{track}-svc", metadata=a_svc["metadata"], spec=a_svc["spec"], opts=on_ns)
            tracks.append((track, arm_model(args.model, version), arm_arn, svc))
            self.arm_tracks.append(track)
        for track, model, tg_arn, svc in tracks:
            suffix = "" if track == STABLE else f"-{track}"
            served = list(dict.fromkeys(m for p in args.pools for m in pod_models(p, model)))  # the Service's
            for pool in args.pools:
                dep = pulumi.Output.from_input(args.bucket_name).apply(
                    partial(
                        deployment_manifest,
                        pool,
                        args.triton,
                        model,
                        region=args.region,
                        track=track,
                        region_models=served,
                    )
                )
                key = deployment_name(pool.name, track)
                self.deployments[key] = k8s.apps.v1.Deployment(
                    f"{name}-{pool.name}{suffix}",
                    metadata=dep.apply(lambda m: m["metadata"]),
                    spec=dep.apply(lambda m: m["spec"]),
                    opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns, sa, *deps]),
                )
                pdb = pdb_manifest(pool, track)
                k8s.policy.v1.PodDisruptionBudget(
                    f"{name}-{pool.name}{suffix}-pdb", metadata=pdb["metadata"], spec=pdb["spec"], opts=on_ns
                )
                hpa = hpa_manifest(pool, args.triton, track)
                k8s.autoscaling.v2.HorizontalPodAutoscaler(
                    f"{name}-{pool.name}{suffix}-hpa",
                    metadata=hpa["metadata"],
                    spec=hpa["spec"],
                    opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.deployments[key]]),
                )

            tgb = pulumi.Output.from_input(tg_arn).apply(partial(target_group_binding_manifest, track=track))
            k8s.apiextensions.CustomResource(
                f"{name}{suffix}-tgb",
                api_version="elbv2.k8s.aws/v1beta1",
                kind="TargetGroupBinding",
                metadata=tgb.apply(lambda m: m["metadata"]),
                spec=tgb.apply(lambda m: m["spec"]),
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[svc, *deps]),
            )
        deep = pulumi.Output.from_input(args.deep_health_target_group_arn).apply(
            partial(target_group_binding_manifest, port=DEEP_HEALTH_PORT_NAME)
        )
        k8s.apiextensions.CustomResource(
            f"{name}-deep-health-tgb",
            api_version="elbv2.k8s.aws/v1beta1",
            kind="TargetGroupBinding",
            metadata=deep.apply(lambda m: m["metadata"]),
            spec=deep.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.service, *deps]),
        )
        self.register_outputs({"namespace": NAMESPACE, "deployments": sorted(self.deployments)})
