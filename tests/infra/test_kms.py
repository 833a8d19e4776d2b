"""The regional stack's KMS keys: each with an explicit policy, and the log groups encrypted with the region's log
key, usable by CloudWatch Logs for this account's log groups only (infra/components/kms.py)."""

from __future__ import annotations

import json

from infra.components.kms import account_key_policy, logs_key_policy


def test_the_account_statement_is_the_default_policy_made_explicit():
    (st,) = json.loads(account_key_policy("123456789012"))["Statement"]
    assert st["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"} and st["Action"] == "kms:*"


def test_cloudwatch_logs_of_the_region_may_use_the_logs_key_for_this_accounts_log_groups_only():
    account, logs = json.loads(logs_key_policy("123456789012", "eu-west-1"))["Statement"]
    assert account["Sid"] == "AccountIamDecides"
    assert logs["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert logs["Condition"] == {
        "ArnLike": {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:eu-west-1:123456789012:log-group:*"}
    }
    assert not any(a in logs["Action"] for a in ("kms:*", "kms:CreateGrant", "kms:PutKeyPolicy"))


def test_every_key_has_a_policy_and_every_log_group_the_logs_key(regional):
    _stack, plan, cfg = regional
    keys = plan.of_type("aws:kms/key:Key")
    assert keys and all(json.loads(k.inputs["policy"])["Statement"] for k in keys)
    logs_key = plan.one("aws:kms/key:Key", "logs-key")
    assert "logs." + cfg.region in logs_key.inputs["policy"]
    groups = plan.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert len(groups) == 2 and all(g.inputs["kmsKeyId"] == logs_key.state["arn"] for g in groups)
