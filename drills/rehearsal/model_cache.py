"""The rehearsal's model: `python -m model_build` output, built once and cached by the content hash of its inputs.

Cache key: SHA-256 over every file of the model_build package (sources, requirements), the Python version and
the part of the fleet config model_build reads (each regional stack's `model`, `gpu_pools` and `triton`: the
model version, the compute capabilities it plans engines for, the TensorRT version). A change to any of them is
a new key, hence a rebuild; a change of weights or TTL is not. Entries live in `build/model-cache/<key>/` and
are created atomically (built in `<key>.partial`, verified, renamed), so an interrupted build never leaves an
entry that looks complete.

Every entry is verified with model_build's own `verify` (hashes, sizes, ONNX and config signatures, no
unexpected files) before use, whether it was just built, found in the cache or given with `--model-dir`;
a failure stops the rehearsal with the offending files named and what to do.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from drills.errors import DrillError
from infra.config import PROJECT, ROOT, STACKS_DIR
from model_build.signing import dev_key

CACHE_ROOT = ROOT / "build" / "model-cache"
BUILD_TIMEOUT_S = 900.0  # the build takes ~25 s on 2 cores; a hung build must not hang the rehearsal


class ModelError(DrillError):
    """The model artifact is missing, corrupted or could not be built (exit code 2: fix the input, run again)."""

    exit_code = 2


@dataclass
class ModelInfo:
    dir: Path
    key: str | None  # cache key (None for --model-dir)
    cache_hit: bool
    build_seconds: float | None
    version: str
    manifest_sha256: str


def cache_key(stacks_dir: Path = STACKS_DIR, package: Path = ROOT / "model_build") -> str:
    h = hashlib.sha256()
    h.update(f"python {sys.version_info[0]}.{sys.version_info[1]}\n".encode())
    for p in sorted(package.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".txt", ".pbtxt", ".json", ".yaml"):
            h.update(p.relative_to(package).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    # The signing key: a build signed by another key is not this machine's to serve.
    h.update(dev_key()[1].read_bytes())
    for f in sorted(Path(stacks_dir).glob("Pulumi.*.yaml")):
        cfg = (yaml.safe_load(f.read_text()) or {}).get("config") or {}
        part = {k: cfg.get(f"{PROJECT}:{k}") for k in ("model", "gpu_pools", "triton") if f"{PROJECT}:{k}" in cfg}
        model = part.get("model")
        if isinstance(model, dict):  # who signs and which digests are pinned do not change a build
            part["model"] = {k: v for k, v in model.items() if k not in ("signer", "digests")}
        if part:
            h.update(f.name.encode() + b"\0" + yaml.safe_dump(part, sort_keys=True).encode())
    return h.hexdigest()[:20]


def verify_model(d: Path) -> tuple[str, str]:
    """(model version, manifest sha256) of a verified model_build output, signed by this machine's development key
    (the one model_build signs with here); ModelError naming what is wrong."""
    from model_build.manifest import load_manifest, verify
    from model_build.signing import Signer, verify_signature

    d = Path(d)
    if not (d / "manifest.json").exists():
        raise ModelError(
            f"model artifact missing: {d} has no manifest.json (not a complete `python -m model_build` output). "
            f"What to do: build it with `python -m model_build --out {d}`, or run the rehearsal without "
            "--model-dir to use the cached build."
        )
    try:
        problems = verify(d) + verify_signature(d, Signer(public_key_pem=dev_key()[1].read_text()))
    except Exception as e:  # noqa: BLE001 - an unreadable manifest is a corrupted artifact too
        problems = [f"manifest.json cannot be read: {type(e).__name__}: {e}"]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelError(
            f"model artifact corrupted: {d} does not match its manifest: {shown}. Nothing was started. "
            "What to do: rebuild it (`--rebuild-model` replaces the cached build; for --model-dir run "
            f"`python -m model_build --out {d}`), and find out what altered it."
        )
    m = load_manifest(d)
    return str(m.model["version"]), hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()


def _build(out: Path, log_dir: Path, log: Callable[[str], None], argv_extra: list[str]) -> float:
    """`python -m model_build --out OUT` as a supervised child: stopped (its whole group) on Ctrl-C or failure."""
    from drills.rehearsal.procs import Supervisor

    t0 = time.monotonic()
    with Supervisor(log_dir, name="model-build") as sup:
        child = sup.start(
            "model_build", [sys.executable, "-m", "model_build", "--out", str(out), *argv_extra], cwd=ROOT
        )
        deadline = t0 + BUILD_TIMEOUT_S
        while child.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if child.alive():
            sup.stop(child)
            raise ModelError(
                f"model build did not finish in {BUILD_TIMEOUT_S:.0f} s and was stopped; its log: {child.log_path}"
            )
        rc = child.popen.returncode
        sup.stop(child)
    if rc != 0:
        raise ModelError(
            f"model build failed (exit {rc}). Its log ({child.log_path}) ends:\n{child.log_tail(20)}\n"
            "What to do: fix the error above, then run the rehearsal again."
        )
    return time.monotonic() - t0


def ensure_model(
    *,
    model_dir: Path | None = None,
    cache_root: Path = CACHE_ROOT,
    rebuild: bool = False,
    stacks_dir: Path = STACKS_DIR,
    log_dir: Path,
    log: Callable[[str], None] = lambda s: None,
    build_args: list[str] | None = None,
) -> ModelInfo:
    """The verified model to rehearse with: `model_dir` as given, else the cache entry for the current inputs,
    built first when absent (or when `rebuild`)."""
    if model_dir is not None:
        d = Path(model_dir)
        if not d.is_dir():
            raise ModelError(
                f"model artifact missing: --model-dir {d} does not exist. What to do: build one with "
                f"`python -m model_build --out {d}`, or leave out --model-dir to use the cached build."
            )
        version, sha = verify_model(d)
        log(f"model: {d} (given), version {version}, verified against its manifest")
        return ModelInfo(d, None, True, None, version, sha)
    key = cache_key(stacks_dir)
    d = Path(cache_root) / key
    if rebuild and d.exists():
        log(f"model: --rebuild-model: removing the cached build {d}")
        shutil.rmtree(d)
    if d.exists():
        version, sha = verify_model(d)
        log(
            f"model: cached build {d} (key {key}: model_build sources + model config unchanged), "
            f"version {version}, verified"
        )
        return ModelInfo(d, key, True, None, version, sha)
    partial = d.with_name(d.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"model: no cached build for key {key}: building with `python -m model_build` (about 25 s on 2 cores) ...")
    seconds = _build(partial, log_dir, log, build_args or [])
    version, sha = verify_model(partial)
    partial.rename(d)
    log(f"model: built and verified in {seconds:.1f} s -> {d}")
    return ModelInfo(d, key, False, round(seconds, 1), version, sha)
