"""`aws` for the declared fetch-model script: the two AWS CLI commands it uses, against the rehearsal's moto_server.

The rehearsal runs the pods' declared fetch script (infra.components.triton.FETCH_SCRIPT) with /bin/sh, as the
init container does, and puts this shim first on its PATH as `aws` (one substitution, listed in every report:
drills.rehearsal.pod.SUBSTITUTIONS). It accepts exactly the options the script may use and refuses anything else
the way the CLI does (exit 252, "Unknown options"), so a defect in the declared command fails the rehearsal:
- `aws s3 sync [--only-show-errors] [--exact-timestamps] s3://BUCKET/PREFIX DEST`
- `aws s3api get-object --bucket B --key K [--version-id V] OUTFILE`: a missing key prints the CLI's NoSuchKey
  error and exits 254 (the CLI's status for an error the service returned).
The endpoint comes from $RECO_DR_MOTO_ENDPOINT and the region from $AWS_DEFAULT_REGION; clients use the
rehearsal's dummy credentials (drills.rehearsal.moto.client), never a profile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from drills.rehearsal.moto import client

ENDPOINT_ENV = "RECO_DR_MOTO_ENDPOINT"
USAGE, SERVICE_ERROR = 252, 254


class Usage(Exception):
    pass


def _options(args: list[str], flags: set[str], valued: set[str]) -> tuple[dict[str, str | bool], list[str]]:
    opts: dict[str, str | bool] = {}
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a in flags:
            opts[a] = True
        elif a in valued:
            v = next(it, None)
            if v is None:
                raise Usage(f"argument {a}: expected one argument")
            opts[a] = v
        elif a.startswith("--"):
            raise Usage(f"Unknown options: {a}")
        else:
            rest.append(a)
    return opts, rest


def _s3():
    endpoint = os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        raise Usage(f"${ENDPOINT_ENV} is not set: the rehearsal's aws shim talks only to its moto_server")
    return client("s3", endpoint, os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def sync(args: list[str]) -> int:
    _opts, rest = _options(args, {"--only-show-errors", "--exact-timestamps"}, set())
    if len(rest) != 2 or not rest[0].startswith("s3://"):
        raise Usage("usage: aws s3 sync s3://BUCKET/PREFIX DEST")
    bucket, _, prefix = rest[0][len("s3://") :].partition("/")
    dest, s3 = Path(rest[1]), _s3()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) :].lstrip("/")
            if not rel or ".." in Path(rel).parts:
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return 0


def get_object(args: list[str]) -> int:
    opts, rest = _options(args, set(), {"--bucket", "--key", "--version-id"})
    if "--bucket" not in opts or "--key" not in opts or len(rest) != 1:
        raise Usage("usage: aws s3api get-object --bucket B --key K [--version-id V] OUTFILE")
    kw = {"Bucket": str(opts["--bucket"]), "Key": str(opts["--key"])}
    if "--version-id" in opts:
        kw["VersionId"] = str(opts["--version-id"])
    try:
        body = _s3().get_object(**kw)["Body"].read()
    except ClientError as e:
        err = e.response.get("Error", {})
        print(
            f"An error occurred ({err.get('Code')}) when calling the GetObject operation: {err.get('Message')}",
            file=sys.stderr,
        )
        return SERVICE_ERROR
    out = Path(rest[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
    return 0


COMMANDS = {("s3", "sync"): sync, ("s3api", "get-object"): get_object}


def main(argv: list[str]) -> int:
    cmd = COMMANDS.get((argv[0], argv[1])) if len(argv) >= 2 else None
    try:
        if cmd is None:
            raise Usage(f"the rehearsal's aws shim has no `aws {' '.join(argv[:2])}` (only {sorted(COMMANDS)})")
        return cmd(argv[2:])
    except Usage as e:
        print(f"aws: error: {e}", file=sys.stderr)
        return USAGE


def install(bin_dir: Path) -> Path:
    """Write `bin_dir/aws`, running this module with this interpreter; returns bin_dir (to put first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "aws"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m drills.rehearsal.aws_shim "$@"\n')
    exe.chmod(0o755)
    return bin_dir


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
