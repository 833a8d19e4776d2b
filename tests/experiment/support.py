"""Declared experiments for the experiment tests: a valid two-arm declaration, overridable key by key; a copy of the
shipped stacks with arm versions pinned."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from infra.config import ROOT
from infra.experiments import Experiment, parse_experiments

START, END = "2026-11-02T00:00:00Z", "2026-11-16T00:00:00Z"


def arms(*weights: int) -> list[dict[str, Any]]:
    """A control and candidates (candidate, candidate-2, ...) with these weights, control first."""
    names = ["control", "candidate", *(f"candidate-{i}" for i in range(2, len(weights)))]
    return [
        {"name": n, "version": f"2026.11.{i}", "weight": w, **({"control": True} if i == 0 else {})}
        for i, (n, w) in enumerate(zip(names, weights, strict=True))
    ]


def declared(**over: Any) -> dict[str, Any]:
    return {"id": "ranker-ab", "arms": arms(50, 50), "start": START, "end": END} | over


def experiment(**over: Any) -> Experiment:
    return parse_experiments([declared(**over)])[0]


def pinned_stacks(tmp_path: Path, versions: Iterable[str], unpinned: str | None = None) -> Path:
    """tmp_path/stacks: the shipped stacks with `versions` pinned (`model.digests`) in every prod regional stack but
    `unpinned` (a stack name), as the PR publishing a build pins it."""
    d = tmp_path / "stacks"
    shutil.copytree(ROOT / "stacks", d)
    pins = dict.fromkeys(versions, "ab" * 32)
    for f in d.glob("Pulumi.prod-*.yaml"):
        doc = yaml.safe_load(f.read_text())
        model = doc["config"].get("reco-dr:model")
        if model is not None and f.name != f"Pulumi.{unpinned}.yaml":
            model["digests"].update(pins)
            f.write_text(yaml.safe_dump(doc, sort_keys=False))
    return d
