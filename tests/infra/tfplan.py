"""The AWS resources a Pulumi program declared (under infra.mocks) as a Terraform plan JSON, for checkov.

checkov has no Pulumi framework, but Pulumi's AWS provider is generated from Terraform's: each
`aws:<module>/<camelName>:<Name>` resource is the Terraform `aws_<module>_<snake_name>` (no module for ec2; a `V2`
suffix dropped; TYPE_EXCEPTIONS for the rest) with the same attributes in camelCase. `terraform_plan(resources)`
writes only what checkov's `terraform_plan` framework reads (checkov/terraform/plan_parser.py):
`planned_values.root_module.resources[]` (`address`, `mode`, `type`, `name`, `values`), `resource_changes[]` (all
"create") and `configuration.root_module.resources[].expressions` (references only, below); no providers,
variables or outputs.

Values: keys camelCase -> snake_case, recursively, but for the keys of map attributes (MAP_ATTRIBUTES: tags,
labels, dimensions); a nested object becomes a block (a list of one object, as in a plan; checkov's parser reads a
bare object the same way), lists of objects stay lists; Pulumi's plural names of repeated blocks go back to
Terraform's singular ones per type (RENAMES: `rules` -> `rule`, `defaultActions` -> `default_action`, ...; a
missing rename hides the block from the checks that read it); JSON documents (policies) stay strings, which
checkov parses itself for the attributes it knows. Only *inputs* are converted: an attribute the program leaves
to the provider's default is absent, as in `values` of a real plan for optional arguments.

References, and what checkov does with them: a real plan connects resources only through
`configuration...expressions[attr].references`. checkov (3.3) reads those only where the attribute's value is
unknown (absent from `values`): it then puts the reference string (`aws_s3_bucket.b.id`) in the attribute, and its
graph draws an edge from that string; a known value (a bucket name) draws none. So a top-level attribute whose value
is the `id` or `arn` of another resource of the plan (a configuration's bucket, a policy's role, a listener's load
balancer, an alias's key, a record's zone and health check, a WAF association's ACL and ALB, ...) is written as a
fresh `terraform plan` writes it when both are created together: left out of `values`, `after_unknown`, and
referenced in `expressions`. Seen on the prod-use1 + prod-global plan: with the references, the connection checks
pass (CKV_AWS_21 versioning, CKV_AWS_145 SSE-KMS, CKV2_AWS_6 public access block, CKV2_AWS_61 lifecycle,
CKV_AWS_144 replication, CKV2_AWS_5 security group attached, CKV2_AWS_19 EIPs attached); with plain values in
their place, all of them fail on resources that do have the control. Values nested in blocks are not linked (a
Route 53 alias's target DNS name, an SSE rule's key ARN), and nor is anything in another stack not in the plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from infra.mocks import ResourceRecord

FORMAT_VERSION = "1.2"
TERRAFORM_VERSION = "1.9.0"
PROVIDER = "registry.terraform.io/hashicorp/aws"

# Pulumi types whose Terraform name the general rule (`aws_<module>_<snake_name>`, no module for ec2) misses.
TYPE_EXCEPTIONS = {
    "aws:lb/loadBalancer:LoadBalancer": "aws_lb",
    "aws:alb/loadBalancer:LoadBalancer": "aws_lb",
    "aws:s3/bucketReplicationConfig:BucketReplicationConfig": "aws_s3_bucket_replication_configuration",
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": "aws_iam_openid_connect_provider",
}
NO_MODULE_PREFIX = {"ec2"}  # aws:ec2/securityGroup -> aws_security_group, aws:ec2/launchTemplate -> ...

# Attributes whose value is a map: their keys are the user's (tag names, label names), not attribute names.
MAP_ATTRIBUTES = {"tags", "tags_all", "labels", "dimensions"}

# Terraform's singular names of repeated blocks that Pulumi pluralises, per Terraform type (any depth).
_S3_RULE = {"rules": "rule"}
RENAMES: dict[str, dict[str, str]] = {
    "aws_s3_bucket_server_side_encryption_configuration": _S3_RULE,
    "aws_s3_bucket_lifecycle_configuration": _S3_RULE,
    "aws_s3_bucket_replication_configuration": _S3_RULE,
    "aws_lb": {"subnetMappings": "subnet_mapping"},
    "aws_lb_listener": {"defaultActions": "default_action", "targetGroups": "target_group"},
    "aws_lb_listener_rule": {"actions": "action", "conditions": "condition", "targetGroups": "target_group"},
    "aws_cloudwatch_metric_alarm": {"metricQueries": "metric_query"},
    "aws_route53_record": {"aliases": "alias", "weightedRoutingPolicies": "weighted_routing_policy"},
    "aws_eks_node_group": {"taints": "taint"},
    "aws_iam_openid_connect_provider": {"clientIdLists": "client_id_list"},
    "aws_wafv2_web_acl": {
        "rules": "rule",
        "ruleActionOverrides": "rule_action_override",
        "excludedRules": "excluded_rule",
    },
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake(name: str) -> str:
    """camelCase -> snake_case: `cidrIpv4` -> `cidr_ipv4`, `enableKeyRotation` -> `enable_key_rotation`."""
    return _CAMEL.sub("_", name).lower()


def tf_type(pulumi_type: str) -> str:
    """`aws:s3/bucketVersioning:BucketVersioning` -> `aws_s3_bucket_versioning` (a `V2` suffix is dropped)."""
    if pulumi_type in TYPE_EXCEPTIONS:
        return TYPE_EXCEPTIONS[pulumi_type]
    provider, module_name, _ = pulumi_type.split(":")
    if provider != "aws":
        raise ValueError(f"not an AWS resource type: {pulumi_type}")
    module, name = module_name.split("/")
    name = snake(name.removesuffix("V2"))
    return f"aws_{name}" if module in NO_MODULE_PREFIX else f"aws_{module}_{name}"


def tf_name(pulumi_name: str) -> str:
    """A Terraform resource name (letters, digits, underscores) for a Pulumi logical name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", pulumi_name)


def tf_values(resource_type: str, value: Any) -> Any:
    """Pulumi inputs as a Terraform plan's `values` of `resource_type` (see the module docstring)."""
    renames = RENAMES.get(resource_type, {})

    def convert(v: Any) -> Any:
        if isinstance(v, dict):
            out: dict[str, Any] = {}
            for k, x in v.items():
                key = renames.get(k) or snake(k)
                if key in MAP_ATTRIBUTES and isinstance(x, dict):
                    out[key] = dict(x)
                elif isinstance(x, dict):
                    out[key] = [convert(x)]  # a nested block: a list of one object in a plan
                else:
                    out[key] = convert(x)
            return out
        if isinstance(v, list):
            return [convert(x) for x in v]
        return v

    return convert(value)


def terraform_plan(resources: Iterable[ResourceRecord]) -> dict:
    """The plan JSON checkov's terraform_plan framework scans, for the AWS resources among `resources` (custom
    `aws:` resources; providers, components and Kubernetes objects are left out). Resources of several stacks may
    be given together, so that references between them connect; two that would share an address raise."""
    aws = [r for r in resources if r.custom and r.type.startswith("aws:")]
    addresses: dict[str, str] = {}  # Pulumi URN -> Terraform address
    # An id or ARN of a resource of the plan -> its reference "<address>.<id|arn>". A value two resources share
    # (S3 configurations take their bucket's name as id) goes to the first declared: a resource that takes
    # another's id is declared after it.
    refs: dict[str, str] = {}
    for r in aws:
        address = f"{tf_type(r.type)}.{tf_name(r.name)}"
        if address in addresses.values():
            raise ValueError(f"two resources would have the Terraform address {address}")
        addresses[r.urn] = address
        for attr, v in (("arn", r.state.get("arn")), ("id", r.state.get("id") or r.id)):
            if isinstance(v, str) and v:
                refs.setdefault(v, f"{address}.{attr}")

    planned, changes, configuration = [], [], []
    for r in aws:
        address, rtype = addresses[r.urn], tf_type(r.type)
        values = tf_values(rtype, r.inputs)
        expressions: dict[str, Any] = {}
        for key, v in list(values.items()):
            targets = [refs[x] for x in (v if isinstance(v, list) else [v]) if isinstance(x, str) and x in refs]
            targets = [t for t in targets if not t.startswith(address + ".")]  # a bucket's own name is no link
            if targets:
                # Unknown until the resources it names are created (a list with one such element, all of it).
                del values[key]
                expressions[key] = {"references": [x for t in targets for x in (t, t.rsplit(".", 1)[0])]}
        name = tf_name(r.name)
        planned.append({"address": address, "mode": "managed", "type": rtype, "name": name, "values": values})
        changes.append(
            {
                "address": address,
                "mode": "managed",
                "type": rtype,
                "name": name,
                "provider_name": PROVIDER,
                "change": {
                    "actions": ["create"],
                    "before": None,
                    "after": values,
                    "after_unknown": dict.fromkeys(expressions, True),
                },
            }
        )
        configuration.append(
            {
                "address": address,
                "mode": "managed",
                "type": rtype,
                "name": name,
                "provider_config_key": "aws",
                "expressions": expressions,
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "terraform_version": TERRAFORM_VERSION,
        "planned_values": {"root_module": {"resources": planned}},
        "resource_changes": changes,
        "configuration": {"root_module": {"resources": configuration}},
    }
