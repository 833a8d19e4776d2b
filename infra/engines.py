"""Does a region have an engine for every compute capability of its GPU pools? One rule, used by the policy pack
and invariants (infra.invariants), drill planning (drills.planning), the drill precheck (drills.actions) and the
release precheck (drills.release.actions). Pure and Pulumi-free.

A compute capability is covered by an engine the manifest built (or a build Job added, with a matching record), by
the manifest's own ONNX fallback, or by the stack's `model.onnx_fallback_for`. An engine the manifest lists but has
not built yet is *planned* (a build Job on that region's GPU pool makes it); anything else is *missing*. What a
planned engine means is the caller's: a warning at policy time, "unverified" in a plan, a refusal at precheck.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

State = Literal["built", "added-by-job", "onnx-fallback", "onnx-fallback (stack config)", "planned", "missing"]
# What a manifest can say of one compute capability (model_build.manifest.engines_available, or a reader's view).
Available = Literal["built", "added-by-job", "onnx-fallback", "planned", "missing"]
_COVERED = {"built", "added-by-job", "onnx-fallback", "onnx-fallback (stack config)"}
_FROM_MANIFEST: dict[str, State] = {"built": "built", "added-by-job": "added-by-job", "onnx-fallback": "onnx-fallback"}


@dataclass(frozen=True)
class Coverage:
    states: dict[str, State]  # per required compute capability, in the order asked

    @property
    def missing(self) -> list[str]:
        return [cc for cc, s in self.states.items() if s == "missing"]

    @property
    def planned(self) -> list[str]:
        return [cc for cc, s in self.states.items() if s == "planned"]

    @property
    def ok(self) -> bool:
        return all(s in _COVERED for s in self.states.values())


def coverage(ccs: Iterable[str], available: Mapping[str, str], fallback: Iterable[str] = ()) -> Coverage:
    """`ccs`: the region's compute capabilities; `available`: what the manifest offers per compute capability
    (absent: nothing); `fallback`: the stack's `model.onnx_fallback_for`."""
    stack_fallback = set(fallback)
    states: dict[str, State] = {}
    for cc in dict.fromkeys(ccs):
        got = available.get(cc, "missing")
        if got in _FROM_MANIFEST:
            states[cc] = _FROM_MANIFEST[got]
        elif cc in stack_fallback:
            states[cc] = "onnx-fallback (stack config)"
        else:
            states[cc] = "planned" if got == "planned" else "missing"
    return Coverage(states)
