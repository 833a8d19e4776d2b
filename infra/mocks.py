"""Run the real Pulumi program offline, under `pulumi.runtime.set_mocks`: no CLI, no plugins, no credentials.

Public API (used by infra.plan, the tests, and the global stack's tests):

- `run_program(stack, values=None, stacks_dir=STACKS_DIR, mocks=None, experiments=None, now=None) -> Plan`
    Sets the engine config from `stacks/Pulumi.<stack>.yaml` (or from `values`, un-namespaced config values
    that replace the file's), runs `infra.program.main()` as the Pulumi engine would (a regional stack's program
    reads the experiments whose arms it serves from the global stack file in `stacks_dir`, at the clock's time,
    unless `experiments` and `now` are given: infra/arms.py), waits for every
    registration and returns a `Plan`: `.resources` (list of `ResourceRecord`, in registration order),
    `.calls` (invokes, list of `CallRecord`) and `.outputs` (stack outputs, resolved to plain values).
    Works for every stack role. A config error raises `pulumi.RunError` carrying the ConfigError message,
    with `.plan` attached (whose `.resources` is empty: nothing is declared before the config is valid).
- `ResourceRecord`: `type`, `name`, `urn`, `id`, `inputs`, `state`, `provider` (the provider reference
  `<urn>::<id>`, or None when the resource would use a default provider), `custom`, `options` (ignore_changes,
  retain_on_delete, depends_on names... as declared), `property_dependencies` (input name -> URNs of the resources
  its value came from, as the engine hands them to a policy pack) and `.parent_type`.
  `Plan.provider_of(record)` returns the provider's own record (for its `region` input, say).
- `regional_outputs(stack) -> dict`: the outputs a regional stack exports, computed from its config file with
  the same naming functions and the same mock identifiers the program gets, valid under
  `infra.outputs.RegionalOutputs`; `StackReference` resources are answered with it.
- `RecordingMocks`: the `pulumi.runtime.Mocks` implementation (records everything, realistic state for
  AWS resources: ids, ARNs with the resource's region and account `ACCOUNT_ID`, ELB DNS names and the real
  per-region ELB hosted zone ids, EKS endpoint/CA/OIDC issuer, ...). Invokes answered: getCallerIdentity,
  getAvailabilityZones, getPartition, getRegion, iam getPolicyDocument; `register_call(token, fn)` adds an
  answer for another (fn(args: dict, region: str) -> dict); an unknown invoke fails loudly.
- Constants and helpers: `ACCOUNT_ID` ("123456789012"), `ALB_ZONE_IDS` / `NLB_ZONE_IDS` (region -> ELB hosted
  zone id), `lb_dns_name(name, region, type)`, `lb_zone_id(region, type)`, `lb_arn_suffix(stack, resource, name)`,
  `target_group_arn_suffix(stack, resource, name)`, `kms_key_arn(region, seed)`.
- `Plan` helpers: `of_type(type)`, `one(type, name=None)`, `provider_of(record)`, `counts()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pulumi

from infra import pulumi_runtime
from infra.config import PROJECT, STACKS_DIR, read_stack_file
from infra.experiments import Experiment

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"  # only for resources without an AWS provider (there should be none)

# Route 53 hosted zone ids of Elastic Load Balancing, per region (AWS "Elastic Load Balancing endpoints and
# quotas"): alias records to a load balancer must name exactly this zone.
ALB_ZONE_IDS = {
    "us-east-1": "Z35SXDOTRQ7X7K",
    "us-east-2": "Z3AADJGX6KTTL2",
    "us-west-1": "Z368ELLRRE2KJ0",
    "us-west-2": "Z1H1FL5HABSF5",
    "ca-central-1": "ZQSVJUPU6J1EY",
    "eu-west-1": "Z32O12XQLNTSW2",
    "eu-west-2": "ZHURV8PSTC4K8",
    "eu-central-1": "Z215JYRZR1TBD5",
    "eu-north-1": "Z23TAZ7KKGH4H0",
    "ap-northeast-1": "Z14GRHDCWA56QT",
    "ap-southeast-1": "Z1LMS91P8CMLE5",
    "ap-southeast-2": "Z1GM3OXH4ZPM65",
    "ap-south-1": "ZP97RAFLXTNZK",
    "sa-east-1": "Z2P70J7HTTTPLU",
}
NLB_ZONE_IDS = {
    "us-east-1": "Z26RNL4JYFTOTI",
    "us-east-2": "ZLMOA37VPKANP",
    "us-west-1": "Z24FKFUX50B4VW",
    "us-west-2": "Z18D5FSROUN65G",
    "ca-central-1": "Z2EPGBW3API2WT",
    "eu-west-1": "Z2IFOLAFXWLO4F",
    "eu-west-2": "ZD4D7Y8KGAS4G",
    "eu-central-1": "Z3F0SRJ5LGBH90",
    "eu-north-1": "Z1UDT6IFJ4EJM",
    "ap-northeast-1": "Z31USIVHYNEOWT",
    "ap-southeast-1": "ZKVM4W9LS7TM",
    "ap-southeast-2": "ZCT6FZBF4DROD",
    "ap-south-1": "ZVDDRBQ08TROA",
    "sa-east-1": "ZTK26PT1VY4CU",
}


# ------------------------------------------------------------------ records
@dataclass
class ResourceRecord:
    type: str
    name: str
    urn: str
    id: str
    inputs: dict
    state: dict
    provider: str | None
    custom: bool
    options: dict = field(default_factory=dict)  # ignore_changes, retain_on_delete, protect as declared
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)  # input -> URNs its value came from

    @property
    def parent_type(self) -> str | None:
        """Type of the parent (a component, or `pulumi:pulumi:Stack` for top-level resources), from the URN."""
        chain = self.urn.split("::")[2].split("$")
        return chain[-2] if len(chain) > 1 else None

    def as_dict(self) -> dict:
        return {
            "type": self.type,
            "name": self.name,
            "urn": self.urn,
            "id": self.id,
            "custom": self.custom,
            "provider": self.provider,
            "options": self.options,
            "inputs": self.inputs,
        }


@dataclass
class CallRecord:
    token: str
    args: dict
    provider: str | None


@dataclass
class Plan:
    stack: str
    resources: list[ResourceRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)

    def of_type(self, type_: str) -> list[ResourceRecord]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> ResourceRecord:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_} {name or ''}, found {[r.name for r in found]}")
        return found[0]

    def provider_of(self, r: ResourceRecord) -> ResourceRecord | None:
        if not r.provider:
            return None
        urn = r.provider.rsplit("::", 1)[0]
        return next((p for p in self.resources if p.urn == urn), None)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.resources:
            out[r.type] = out.get(r.type, 0) + 1
        return dict(sorted(out.items()))


def _plain(v: Any) -> Any:
    """Engine values as plain JSON-able Python: integral floats back to ints (the wire has only doubles)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _as_list(v: Any) -> list:
    return [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


CAPACITY_RESERVATION = "aws:ec2/capacityReservation:CapacityReservation"


def capacity_reservation_id(stack: str, name: str) -> str:
    """The id these mocks give the capacity reservation `name` of `stack` (regional_outputs predicts it)."""
    return f"cr-{_hex(f'{stack}/{CAPACITY_RESERVATION}/{name}', 17)}"


def _hex(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def _uuid(seed: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


# ------------------------------------------------------------------ identifiers (shared with regional_outputs)
def kms_key_arn(region: str, seed: str) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{_uuid('kms:' + seed)}"


def lb_dns_name(lb_name: str, region: str, lb_type: str = "application") -> str:
    if lb_type == "network":
        return f"{lb_name}-{_hex('lb:' + lb_name + region, 16)}.elb.{region}.amazonaws.com"
    return f"{lb_name}-{int(_hex('lb:' + lb_name + region, 8), 16) % 10**10:010d}.{region}.elb.amazonaws.com"


def lb_zone_id(region: str, lb_type: str = "application") -> str:
    return (NLB_ZONE_IDS if lb_type == "network" else ALB_ZONE_IDS)[region]


LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"


def lb_arn_suffix(stack: str, resource: str, lb_name: str, lb_type: str = "application") -> str:
    """The ARN suffix (CloudWatch's `LoadBalancer` dimension) these mocks give load balancer `resource` of `stack`."""
    kind = "app" if lb_type == "application" else "net"
    return f"{kind}/{lb_name}/{_hex(f'{stack}/{LOAD_BALANCER}/{resource}', 16)}"


def target_group_arn_suffix(stack: str, resource: str, tg_name: str) -> str:
    """The ARN suffix (CloudWatch's `TargetGroup` dimension) these mocks give target group `resource` of `stack`."""
    return f"targetgroup/{tg_name}/{_hex(f'{stack}/{TARGET_GROUP}/{resource}', 16)}"


CallFn = Callable[[dict, str], dict]
_EXTRA_CALLS: dict[str, CallFn] = {}


def register_call(token: str, fn: CallFn) -> None:
    """Teach the mocks an invoke (fn(args, region) -> result dict), e.g. from another component's tests."""
    _EXTRA_CALLS[token] = fn


def _policy_document(args: dict) -> dict:
    """aws.iam.getPolicyDocument rendered like the provider: statements to IAM JSON."""
    stmts = []
    for s in args.get("statements") or []:
        st: dict[str, Any] = {"Effect": s.get("effect", "Allow")}
        if s.get("sid"):
            st["Sid"] = s["sid"]
        for key, out in (
            ("actions", "Action"),
            ("notActions", "NotAction"),
            ("resources", "Resource"),
            ("notResources", "NotResource"),
        ):
            if s.get(key):
                vals = s[key]
                st[out] = vals[0] if len(vals) == 1 else vals
        for key, out in (("principals", "Principal"), ("notPrincipals", "NotPrincipal")):
            if s.get(key):
                pr: dict[str, Any] = {}
                for p in s[key]:
                    ids = p["identifiers"]
                    pr[p["type"]] = ids[0] if len(ids) == 1 else ids
                st[out] = "*" if pr == {"*": "*"} else pr
        for c in s.get("conditions") or []:
            vals = c["values"]
            st.setdefault("Condition", {}).setdefault(c["test"], {})[c["variable"]] = (
                vals[0] if len(vals) == 1 else vals
            )
        stmts.append(st)
    doc = {"Version": args.get("version", "2012-10-17"), "Statement": stmts}
    text = json.dumps(doc, indent=2)
    return {"json": text, "minifiedJson": json.dumps(doc, separators=(",", ":")), "id": _hex(text, 10)}


# ------------------------------------------------------------------ the mocks
class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, stack: str, account_id: str = ACCOUNT_ID):
        self.stack = stack
        self.account_id = account_id
        self.resources: list[ResourceRecord] = []
        self.calls: list[CallRecord] = []
        self._provider_region: dict[str, str] = {}  # provider urn -> region
        self._options: dict[tuple[str, str], dict] = {}  # (type, name) -> declared options

    def capture_options(self, args: pulumi.ResourceTransformationArgs) -> None:
        """A stack transformation (run by the SDK itself, so it works under mocks) that notes the options
        the engine would see; the mock monitor's requests do not carry them."""
        o = args.opts
        self._options[(args.type_, args.name)] = {
            k: v
            for k, v in {
                "ignore_changes": list(o.ignore_changes or []),
                "retain_on_delete": bool(o.retain_on_delete),
                "protect": bool(o.protect),
                "delete_before_replace": bool(o.delete_before_replace),
                "depends_on": sorted(getattr(d, "_name", str(d)) for d in _as_list(o.depends_on)),
            }.items()
            if v
        }
        return None

    # -- helpers
    def _region(self, provider: str | None) -> str:
        if provider:
            return self._provider_region.get(provider.rsplit("::", 1)[0], DEFAULT_REGION)
        return DEFAULT_REGION

    def _urn(self, args: pulumi.runtime.MockResourceArgs) -> str:
        # Set by _RecordingMonitor for the registration in progress on this thread (it knows the parent).
        return getattr(_current, "urn", None) or f"urn:pulumi:{self.stack}::{PROJECT}::{args.typ}::{args.name}"

    # -- Mocks interface
    def call(self, args: pulumi.runtime.MockCallArgs):
        inputs = _plain(dict(args.args))
        self.calls.append(CallRecord(args.token, inputs, args.provider or None))
        region = self._region(args.provider)
        tok = args.token
        if tok in _EXTRA_CALLS:
            return _EXTRA_CALLS[tok](inputs, region)
        if tok == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account_id,
                "arn": f"arn:aws:iam::{self.account_id}:role/deployer",
                "userId": "AROAEXAMPLEDEPLOYER:pulumi",
                "id": self.account_id,
            }
        if tok == "aws:index/getAvailabilityZones:getAvailabilityZones":
            short = "".join(w[0] for w in region.split("-")[:-1]) + region.split("-")[-1]
            letters = "abcd"
            return {
                "names": [f"{region}{c}" for c in letters],
                "zoneIds": [f"{short}-az{i + 1}" for i in range(len(letters))],
                "groupNames": [region],
                "id": region,
                "state": inputs.get("state"),
            }
        if tok == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws", "id": "aws"}
        if tok == "aws:index/getRegion:getRegion":
            return {
                "name": region,
                "region": region,
                "endpoint": f"ec2.{region}.amazonaws.com",
                "id": region,
                "description": region,
            }
        if tok == "aws:iam/getPolicyDocument:getPolicyDocument":
            return _policy_document(inputs)
        raise NotImplementedError(f"infra.mocks: no mock answer for invoke {tok}; add one with register_call()")

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = _plain(dict(args.inputs))
        typ, name = args.typ, args.name
        urn = self._urn(args)
        if typ.startswith("pulumi:providers:"):
            if typ == "pulumi:providers:aws":
                self._provider_region[urn] = inputs.get("region", DEFAULT_REGION)
            rid, state = f"{name}-{_hex(urn, 8)}", dict(inputs)
        elif typ == "pulumi:pulumi:StackReference":
            ref = inputs.get("name") or name
            rid, state = ref, {"name": ref, "outputs": regional_outputs(ref.split("/")[-1]), "secretOutputNames": []}
        elif not args.custom:
            rid, state = "", {}
        elif typ.startswith("aws:"):
            rid, state = self._aws_state(typ, name, inputs, self._region(args.provider))
        elif typ.startswith("kubernetes:"):
            meta = inputs.get("metadata") or {}
            ns = meta.get("namespace")
            rid = f"{ns}/{meta.get('name', name)}" if ns else str(meta.get("name", inputs.get("name", name)))
            state = dict(inputs)
            if typ == "kubernetes:helm.sh/v3:Release":
                state["status"] = {
                    "name": inputs.get("name", name),
                    "namespace": inputs.get("namespace", "default"),
                    "status": "deployed",
                    "version": inputs.get("version", ""),
                    "revision": 1,
                }
        else:
            rid, state = f"{name}-{_hex(urn, 8)}", dict(inputs)
        self.resources.append(
            ResourceRecord(
                typ,
                name,
                urn,
                rid,
                inputs,
                _plain(state),
                args.provider or None,
                bool(args.custom),
                self._options.get((typ, name), {}),
                getattr(_current, "property_dependencies", {}),
            )
        )
        return rid, state

    # -- realistic AWS state
    def _aws_state(self, typ: str, name: str, inputs: dict, region: str) -> tuple[str, dict]:
        acct = self.account_id
        seed = f"{self.stack}/{typ}/{name}"
        h8, h17 = _hex(seed, 8), _hex(seed, 17)
        svc = typ.split(":")[1].split("/")[0]
        s = dict(inputs)
        s.setdefault("tags", inputs.get("tags") or {})
        s["tagsAll"] = dict(s["tags"])
        rid = f"{name}-{h8}"
        arn = f"arn:aws:{svc}:{region}:{acct}:{typ.split(':')[-1].lower()}/{rid}"
        if typ == "aws:ec2/vpc:Vpc":
            rid = f"vpc-{h17}"
            arn = f"arn:aws:ec2:{region}:{acct}:vpc/{rid}"
            s.update(
                defaultSecurityGroupId=f"sg-{_hex(seed + 'dsg', 17)}", mainRouteTableId=f"rtb-{_hex(seed + 'rt', 17)}"
            )
        elif typ == "aws:ec2/subnet:Subnet":
            rid = f"subnet-{h17}"
            arn = f"arn:aws:ec2:{region}:{acct}:subnet/{rid}"
        elif typ == "aws:ec2/securityGroup:SecurityGroup":
            rid = f"sg-{h17}"
            arn = f"arn:aws:ec2:{region}:{acct}:security-group/{rid}"
        elif typ in (
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        ):
            rid = f"sgr-{h17}"
            arn = f"arn:aws:ec2:{region}:{acct}:security-group-rule/{rid}"
            s["securityGroupRuleId"] = rid
        elif typ == "aws:ec2/internetGateway:InternetGateway":
            rid = f"igw-{h17}"
        elif typ == "aws:ec2/natGateway:NatGateway":
            rid = f"nat-{h17}"
        elif typ == "aws:ec2/eip:Eip":
            rid = f"eipalloc-{h17}"
            s.update(allocationId=rid, publicIp=f"203.0.113.{int(h8, 16) % 250 + 1}")
        elif typ == "aws:ec2/routeTable:RouteTable":
            rid = f"rtb-{h17}"
        elif typ == "aws:ec2/routeTableAssociation:RouteTableAssociation":
            rid = f"rtbassoc-{h17}"
        elif typ == "aws:ec2/route:Route":
            rid = f"r-{h17}"
        elif typ == CAPACITY_RESERVATION:
            rid = capacity_reservation_id(self.stack, name)
            arn = f"arn:aws:ec2:{region}:{acct}:capacity-reservation/{rid}"
        elif typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
            rid = f"vpce-{h17}"
            s["prefixListId"] = f"pl-{h8}"
        elif typ == "aws:iam/role:Role":
            rname = inputs.get("name") or f"{name}-{_hex(seed, 7)}"
            rid = rname
            arn = f"arn:aws:iam::{acct}:role/{rname}"
            s.update(name=rname, uniqueId=f"AROA{_hex(seed, 17).upper()}")
        elif typ == "aws:iam/rolePolicy:RolePolicy":
            rid = f"{inputs.get('role')}:{name}-{h8}"
            s["name"] = f"{name}-{h8}"
        elif typ == "aws:iam/rolePolicyAttachment:RolePolicyAttachment":
            rid = f"{inputs.get('role')}-{h8}"
        elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            host = str(inputs.get("url", "")).removeprefix("https://")
            arn = f"arn:aws:iam::{acct}:oidc-provider/{host}"
            rid = arn
        elif typ == "aws:kms/key:Key":
            key = _uuid("kms:" + seed)
            rid = key
            arn = kms_key_arn(region, seed)
            s["keyId"] = key
        elif typ == "aws:kms/alias:Alias":
            rid = inputs.get("name", f"alias/{name}")
            arn = f"arn:aws:kms:{region}:{acct}:{rid}"
            s["targetKeyArn"] = f"arn:aws:kms:{region}:{acct}:key/{inputs.get('targetKeyId', '')}"
        elif typ == "aws:s3/bucket:Bucket" or typ == "aws:s3/bucketV2:BucketV2":
            b = inputs.get("bucket") or f"{name}-{h8}"
            rid = b
            arn = f"arn:aws:s3:::{b}"
            s.update(
                bucket=b,
                bucketDomainName=f"{b}.s3.amazonaws.com",
                bucketRegionalDomainName=f"{b}.s3.{region}.amazonaws.com",
                region=region,
            )
        elif typ.startswith("aws:s3/"):
            rid = str(inputs.get("bucket", name))
        elif typ == "aws:eks/cluster:Cluster":
            cname = inputs.get("name") or name
            rid = cname
            arn = f"arn:aws:eks:{region}:{acct}:cluster/{cname}"
            oidc = _hex(seed + "oidc", 32).upper()
            vpc = dict(inputs.get("vpcConfig") or {})
            vpc.update(clusterSecurityGroupId=f"sg-{_hex(seed + 'csg', 17)}", vpcId=f"vpc-{_hex(seed + 'vpc', 17)}")
            s.update(
                name=cname,
                endpoint=f"https://{_hex(seed, 32).upper()}.gr7.{region}.eks.amazonaws.com",
                certificateAuthority={
                    "data": base64.b64encode(
                        f"-----BEGIN CERTIFICATE-----\nMOCK {cname}\n-----END CERTIFICATE-----\n".encode()
                    ).decode()
                },
                identities=[{"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{oidc}"}]}],
                vpcConfig=vpc,
                status="ACTIVE",
                platformVersion="eks.1",
                clusterId=_uuid(seed),
            )
        elif typ == "aws:eks/nodeGroup:NodeGroup":
            ng = inputs.get("nodeGroupName") or f"{inputs.get('nodeGroupNamePrefix', name)}{_hex(seed, 26)}"
            rid = f"{inputs.get('clusterName')}:{ng}"
            arn = f"arn:aws:eks:{region}:{acct}:nodegroup/{inputs.get('clusterName')}/{ng}/{_uuid(seed)}"
            s.update(
                nodeGroupName=ng,
                status="ACTIVE",
                resources=[
                    {"autoscalingGroups": [{"name": f"eks-{ng}-{_uuid(seed)}"}], "remoteAccessSecurityGroupId": ""}
                ],
            )
        elif typ == "aws:eks/addon:Addon":
            rid = f"{inputs.get('clusterName')}:{inputs.get('addonName')}"
            arn = (
                f"arn:aws:eks:{region}:{acct}:addon/{inputs.get('clusterName')}/{inputs.get('addonName')}/{_uuid(seed)}"
            )
            s.setdefault("addonVersion", "v0.0.0-eksbuild.1")
        elif typ == LOAD_BALANCER:
            lbtype = inputs.get("loadBalancerType", "application")
            lname = inputs.get("name") or f"{name[:23]}-{h8}"
            suffix = lb_arn_suffix(self.stack, name, lname, lbtype)
            arn = f"arn:aws:elasticloadbalancing:{region}:{acct}:loadbalancer/{suffix}"
            rid = arn
            s.update(
                name=lname,
                dnsName=lb_dns_name(lname, region, lbtype),
                zoneId=lb_zone_id(region, lbtype),
                arnSuffix=suffix,
            )
        elif typ == TARGET_GROUP:
            tname = inputs.get("name") or f"{name[:23]}-{h8}"
            suffix = target_group_arn_suffix(self.stack, name, tname)
            arn = f"arn:aws:elasticloadbalancing:{region}:{acct}:{suffix}"
            rid = arn
            s.update(name=tname, arnSuffix=suffix)
        elif typ == "aws:lb/listener:Listener":
            arn = (
                f"arn:aws:elasticloadbalancing:{region}:{acct}:listener/app/{name}/"
                f"{_hex(seed, 16)}/{_hex(seed + 'l', 16)}"
            )
            rid = arn
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            lg = inputs.get("name") or f"{name}-{h8}"
            rid = lg
            arn = f"arn:aws:logs:{region}:{acct}:log-group:{lg}"
        elif typ == "aws:route53/zone:Zone":
            rid = f"Z{_hex(seed, 13).upper()}"
            arn = f"arn:aws:route53:::hostedzone/{rid}"
            s.update(zoneId=rid, nameServers=[f"ns-{i}.awsdns-{i}.org" for i in range(4)])
        elif typ == "aws:route53/healthCheck:HealthCheck":
            rid = _uuid(seed)
            arn = f"arn:aws:route53:::healthcheck/{rid}"
        elif typ == "aws:route53/record:Record":
            rid = (
                f"{inputs.get('zoneId')}_{inputs.get('name')}_{inputs.get('type')}_{inputs.get('setIdentifier', '')}"
            ).rstrip("_")
            s["fqdn"] = inputs.get("name")
        elif typ == "aws:sns/topic:Topic":
            arn = f"arn:aws:sns:{region}:{acct}:{inputs.get('name') or rid}"
            rid = arn
        elif typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            an = inputs.get("name") or rid
            rid = an
            arn = f"arn:aws:cloudwatch:{region}:{acct}:alarm:{an}"
        s.setdefault("arn", arn)
        s["id"] = rid
        return rid, s


_current = threading.local()


class _RecordingMonitor(pulumi_runtime.MockMonitor):
    """The stock mock monitor, telling the mocks each resource's full URN (Mocks.new_resource is not given
    the parent, so it cannot compute it): provider references and parent chains then resolve exactly."""

    def RegisterResource(self, request):
        _current.urn = (
            None if request.type == "pulumi:pulumi:Stack" else self.make_urn(request.parent, request.type, request.name)
        )
        _current.property_dependencies = {k: list(v.urns) for k, v in request.propertyDependencies.items() if v.urns}
        try:
            return super().RegisterResource(request)
        finally:
            _current.urn, _current.property_dependencies = None, {}


# ------------------------------------------------------------------ running a program
def _engine_value(v: Any) -> str:
    """Config as the engine hands it to a program: structured values JSON-encoded, scalars as strings."""
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def run_program(
    stack: str,
    values: dict | None = None,
    stacks_dir: Path = STACKS_DIR,
    mocks: RecordingMocks | None = None,
    experiments: Sequence[Experiment] | None = None,
    now: datetime | None = None,
) -> Plan:
    """Run infra.program.main() for `stack` under mocks and return what it declared (see module docstring)."""
    from infra import program

    values = read_stack_file(stack, stacks_dir) if values is None else values
    mocks = mocks or RecordingMocks(stack)
    plan = Plan(stack, mocks.resources, mocks.calls)

    pulumi_runtime.reset()
    pulumi.runtime.set_all_config({f"{PROJECT}:{k}": _engine_value(v) for k, v in values.items()})
    root = pulumi_runtime.install_mocks(mocks, project=PROJECT, stack=stack, monitor=_RecordingMonitor(mocks))
    pulumi.runtime.register_stack_transformation(mocks.capture_options)
    try:
        pulumi_runtime.run_program(partial(program.main, stacks_dir=stacks_dir, experiments=experiments, now=now))
        outputs = pulumi_runtime.resolve(dict(root.outputs)) if root is not None else {}
    except Exception as e:
        e.plan = plan  # type: ignore[attr-defined]  # callers read the (partial) plan off the raised error
        raise
    plan.outputs = _plain(outputs or {})
    return plan


def regional_outputs(stack: str, stacks_dir: Path = STACKS_DIR) -> dict:
    """What regional `stack` exports, from its config file alone (no program run), using the naming
    functions the program uses and the identifiers these mocks hand out. Tests hold this equal to
    `run_program(stack).outputs`, so a StackReference answered with it is exactly what the program exports."""
    from infra.components.artifacts import bucket_name
    from infra.components.cluster import cluster_name
    from infra.config import RegionConfig, load_stack
    from infra.names import lb_name, target_group_name
    from infra.regional import gpu_pool_outputs

    cfg = load_stack(stack, stacks_dir)
    if not isinstance(cfg, RegionConfig):
        raise ValueError(f"stack {stack} is not a regional stack (role {cfg.role})")
    lname = lb_name(stack)
    return {
        "region": cfg.region,
        "cluster_name": cluster_name(stack),
        "lb_dns_name": lb_dns_name(lname, cfg.region),
        "lb_zone_id": lb_zone_id(cfg.region),
        "lb_arn_suffix": lb_arn_suffix(stack, LB_RESOURCE, lname),
        "target_group_arn_suffix": target_group_arn_suffix(stack, TARGET_GROUP_RESOURCE, target_group_name(stack)),
        "bucket_name": bucket_name(stack, ACCOUNT_ID),
        "bucket_arn": f"arn:aws:s3:::{bucket_name(stack, ACCOUNT_ID)}",
        "kms_key_arn": kms_key_arn(cfg.region, f"{stack}/aws:kms/key:Key/{ARTIFACT_KEY_NAME}"),
        "gpu_pools": gpu_pool_outputs(
            cfg,
            {
                p.name: capacity_reservation_id(stack, f"gpu-{p.name}-reservation")
                for p in cfg.gpu_pools
                if p.capacity.creates
            },
        ),
        "triton_image": cfg.triton.image,
        "model_version": cfg.model.version,
    }


ARTIFACT_KEY_NAME = "artifacts-key"  # regional.py's ArtifactBucket("artifacts") names its key "<name>-key"
# regional.py's TritonLoadBalancer("ingress") names its ALB "<name>-alb" and its stable target group "<name>-triton".
LB_RESOURCE, TARGET_GROUP_RESOURCE = "ingress-alb", "ingress-triton"
