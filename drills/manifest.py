"""Read what the drills need from a model manifest, tolerant of its exact layout.

model_build owns the manifest's schema; the drills need two facts from it: which compute capabilities have a
built TensorRT engine, and the benchmarked QPS per GPU. `manifest_facts` is the one place that reads it, so a
change of shape is absorbed here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NOT_BUILT = {"skipped", "missing", "failed", "planned", "pending", "not_built", "unavailable"}


@dataclass(frozen=True)
class ManifestFacts:
    built: set[str] | None  # compute capabilities with a built engine; None: no manifest at all
    listed: set[str]  # compute capabilities with an engine entry, built or not
    qps_per_gpu: dict[str, float]  # benchmark.qps_per_gpu, by compute capability
    version: str | None  # the model version the manifest describes


def _cc(v: Any) -> str | None:
    """'9.0', 9.0, '90', 'sm_90', 'sm90', 'compute_90' -> '9.0'; anything else -> None."""
    s = str(v).strip().lower()
    if m := re.fullmatch(r"(\d+)\.(\d+)", s):
        return f"{int(m[1])}.{int(m[2])}"
    if m := re.fullmatch(r"(?:sm_?|compute_?)?(\d)(\d)", s):
        return f"{m[1]}.{m[2]}"
    return None


def manifest_facts(manifest: dict | None) -> ManifestFacts:
    """What the drills need from a model manifest, whatever its exact layout.

    Engines are looked for anywhere under a key containing "engine": as a mapping keyed by compute
    capability, or as entries carrying `compute_capability`/`cc`/`sm`. An entry marked not built (`built:
    false`, a status such as "not-built" or "skipped", or a null file) is *listed* but not *built*: a manifest
    written on a machine without a TensorRT builder names the engines its GPU build jobs will make.
    """
    if not manifest:
        return ManifestFacts(None, set(), {}, None)
    built: set[str] = set()
    listed: set[str] = set()

    def is_built(entry: Any) -> bool:
        if not isinstance(entry, dict):
            return entry not in (None, False, "")
        status = str(entry.get("status", "")).lower().replace("-", "_")
        if entry.get("built") is False or status in _NOT_BUILT:
            return False
        return not any(k in entry and entry[k] in (None, "") for k in ("file", "path", "filename", "sha256"))

    def note(cc: str | None, entry: Any) -> None:
        if cc:
            listed.add(cc)
            if is_built(entry):
                built.add(cc)

    def walk(node: Any, in_engines: bool) -> None:
        if isinstance(node, dict):
            for key in ("compute_capability", "cc", "sm"):
                if in_engines and key in node:
                    note(_cc(node[key]), node)
            for k, v in node.items():
                if "plan" in str(k).lower():
                    continue  # a build plan names engines to build, not engines built
                if in_engines:
                    note(_cc(k), v)
                walk(v, in_engines or "engine" in str(k).lower())
        elif isinstance(node, list):
            for x in node:
                walk(x, in_engines)

    # The manifest's own engine table where it has one at a known place; else anywhere under an "engine" key.
    trt = manifest.get("tensorrt")
    table = manifest.get("engines", trt.get("engines") if isinstance(trt, dict) else None)
    if table is not None:
        walk(table, True)
    else:
        walk(manifest, False)
    bench = manifest.get("benchmark") or {}
    raw = bench.get("qps_per_gpu") if isinstance(bench, dict) else None
    qps = {c: float(v) for k, v in (raw or {}).items() if (c := _cc(k)) and isinstance(v, (int, float))}
    model = manifest.get("model")
    version = (
        manifest.get("model_version")
        or manifest.get("version")
        or (model.get("version") if isinstance(model, dict) else None)
    )
    return ManifestFacts(built, listed, qps, str(version) if version is not None else None)


def find_manifest(explicit: str | None, model_version: str | None, root: Path) -> tuple[dict | None, str | None]:
    """The manifest to plan with: --manifest, else $DRILLS_MANIFEST, else the newest manifest.json under
    artifacts/ or build/ whose text names the fleet's model version. (None, None) when there is none: the
    engines are then verified at run time from each region's bucket."""
    path = explicit or os.environ.get("DRILLS_MANIFEST")
    if path:
        p = Path(path)
        return json.loads(p.read_text()), str(p)
    candidates = [p for d in ("artifacts", "build") for p in (root / d).glob("**/manifest.json")]
    for p in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            text = p.read_text()
            if model_version is None or f'"{model_version}"' in text:
                return json.loads(text), str(p)
        except (OSError, ValueError):
            continue
    return None, None
