"""The rehearsal's moto_server (drills.rehearsal.moto_server): ListObjectVersions answers as moto does, without
keeping a copy of the bucket per call (moto 5.2.5 does: the rehearsal's replication model, which lists every bucket
every 0.2 s, took it past 23 GB and into the OOM killer in a 5-minute release rehearsal)."""

from __future__ import annotations

import os

from drills.rehearsal.moto import MotoServer
from drills.rehearsal.procs import Supervisor, free_port_block, rss_kib


def test_list_object_versions_answers_like_moto_and_keeps_no_copies(tmp_path, no_leftovers):
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        m = MotoServer(sup, port=free_port_block(1)).start()
        s3 = m.client("s3", "us-east-1")
        s3.create_bucket(Bucket="artifacts-x")
        s3.put_bucket_versioning(Bucket="artifacts-x", VersioningConfiguration={"Status": "Enabled"})
        first = s3.put_object(Bucket="artifacts-x", Key="m/a", Body=b"one")["VersionId"]
        second = s3.put_object(Bucket="artifacts-x", Key="m/a", Body=b"two!")["VersionId"]
        for i in range(20):
            s3.put_object(Bucket="artifacts-x", Key=f"m/big-{i}", Body=os.urandom(1_000_000))
        s3.put_object(Bucket="artifacts-x", Key="m/gone", Body=b"x")
        marker = s3.delete_object(Bucket="artifacts-x", Key="m/gone")["VersionId"]

        r = s3.list_object_versions(Bucket="artifacts-x", Prefix="m/")
        a = [(v["VersionId"], v["IsLatest"], v["Size"]) for v in r["Versions"] if v["Key"] == "m/a"]
        assert a == [(second, True, 4), (first, False, 3)]
        assert len([v for v in r["Versions"] if v["Key"].startswith("m/big-")]) == 20
        assert [(d["Key"], d["VersionId"], d["IsLatest"]) for d in r["DeleteMarkers"]] == [("m/gone", marker, True)]
        # The listing changed nothing: the older version still reads back its own bytes.
        assert s3.get_object(Bucket="artifacts-x", Key="m/a", VersionId=first)["Body"].read() == b"one"

        assert m.child is not None
        before = rss_kib(m.child.group())
        for _ in range(40):  # 40 listings of a 20 MB bucket: unpatched moto keeps ~800 MB of copies
            s3.list_object_versions(Bucket="artifacts-x")
        grown_mib = (rss_kib(m.child.group()) - before) / 1024
        assert grown_mib < 200, f"moto_server grew {grown_mib:.0f} MiB over 40 listings"
        assert s3.get_object(Bucket="artifacts-x", Key="m/big-3")["ContentLength"] == 1_000_000


def test_bucket_policy_statements_as_the_rehearsal_evaluates_them():
    """The declared artifact bucket policy as moto sees it here (moto.POLICY_SUBSTITUTIONS): TLS-only and header
    conditions left out; principal conditions decided for the one caller, the env's deploy role."""
    import json

    from drills.rehearsal.moto_server import evaluable
    from infra.components.artifacts import bucket_policy

    bg, deploy, other = (f"arn:aws:iam::1:role/{n}" for n in ("bg", "deploy", "other"))
    doc = json.loads(bucket_policy("arn:aws:s3:::b", "ranker", bg, deploy))
    by_sid = {s["Sid"]: s for s in doc["Statement"]}

    def sids(principal):
        return sorted(t["Sid"] for s in doc["Statement"] if (t := evaluable(s, principal)) is not None)

    # The release tooling: no overwrite rule (a header condition), deletes of versions denied, pointers its own.
    assert sids(deploy) == ["DenyDeletesOfPublishedVersions"]
    deletes = evaluable(by_sid["DenyDeletesOfPublishedVersions"], deploy)
    assert deletes is not None and "Condition" not in deletes
    # Anyone else may not move a pointer either; the break-glass role is denied nothing.
    assert sids(other) == ["DenyDeletesOfPublishedVersions", "PointersOnlyByReleaseTooling"]
    assert sids(bg) == []
    # Without a principal, moto decides (it counts the condition as met: everything it can match is denied).
    assert sids(None) == ["DenyDeletesOfPublishedVersions", "PointersOnlyByReleaseTooling"]
    assert evaluable(by_sid["PointersOnlyByReleaseTooling"], None) == by_sid["PointersOnlyByReleaseTooling"]
