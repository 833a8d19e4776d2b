"""Release signatures: an OpenSSF `model-signing` bundle over every file of a model repository.

The signature is `model.sig` beside `manifest.json`; it covers every file the build wrote (the manifest included), so
a pair "model changed and its hash rewritten in the manifest" fails it. Files that engine-build Jobs add later
(engines and their records, for a version not yet serving) are outside it on purpose: the manifest (signed) names
them, their records bind them to the signed graph, and only the engine-builder role may write them.

Who may sign is pinned in stack config (`model.signer`, see `infra.config.Signer`):
- `key`: an ECDSA key (P-256 here). Works offline; the rehearsal and local builds use a development key that the
  first build makes under `.signing/` (ignored by git), or the key `$RECO_DR_SIGNING_KEY` names.
- `sigstore`: keyless Sigstore, bound to the build workflow's OIDC identity and issuer (the AWS path: GitHub
  Actions signs with its workflow identity; no key to store or leak).

Public API: `SIGNATURE`, `Signer`, `signer_from_config(doc)`, `dev_key()`, `sign_with_key(directory, private_key)`,
`sign_with_sigstore(directory)`, `verify_signature(directory, signer) -> list[str]` (problems; [] = valid),
`manifest_digest(directory)`, `key_fingerprint(pem)`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.names import GITHUB_OIDC_ISSUER
from model_build.manifest import MANIFEST, SIGNATURE

if TYPE_CHECKING:
    from model_signing import hashing

DEV_KEY_DIR = Path(__file__).resolve().parent.parent / ".signing"
KEY_ENV = "RECO_DR_SIGNING_KEY"


@dataclass(frozen=True)
class Signer:
    """Whose signature a release must carry: a public key (PEM), or a Sigstore identity and OIDC issuer."""

    public_key_pem: str | None = None
    identity: str | None = None
    issuer: str | None = None

    def __post_init__(self) -> None:
        if (self.public_key_pem is None) == (self.identity is None):
            raise ValueError("a signer is either a public key or a Sigstore identity (with its issuer), not both")
        if self.identity is not None and not self.issuer:
            raise ValueError("a Sigstore signer needs the OIDC issuer that vouches for its identity")

    def describe(self) -> str:
        if self.public_key_pem is not None:
            return f"key sha256:{key_fingerprint(self.public_key_pem)[:16]}"
        return f"sigstore {self.identity} (issuer {self.issuer})"


def signer_from_config(doc: Any) -> Signer | None:
    """The Signer a stack's `model.signer` names, as stack config writes it (`{kind: key, public_key}` or
    `{kind: sigstore, identity, issuer}`); None when absent or malformed (the stack's validation names the problem;
    here it means nothing can verify)."""
    if not isinstance(doc, Mapping):
        return None
    try:
        if doc.get("kind") == "key":
            return Signer(public_key_pem=str(doc["public_key"]))
        if doc.get("kind") == "sigstore":
            return Signer(identity=str(doc["identity"]), issuer=str(doc.get("issuer") or GITHUB_OIDC_ISSUER))
    except (KeyError, ValueError):
        return None
    return None


def key_fingerprint(pem: str | bytes) -> str:
    """sha256 of the key's DER SubjectPublicKeyInfo: one name for a key, whatever its PEM line breaks."""
    from cryptography.hazmat.primitives import serialization

    raw = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(raw)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def manifest_digest(directory: str | os.PathLike) -> str:
    """sha256 of `manifest.json`'s bytes: what stack config pins (`model.digests`) and the pods check."""
    return hashlib.sha256((Path(directory) / MANIFEST).read_bytes()).hexdigest()


def dev_key(key_dir: Path | None = None) -> tuple[Path, Path]:
    """(private key, public key) of the development signer: `$RECO_DR_SIGNING_KEY` (its public half beside it as
    `<name>.pub`), else `.signing/release.key`, made on first use (P-256, owner-only permissions)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    env = os.environ.get(KEY_ENV)
    private = Path(env) if env else (key_dir or DEV_KEY_DIR) / "release.key"
    public = private.with_suffix(".pub")
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    if not public.exists():
        key_obj = serialization.load_pem_private_key(private.read_bytes(), password=None)
        public.write_bytes(
            key_obj.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private, public


def _hashing() -> hashing.Config:
    from model_signing import hashing

    # The signature file cannot cover itself; git metadata is never part of a release.
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=True)


def sign_with_key(directory: str | os.PathLike, private_key: Path) -> Path:
    """Sign every file of `directory` with an EC private key; writes and returns `<directory>/model.sig`."""
    from model_signing import signing

    root = Path(directory)
    out = root / SIGNATURE
    signing.Config().set_hashing_config(_hashing()).use_elliptic_key_signer(private_key=private_key).sign(root, out)
    return out


def sign_with_sigstore(directory: str | os.PathLike) -> Path:
    """Keyless signing with the ambient OIDC identity (GitHub Actions' `id-token: write`): the CI path."""
    from model_signing import signing

    root = Path(directory)
    out = root / SIGNATURE
    signing.Config().set_hashing_config(_hashing()).use_sigstore_signer(use_ambient_credentials=True).sign(root, out)
    return out


def verify_signature(directory: str | os.PathLike, signer: Signer) -> list[str]:
    """Every reason `directory` does not carry a valid signature of `signer` over its signed files; [] when it does.

    Files added after signing (engines with their records) are not compared here: `manifest.verify` accepts them
    only with a record that matches the signed manifest's graph."""
    from model_signing import verifying

    root = Path(directory)
    sig = root / SIGNATURE
    if not sig.is_file():
        return [f"{SIGNATURE}: missing: the release is unsigned (sign it at build; nothing unsigned may serve)"]
    cfg = verifying.Config().set_ignore_unsigned_files(True)
    try:
        if signer.public_key_pem is not None:
            with tempfile.NamedTemporaryFile("w", suffix=".pub") as pub:
                pub.write(signer.public_key_pem)
                pub.flush()
                cfg.use_elliptic_key_verifier(public_key=pub.name).set_hashing_config(_hashing()).verify(root, sig)
        else:
            assert signer.identity is not None and signer.issuer is not None  # Signer.__post_init__
            cfg.use_sigstore_verifier(identity=signer.identity, oidc_issuer=signer.issuer).set_hashing_config(
                _hashing()
            ).verify(root, sig)
    except Exception as e:  # noqa: BLE001 - model_signing raises ValueError, crypto and protobuf errors alike
        return [f"{SIGNATURE}: not a valid signature of {signer.describe()} over this release: {_reason(e)}"]
    return []


def _reason(e: Exception) -> str:
    """model_signing's error, shortened to what a person acts on: which signed files differ, or its first line."""
    text = str(e)
    changed = sorted(set(re.findall(r"(?:Hash mismatch for|missing from the model:?) \\*'([^'\\]+)", text)))
    if changed:
        return "files differ from what was signed: " + ", ".join(changed)
    return text.splitlines()[0] if text else type(e).__name__
