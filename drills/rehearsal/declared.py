"""Create in moto the AWS objects the Pulumi programs declare: one source of truth for the rehearsal.

Input: "declared resources", i.e. the offline plan of the global and regional programs under Pulumi mocks
(`infra.mocks.run_program(stack).resources`, converted by `records_from_plan`), or hand-made dicts of the
same shape: `{"type": token, "name": logical name, "id": the id the mocks gave it, "inputs": {...}}` plus
optionally `"region"` (the region of the resource's AWS provider). Inputs use the engine's camelCase
names, as the mocks record them.

Translated (everything else is counted in `Applied.ignored`, since moto is not asked to model it):
  aws:route53/zone:Zone                                   -> CreateHostedZone (reused by name)
  aws:route53/healthCheck:HealthCheck                     -> CreateHealthCheck (CallerReference = logical name)
  aws:route53/record:Record                               -> ChangeResourceRecordSets UPSERT
  aws:s3/bucket:Bucket, aws:s3/bucketV2:BucketV2          -> CreateBucket (in the provider's region)
  aws:s3/bucketVersioning:BucketVersioning(V2)            -> PutBucketVersioning
  aws:s3/bucketReplicationConfig:BucketReplicationConfig  -> PutBucketReplication
  aws:eks/cluster:Cluster, aws:eks/nodeGroup:NodeGroup    -> CreateCluster, CreateNodegroup (in the provider's
                                                             region; an existing node group keeps its scaling:
                                                             the drills scale through the EKS API, and the
                                                             program ignores desiredSize changes)
References between resources (a record's zoneId and healthCheckId, a versioning's bucket) carry the ids
the mocks gave the declared resources; they are mapped to the ids moto assigns. Applying twice is safe
(zones and health checks are reused, records are UPSERTs), and records of a declared name whose set
identifier is no longer declared are deleted: re-applying a changed global stack (a drill's weight shift)
leaves moto holding exactly what the program now declares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

T_ZONE = "aws:route53/zone:Zone"
T_HC = "aws:route53/healthCheck:HealthCheck"
T_RECORD = "aws:route53/record:Record"
T_BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
T_VERSIONING = ("aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2")
T_REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
T_CLUSTER = "aws:eks/cluster:Cluster"
T_NODEGROUP = "aws:eks/nodeGroup:NodeGroup"

# Pulumi (camelCase) -> S3 API names where capitalising the first letter is not enough.
_S3_NAMES = {"id": "ID", "replicaKmsKeyId": "ReplicaKmsKeyID"}


class DeclaredError(ValueError):
    """A declared resource cannot be created as declared (a reference to something not declared, ...)."""


@dataclass
class Applied:
    zones: dict[str, str] = field(default_factory=dict)  # declared zone id -> moto zone id
    zone_names: dict[str, str] = field(default_factory=dict)  # moto zone id -> zone name
    health_checks: dict[str, str] = field(default_factory=dict)  # declared hc id -> moto hc id
    hc_info: dict[str, dict] = field(default_factory=dict)  # moto hc id -> {fqdn, port, path, region, name}
    records: list[dict] = field(default_factory=list)  # Route 53 ResourceRecordSets as written
    buckets: dict[str, str] = field(default_factory=dict)  # bucket name -> region
    versioned: set[str] = field(default_factory=set)
    replication: dict[str, dict] = field(default_factory=dict)  # bucket -> ReplicationConfiguration as put
    clusters: dict[str, str] = field(default_factory=dict)  # cluster name -> region
    nodegroups: dict[str, list[str]] = field(default_factory=dict)  # cluster name -> node group names
    ignored: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record_regions(self) -> dict[str, str]:
        """set identifier -> region, for the routed records (the global program uses the region as id)."""
        out = {}
        for rr in self.records:
            sid = rr.get("SetIdentifier")
            if sid:
                hc = self.hc_info.get(rr.get("HealthCheckId", ""), {})
                out[sid] = hc.get("region") or sid
        return out

    def alias_targets(self) -> dict[str, str]:
        """alias target DNS name -> region."""
        regions = self.record_regions()
        return {
            rr["AliasTarget"]["DNSName"].lower().rstrip("."): regions[rr["SetIdentifier"]]
            for rr in self.records
            if rr.get("AliasTarget") and rr.get("SetIdentifier") in regions
        }


# ---------------------------------------------------------------- input shapes
def records_from_plan(plan: Any) -> list[dict]:
    """`infra.mocks.Plan` -> declared resource dicts (type, name, id, inputs, region of the provider)."""
    out = []
    for r in plan.resources:
        prov = plan.provider_of(r)
        region = (prov.inputs.get("region") if prov is not None else None) or r.inputs.get("region")
        out.append({"type": r.type, "name": r.name, "id": r.id, "urn": r.urn, "inputs": r.inputs, "region": region})
    return out


def _as_dict(r: Any) -> dict:
    if isinstance(r, dict):
        return r
    return {
        "type": r.type,
        "name": r.name,
        "id": getattr(r, "id", None),
        "inputs": r.inputs,
        "region": getattr(r, "region", None),
    }


def s3_shape(v: Any) -> Any:
    """Pulumi-style input (camelCase keys) -> S3 API shape (PascalCase), recursively."""
    if isinstance(v, list):
        return [s3_shape(x) for x in v]
    if not isinstance(v, dict):
        return v
    out = {}
    for k, x in v.items():
        name = _S3_NAMES.get(k, k[:1].upper() + k[1:])
        if name == "Tags" and isinstance(x, dict):  # filter.and.tags is a map in Pulumi, a list in the API
            x = [{"Key": a, "Value": b} for a, b in x.items()]
            out["Tags"] = x
            continue
        out[name] = s3_shape(x)
    return out


def _bucket_name(value: str) -> str:
    return value.split(":::")[-1]


# ---------------------------------------------------------------- apply
def apply_declared(
    resources: Iterable[Any],
    route53,
    s3_for: Callable[[str | None], Any],
    *,
    applied: Applied | None = None,
    default_zone_name: str | None = None,
    prune: bool = True,
    eks_for: Callable[[str | None], Any] | None = None,
) -> Applied:
    """Create/update in moto what `resources` declare. `s3_for(region)` / `eks_for(region)` return clients.

    Pass the `applied` of an earlier call to keep its id mappings (re-apply after a config change).
    """
    res = [_as_dict(r) for r in resources]
    ap = applied or Applied()
    by_type: dict[str, list[dict]] = {}
    for r in res:
        by_type.setdefault(r["type"], []).append(r)
    handled = {T_ZONE, T_HC, T_RECORD, T_REPLICATION, *T_BUCKETS, *T_VERSIONING}
    if eks_for is not None:
        handled |= {T_CLUSTER, T_NODEGROUP}
    for t, rs in by_type.items():
        if t not in handled:
            ap.ignored[t] = ap.ignored.get(t, 0) + len(rs)

    # ---- zones
    for z in by_type.get(T_ZONE, []):
        name = z["inputs"]["name"].rstrip(".")
        zid = _find_zone(route53, name)
        if zid is None:
            zid = route53.create_hosted_zone(
                Name=name,
                CallerReference=f"{z['name']}",
                HostedZoneConfig={"Comment": z["inputs"].get("comment", ""), "PrivateZone": False},
            )["HostedZone"]["Id"]
        zid = zid.split("/")[-1]
        ap.zones[str(z.get("id") or z["name"])] = zid
        ap.zone_names[zid] = name

    # ---- health checks
    existing = {hc["CallerReference"]: hc["Id"] for hc in _all_health_checks(route53)}
    for h in by_type.get(T_HC, []):
        i = h["inputs"]
        cfg: dict[str, Any] = {
            "Type": i.get("type", "HTTPS"),
            "RequestInterval": int(i.get("requestInterval", 30)),
            "FailureThreshold": int(i.get("failureThreshold", 3)),
        }
        for src, dst in [
            ("fqdn", "FullyQualifiedDomainName"),
            ("ipAddress", "IPAddress"),
            ("port", "Port"),
            ("resourcePath", "ResourcePath"),
            ("searchString", "SearchString"),
            ("measureLatency", "MeasureLatency"),
            ("invertHealthcheck", "Inverted"),
            ("disabled", "Disabled"),
            ("enableSni", "EnableSNI"),
            ("regions", "Regions"),
        ]:
            if i.get(src) is not None:
                cfg[dst] = int(i[src]) if dst == "Port" else i[src]
        ref = h["name"]
        hid = existing.get(ref)
        if hid is None:
            hid = route53.create_health_check(CallerReference=ref, HealthCheckConfig=cfg)["HealthCheck"]["Id"]
        else:
            upd = {
                k: cfg[k]
                for k in (
                    "Port",
                    "ResourcePath",
                    "FullyQualifiedDomainName",
                    "FailureThreshold",
                    "Inverted",
                    "Disabled",
                    "EnableSNI",
                )
                if k in cfg
            }
            route53.update_health_check(HealthCheckId=hid, **upd)
        tags = i.get("tags") or {}
        if tags:
            try:
                route53.change_tags_for_resource(
                    ResourceType="healthcheck",
                    ResourceId=hid,
                    AddTags=[{"Key": k, "Value": str(v)} for k, v in tags.items()],
                )
            except Exception as e:  # noqa: BLE001 - tags are informative; the model does not depend on them
                ap.notes.append(f"tags of health check {ref}: {e}")
        ap.health_checks[str(h.get("id") or ref)] = hid
        ap.hc_info[hid] = {
            "name": ref,
            "fqdn": (i.get("fqdn") or "").lower().rstrip("."),
            "ip": i.get("ipAddress"),
            "port": i.get("port"),
            "path": i.get("resourcePath"),
            "region": tags.get("region"),
            "interval": cfg["RequestInterval"],
            "threshold": cfg["FailureThreshold"],
        }

    # ---- buckets and versioning
    for b in [r for t in T_BUCKETS for r in by_type.get(t, [])]:
        name = b["inputs"].get("bucket") or b.get("id") or b["name"]
        _ensure_bucket(s3_for, name, b.get("region"), ap)
    for v in [r for t in T_VERSIONING for r in by_type.get(t, [])]:
        name = _bucket_name(v["inputs"]["bucket"])
        if name not in ap.buckets:
            raise DeclaredError(f"{v['name']}: versioning of bucket {name!r}, which no applied plan declares")
        status = ((v["inputs"].get("versioningConfiguration") or {}).get("status")) or "Enabled"
        s3_for(ap.buckets[name]).put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
        if status == "Enabled":
            ap.versioned.add(name)

    # ---- records
    groups: dict[tuple[str, str, str], set[str | None]] = {}
    for rec in by_type.get(T_RECORD, []):
        i = rec["inputs"]
        zone = ap.zones.get(str(i.get("zoneId")))
        if zone is None:
            zone = _zone_for_record(route53, i, ap, default_zone_name)
        rr: dict[str, Any] = {"Name": i["name"].rstrip(".") + ".", "Type": i.get("type", "A")}
        if i.get("setIdentifier"):
            rr["SetIdentifier"] = i["setIdentifier"]
        for w in i.get("weightedRoutingPolicies") or []:
            rr["Weight"] = int(w["weight"])
        for f in i.get("failoverRoutingPolicies") or []:
            rr["Failover"] = f["type"]
        if i.get("aliases"):
            a = i["aliases"][0]
            rr["AliasTarget"] = {
                "HostedZoneId": a["zoneId"],
                "DNSName": a["name"],
                "EvaluateTargetHealth": bool(a.get("evaluateTargetHealth", False)),
            }
        else:
            rr["TTL"] = int(i.get("ttl", 300))
            rr["ResourceRecords"] = [{"Value": v} for v in i.get("records") or []]
        if i.get("healthCheckId"):
            hid = ap.health_checks.get(str(i["healthCheckId"]))
            if hid is None:
                raise DeclaredError(
                    f"record {rec['name']}: health check {i['healthCheckId']!r} is not declared in the "
                    f"applied plans (moto would accept the dangling id; Route 53 would not)"
                )
            rr["HealthCheckId"] = hid
        route53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Comment": f"declared by {rec['name']}",
                "Changes": [{"Action": "UPSERT", "ResourceRecordSet": rr}],
            },
        )
        ap.records = [
            x
            for x in ap.records
            if not (
                x["Name"] == rr["Name"]
                and x["Type"] == rr["Type"]
                and x.get("SetIdentifier") == rr.get("SetIdentifier")
            )
        ] + [rr]
        groups.setdefault((zone, rr["Name"], rr["Type"]), set()).add(rr.get("SetIdentifier"))
    if prune:
        for (zone, name, typ), sids in groups.items():
            for rr in _rrsets(route53, zone):
                if rr["Name"] == name and rr["Type"] == typ and rr.get("SetIdentifier") not in sids:
                    route53.change_resource_record_sets(
                        HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": rr}]}
                    )
                    ap.records = [
                        x
                        for x in ap.records
                        if not (
                            x["Name"] == name and x["Type"] == typ and x.get("SetIdentifier") == rr.get("SetIdentifier")
                        )
                    ]
                    ap.notes.append(f"deleted {name} {typ} {rr.get('SetIdentifier')}: no longer declared")

    # ---- replication
    for rc in by_type.get(T_REPLICATION, []):
        i = rc["inputs"]
        src = _bucket_name(i["bucket"])
        rules = s3_shape(i.get("rules") or [])
        for rule in rules:
            dest = _bucket_name(rule["Destination"]["Bucket"])
            for bucket in (src, dest):
                if bucket not in ap.buckets:
                    raise DeclaredError(
                        f"{rc['name']}: replication between {src} and {dest}, but bucket {bucket!r} is not "
                        f"declared by the applied plans; apply the regional stacks' plans too"
                    )
                if bucket not in ap.versioned:
                    raise DeclaredError(
                        f"{rc['name']}: bucket {bucket!r} is not versioned; S3 refuses replication without "
                        f"versioning on source and destination"
                    )
            if "Filter" in rule and not rule["Filter"]:
                rule["Filter"] = {}
        config = {"Role": i["role"], "Rules": rules}
        s3_for(ap.buckets[src]).put_bucket_replication(Bucket=src, ReplicationConfiguration=config)
        ap.replication[src] = config
    # ---- EKS clusters and node groups (capacity for the drills' pre-scaling and checks)
    if eks_for is not None:
        for c in by_type.get(T_CLUSTER, []):
            _ensure_cluster(eks_for(c.get("region")), c, ap)
        for g in by_type.get(T_NODEGROUP, []):
            _ensure_nodegroup(eks_for(g.get("region")), g, ap)
    return ap


def _ensure_cluster(eks, c: dict, ap: Applied) -> None:
    i = c["inputs"]
    name = i.get("name") or c.get("id") or c["name"]
    if name not in eks.list_clusters().get("clusters", []):
        vpc = i.get("vpcConfig") or {}
        eks.create_cluster(
            name=name,
            version=str(i.get("version", "1.33")),
            roleArn=i["roleArn"],
            resourcesVpcConfig={
                "subnetIds": vpc.get("subnetIds", []),
                "endpointPublicAccess": bool(vpc.get("endpointPublicAccess", True)),
                "endpointPrivateAccess": bool(vpc.get("endpointPrivateAccess", False)),
            },
            tags={k: str(v) for k, v in (i.get("tags") or {}).items()},
        )
    ap.clusters[name] = c.get("region") or "us-east-1"


def _ensure_nodegroup(eks, g: dict, ap: Applied) -> None:
    i = g["inputs"]
    cluster = i["clusterName"]
    # The mocks name a group from its prefix; its id is "<cluster>:<node group name>", as the provider's is.
    name = i.get("nodeGroupName") or str(g.get("id") or "").split(":", 1)[-1] or g["name"]
    existing = eks.list_nodegroups(clusterName=cluster).get("nodegroups", [])
    if name not in existing:
        sc = i.get("scalingConfig") or {}
        kw: dict[str, Any] = {
            "clusterName": cluster,
            "nodegroupName": name,
            "nodeRole": i["nodeRoleArn"],
            "subnets": i.get("subnetIds", []),
            "scalingConfig": {
                "minSize": int(sc.get("minSize", 1)),
                "maxSize": int(sc.get("maxSize", 1)),
                "desiredSize": int(sc.get("desiredSize", sc.get("minSize", 1))),
            },
            "instanceTypes": i.get("instanceTypes") or [],
            "labels": {k: str(v) for k, v in (i.get("labels") or {}).items()},
            "tags": {k: str(v) for k, v in (i.get("tags") or {}).items()},
        }
        for src, dst in [("amiType", "amiType"), ("capacityType", "capacityType"), ("diskSize", "diskSize")]:
            if i.get(src) is not None:
                kw[dst] = int(i[src]) if dst == "diskSize" else i[src]
        if i.get("taints"):
            kw["taints"] = [{"key": t["key"], "value": t.get("value", ""), "effect": t["effect"]} for t in i["taints"]]
        eks.create_nodegroup(**kw)
    ap.nodegroups.setdefault(cluster, [])
    if name not in ap.nodegroups[cluster]:
        ap.nodegroups[cluster].append(name)


def _find_zone(route53, name: str) -> str | None:
    for z in route53.list_hosted_zones()["HostedZones"]:
        if z["Name"].rstrip(".") == name:
            return z["Id"]
    return None


def _zone_for_record(route53, inputs: dict, ap: Applied, default_zone_name: str | None) -> str:
    """A record whose zone is not declared (the stack uses an existing zone by id): find or make it."""
    name = inputs["name"].rstrip(".")
    for known_id, zname in ap.zone_names.items():
        if name == zname or name.endswith("." + zname):
            return known_id
    zname = default_zone_name or name.split(".", 1)[1]
    zid = _find_zone(route53, zname)
    if zid is None:
        zid = route53.create_hosted_zone(Name=zname, CallerReference=f"existing-{zname}")["HostedZone"]["Id"]
        ap.notes.append(
            f"zone {zname} is not declared (an existing zone id {inputs.get('zoneId')}): created it in moto"
        )
    zid = zid.split("/")[-1]
    ap.zones[str(inputs.get("zoneId"))] = zid
    ap.zone_names[zid] = zname
    return zid


def _all_health_checks(route53) -> list[dict]:
    out, marker = [], None
    while True:
        page = route53.list_health_checks(**({"Marker": marker} if marker else {}))
        out += page["HealthChecks"]
        if not page.get("IsTruncated"):
            return out
        marker = page["NextMarker"]


def _rrsets(route53, zone: str) -> list[dict]:
    out = []
    for page in route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone):
        out += page["ResourceRecordSets"]
    return out


def _ensure_bucket(s3_for: Callable[[str | None], Any], name: str, region: str | None, ap: Applied) -> None:
    s3 = s3_for(region)
    try:
        s3.head_bucket(Bucket=name)
    except Exception:  # noqa: BLE001 - 404: create it
        kw = {}
        if region and region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(Bucket=name, **kw)
    ap.buckets[name] = region or "us-east-1"
