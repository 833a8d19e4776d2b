"""Adapters a model release needs beyond the drills' own (protocols in drills/adapters/base.py).

AWS (built by the `aws` backend, drills.backends):
  AlbKubeServing         ServingAdapter: the forward weights of the ALB's inference rule (elbv2 DescribeRules: the
                         listener's default action is a fixed 404, infra.names.edge_routes) + the Triton
                         Deployments' versions and readiness (Kubernetes API), rollout restart by annotation
  TritonScoreProbe       ScoreProbe: V2 HTTP inference through the region's load balancer, pinned to one version by
                         the `X-Reco-Track` header (infra/components/load_balancer.py's listener rules)
  KubernetesTritonMetrics MetricsSource: each Triton pod's metrics as the cluster's Prometheus scraped them (its
                         /federate, through the API server's service proxy: the NetworkPolicy admits Triton's
                         metrics port from Prometheus only)
  Ec2NodeLoss            FaultAdapter "gpu-node-loss": terminate one instance of the region's largest GPU node
                         group (its Auto Scaling group replaces it, as after a hardware failure)
Any backend (moto, the rehearsal, AWS):
  ArtifactCorruption     FaultAdapter "corrupt-artifact": overwrite one file of the served version in the region's
                         bucket with same-size altered bytes (a new object version; `clear` restores the pinned one)
  HttpTritonMetrics      MetricsSource over plain /metrics URLs (the rehearsal scrapes each Triton directly)
`TritonScoreProbe(track_endpoints=...)` also serves a backend whose versions answer on separate URLs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import requests

from drills.adapters.base import ScoreResult, TrackState
from drills.release.artifacts import MANIFEST, prefix, sha256
from infra.names import (
    CANARY,
    NAMESPACE,
    STABLE,
    TRACK_HEADER,
    TRACK_LABEL,
    app_name,
    edge_routes,
    lb_name,
    target_group_name,
)
from model_build.manifest import ManifestError, parse_manifest

_V2 = {np.dtype("float32"): "FP32", np.dtype("float64"): "FP64", np.dtype("int32"): "INT32", np.dtype("int64"): "INT64"}


def v2_body(inputs: Mapping[str, np.ndarray], lo: int, hi: int, output: str) -> dict:
    return {
        "inputs": [
            {"name": n, "shape": [hi - lo, *a.shape[1:]], "datatype": _V2[a.dtype], "data": a[lo:hi].ravel().tolist()}
            for n, a in inputs.items()
        ],
        "outputs": [{"name": output}],
    }


# ---------------------------------------------------------------- scores (V2 HTTP, version pinned)
class TritonScoreProbe:
    """Score rows on one version of a region's model over Triton's V2 HTTP protocol.

    `endpoints`: region -> base URL (the load balancer); the track is selected with the `X-Reco-Track` header.
    `track_endpoints`: "<region>/<track>" -> base URL, for a backend that serves each version on its own URL
    (takes precedence). `models`: track -> Triton model name where the two differ (default `model`)."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        model: str,
        *,
        output: str = "score",
        timeout: float = 10.0,
        server_name: str | None = None,
        track_endpoints: Mapping[str, str] | None = None,
        models: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
    ):
        self.endpoints, self.model, self.output, self.timeout = dict(endpoints), model, output, timeout
        self.server_name, self.track_endpoints, self.models = (
            server_name,
            dict(track_endpoints or {}),
            dict(models or {}),
        )
        self.session = session or requests.Session()
        if server_name:
            from drills.adapters.probes import _ServerName

            for base in self.endpoints.values():
                if base.startswith("https://"):
                    self.session.mount(base, _ServerName(server_name))

    def _target(self, region: str, track: str) -> tuple[str, dict[str, str]]:
        key = f"{region}/{track}"
        if key in self.track_endpoints:
            return self.track_endpoints[key], {}
        headers = {TRACK_HEADER: track}
        if self.server_name:
            headers["Host"] = self.server_name
        return self.endpoints[region], headers

    def scores(self, region: str, track: str, inputs: Mapping[str, Any], batch: int = 256) -> ScoreResult:
        arrays = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        rows = len(next(iter(arrays.values())))
        base, headers = self._target(region, track)
        url = f"{base}/v2/models/{self.models.get(track, self.model)}/infer"
        out: list[float] = []
        lat: list[float] = []
        errors, error = 0, None
        for lo in range(0, rows, batch):
            hi = min(rows, lo + batch)
            t0 = time.perf_counter()
            try:
                r = self.session.post(
                    url, json=v2_body(arrays, lo, hi, self.output), headers=headers, timeout=self.timeout
                )
                if r.status_code != 200:
                    raise ValueError(f"HTTP {r.status_code}: {r.text[:200]}")
                data = {o["name"]: o for o in r.json().get("outputs", [])}[self.output]["data"]
                if len(data) != hi - lo:
                    raise ValueError(f"{len(data)} scores for {hi - lo} rows")
                out += [float(x) for x in data]
            except (requests.RequestException, ValueError, KeyError) as e:
                errors += 1
                error = error or f"{type(e).__name__}: {e}"
            finally:
                lat.append((time.perf_counter() - t0) * 1000)
        ok = errors == 0 and len(out) == rows
        return ScoreResult(
            region=region,
            track=track,
            ok=ok,
            scores=out if ok else [],
            latency_ms=[round(x, 3) for x in lat],
            errors=errors,
            error=error,
        )


# ---------------------------------------------------------------- metrics
class HttpTritonMetrics:
    """`urls`: "<region>/<track>" -> list of /metrics URLs (one per Triton instance of that version)."""

    def __init__(self, urls: Mapping[str, list[str]], timeout: float = 5.0):
        self.urls, self.timeout = {k: list(v) for k, v in urls.items()}, timeout
        self.session = requests.Session()

    def scrape(self, region: str, track: str) -> dict[str, str]:
        out = {}
        for u in self.urls.get(f"{region}/{track}", []):
            r = self.session.get(u, timeout=self.timeout)
            r.raise_for_status()
            out[u] = r.text
        return out


# The prometheus chart's server Service (infra/components/addons.py: release "prometheus" in MONITORING_NS, the URL
# prometheus-adapter reads), reached through the API server's service proxy on its "http" port.
PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_SERVICE = "prometheus-server"
PROMETHEUS_FEDERATE = f"/api/v1/namespaces/{PROMETHEUS_NAMESPACE}/services/http:{PROMETHEUS_SERVICE}:80/proxy/federate"


class KubernetesTritonMetrics:
    """Each running Triton pod of the track, as the cluster's Prometheus last scraped its :8002/metrics, read from
    Prometheus's /federate with `match[]={namespace="triton",pod="<pod>"}` through the API server's service proxy
    (the drills run outside the cluster). Not the pod proxy: the NetworkPolicy (infra/components/network_policy.py)
    admits Triton's metrics port from the Prometheus server only. Same interface: pod name -> exposition text."""

    def __init__(self, kubes: Mapping[str, Any]):
        self.kubes = kubes  # region -> drills.adapters.kube.EksKube

    def scrape(self, region: str, track: str) -> dict[str, str]:
        kube = self.kubes[region]
        pods = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=f"{TRACK_LABEL}={track}")["items"]
        out = {}
        for p in pods:
            if p.get("status", {}).get("phase") != "Running":
                continue
            name = p["metadata"]["name"]
            match = f'{{namespace="{NAMESPACE}",pod="{name}"}}'
            # The federation format is the exposition format with timestamps (drills.release.metrics.parse reads
            # them) and Prometheus's target labels (job, namespace, pod) beside Triton's own.
            out[name] = kube.get_text(PROMETHEUS_FEDERATE, **{"match[]": match})
        return out


# ---------------------------------------------------------------- serving: weights, versions, readiness
class AlbKubeServing:
    """`elbv2`: region -> boto3 elbv2 client; `kubes`: region -> EksKube; `stacks`: region -> stack name (the
    load balancer and target groups are named from it: infra/components/load_balancer.py); `model`: `model.name`
    (the listener rules are laid out from it: infra.names.edge_routes)."""

    def __init__(self, elbv2: Mapping[str, Any], kubes: Mapping[str, Any], stacks: Mapping[str, str], *, model: str):
        self.elbv2, self.kubes, self.stacks, self.model = elbv2, kubes, stacks, model

    def weights(self, region: str) -> dict[str, int]:
        """The canary's and the stable version's shares of the region's requests: the weighted forward of the
        listener rule for inference on the TensorRT model (every forwarding rule of infra.names.edge_routes carries
        the same one; the listener's default action is a fixed 404)."""
        c, stack = self.elbv2[region], self.stacks[region]
        lb = c.describe_load_balancers(Names=[lb_name(stack)])["LoadBalancers"][0]["LoadBalancerArn"]
        listener = next((x for x in c.describe_listeners(LoadBalancerArn=lb)["Listeners"] if x["Port"] == 443), None)
        if listener is None:
            raise LookupError(f"{region}: {lb_name(stack)} has no listener on port 443")
        priority = str(edge_routes(self.model)["infer-tensorrt"].priority)
        rules = c.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
        rule = next((x for x in rules if x["Priority"] == priority), None)
        action = next((a for a in (rule or {}).get("Actions", []) if a["Type"] == "forward"), None)
        if action is None:
            raise LookupError(
                f"{region}: {lb_name(stack)}'s listener has no forwarding rule at priority {priority} (inference on "
                f"{self.model}'s models, infra.names.edge_routes): the stack's edge is not the one the drills know"
            )
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or [
            {"TargetGroupArn": action["TargetGroupArn"], "Weight": 1}
        ]
        names = {
            g["TargetGroupArn"]: g["TargetGroupName"]
            for g in c.describe_target_groups(TargetGroupArns=[g["TargetGroupArn"] for g in groups])["TargetGroups"]
        }
        total = sum(g.get("Weight", 1) for g in groups) or 1
        out = {STABLE: 0, CANARY: 0}
        for g in groups:
            track = CANARY if names[g["TargetGroupArn"]] == target_group_name(stack, CANARY) else STABLE
            out[track] += round(100 * g.get("Weight", 1) / total)
        return out

    def tracks(self, region: str) -> dict[str, TrackState]:
        w = self.weights(region)
        out = {}
        for track in (STABLE, CANARY):
            items = self.kubes[region].get(
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
                labelSelector=f"app.kubernetes.io/name={app_name(track)}",
            )["items"]
            if not items and track == CANARY:
                continue
            versions = {d["metadata"]["labels"].get("reco-dr/model-version") for d in items}
            # A Deployment mid-rollout still reports its new template's version; readiness says whether it is there.
            out[track] = TrackState(
                track=track,
                version=versions.pop() if len(versions) == 1 else None,
                weight=w[track],
                # Ready pods of the current template only: during a rollout old pods are ready too.
                ready=sum(
                    min(d.get("status", {}).get("updatedReplicas") or 0, d.get("status", {}).get("readyReplicas") or 0)
                    for d in items
                ),
                desired=sum(d.get("spec", {}).get("replicas", 0) or 0 for d in items),
            )
        return out

    def restart(self, region: str, track: str) -> None:
        items = self.kubes[region].get(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
            labelSelector=f"app.kubernetes.io/name={app_name(track)}",
        )["items"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for d in items:
            # What `kubectl rollout restart` does. Pulumi's server-side apply does not own this annotation, so the
            # next `up` leaves it alone.
            self.kubes[region].patch(
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{d['metadata']['name']}",
                {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}},
            )


# ---------------------------------------------------------------- faults below a region
def _corrupt(body: bytes) -> bytes:
    """Same size, a few bytes flipped in the middle: a size check passes, only the hash catches it (the
    subtle case; a truncated file would be caught by size alone)."""
    if not body:
        return b"\x00"
    b = bytearray(body)
    mid = len(b) // 2
    for i in range(mid, min(len(b), mid + 16)):
        b[i] ^= 0xFF
    return bytes(b)


class ArtifactCorruption:
    """FaultAdapter "corrupt-artifact" over any ArtifactStore. `served(region)` -> (model, version) the region
    serves. The target is the served version's ONNX model graph (the largest file every pod loads)."""

    kinds = ("corrupt-artifact",)

    def __init__(self, store: Any, served: Callable[[str], tuple[str, str]], regions: list[str] | None = None):
        """`regions`: every region whose bucket replicates the object (default: the store's buckets); the handle
        records how many versions of the key each has, so the drill can tell when the corrupt write has been
        replicated."""
        self.store, self.served = store, served
        self.regions = list(regions if regions is not None else getattr(store, "buckets", {}))

    def prepare(self, region: str, kind: str) -> dict:
        model, version = self.served(region)
        pre = prefix(model, version)
        body = self.store.get_object(region, pre + MANIFEST)
        if body is None:
            raise LookupError(f"{region}: no manifest for {model} {version} in its bucket: nothing to corrupt")
        try:
            files = parse_manifest(body, f"{region}'s manifest of {model} {version}").files
        except ManifestError as e:
            raise LookupError(f"{e}: no listed file to corrupt") from None
        # The largest ONNX graph (what the servers load), else the largest file the manifest lists.
        target = max([f for f in files if f.role == "onnx"] or files, key=lambda f: f.size, default=None)
        if target is None:
            raise LookupError(f"{region}: the manifest of {model} {version} lists no file: nothing to corrupt")
        key = pre + target.path
        head = self.store.head(region, key) or {}
        return {
            "key": key,
            "path": target.path,
            "good_version_id": head.get("version_id"),
            "good_sha256": target.sha256,
            "model": model,
            "version": version,
            "region": region,
            "versions_before": {r: len(self.store.versions(r, key)) for r in self.regions},
        }

    def inject(self, region: str, kind: str, handle: dict) -> None:
        body = self.store.get_object(region, handle["key"], handle.get("good_version_id"))
        self.store.put_object(region, handle["key"], _corrupt(body or b""))

    def clear(self, region: str, kind: str, handle: dict) -> None:
        # Idempotent: only when the current bytes are not the good ones (a break-glass clean-up may have put them
        # back). Clearing overwrites a published key: on AWS only the break-glass role may (the fault stands for it).
        body = self.store.get_object(region, handle["key"])
        if body is not None and sha256(body) == handle["good_sha256"]:
            return
        if not handle.get("good_version_id"):
            raise LookupError(
                f"{region}: {handle['key']} has no recorded good version id; restore it from the last-known-good "
                "pointer"
            )
        self.store.restore_version(region, handle["key"], handle["good_version_id"])


class Ec2NodeLoss:
    """FaultAdapter "gpu-node-loss" on EKS managed node groups: terminate one instance of the region's GPU pool
    with the most GPUs per node. Nothing to undo: the node group's Auto Scaling group launches a replacement
    (the recovery the drill measures), so `clear` only records that it was looked at."""

    kinds = ("gpu-node-loss",)

    def __init__(
        self,
        eks: Mapping[str, Any],
        ec2: Mapping[str, Any],
        autoscaling: Mapping[str, Any],
        clusters: Mapping[str, str],
        pools: Mapping[str, str],
    ):
        """`pools`: region -> the GPU pool to hit (planning.node_loss_figures picks the biggest node)."""
        self.eks, self.ec2, self.asg, self.clusters, self.pools = eks, ec2, autoscaling, clusters, pools

    def prepare(self, region: str, kind: str) -> dict:
        from drills.adapters.capacity import pool_of

        cluster = self.clusters[region]
        for name in self.eks[region].list_nodegroups(clusterName=cluster)["nodegroups"]:
            g = self.eks[region].describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
            if pool_of(name, g.get("tags")) != self.pools[region]:
                continue
            asgs = [a["name"] for a in g.get("resources", {}).get("autoScalingGroups", [])]
            groups = self.asg[region].describe_auto_scaling_groups(AutoScalingGroupNames=asgs)["AutoScalingGroups"]
            inst = sorted(i["InstanceId"] for a in groups for i in a["Instances"] if i["LifecycleState"] == "InService")
            if not inst:
                raise LookupError(f"{region}/{self.pools[region]}: no in-service instance to lose")
            return {"nodegroup": name, "instance_id": inst[0], "pool": self.pools[region]}
        raise LookupError(f"{region}: no node group for GPU pool {self.pools[region]}")

    def inject(self, region: str, kind: str, handle: dict) -> None:
        self.ec2[region].terminate_instances(InstanceIds=[handle["instance_id"]])

    def clear(self, region: str, kind: str, handle: dict) -> None:
        return None
