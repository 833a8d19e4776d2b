"""The model manifest as the drills read it: model_build's typed schema, seen as infra.invariants' ManifestFacts.

model_build/manifest.py owns the schema (`Manifest`); every manifest the drills read is validated against it, and
what they need from it (which compute capabilities have an engine built or planned, the manifest's own ONNX
fallbacks, the benchmarked QPS per GPU, the model version) comes from `infra.invariants.ManifestFacts`, the facts
the invariants and the policy pack use too. Both modules are Pulumi-free and import no model runtime.

- `find_manifest(explicit, model_version, root)`: the manifest to plan with, or None; one that does not validate
  is refused (GuardrailError "manifest", naming the file and its first problem).
- `served_facts(region, doc)`: the facts of the manifest a region serves (an adapter's `current_manifest`); one
  that does not validate raises ManifestError naming the region and its first problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from drills.errors import GuardrailError
from infra.invariants import ManifestFacts, manifest_facts
from model_build.manifest import ManifestError


def _read(path: Path) -> ManifestFacts:
    try:
        return manifest_facts(path)
    except ManifestError as e:
        raise GuardrailError(
            "manifest", f"{e}; rebuild the model (`python -m model_build`) or pass another --manifest"
        ) from None


def find_manifest(explicit: str | None, model_version: str | None, root: Path) -> ManifestFacts | None:
    """The manifest to plan with: --manifest, else $DRILLS_MANIFEST, else the newest manifest.json under
    artifacts/ or build/ whose text names the fleet's model version. None when there is none: the engines are then
    verified at run time from each region's bucket."""
    path = explicit or os.environ.get("DRILLS_MANIFEST")
    if path:
        return _read(Path(path))
    candidates = [p for d in ("artifacts", "build") for p in (root / d).glob("**/manifest.json")]
    for p in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            text = p.read_text()
        except (OSError, ValueError):
            continue  # gone or unreadable since the glob: not a candidate
        if model_version is None or f'"{model_version}"' in text:
            return _read(p)
    return None


def served_facts(region: str, doc: dict[str, Any] | None) -> ManifestFacts | None:
    """Facts of the manifest `region` serves, from `current_manifest`'s parsed JSON (None: no manifest)."""
    return None if doc is None else manifest_facts(doc, f"the manifest in {region}'s bucket")
