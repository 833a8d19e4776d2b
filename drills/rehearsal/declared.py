"""Create in moto the AWS objects the Pulumi programs declare: one source of truth for the rehearsal.

Input: "declared resources", i.e. the offline plan of the global and regional programs under Pulumi mocks
(`infra.mocks.run_program(stack).resources`, converted by `records_from_plan`), or hand-made dicts of the
same shape: `{"type": token, "name": logical name, "id": the id the mocks gave it, "inputs": {...}}` plus
optionally `"region"` (the region of the resource's AWS provider) and `"custom"` (False for a component).
Inputs use the engine's camelCase names, as the mocks record them.

Applied, in this order (dependencies first), each in its provider's region (S3 sub-resources in their bucket's):
  aws:kms/key:Key                                         -> CreateKey (Description, KeyUsage, KeySpec, Policy,
                                                             MultiRegion, Tags), EnableKeyRotation (with
                                                             RotationPeriodInDays) / DisableKeyRotation,
                                                             DisableKey when isEnabled is false; re-applied:
                                                             UpdateKeyDescription, PutKeyPolicy, TagResource
  aws:kms/alias:Alias                                     -> CreateAlias, or UpdateAlias if it exists
  aws:iam/openIdConnectProvider:OpenIdConnectProvider     -> CreateOpenIDConnectProvider (re-created when its
                                                             client ids or thumbprints changed)
  aws:iam/role:Role                                       -> CreateRole, or UpdateRole + TagRole if it exists;
                                                             UpdateAssumeRolePolicy (moto validates trust
                                                             policies only there)
  aws:iam/policy:Policy                                   -> CreatePolicy, or CreatePolicyVersion (default) if
                                                             its document changed
  aws:iam/rolePolicy:RolePolicy                           -> PutRolePolicy
  aws:iam/rolePolicyAttachment:RolePolicyAttachment       -> AttachRolePolicy (AWS managed policies: moto_server
                                                             loads them, see moto.py)
  aws:route53/zone:Zone                                   -> CreateHostedZone (reused by name)
  aws:route53/healthCheck:HealthCheck                     -> CreateHealthCheck (CallerReference = logical name)
  aws:s3/bucket:Bucket, aws:s3/bucketV2:BucketV2          -> CreateBucket
  aws:s3/bucketVersioning:BucketVersioning(V2)            -> PutBucketVersioning
  aws:s3/bucketOwnershipControls:BucketOwnershipControls  -> PutBucketOwnershipControls
  aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock  -> PutPublicAccessBlock
  aws:s3/bucketPolicy:BucketPolicy                        -> PutBucketPolicy, only with `put_bucket_policies`
                                                             (see `apply_declared`); otherwise validated only
  aws:s3/bucketServerSideEncryptionConfiguration(V2)      -> PutBucketEncryption
  aws:s3/bucketLifecycleConfiguration(V2)                 -> PutBucketLifecycleConfiguration
  aws:route53/record:Record                               -> ChangeResourceRecordSets UPSERT
  aws:s3/bucketReplicationConfig:BucketReplicationConfig  -> PutBucketReplication
  aws:cloudwatch/logGroup:LogGroup                        -> CreateLogGroup (TagLogGroup if it exists),
                                                             PutRetentionPolicy / DeleteRetentionPolicy
  aws:eks/cluster:Cluster, aws:eks/nodeGroup:NodeGroup    -> CreateCluster, CreateNodegroup (only with `eks_for`;
                                                             an existing node group keeps its scaling: the drills
                                                             scale through the EKS API, and the program ignores
                                                             desiredSize changes)
Every other declared AWS or Kubernetes resource is counted in `Applied.ignored`: the network (EC2 VPC, subnets,
gateways, routes, security groups, endpoints), load balancers, EKS add-ons, Kubernetes objects, CloudWatch alarms
and SNS topics. moto models most of them, but nothing in the rehearsal reads them: its load balancer, health
checks, DNS and serving are models of their own. Component resources and the engine's own resources (providers,
stack references) are not AWS objects and are not counted at all.

References between resources carry the ids the mocks gave the declared resources and are mapped to the ids moto
assigns: a record's zoneId and healthCheckId, a KMS key's id or ARN (in an encryption configuration, a
replication destination, an alias, an EKS cluster's encryption, a log group, and inside policy documents),
a bucket's name. IAM roles and policies keep their declared names, so their ARNs are the mocks' (same account).
A reference to a zone, health check, bucket or KMS key that no applied plan declares fails the apply.

A declared value that AWS would refuse fails the apply with `DeclaredError` naming the resource's type and name:
what moto refuses, and what moto accepts but AWS does not (a policy document that is not JSON).

Applying twice is safe: zones, health checks, buckets, roles and log groups are found by name, KMS keys through
`Applied.keys`, and everything else is a put or an upsert. Records of a declared name whose set identifier is no
longer declared are deleted: re-applying a changed global stack (a drill's weight shift) leaves moto holding
exactly what the program now declares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError, ParamValidationError

from drills.rehearsal.moto import client as moto_client

T_KEY = "aws:kms/key:Key"
T_ALIAS = "aws:kms/alias:Alias"
T_OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
T_ROLE = "aws:iam/role:Role"
T_POLICY = "aws:iam/policy:Policy"
T_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
T_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
T_ZONE = "aws:route53/zone:Zone"
T_HC = "aws:route53/healthCheck:HealthCheck"
T_RECORD = "aws:route53/record:Record"
T_BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
T_VERSIONING = ("aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2")
T_OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
T_PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
T_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
T_ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
T_LIFECYCLE = (
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2",
)
T_REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
T_LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
T_CLUSTER = "aws:eks/cluster:Cluster"
T_NODEGROUP = "aws:eks/nodeGroup:NodeGroup"
DEFAULT_REGION = "us-east-1"

# Pulumi (camelCase) -> S3 API names where capitalising the first letter is not enough.
_S3_NAMES = {
    "id": "ID",
    "replicaKmsKeyId": "ReplicaKmsKeyID",
    "sseAlgorithm": "SSEAlgorithm",
    "kmsMasterKeyId": "KMSMasterKeyID",
}
# A KMS key ARN as the mocks (and AWS) write it; group 1 is the key id.
_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/([0-9A-Za-z-]+)")


class DeclaredError(ValueError):
    """A declared resource cannot be created as declared (a reference to something not declared, a value AWS
    refuses, ...); the message starts with the resource's type and name."""


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
    keys: dict[str, str] = field(default_factory=dict)  # declared KMS key id -> moto key ARN
    clusters: dict[str, str] = field(default_factory=dict)  # cluster name -> region
    nodegroups: dict[str, list[str]] = field(default_factory=dict)  # cluster name -> node group names
    applied_types: dict[str, int] = field(default_factory=dict)  # type -> declared resources created in moto
    ignored: dict[str, int] = field(default_factory=dict)  # type -> declared resources not created in moto
    notes: list[str] = field(default_factory=list)
    # type -> the declared resources (by urn) behind applied_types / ignored, so a re-apply counts none twice
    _applied_urns: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _ignored_urns: dict[str, set[str]] = field(default_factory=dict, repr=False)

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

    def regional_names(self) -> dict[str, str]:
        """region -> its plain per-region name: a simple alias record (no set identifier, so no weight, failover role
        or health check) whose target is that region's load balancer, as the global program declares one per region
        (infra/components/dns.py, `infra.names.regional_fqdn`). Read from the records applied, not derived here."""
        targets = self.alias_targets()
        out = {}
        for rr in self.records:
            alias = rr.get("AliasTarget")
            if alias and not rr.get("SetIdentifier") and rr.get("Type") == "A":
                region = targets.get(alias["DNSName"].lower().rstrip("."))
                if region:
                    out[region] = rr["Name"].lower().rstrip(".")
        return dict(sorted(out.items()))

    def _count(self, r: dict, applied: bool) -> None:
        t, urn = r["type"], r.get("urn") or f"{r.get('region')}::{r['name']}"
        mine, other = (self._applied_urns, self._ignored_urns) if applied else (self._ignored_urns, self._applied_urns)
        mine.setdefault(t, set()).add(urn)
        other.get(t, set()).discard(urn)
        self.applied_types = {k: len(v) for k, v in sorted(self._applied_urns.items()) if v}
        self.ignored = {k: len(v) for k, v in sorted(self._ignored_urns.items()) if v}

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# ---------------------------------------------------------------- input shapes
def records_from_plan(plan: Any) -> list[dict]:
    """`infra.mocks.Plan` -> declared resource dicts (type, name, id, inputs, region of the provider, custom)."""
    out = []
    for r in plan.resources:
        prov = plan.provider_of(r)
        region = (prov.inputs.get("region") if prov is not None else None) or r.inputs.get("region")
        out.append(
            {
                "type": r.type,
                "name": r.name,
                "id": r.id,
                "urn": r.urn,
                "inputs": r.inputs,
                "region": region,
                "custom": r.custom,
            }
        )
    return out


def _as_dict(r: Any) -> dict:
    if isinstance(r, dict):
        return r
    return {
        "type": r.type,
        "name": r.name,
        "id": getattr(r, "id", None),
        "urn": getattr(r, "urn", None),
        "inputs": r.inputs,
        "region": getattr(r, "region", None),
        "custom": getattr(r, "custom", True),
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


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _tags(inputs: dict, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: str(v)} for k, v in (inputs.get("tags") or {}).items()]


def _physical(r: dict) -> str:
    """The declared physical name: the `name` input, else the id the mocks gave it (their autoname)."""
    return str(r["inputs"].get("name") or r.get("id") or r["name"])


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
    clients: Callable[[str, str], Any] | None = None,
    put_bucket_policies: bool = False,
) -> Applied:
    """Create/update in moto what `resources` declare. `s3_for(region)` / `eks_for(region)` return clients;
    `clients(service, region)` returns a client of another service (KMS, IAM, CloudWatch Logs), by default one
    made (once per apply) on `route53`'s endpoint: pass `MotoServer.client` to share its cached clients.

    `put_bucket_policies`: moto 5.2.5 enforces a bucket policy on object requests without the request's context
    (a condition other than StringEquals counts as met), so the programs' TLS-only statement (Deny s3:* where
    aws:SecureTransport is false) makes moto refuse every object request, though the rehearsal's clients stand for
    production's HTTPS clients. Bucket policies are therefore validated (JSON, bucket declared) and counted in
    `ignored` unless this is True, for a moto_server that evaluates aws:SecureTransport or callers that need no
    object access.

    Pass the `applied` of an earlier call to keep its id mappings (re-apply after a config change).
    """
    res = [_as_dict(r) for r in resources]
    ap = applied or Applied()
    if clients is None:
        clients = _ClientCache(route53.meta.endpoint_url)
    run = _Apply(ap, route53, s3_for, eks_for, clients, default_zone_name, put_bucket_policies)
    by_type: dict[str, list[dict]] = {}
    for r in res:
        if r.get("custom", True) and not r["type"].startswith("pulumi:"):
            by_type.setdefault(r["type"], []).append(r)
    # A calculated check names its children: they are created first.
    by_type.get(T_HC, []).sort(key=lambda r: r["inputs"].get("type") == "CALCULATED")
    handlers = {t: h for t, h in _HANDLERS.items() if eks_for is not None or t not in (T_CLUSTER, T_NODEGROUP)}
    for t, rs in by_type.items():
        if t not in handlers:
            for r in rs:
                ap._count(r, applied=False)
    for t, handler in handlers.items():
        for r in by_type.get(t, []):
            try:
                put = handler(run, r)
            except DeclaredError as e:
                raise DeclaredError(f"{r['type']} {r['name']}: {e}") from None
            except (ClientError, ParamValidationError) as e:
                raise DeclaredError(f"{r['type']} {r['name']}: refused by the AWS API (moto): {e}") from e
            ap._count(r, applied=put is not False)
    if prune:
        run.prune_records()
    return ap


class _ClientCache:
    """`clients(service, region)` for one apply: moto clients on one endpoint, made on first use."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.made: dict[tuple[str, str], Any] = {}

    def __call__(self, service: str, region: str) -> Any:
        if (service, region) not in self.made:
            self.made[service, region] = moto_client(service, self.endpoint, region)
        return self.made[service, region]


class _Apply:
    """One apply: a method per declared type, each creating or updating one declared resource in moto."""

    def __init__(
        self,
        ap: Applied,
        route53: Any,
        s3_for: Callable[[str | None], Any],
        eks_for: Callable[[str | None], Any] | None,
        clients: Callable[[str, str], Any],
        default_zone_name: str | None,
        put_bucket_policies: bool,
    ):
        self.ap, self.route53, self.s3_for, self.eks_for, self.clients = ap, route53, s3_for, eks_for, clients
        self.default_zone_name, self.put_bucket_policies = default_zone_name, put_bucket_policies
        self.groups: dict[tuple[str, str, str], set[str | None]] = {}  # records: (zone, name, type) -> set ids

    @cached_property
    def iam(self) -> Any:
        return self.clients("iam", DEFAULT_REGION)  # IAM is global

    def _regional(self, service: str, r: dict) -> Any:
        return self.clients(service, r.get("region") or DEFAULT_REGION)

    # ------------------------------------------------------------ references
    def key(self, ref: str) -> str:
        """A declared KMS key reference (key id or ARN, alias name or ARN) -> what moto knows it by."""
        if ref.startswith("alias/") or ":alias/" in ref:
            return ref  # aliases are created under their declared names
        arn = self.ap.keys.get(ref.rsplit("/", 1)[-1])
        if arn is None:
            raise DeclaredError(
                f"KMS key {ref!r} is not declared by the applied plans (moto would accept the dangling reference; "
                f"on AWS every request using it would fail)"
            )
        return arn

    def policy(self, value: Any) -> str:
        """A declared policy document (JSON text or an object) -> its text, KMS key ARNs mapped to moto's."""
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise DeclaredError(f"policy document is not JSON ({e}): {text[:80]!r}") from None
        if not isinstance(doc, dict) or "Statement" not in doc:
            raise DeclaredError(f"policy document is not a JSON object with a Statement: {text[:80]!r}")
        return _KEY_ARN.sub(lambda m: self.ap.keys.get(m.group(1), m.group(0)), text)

    def bucket(self, r: dict) -> tuple[str, Any]:
        """The declared bucket a bucket sub-resource configures, and an S3 client of its region."""
        name = _bucket_name(r["inputs"]["bucket"])
        if name not in self.ap.buckets:
            raise DeclaredError(f"bucket {name!r} is not declared by the applied plans")
        return name, self.s3_for(self.ap.buckets[name])

    # ------------------------------------------------------------ KMS
    def kms_key(self, r: dict) -> None:
        i, kms = r["inputs"], self._regional("kms", r)
        ref = str(r.get("id") or r["name"])
        policy = self.policy(i["policy"]) if i.get("policy") else None
        tags = _tags(i, "TagKey", "TagValue")
        existed = ref in self.ap.keys
        if existed:
            key_id = self.ap.keys[ref].rsplit("/", 1)[-1]  # moto's EnableKey/DisableKey take no ARN
            kms.update_key_description(KeyId=key_id, Description=i.get("description", ""))
            if policy:
                kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
            if tags:
                kms.tag_resource(KeyId=key_id, Tags=tags)
        else:
            kw: dict[str, Any] = {
                "Description": i.get("description", ""),
                "KeyUsage": i.get("keyUsage", "ENCRYPT_DECRYPT"),
                "KeySpec": i.get("customerMasterKeySpec") or i.get("keySpec") or "SYMMETRIC_DEFAULT",
                "MultiRegion": bool(i.get("multiRegion", False)),
                "BypassPolicyLockoutSafetyCheck": bool(i.get("bypassPolicyLockoutSafetyCheck", False)),
            }
            if policy:
                kw["Policy"] = policy
            if tags:
                kw["Tags"] = tags
            meta = kms.create_key(**kw)["KeyMetadata"]
            key_id, self.ap.keys[ref] = meta["KeyId"], meta["Arn"]
        if i.get("enableKeyRotation"):
            period = {"RotationPeriodInDays": int(i["rotationPeriodInDays"])} if i.get("rotationPeriodInDays") else {}
            kms.enable_key_rotation(KeyId=key_id, **period)
        elif existed:
            kms.disable_key_rotation(KeyId=key_id)
        if i.get("isEnabled") is False:
            kms.disable_key(KeyId=key_id)
        elif existed:
            kms.enable_key(KeyId=key_id)

    def kms_alias(self, r: dict) -> None:
        kms, name = self._regional("kms", r), _physical(r)
        target = self.key(str(r["inputs"]["targetKeyId"]))
        try:
            kms.create_alias(AliasName=name, TargetKeyId=target)
        except ClientError as e:
            if _code(e) != "AlreadyExistsException":
                raise
            kms.update_alias(AliasName=name, TargetKeyId=target)

    # ------------------------------------------------------------ IAM
    def oidc_provider(self, r: dict) -> None:
        i = r["inputs"]
        url, clients, prints = i["url"], list(i.get("clientIdLists") or []), list(i.get("thumbprintLists") or [])
        suffix = "oidc-provider/" + url.removeprefix("https://")
        listed = self.iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
        arn = next((p["Arn"] for p in listed if p["Arn"].endswith(suffix)), None)
        if arn is not None:
            now = self.iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
            if sorted(now.get("ClientIDList", [])) == sorted(clients) and sorted(
                now.get("ThumbprintList", [])
            ) == sorted(prints):
                return
            self.iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=arn)
        self.iam.create_open_id_connect_provider(Url=url, ClientIDList=clients, ThumbprintList=prints, Tags=_tags(i))

    def iam_role(self, r: dict) -> None:
        i, name = r["inputs"], _physical(r)
        trust = self.policy(i["assumeRolePolicy"])
        duration = int(i.get("maxSessionDuration", 3600))
        try:
            kw: dict[str, Any] = (
                {"PermissionsBoundary": i["permissionsBoundary"]} if i.get("permissionsBoundary") else {}
            )
            self.iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=trust,
                Path=i.get("path", "/"),
                Description=i.get("description", ""),
                MaxSessionDuration=duration,
                Tags=_tags(i),
                **kw,
            )
        except ClientError as e:
            if _code(e) != "EntityAlreadyExists":
                raise
            self.iam.update_role(RoleName=name, Description=i.get("description", ""), MaxSessionDuration=duration)
            if i.get("tags"):
                self.iam.tag_role(RoleName=name, Tags=_tags(i))
        self.iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)

    def iam_policy(self, r: dict) -> None:
        i, name = r["inputs"], _physical(r).rsplit("/", 1)[-1]
        doc, path = self.policy(i["policy"]), i.get("path", "/")
        try:
            self.iam.create_policy(
                PolicyName=name, Path=path, PolicyDocument=doc, Description=i.get("description", ""), Tags=_tags(i)
            )
            return
        except ClientError as e:
            if _code(e) != "EntityAlreadyExists":
                raise
        pages = self.iam.get_paginator("list_policies").paginate(Scope="Local", PathPrefix=path)
        p = next(p for page in pages for p in page["Policies"] if p["PolicyName"] == name)
        arn = p["Arn"]
        now = self.iam.get_policy_version(PolicyArn=arn, VersionId=p["DefaultVersionId"])["PolicyVersion"]
        if now["Document"] == json.loads(doc):
            return
        versions = self.iam.list_policy_versions(PolicyArn=arn)["Versions"]
        old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
        if len(versions) >= 5:  # IAM keeps at most 5 versions
            self.iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])
        self.iam.create_policy_version(PolicyArn=arn, PolicyDocument=doc, SetAsDefault=True)

    def iam_role_policy(self, r: dict) -> None:
        i = r["inputs"]
        # The mocks' id is "<role>:<policy name>", as the provider's is.
        name = i.get("name") or str(r.get("id") or "").split(":", 1)[-1] or r["name"]
        role = str(i["role"]).rsplit("/", 1)[-1]
        self.iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=self.policy(i["policy"]))

    def iam_attachment(self, r: dict) -> None:
        i = r["inputs"]
        self.iam.attach_role_policy(RoleName=str(i["role"]).rsplit("/", 1)[-1], PolicyArn=i["policyArn"])

    # ------------------------------------------------------------ Route 53
    def zone(self, z: dict) -> None:
        name = z["inputs"]["name"].rstrip(".")
        zid = _find_zone(self.route53, name)
        if zid is None:
            zid = self.route53.create_hosted_zone(
                Name=name,
                CallerReference=f"{z['name']}",
                HostedZoneConfig={"Comment": z["inputs"].get("comment", ""), "PrivateZone": False},
            )["HostedZone"]["Id"]
        zid = zid.split("/")[-1]
        self.ap.zones[str(z.get("id") or z["name"])] = zid
        self.ap.zone_names[zid] = name

    @cached_property
    def existing_health_checks(self) -> dict[str, str]:
        return {hc["CallerReference"]: hc["Id"] for hc in _all_health_checks(self.route53)}

    def health_check(self, h: dict) -> None:
        i = h["inputs"]
        kind = i.get("type", "HTTPS")
        cfg: dict[str, Any] = {"Type": kind}
        children: list[str] = []
        if kind == "CALCULATED":
            for c in i.get("childHealthchecks") or []:
                if str(c) not in self.ap.health_checks:
                    raise DeclaredError(f"child health check {c!r} is not declared in the applied plans")
                children.append(self.ap.health_checks[str(c)])
            cfg.update(ChildHealthChecks=children, HealthThreshold=int(i.get("childHealthThreshold", 0)))
        elif kind == "CLOUDWATCH_METRIC":
            cfg.update(
                AlarmIdentifier={"Region": i["cloudwatchAlarmRegion"], "Name": i["cloudwatchAlarmName"]},
                InsufficientDataHealthStatus=i.get("insufficientDataHealthStatus", "LastKnownStatus"),
            )
        else:
            cfg.update(
                RequestInterval=int(i.get("requestInterval", 30)), FailureThreshold=int(i.get("failureThreshold", 3))
            )
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
        hid = self.existing_health_checks.get(ref)
        if hid is None:
            hid = self.route53.create_health_check(CallerReference=ref, HealthCheckConfig=cfg)["HealthCheck"]["Id"]
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
                    "SearchString",
                    "HealthThreshold",
                    "ChildHealthChecks",
                )
                if k in cfg
            }
            self.route53.update_health_check(HealthCheckId=hid, **upd)
        tags = i.get("tags") or {}
        if tags:
            try:
                self.route53.change_tags_for_resource(
                    ResourceType="healthcheck",
                    ResourceId=hid,
                    AddTags=[{"Key": k, "Value": str(v)} for k, v in tags.items()],
                )
            except Exception as e:  # noqa: BLE001 - tags are informative; the model does not depend on them
                self.ap.notes.append(f"tags of health check {ref}: {e}")
        self.ap.health_checks[str(h.get("id") or ref)] = hid
        self.ap.hc_info[hid] = {
            "name": ref,
            "fqdn": (i.get("fqdn") or "").lower().rstrip("."),
            "ip": i.get("ipAddress"),
            "port": i.get("port"),
            "path": i.get("resourcePath"),
            "region": tags.get("region"),
            "kind": tags.get("check"),  # infra.health.CHILD_KINDS or "calculated" (untagged: a plain check)
            "type": kind,
            "search": i.get("searchString"),
            "interval": cfg.get("RequestInterval"),
            "threshold": cfg.get("FailureThreshold"),
            "children": children,
            "health_threshold": cfg.get("HealthThreshold"),
            "alarm": i.get("cloudwatchAlarmName"),
            "alarm_region": i.get("cloudwatchAlarmRegion"),
            "insufficient_data": cfg.get("InsufficientDataHealthStatus"),
        }

    def record(self, rec: dict) -> None:
        i, ap = rec["inputs"], self.ap
        zone = ap.zones.get(str(i.get("zoneId")))
        if zone is None:
            zone = _zone_for_record(self.route53, i, ap, self.default_zone_name)
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
                    f"health check {i['healthCheckId']!r} is not declared in the applied plans "
                    f"(moto would accept the dangling id; Route 53 would not)"
                )
            rr["HealthCheckId"] = hid
        self.route53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Comment": f"declared by {rec['name']}",
                "Changes": [{"Action": "UPSERT", "ResourceRecordSet": rr}],
            },
        )
        ap.records = [x for x in ap.records if not _same_rrset(x, rr["Name"], rr["Type"], rr.get("SetIdentifier"))]
        ap.records.append(rr)
        self.groups.setdefault((zone, rr["Name"], rr["Type"]), set()).add(rr.get("SetIdentifier"))

    def prune_records(self) -> None:
        """Delete the records of a declared name and type whose set identifier is no longer declared."""
        for (zone, name, typ), sids in self.groups.items():
            for rr in _rrsets(self.route53, zone):
                if rr["Name"] == name and rr["Type"] == typ and rr.get("SetIdentifier") not in sids:
                    self.route53.change_resource_record_sets(
                        HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": rr}]}
                    )
                    sid = rr.get("SetIdentifier")
                    self.ap.records = [x for x in self.ap.records if not _same_rrset(x, name, typ, sid)]
                    self.ap.notes.append(f"deleted {name} {typ} {sid}: no longer declared")

    # ------------------------------------------------------------ S3
    def s3_bucket(self, b: dict) -> None:
        name = b["inputs"].get("bucket") or b.get("id") or b["name"]
        region = b.get("region")
        s3 = self.s3_for(region)
        try:
            s3.head_bucket(Bucket=name)
        except ClientError:  # 404: create it
            kw = {}
            if region and region != DEFAULT_REGION:
                kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
            s3.create_bucket(Bucket=name, **kw)
        self.ap.buckets[name] = region or DEFAULT_REGION

    def s3_versioning(self, v: dict) -> None:
        name, s3 = self.bucket(v)
        status = ((v["inputs"].get("versioningConfiguration") or {}).get("status")) or "Enabled"
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
        if status == "Enabled":
            self.ap.versioned.add(name)
        else:
            self.ap.versioned.discard(name)

    def s3_ownership(self, r: dict) -> None:
        name, s3 = self.bucket(r)
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={"Rules": [s3_shape(r["inputs"]["rule"])]})

    def s3_public_access(self, r: dict) -> None:
        name, s3 = self.bucket(r)
        flags = ("blockPublicAcls", "ignorePublicAcls", "blockPublicPolicy", "restrictPublicBuckets")
        cfg = {k[:1].upper() + k[1:]: bool(r["inputs"].get(k, False)) for k in flags}
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=cfg)

    def s3_policy(self, r: dict) -> bool:
        name, s3 = self.bucket(r)
        policy = self.policy(r["inputs"]["policy"])
        if not self.put_bucket_policies:
            self.ap._note(
                f"bucket policy of {name} validated, not put: moto would enforce its statements without their "
                f"conditions (see apply_declared's put_bucket_policies)"
            )
            return False
        s3.put_bucket_policy(Bucket=name, Policy=policy)
        return True

    def s3_encryption(self, r: dict) -> None:
        name, s3 = self.bucket(r)
        rules = s3_shape(r["inputs"].get("rules") or [])
        for rule in rules:
            default = rule.get("ApplyServerSideEncryptionByDefault") or {}
            if default.get("KMSMasterKeyID"):
                default["KMSMasterKeyID"] = self.key(str(default["KMSMasterKeyID"]))
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})

    def s3_lifecycle(self, r: dict) -> None:
        name, s3 = self.bucket(r)
        rules = s3_shape(r["inputs"].get("rules") or [])
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})

    def s3_replication(self, rc: dict) -> None:
        i, ap = rc["inputs"], self.ap
        src = _bucket_name(i["bucket"])
        rules = s3_shape(i.get("rules") or [])
        for rule in rules:
            dest = _bucket_name(rule["Destination"]["Bucket"])
            for bucket in (src, dest):
                if bucket not in ap.buckets:
                    raise DeclaredError(
                        f"replication between {src} and {dest}, but bucket {bucket!r} is not declared by the "
                        f"applied plans; apply the regional stacks' plans too"
                    )
                if bucket not in ap.versioned:
                    raise DeclaredError(
                        f"bucket {bucket!r} is not versioned; S3 refuses replication without versioning on "
                        f"source and destination"
                    )
            if "Filter" in rule and not rule["Filter"]:
                rule["Filter"] = {}
            enc = rule["Destination"].get("EncryptionConfiguration") or {}
            if enc.get("ReplicaKmsKeyID"):
                enc["ReplicaKmsKeyID"] = self.key(str(enc["ReplicaKmsKeyID"]))
        config = {"Role": i["role"], "Rules": rules}
        self.s3_for(ap.buckets[src]).put_bucket_replication(Bucket=src, ReplicationConfiguration=config)
        ap.replication[src] = config

    # ------------------------------------------------------------ CloudWatch Logs
    def log_group(self, r: dict) -> None:
        i, logs, name = r["inputs"], self._regional("logs", r), _physical(r)
        kw: dict[str, Any] = {"logGroupName": name}
        if i.get("kmsKeyId"):
            kw["kmsKeyId"] = self.key(str(i["kmsKeyId"]))
        if i.get("tags"):
            kw["tags"] = {k: str(v) for k, v in i["tags"].items()}
        if i.get("logGroupClass"):
            kw["logGroupClass"] = i["logGroupClass"]
        existed = False
        try:
            logs.create_log_group(**kw)
        except ClientError as e:
            if _code(e) != "ResourceAlreadyExistsException":
                raise
            existed = True
            if i.get("tags"):
                logs.tag_log_group(logGroupName=name, tags=kw["tags"])
        if i.get("retentionInDays"):
            logs.put_retention_policy(logGroupName=name, retentionInDays=int(i["retentionInDays"]))
        elif existed:
            logs.delete_retention_policy(logGroupName=name)

    # ------------------------------------------------------------ EKS (capacity for the drills' pre-scaling)
    def eks_cluster(self, c: dict) -> None:
        assert self.eks_for is not None  # handled only with eks_for
        eks, i = self.eks_for(c.get("region")), c["inputs"]
        name = i.get("name") or c.get("id") or c["name"]
        if name not in eks.list_clusters().get("clusters", []):
            vpc = i.get("vpcConfig") or {}
            kw: dict[str, Any] = {}
            # encryptionConfig is one object in pulumi-aws 7, a list of one before (and in the EKS API)
            enc = i.get("encryptionConfig")
            for e in enc if isinstance(enc, list) else [enc] if enc else []:
                provider = {"keyArn": self.key(str(e["provider"]["keyArn"]))}
                kw.setdefault("encryptionConfig", []).append(
                    {"resources": e.get("resources", []), "provider": provider}
                )
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
                **kw,
            )
        self.ap.clusters[name] = c.get("region") or DEFAULT_REGION

    def eks_nodegroup(self, g: dict) -> None:
        assert self.eks_for is not None  # handled only with eks_for
        eks, i = self.eks_for(g.get("region")), g["inputs"]
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
                kw["taints"] = [
                    {"key": t["key"], "value": t.get("value", ""), "effect": t["effect"]} for t in i["taints"]
                ]
            eks.create_nodegroup(**kw)
        self.ap.nodegroups.setdefault(cluster, [])
        if name not in self.ap.nodegroups[cluster]:
            self.ap.nodegroups[cluster].append(name)


# Declared type -> its handler, in the order they apply (what a resource references is applied before it).
# A handler returns False when it only validated the resource (it is then counted in `Applied.ignored`).
_HANDLERS: dict[str, Callable[[_Apply, dict], bool | None]] = {
    T_KEY: _Apply.kms_key,
    T_ALIAS: _Apply.kms_alias,
    T_OIDC: _Apply.oidc_provider,
    T_ROLE: _Apply.iam_role,
    T_POLICY: _Apply.iam_policy,
    T_ROLE_POLICY: _Apply.iam_role_policy,
    T_ATTACHMENT: _Apply.iam_attachment,
    T_ZONE: _Apply.zone,
    T_HC: _Apply.health_check,
    **dict.fromkeys(T_BUCKETS, _Apply.s3_bucket),
    **dict.fromkeys(T_VERSIONING, _Apply.s3_versioning),
    T_OWNERSHIP: _Apply.s3_ownership,
    T_PUBLIC_ACCESS: _Apply.s3_public_access,
    T_BUCKET_POLICY: _Apply.s3_policy,
    **dict.fromkeys(T_ENCRYPTION, _Apply.s3_encryption),
    **dict.fromkeys(T_LIFECYCLE, _Apply.s3_lifecycle),
    T_RECORD: _Apply.record,
    T_REPLICATION: _Apply.s3_replication,
    T_LOG_GROUP: _Apply.log_group,
    T_CLUSTER: _Apply.eks_cluster,
    T_NODEGROUP: _Apply.eks_nodegroup,
}


def _same_rrset(rr: dict, name: str, typ: str, sid: str | None) -> bool:
    return rr["Name"] == name and rr["Type"] == typ and rr.get("SetIdentifier") == sid


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
