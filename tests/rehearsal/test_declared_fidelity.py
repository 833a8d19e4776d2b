"""Fidelity of the rehearsal's moto to what the Pulumi programs declare (`drills.rehearsal.declared`).

The prod fleet's global and regional programs are planned offline (Pulumi mocks) and applied to a real moto_server;
every check reads moto back through its APIs (boto3, and the AWS CLI where installed) and compares with the declared
inputs: the artifact buckets' encryption, public access block, policy, ownership and lifecycle, the KMS keys and
aliases, the IAM roles, policies and OIDC providers, the log groups. The mocks' ids (a KMS key's id and ARN) must
be resolved to the ids moto gave the created objects.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from typing import Any

import pytest
from botocore.exceptions import ClientError

from drills.rehearsal.declared import Applied, DeclaredError, apply_declared
from drills.rehearsal.moto import MotoServer
from drills.rehearsal.procs import Supervisor, free_port_block
from drills.rehearsal.world import plan_declared
from infra.config import load_fleet

# The Pulumi programs use deprecated pulumi_aws classes; that is for their owners, not this test.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T_SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
T_LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
T_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
T_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
T_OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
T_KEY = "aws:kms/key:Key"
T_ALIAS = "aws:kms/alias:Alias"
T_ROLE = "aws:iam/role:Role"
T_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
T_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
T_OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
T_LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
NOW_APPLIED = {T_SSE, T_LIFECYCLE, T_PAB, T_OWNERSHIP, T_KEY, T_ALIAS, T_ROLE, T_ROLE_POLICY, T_ATTACHMENT, T_OIDC}
UNDECLARED_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
# Not in moto here: networking, load balancers, add-ons, alarms (modelled from the declaration instead), topics, and
# the EKS access entries (who may read the cluster: the rehearsal's readiness view reads the world itself).
NOT_NEEDED = (
    "aws:ec2/",
    "aws:vpc/",
    "aws:lb/",
    "aws:eks/addon:",
    "aws:eks/accessEntry:",
    "aws:eks/accessPolicyAssociation:",
    "aws:cloudwatch/metricAlarm:",
    "aws:sns/",
)


@pytest.fixture(scope="module")
def fleet():
    return load_fleet("prod")


@pytest.fixture(scope="module")
def declared(fleet) -> list[dict]:
    return plan_declared(fleet)  # the global and regional programs under Pulumi mocks


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with Supervisor(tmp_path_factory.mktemp("moto-logs")) as sup:
        yield MotoServer(sup, port=free_port_block(1)).start()
    assert not sup.leftovers(), "processes left behind"


def apply(m: MotoServer, declared: list[dict], fleet: Any, **kw: Any) -> Applied:
    """As the World applies (its clients), plus `kw` (applied=, put_bucket_policies=, clients=)."""
    kw.setdefault("clients", m.client)
    return apply_declared(
        declared,
        m.client("route53"),
        lambda region: m.client("s3", region or "us-east-1"),
        default_zone_name=fleet.glob.zone.name,
        eks_for=lambda region: m.client("eks", region or "us-east-1"),
        **kw,
    )


@pytest.fixture(scope="module")
def applied(moto, declared, fleet) -> Applied:
    return apply(moto, declared, fleet, put_bucket_policies=True)


def of_type(declared: list[dict], type_: str) -> list[dict]:
    return [r for r in declared if r["type"] == type_]


def by_bucket(declared: list[dict], type_: str) -> dict[str, dict]:
    return {r["inputs"]["bucket"]: r["inputs"] for r in of_type(declared, type_)}


def key_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def resolved(text: str, ap: Applied) -> Any:
    """A declared policy document with the mocks' KMS key ARNs replaced by moto's, parsed."""
    for declared_id, arn in ap.keys.items():
        text = text.replace(f"key/{declared_id}", f"key/{key_id(arn)}")
    return json.loads(text)


# ---------------------------------------------------------------- S3
def test_artifact_buckets_hold_the_declared_configuration(moto, declared, applied, fleet):
    sse, lifecycle = by_bucket(declared, T_SSE), by_bucket(declared, T_LIFECYCLE)
    policies, pab, ownership = (
        by_bucket(declared, T_POLICY),
        by_bucket(declared, T_PAB),
        by_bucket(declared, T_OWNERSHIP),
    )
    buckets = {r["inputs"]["bucket"]: r["region"] for r in of_type(declared, "aws:s3/bucket:Bucket")}
    assert set(buckets.values()) == set(fleet.regions)
    for bucket, region in buckets.items():
        s3, kms = moto.client("s3", region), moto.client("kms", region)

        (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        (want,) = sse[bucket]["rules"]
        by_default = rule["ApplyServerSideEncryptionByDefault"]
        declared_key = want["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]
        assert by_default["SSEAlgorithm"] == "aws:kms" == want["applyServerSideEncryptionByDefault"]["sseAlgorithm"]
        # The declared key (the mocks' ARN) resolved to the key moto created for it, in the bucket's region.
        assert by_default["KMSMasterKeyID"] == applied.keys[key_id(declared_key)] != declared_key
        meta = kms.describe_key(KeyId=by_default["KMSMasterKeyID"])["KeyMetadata"]
        assert (meta["KeyState"], meta["Arn"].split(":")[3]) == ("Enabled", region)
        assert rule["BucketKeyEnabled"] is want["bucketKeyEnabled"] is True

        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == {k[:1].upper() + k[1:]: v for k, v in pab[bucket].items() if k != "bucket"}
        assert set(block.values()) == {True}

        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        assert policy == json.loads(policies[bucket]["policy"])
        assert any(
            st["Effect"] == "Deny"
            and st["Principal"] == "*"
            and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            and f"arn:aws:s3:::{bucket}/*" in st["Resource"]
            for st in policy["Statement"]
        )

        controls = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        assert controls == [{"ObjectOwnership": ownership[bucket]["rule"]["objectOwnership"]}]
        assert controls == [{"ObjectOwnership": "BucketOwnerEnforced"}]

        (lc,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        (want_lc,) = lifecycle[bucket]["rules"]
        assert lc["ID"] == want_lc["id"] and lc["Status"] == want_lc["status"] == "Enabled"
        assert (
            lc["NoncurrentVersionExpiration"]["NoncurrentDays"]
            == want_lc["noncurrentVersionExpiration"]["noncurrentDays"]
        )
        assert lc["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": want_lc["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        }


def test_replication_encrypts_replicas_with_the_destination_buckets_moto_key(moto, applied):
    sse_keys = {
        b: moto.client("s3", r).get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0][
            "ApplyServerSideEncryptionByDefault"
        ]["KMSMasterKeyID"]
        for b, r in applied.buckets.items()
    }
    assert len(applied.replication) == len(applied.buckets) == 3
    for src, config in applied.replication.items():
        stored = moto.client("s3", applied.buckets[src]).get_bucket_replication(Bucket=src)
        for rule in stored["ReplicationConfiguration"]["Rules"]:
            dest = rule["Destination"]["Bucket"].split(":::")[-1]
            assert rule["Destination"]["EncryptionConfiguration"]["ReplicaKmsKeyID"] == sse_keys[dest]
        assert config["Role"] in {r["Arn"] for r in moto.client("iam").list_roles()["Roles"]}


def test_objects_written_to_an_artifact_bucket_are_encrypted_with_its_key(tmp_path, declared, fleet, no_leftovers):
    """As the World applies (bucket policies put; moto_server evaluates them as S3 does for HTTPS clients), objects
    stay readable and get SSE-KMS with the bucket's key; a policy that denies reads still refuses them."""
    stack = fleet.stack_names["us-east-1"]
    regional = [r for r in declared if r["urn"].split("::")[0] == f"urn:pulumi:{stack}"]
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        m = MotoServer(sup, port=free_port_block(1)).start()
        ap = apply(m, regional, fleet, put_bucket_policies=True)
        assert ap.applied_types[T_POLICY] == 1 and T_POLICY not in ap.ignored
        ((bucket, region),) = ap.buckets.items()
        s3 = m.client("s3", region)
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        assert any(
            st["Effect"] == "Deny" and st["Condition"]["Bool"]["aws:SecureTransport"] in ("false", ["false"])
            for st in policy["Statement"]
        )
        (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        s3.put_object(Bucket=bucket, Key="ranker/1/model.onnx", Body=b"weights")
        head = s3.head_object(Bucket=bucket, Key="ranker/1/model.onnx")
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == (
            "aws:kms",
            rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"],
        )
        assert s3.get_object(Bucket=bucket, Key="ranker/1/model.onnx")["Body"].read() == b"weights"

        # A declared policy that denies reads outright (no transport condition) is enforced.
        deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({**policy, "Statement": [*policy["Statement"], deny]}))
        with pytest.raises(ClientError, match="403"):
            s3.get_object(Bucket=bucket, Key="ranker/1/model.onnx")


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli_reads_sse_kms_from_the_rehearsals_moto(moto, applied, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="rehearsal",
        AWS_SECRET_ACCESS_KEY="rehearsal",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    cli = ["aws", "--endpoint-url", moto.endpoint, "--output", "json"]
    for bucket, region in applied.buckets.items():
        out = subprocess.run(
            [*cli, "--region", region, "s3api", "get-bucket-encryption", "--bucket", bucket],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (rule,) = json.loads(out.stdout)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] in applied.keys.values()


# ---------------------------------------------------------------- KMS, IAM, logs
def test_kms_keys_and_aliases_as_declared(moto, declared, applied):
    keys = of_type(declared, T_KEY)
    assert len(keys) == len(applied.keys) == len({k["id"] for k in keys})
    for k in keys:
        arn, i = applied.keys[k["id"]], k["inputs"]
        kms = moto.client("kms", k["region"])
        meta = kms.describe_key(KeyId=arn)["KeyMetadata"]
        assert (meta["Description"], meta["KeyState"], meta["Arn"].split(":")[3]) == (
            i["description"],
            "Enabled",
            k["region"],
        )
        assert kms.get_key_rotation_status(KeyId=key_id(arn))["KeyRotationEnabled"] is bool(i["enableKeyRotation"])
        if i.get("policy"):
            stored = kms.get_key_policy(KeyId=key_id(arn), PolicyName="default")["Policy"]
            assert json.loads(stored) == resolved(i["policy"], applied)
        tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id(arn))["Tags"]}
        assert tags == i.get("tags", {})
        with pytest.raises(ClientError, match="NotFoundException"):
            kms.describe_key(KeyId=k["id"])  # the mocks' id is not moto's
    for a in of_type(declared, T_ALIAS):
        aliases = moto.client("kms", a["region"]).list_aliases()["Aliases"]
        (alias,) = [x for x in aliases if x["AliasName"] == a["inputs"]["name"]]
        assert alias["TargetKeyId"] == key_id(applied.keys[a["inputs"]["targetKeyId"]])


def test_iam_roles_policies_and_oidc_providers_as_declared(moto, declared, applied):
    iam = moto.client("iam")
    roles = of_type(declared, T_ROLE)
    assert sorted(r["RoleName"] for r in iam.list_roles()["Roles"]) == sorted(r["id"] for r in roles)
    attachments: dict[str, set[str]] = {}
    for a in of_type(declared, T_ATTACHMENT):
        attachments.setdefault(a["inputs"]["role"], set()).add(a["inputs"]["policyArn"])
    inline: dict[str, dict[str, str]] = {}
    for p in of_type(declared, T_ROLE_POLICY):
        inline.setdefault(p["inputs"]["role"], {})[p["id"].split(":", 1)[1]] = p["inputs"]["policy"]
    for r in roles:
        name, i = r["id"], r["inputs"]
        role = iam.get_role(RoleName=name)["Role"]
        assert role["Arn"] == f"arn:aws:iam::123456789012:role/{name}"  # as the mocks gave it: the same account
        assert role["AssumeRolePolicyDocument"] == json.loads(i["assumeRolePolicy"])
        assert role.get("Description", "") == i.get("description", "")
        attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
        assert attached == attachments.get(name, set())
        assert set(iam.list_role_policies(RoleName=name)["PolicyNames"]) == set(inline.get(name, {}))
        for pname, doc in inline.get(name, {}).items():
            stored = iam.get_role_policy(RoleName=name, PolicyName=pname)["PolicyDocument"]
            assert stored == resolved(doc, applied)
    assert attachments["cluster-control-plane-8b1dab2"] == {"arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"}
    # The replication role may decrypt and encrypt with every artifact key: moto's keys, not the mocks'.
    (artifacts,) = [p for p in of_type(declared, T_ROLE_POLICY) if p["name"] == "artifacts-policy"]
    stored = iam.get_role_policy(RoleName=artifacts["inputs"]["role"], PolicyName=artifacts["id"].split(":", 1)[1])
    kms_resources = {
        res
        for st in stored["PolicyDocument"]["Statement"]
        if st["Action"][0].startswith("kms:")
        for res in st["Resource"]
    }
    assert kms_resources and kms_resources <= set(applied.keys.values())

    providers = [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
    oidc = of_type(declared, T_OIDC)
    assert sorted(providers) == sorted(o["id"] for o in oidc)
    for o in oidc:
        got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=o["id"])
        assert got["ClientIDList"] == o["inputs"]["clientIdLists"]


def test_log_groups_and_cluster_encryption_as_declared(moto, declared, applied):
    for g in of_type(declared, T_LOG_GROUP):
        (got,) = moto.client("logs", g["region"]).describe_log_groups(logGroupNamePrefix=g["inputs"]["name"])[
            "logGroups"
        ]
        assert got["retentionInDays"] == g["inputs"]["retentionInDays"]
    for c in of_type(declared, "aws:eks/cluster:Cluster"):
        cluster = moto.client("eks", c["region"]).describe_cluster(name=c["inputs"]["name"])["cluster"]
        (enc,) = cluster["encryptionConfig"]
        assert enc["provider"]["keyArn"] == applied.keys[key_id(c["inputs"]["encryptionConfig"]["provider"]["keyArn"])]


# ---------------------------------------------------------------- what is applied, re-applying, defects
def test_applied_and_ignored_types(declared, applied):
    assert set(applied.applied_types) >= NOW_APPLIED
    assert not NOW_APPLIED & set(applied.ignored)
    # What stays ignored: the network, load balancers, EKS add-ons, alarms, SNS and Kubernetes objects.
    assert all(t.startswith(NOT_NEEDED) or t.startswith("kubernetes:") for t in applied.ignored), applied.ignored
    # Components, providers and stack references are not AWS objects: counted nowhere; everything else once.
    objects = [r for r in declared if r["custom"] and not r["type"].startswith("pulumi:")]
    assert sum(applied.applied_types.values()) + sum(applied.ignored.values()) == len(objects)
    assert applied.applied_types[T_KEY] == len(applied.keys) and applied.applied_types[T_SSE] == len(applied.buckets)


def snapshot(m: MotoServer, ap: Applied) -> dict[str, Any]:
    regions = sorted(set(ap.buckets.values()))
    iam = m.client("iam")
    return {
        "keys": {r: sorted(k["KeyId"] for k in m.client("kms", r).list_keys()["Keys"]) for r in regions},
        "aliases": {r: sorted(a["AliasName"] for a in m.client("kms", r).list_aliases()["Aliases"]) for r in regions},
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "attached": {
            r["RoleName"]: len(iam.list_attached_role_policies(RoleName=r["RoleName"])["AttachedPolicies"])
            for r in iam.list_roles()["Roles"]
        },
        "oidc": len(iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]),
        "logs": {r: len(m.client("logs", r).describe_log_groups()["logGroups"]) for r in regions},
        "zones": len(m.client("route53").list_hosted_zones()["HostedZones"]),
        "health_checks": len(m.client("route53").list_health_checks()["HealthChecks"]),
        "sse": {
            b: m.client("s3", r).get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]
            for b, r in ap.buckets.items()
        },
        "applied": (dict(ap.keys), dict(ap.applied_types), dict(ap.ignored), len(ap.records)),
    }


def test_a_second_apply_is_idempotent(moto, declared, applied, fleet):
    before = snapshot(moto, applied)
    again = apply(moto, declared, fleet, applied=applied, put_bucket_policies=True)
    assert again is applied
    assert snapshot(moto, applied) == before


def broken(declared: list[dict], type_: str, name: str, **inputs: Any) -> list[dict]:
    out = copy.deepcopy(declared)
    (r,) = [x for x in out if x["type"] == type_ and x["name"] == name and x["region"] == "us-east-1"]
    r["inputs"].update(inputs)
    return out


@pytest.mark.parametrize(
    ("type_", "name", "inputs", "reason"),
    [
        (T_POLICY, "artifacts-tls-only", {"policy": '{"Statement": [ not json'}, "policy document is not JSON"),
        (T_KEY, "artifacts-key", {"policy": "[]"}, "not a JSON object with a Statement"),
        (T_ROLE, "triton-role", {"assumeRolePolicy": '{"Version": "2012-10-17", "Statement": [{}]}'}, "Malformed"),
        (
            T_ROLE_POLICY,
            "triton-policy",
            {"policy": json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Action": "s3:*"}]})},
            "MalformedPolicyDocument",
        ),
        (
            T_ATTACHMENT,
            "cluster-nodes-ecr",
            {"policyArn": "arn:aws:iam::aws:policy/NoSuchPolicy"},
            "does not exist or is not attachable",
        ),
        (
            T_SSE,
            "artifacts-sse",
            {
                "rules": [
                    {
                        "applyServerSideEncryptionByDefault": {
                            "sseAlgorithm": "aws:kms",
                            "kmsMasterKeyId": UNDECLARED_KEY,
                        }
                    }
                ]
            },
            "is not declared by the applied plans",
        ),
        (
            T_LIFECYCLE,
            "artifacts-lifecycle",
            {"rules": [{"id": "x", "status": "Enabled", "expiration": {"days": "thirty"}}]},
            "refused by the AWS API",
        ),
    ],
)
def test_a_declared_value_aws_refuses_fails_the_apply_naming_the_resource(
    moto, declared, applied, fleet, type_, name, inputs, reason
):
    with pytest.raises(DeclaredError, match=f"^{type_} {name}: .*{reason}"):
        # As the World applies: bucket policies are still validated when they are not put.
        apply(moto, broken(declared, type_, name, **inputs), fleet, applied=copy.deepcopy(applied))


# ---------------------------------------------------------------- hand-made declarations: updates
def test_redeclared_keys_aliases_policies_and_providers_are_updated_in_place(tmp_path, no_leftovers):
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }

    def plan(rotation: bool, enabled: bool, target: str, action: str, clients: list[str]) -> list[dict]:
        d = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}
        return [
            {"type": T_KEY, "name": "k1", "id": "k1", "region": "us-west-2", "inputs": {"enableKeyRotation": rotation}},
            {"type": T_KEY, "name": "k2", "id": "k2", "region": "us-west-2", "inputs": {"isEnabled": enabled}},
            {"type": T_ALIAS, "name": "a", "region": "us-west-2", "inputs": {"name": "alias/a", "targetKeyId": target}},
            {"type": T_ROLE, "name": "r", "id": "r-1", "inputs": {"assumeRolePolicy": json.dumps(trust)}},
            {"type": "aws:iam/policy:Policy", "name": "p", "id": "p-1", "inputs": {"policy": json.dumps(d)}},
            {
                "type": T_ATTACHMENT,
                "name": "r-p",
                "inputs": {"role": "r-1", "policyArn": "arn:aws:iam::123456789012:policy/p-1"},
            },
            {"type": T_OIDC, "name": "o", "inputs": {"url": "https://issuer.example/id/1", "clientIdLists": clients}},
        ]

    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        m = MotoServer(sup, port=free_port_block(1)).start()

        def s3(region: str | None) -> Any:
            return m.client("s3", region or "us-east-1")

        # No `clients`: KMS, IAM and Logs clients are made on route53's endpoint.
        ap = apply_declared(plan(True, True, "k1", "s3:GetObject", ["a"]), m.client("route53"), s3)
        ap = apply_declared(plan(False, False, "k2", "s3:PutObject", ["a", "b"]), m.client("route53"), s3, applied=ap)

        kms, iam = m.client("kms", "us-west-2"), m.client("iam")
        assert len(kms.list_keys()["Keys"]) == 2
        assert kms.get_key_rotation_status(KeyId=key_id(ap.keys["k1"]))["KeyRotationEnabled"] is False
        assert kms.describe_key(KeyId=ap.keys["k2"])["KeyMetadata"]["KeyState"] == "Disabled"
        (alias,) = [a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == "alias/a"]
        assert alias["TargetKeyId"] == key_id(ap.keys["k2"])
        arn = "arn:aws:iam::123456789012:policy/p-1"
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        assert len(versions) == 2
        default = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        stored = iam.get_policy_version(PolicyArn=arn, VersionId=default)["PolicyVersion"]["Document"]
        assert stored["Statement"][0]["Action"] == "s3:PutObject"
        assert [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="r-1")["AttachedPolicies"]] == [arn]
        (provider,) = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
        got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider["Arn"])
        assert sorted(got["ClientIDList"]) == ["a", "b"]
        assert ap.ignored == {} and sum(ap.applied_types.values()) == 7
