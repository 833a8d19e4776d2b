"""Candidate model builds for release rehearsals, cached by content hash like the rehearsal's stable model.

`candidate(kind)` returns a verified `python -m model_build` output:
  good  the stable config retrained (`--epochs 3 --version <stable>-r2`): a different build of the same shop,
        so its scores drift a little (calibrated PSI ~0.02) and the release gates should pass it;
  bad   `--bad-labels --version <stable>-bad`: trained on shuffled labels (AUC ~0.5, scores collapsed to the
        base rate); a valid artifact that only the quality gates can refuse.
  more  `--train-requests 72000 --epochs 3 --version <stable>-more`: trained on six times the signal (measured
        here: validation AUC 0.806 against the stable build's 0.762, oracle 0.816; NDCG@10 0.701 against 0.659),
        the A/B rehearsal's candidate that should win; about 90 s to build on 2 cores.
The cache key is the rehearsal's own (`model_cache.cache_key`: model_build sources + model config) plus the
build arguments, so a change to either rebuilds, and the stable build's cache entry is never shadowed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from drills.rehearsal.model_cache import CACHE_ROOT, ModelInfo, ensure_model

KINDS = ("good", "bad", "more")
_ARGS = {"good": ["--epochs", "3"], "bad": ["--bad-labels"], "more": ["--train-requests", "72000", "--epochs", "3"]}


def candidate_version(stable: str, kind: str) -> str:
    return f"{stable}-r2" if kind == "good" else f"{stable}-{kind}"


def build_args(stable: str, kind: str, extra: list[str] | None = None) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"unknown candidate kind {kind!r}: {', '.join(KINDS)}")
    base = ["--version", candidate_version(stable, kind)]
    return base + _ARGS[kind] + list(extra or [])


def candidate(
    stable: str,
    kind: str,
    *,
    stacks_dir: Path,
    log_dir: Path,
    cache_root: Path = CACHE_ROOT,
    extra: list[str] | None = None,
    rebuild: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> ModelInfo:
    args = build_args(stable, kind, extra)
    # A sub-cache per argument set: ensure_model keys by sources + config, the arguments pick the directory.
    sub = hashlib.sha256("\0".join(args).encode()).hexdigest()[:10]
    info = ensure_model(
        cache_root=Path(cache_root) / f"candidate-{kind}-{sub}",
        stacks_dir=stacks_dir,
        log_dir=log_dir,
        log=log,
        build_args=args,
        rebuild=rebuild,
    )
    want = candidate_version(stable, kind)
    if info.version != want:  # the manifest is the truth about what was built
        raise RuntimeError(f"the {kind} candidate build says version {info.version}, expected {want}")
    return info
