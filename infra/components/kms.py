"""The region's KMS key policies, and the key its CloudWatch log groups are encrypted with.

Every customer-managed key of a regional stack carries an explicit policy instead of the implicit default, so who
may use it is written in the code: `account_key_policy` is the default one made explicit (the account's IAM
policies decide, as for any AWS resource; the key never becomes unusable because no statement names its admin),
and the logs key adds CloudWatch Logs of this region, for this account's log groups only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


def _account_statement(account_id: str) -> dict:
    return {
        "Sid": "AccountIamDecides",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }


def account_key_policy(account_id: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [_account_statement(account_id)]}, sort_keys=True)


def rotating_key(
    resource_name: str,
    description: str,
    policy: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
    tags: dict[str, str] | None = None,
) -> aws.kms.Key:
    """A customer-managed key as every stack declares one: yearly rotation, a 30-day deletion window (time to
    notice a mistaken delete), and an explicit policy."""
    return aws.kms.Key(
        resource_name,
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=30,
        policy=policy,
        tags=tags,
        opts=opts,
    )


def logs_key_policy(account_id: str, region: str) -> str:
    """The account's statement, and CloudWatch Logs in `region` encrypting and decrypting for this account's log
    groups only (the encryption context CloudWatch Logs sends names the log group)."""
    logs = {
        "Sid": "CloudWatchLogsOfThisAccount",
        "Effect": "Allow",
        "Principal": {"Service": f"logs.{region}.amazonaws.com"},
        "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
        "Resource": "*",
        "Condition": {
            "ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{region}:{account_id}:log-group:*"}
        },
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [_account_statement(account_id), logs]}, sort_keys=True)


@dataclass
class LogsKeyArgs:
    name: str  # the cluster name, in the description and alias
    account_id: pulumi.Input[str]
    region: str


class LogsKey(pulumi.ComponentResource):
    """The customer-managed key of the region's log groups (EKS control plane, VPC flow logs)."""

    arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: LogsKeyArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:regional:LogsKey", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        self.key = rotating_key(
            f"{name}-key",
            f"CloudWatch Logs encryption for {args.name}",
            pulumi.Output.from_input(args.account_id).apply(lambda a: logs_key_policy(a, args.region)),
            o,
        )
        aws.kms.Alias(f"{name}-alias", name=f"alias/{args.name}-logs", target_key_id=self.key.key_id, opts=o)
        self.arn = self.key.arn
        self.register_outputs({"arn": self.arn})
