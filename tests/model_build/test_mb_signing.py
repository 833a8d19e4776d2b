"""Signed releases: a build signs every file (OpenSSF model-signing, `model.sig`), and `model_build verify` refuses an
unsigned release, another signer's, a consistent tampered pair, and a manifest that is not the pinned digest."""

from __future__ import annotations

from pathlib import Path

from model_build.__main__ import main
from model_build.manifest import load_manifest, write_manifest
from model_build.publish import PublishError, publish
from model_build.signing import SIGNATURE, Signer, dev_key, manifest_digest, sign_with_key, verify_signature
from tests.drills.drills_support import copy_stacks
from tests.signing import signing_key, tamper_consistently


def _signer() -> Signer:
    return Signer(public_key_pem=signing_key()[1].read_text())


def test_a_fresh_build_is_signed_over_every_file(repo: Path):
    assert (repo / SIGNATURE).is_file()
    assert verify_signature(repo, _signer()) == []


def test_a_consistent_tampered_pair_fails_the_signature_naming_the_files(repo: Path):
    tamper_consistently(repo)
    problems = verify_signature(repo, _signer())
    assert len(problems) == 1 and "files differ from what was signed" in problems[0]
    assert "manifest.json" in problems[0] and "ranker_onnx/1/model.onnx" in problems[0]


def test_another_signers_key_and_a_missing_signature_are_refused(repo: Path, tmp_path: Path):
    other = Signer(public_key_pem=dev_key(tmp_path / "other")[1].read_text())
    assert "not a valid signature of key" in verify_signature(repo, other)[0]
    (repo / SIGNATURE).unlink()
    assert "missing: the release is unsigned" in verify_signature(repo, _signer())[0]


def test_verify_cli_checks_signature_and_pinned_digest(repo: Path, capsys):
    pub = str(signing_key()[1])
    digest = manifest_digest(repo)
    assert main(["verify", str(repo), "--public-key", pub, "--digest", digest]) == 0
    assert digest in capsys.readouterr().out  # what a stack pins
    assert main(["verify", str(repo), "--public-key", pub, "--digest", "0" * 64]) == 1
    assert "is not the pinned digest" in capsys.readouterr().out
    tamper_consistently(repo)
    assert main(["verify", str(repo), "--public-key", pub]) == 1
    out = capsys.readouterr().out
    assert "VERIFY FAILED" in out and "files differ from what was signed" in out


def test_verify_cli_with_a_stack_needs_the_stacks_signer(repo: Path, capsys):
    # The committed prod stack pins the build workflow's Sigstore identity, not this test key: refused.
    assert main(["verify", str(repo), "--stack", "prod-use1"]) == 1
    assert "not a valid signature of sigstore" in capsys.readouterr().out
    assert main(["verify", str(repo), "--stack", "prod-global"]) == 2  # only regional stacks pin releases
    assert "not a regional stack" in capsys.readouterr().out


def test_publish_refuses_an_unsigned_release(repo: Path):
    (repo / SIGNATURE).unlink()
    try:
        publish(repo, "bucket", s3=object(), log=lambda s: None)
    except PublishError as e:
        assert "unsigned release is never published" in str(e)
    else:
        raise AssertionError("an unsigned release was published")


def test_publish_cli_refuses_a_release_the_stack_would_not_accept(repo: Path, capsys):
    # prod-use1 pins the build workflow's Sigstore identity; this release is signed with the test key.
    assert main(["publish", str(repo), "--stack", "prod-use1", "--bucket", "b"]) == 1
    out = capsys.readouterr().out
    assert "PUBLISH FAILED" in out and "not a valid signature of sigstore" in out and "nothing uploaded" in out


def test_verify_cli_against_a_stack_that_pins_the_release(repo: Path, tmp_path: Path, capsys):
    stacks = copy_stacks(tmp_path / "stacks")  # the regional stacks name the test signer
    verify = ["verify", str(repo), "--stack", "prod-use1", "--stacks-dir", str(stacks)]
    assert main(verify) == 1  # signed by the stack's signer, but 2026.11.0's pinned digest is the placeholder
    assert "is not the pinned digest 0000" in capsys.readouterr().out
    with_version = load_manifest(repo).model_copy(update={"model": {"name": "ranker", "version": "2026.99.0"}})
    write_manifest(repo, with_version)
    sign_with_key(repo, signing_key()[0])
    assert main(verify) == 1
    assert "prod-use1 pins no digest for 2026.99.0 (model.digests)" in capsys.readouterr().out
