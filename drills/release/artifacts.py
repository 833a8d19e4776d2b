"""A published model version as it is in a region's bucket: verified, pinned, restored.

- `verify_in_bucket(store, region, model, version, signer, pinned)`: download the immutable prefix
  `<model>/<version>/` through the S3 adapter and run model_build's own verification on it (every file's sha256
  and size against the manifest, missing and unexpected files, ONNX and config.pbtxt signatures, engine records),
  the manifest digest against the stack's pin and the release signature against the stack's signer, then
  `engines_available`. The same check a publish ran before upload, now on what a pod would load.
- `pin(...)`: the S3 version id of every file of a verified version: the exact bytes a last-known-good pointer
  refers to. The bucket is versioned and model_build publishes create-only (If-None-Match: *), so those
  version ids keep their bytes: a later overwrite adds a version, it cannot change the pinned one.
- fetch pins (`pins_text`, `write_pins`, `read_pins`): a restore points the region's pods at the pointer's S3
  version ids (`infra.names.pins_key`, read by the pods' fetch-model script) instead of copying the good bytes over
  the published key, which the bucket policy refuses to everyone but the break-glass role. The altered object
  stays the key's current version, as evidence; pods, verification and the hashes below all read what a pod's
  fetch gets (`fetched_hashes`): the pinned version where the pins cover the version, else the current object.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.names import lkg_key, pins_key
from model_build.manifest import MANIFEST, SIGNATURE, Manifest, engines_available, load_manifest, verify
from model_build.signing import Signer, verify_signature


def prefix(model: str, version: str) -> str:
    return f"{model}/{version}/"


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@dataclass
class BucketVerification:
    region: str
    model: str
    version: str
    present: bool  # a manifest exists under the prefix (the version is published in this region)
    problems: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None
    manifest: Manifest | None = None  # as verified (None: absent or unreadable)
    files: dict[str, dict] = field(default_factory=dict)  # path -> {sha256, size} as found in the bucket
    engines: dict[str, str] = field(default_factory=dict)  # cc -> built | added-by-job | onnx-fallback | missing
    pinned: dict[str, str] = field(default_factory=dict)  # path -> S3 version id a restore's fetch pins name

    @property
    def ok(self) -> bool:
        return self.present and not self.problems

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("manifest", None)  # large; the journal keeps its hash
        d["ok"] = self.ok
        return d


def verify_in_bucket(
    store: Any,
    region: str,
    model: str,
    version: str,
    signer: Signer | None,
    pinned: str | None,
    workdir: Path | None = None,
) -> BucketVerification:
    """Download `<model>/<version>/` from the region's bucket into a temporary directory, as a pod's fetch does
    (at the pinned S3 versions where a restore pinned this version), and verify it: the files
    against the manifest, the manifest's sha256 against `pinned` (the stack config's `model.digests[version]`), and
    the release signature against `signer` (the stack config's `model.signer`). A version no stack pins, or with
    no signer to check, does not verify: nothing unpinned or unsigned may serve."""
    out = BucketVerification(region=region, model=model, version=version, present=False)
    pre = prefix(model, version)
    keys = store.list_keys(region, pre)
    if pre + MANIFEST not in keys:
        out.problems.append(
            f"{pre}{MANIFEST} is not in {region}'s bucket: {model} {version} is not published there "
            "(or its publish did not finish: the manifest is uploaded last)"
        )
        return out
    out.present = True
    out.pinned = pinned_versions(store, region, model, version)
    tmp = Path(tempfile.mkdtemp(prefix="release-verify-", dir=workdir))
    try:
        for key in keys:
            rel = key[len(pre) :]
            if not rel or rel.endswith("/"):
                continue
            body = store.get_object(region, key, out.pinned.get(rel))
            if body is None:  # listed, then gone: a concurrent delete
                out.problems.append(f"{rel}: listed but could not be read")
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(body)
            out.files[rel] = {"sha256": sha256(body), "size": len(body)}
        out.manifest_sha256 = out.files.get(MANIFEST, {}).get("sha256")
        if pinned is None:
            out.problems.append(
                f"{MANIFEST}: {model} {version} has no pinned digest in {region}'s stack config (model.digests)"
            )
        elif out.manifest_sha256 != pinned:
            out.problems.append(
                f"{MANIFEST}: sha256 {out.manifest_sha256} is not the digest {region}'s stack config pins for "
                f"{version} ({pinned}): a manifest rewritten with its model"
            )
        out.problems += verify(tmp)
        out.problems += (
            verify_signature(tmp, signer)
            if signer is not None
            else [f"{SIGNATURE}: {region}'s stack config names no signer (model.signer), so nothing can verify"]
        )
        try:
            m = load_manifest(tmp)
        except Exception as e:  # noqa: BLE001 - an unreadable manifest is one more problem, already in verify()'s list
            out.problems.append(f"{MANIFEST}: cannot be loaded: {type(e).__name__}")
            return out
        out.manifest = m

        def read(rel: str) -> bytes | None:
            p = tmp / rel
            return p.read_bytes() if p.is_file() else None

        out.engines = engines_available(m, read)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------- last-known-good pointer
def pin(store: Any, region: str, model: str, version: str, files: dict[str, dict]) -> dict[str, dict]:
    """{path: {sha256, size, version_id}} for every file of a verified version (HEAD gives the version ids)."""
    pre = prefix(model, version)
    out = {}
    for rel, f in sorted(files.items()):
        head = store.head(region, pre + rel) or {}
        out[rel] = {"sha256": f["sha256"], "size": f["size"], "version_id": head.get("version_id")}
    return out


def pointer(
    region: str,
    model: str,
    version: str,
    manifest_sha256: str,
    files: dict[str, dict],
    t: float,
    drill_id: str | None,
    previous: dict | None,
) -> dict:
    """The pointer document; `t` is wall-clock epoch seconds (read back by other drills, on other clocks)."""
    return {
        "schema": 1,
        "region": region,
        "model": model,
        "version": version,
        "manifest_sha256": manifest_sha256,
        "files": files,
        "recorded_at": round(t, 3),
        "drill_id": drill_id,
        "previous": (
            {"version": previous.get("version"), "manifest_sha256": previous.get("manifest_sha256")}
            if previous
            else None
        ),
    }


def read_pointer(store: Any, region: str, model: str) -> tuple[dict | None, str | None]:
    """(the region's last-known-good pointer, the S3 version id it was read at), or (None, None)."""
    key = lkg_key(model, region)
    body = store.get_object(region, key)
    if body is None:
        return None, None
    head = store.head(region, key) or {}
    try:
        return json.loads(body), head.get("version_id")
    except ValueError:
        return {"unreadable": True, "sha256": sha256(body)}, head.get("version_id")


def write_pointer(store: Any, region: str, model: str, doc: dict) -> str | None:
    return store.put_object(region, lkg_key(model, region), json.dumps(doc, indent=1, sort_keys=True).encode())


# ---------------------------------------------------------------- fetch pins (restore by version id)
def pins_text(ptr: dict) -> str:
    """The pins a restore writes for the pointer `ptr` (format: infra.names.pins_key). Every file needs its S3
    version id: a pointer without them cannot pin exactly, and nothing is written."""
    lines = [f"{ptr['version']} {ptr['manifest_sha256']}"]
    for rel, f in sorted(ptr["files"].items()):
        vid = f.get("version_id")
        if not vid:
            raise LookupError(
                f"{ptr.get('region')}: the last-known-good pointer has no S3 version id for {rel}: it cannot be "
                "restored exactly"
            )
        if any(c.isspace() for c in vid) or rel != rel.strip() or "\n" in rel:
            raise ValueError(f"{rel!r} / {vid!r}: a path or version id the fetch script's `read` cannot split")
        lines.append(f"{vid} {rel}")
    return "\n".join(lines) + "\n"


def parse_pins(text: str) -> tuple[str, str, dict[str, str]]:
    """(version, manifest sha256, {path: S3 version id}) from pins text, read the way the fetch script reads it."""
    head, *rows = [line for line in text.splitlines() if line.strip()]
    version, _, digest = head.strip().partition(" ")
    files = {}
    for row in rows:
        vid, _, rel = row.strip().partition(" ")
        files[rel.strip()] = vid
    return version, digest.strip(), files


def write_pins(store: Any, region: str, ptr: dict) -> str | None:
    return store.put_object(region, pins_key(ptr["model"], region), pins_text(ptr).encode())


def read_pins(store: Any, region: str, model: str) -> tuple[str, str, dict[str, str]] | None:
    body = store.get_object(region, pins_key(model, region))
    return None if body is None else parse_pins(body.decode())


def pinned_versions(store: Any, region: str, model: str, version: str) -> dict[str, str]:
    """{path: S3 version id} a pod's fetch takes for `version` in `region` ({}: the pins name another version, or
    there are none, and the current objects are fetched)."""
    pins = read_pins(store, region, model)
    return pins[2] if pins is not None and pins[0] == version else {}


def fetched_hashes(store: Any, region: str, model: str, version: str, paths: list[str]) -> dict[str, str | None]:
    """sha256 of what a pod's fetch gets for each path (None: absent): the pinned S3 version where the region's
    pins cover `version`, else the current object."""
    pre, pinned = prefix(model, version), pinned_versions(store, region, model, version)
    out = {}
    for rel in paths:
        body = store.get_object(region, pre + rel, pinned.get(rel))
        out[rel] = None if body is None else sha256(body)
    return out


def differing(ptr: dict, hashes: dict[str, str | None]) -> dict[str, dict]:
    """The files of `hashes` whose sha256 is not the pointer's: {path: {want, got}} (empty: exact match)."""
    want = {p: f["sha256"] for p, f in ptr["files"].items()}
    return {p: {"want": want[p], "got": h} for p, h in hashes.items() if h != want[p]}


def compare_to_pointer(store: Any, region: str, ptr: dict) -> dict[str, dict]:
    """Files a pod would fetch with other bytes than the pointer's: {path: {want, got}} (empty: exact match)."""
    return differing(ptr, fetched_hashes(store, region, ptr["model"], ptr["version"], sorted(ptr["files"])))
