"""`python -m moto.server` with two fixes, as the rehearsal runs it: `python -m drills.rehearsal.moto_server ARGS`.

1. Memory (ListObjectVersions):

moto 5.2.5's ListObjectVersions deep-copies every version of every key in the bucket on each call (bytes included:
FakeKey's __getstate__/__setstate__ copy the value into a new buffer), only to set `is_latest` on the copies, and
moto's BaseModel.__new__ appends every instance it makes, copies included, to a class-level list that is never
emptied. Every listing therefore keeps a full copy of the bucket: measured on this machine, 69 MB a call on a bucket
of 45 objects of 800 KB. The rehearsal's replication model lists every bucket every 0.2 s, so a 5-minute release
rehearsal took moto_server past 23 GB and the kernel's OOM killer stopped it mid-drill. Here the copies are views
(the key's attributes read through, `is_latest` their own), untracked and sharing nothing they could close.

2. Bucket policies on object requests: moto evaluates a policy without the request's context and counts a condition
it cannot evaluate as met, so the stacks' TLS-only Deny would refuse every object request. Here, before moto
evaluates a bucket policy (the list is `drills.rehearsal.moto.POLICY_SUBSTITUTIONS`, in every report):
- statements that apply only to insecure transport are left out (the plain-HTTP endpoint stands for HTTPS clients);
- conditions on `aws:PrincipalArn` are evaluated for the one caller of the rehearsal, $RECO_DR_REHEARSAL_PRINCIPAL
  (the env's deploy role: the release tooling's identity): a statement whose principal condition does not hold is
  left out, one whose condition holds is evaluated without it;
- statements conditioned on a request header (`s3:if-none-match`: the create-only rule) are left out; clients send
  the header (model_build publish, the engine Jobs), and the statement is asserted on the declared policy instead.
Every other statement is evaluated as moto does, so a declared policy that denies the serving or replication
principals, or the release tooling's pointer writes, still fails the rehearsal.

Each patch refuses to run, loudly, if moto's code is no longer the one it was written for.
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
import types
from typing import Any


def _patch_list_object_versions() -> None:
    from moto.s3 import models

    src = inspect.getsource(models)
    if src.count("deepcopy(") != 1 or "copy.deepcopy(version_key)" not in inspect.getsource(
        models.S3Backend.list_object_versions
    ):
        raise SystemExit(
            "drills.rehearsal.moto_server: moto.s3.models changed (expected its one copy.deepcopy in "
            "list_object_versions); re-check the ListObjectVersions memory fix against this moto version"
        )

    class VersionView:
        """A version as ListObjectVersions renders it: attributes read from the key; what the listing sets
        stays here."""

        def __init__(self, key: Any):
            self.__dict__["_key"] = key

        @property  # type: ignore[misc]  # a property standing in for __class__, which mypy types as a plain attribute
        def __class__(self) -> type:  # the listing tells versions from delete markers with isinstance
            return models.FakeKey

        def __getattr__(self, name: str) -> Any:
            return getattr(self.__dict__["_key"], name)

        def __setattr__(self, name: str, value: Any) -> None:
            self.__dict__[name] = value

    def view(versions: list[Any], memo: Any = None) -> list[Any]:
        # Delete markers own no bytes: copied as before.
        return [VersionView(v) if isinstance(v, models.FakeKey) else copy.deepcopy(v) for v in versions]

    shallow = types.ModuleType("copy")
    shallow.__dict__.update(copy.__dict__)
    shallow.deepcopy = view  # type: ignore[attr-defined]  # models' only deepcopy is list_object_versions' (checked above)
    models.copy = shallow


PRINCIPAL_ENV = "RECO_DR_REHEARSAL_PRINCIPAL"
_ARN_TESTS = {
    "ArnEquals": lambda have, want: have in want,
    "ArnNotEquals": lambda have, want: have not in want,
    "StringEquals": lambda have, want: have in want,
    "StringNotEquals": lambda have, want: have not in want,
}


def evaluable(statement: dict, principal: str | None) -> dict | None:
    """`statement` as moto can evaluate it for `principal` (see the module's docstring, fix 2), or None where it
    does not apply here. Without a principal, principal conditions stay for moto (which counts them as met)."""
    cond = statement.get("Condition") or {}
    if cond.get("Bool", {}).get("aws:SecureTransport") in ("false", ["false"]):
        return None
    if any(k.startswith("s3:if-") for block in cond.values() for k in block):
        return None
    if principal is None:
        return statement
    kept: dict = {}
    for op, block in cond.items():
        rest = {}
        for key, want in block.items():
            if key == "aws:PrincipalArn" and op in _ARN_TESTS:
                if not _ARN_TESTS[op](principal, want if isinstance(want, list) else [want]):
                    return None
            else:
                rest[key] = want
        if rest:
            kept[op] = rest
    return {k: v for k, v in statement.items() if k != "Condition"} | ({"Condition": kept} if kept else {})


def _patch_bucket_policy_transport() -> None:
    """moto evaluates a bucket policy on object requests without the request's context, and a condition it cannot
    evaluate (every operator but StringEquals) counts as met: the programs' TLS-only statement (Deny s3:* where
    aws:SecureTransport is false) would refuse every object request. The rehearsal's clients stand for production's
    HTTPS clients (moto's endpoint is plain HTTP only as a transport shortcut), so statements that apply only to
    insecure transport are left out of the evaluation; every other statement is evaluated as moto does."""
    import json

    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3 import models

    if "IAMPolicy(self.policy.decode())" not in inspect.getsource(models.FakeBucket.get_permission):
        raise SystemExit(
            "drills.rehearsal.moto_server: moto.s3.models.FakeBucket.get_permission changed; re-check the "
            "bucket policy transport fix against this moto version"
        )

    principal = os.environ.get(PRINCIPAL_ENV)

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        doc = json.loads(self.policy)
        statements = doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]
        doc["Statement"] = [t for s in statements if (t := evaluable(s, principal)) is not None]
        return IAMPolicy(json.dumps(doc)).is_action_permitted(action, resource)

    models.FakeBucket.get_permission = get_permission  # type: ignore[method-assign]  # the fix above


def main(argv: list[str]) -> None:
    _patch_list_object_versions()
    _patch_bucket_policy_transport()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
