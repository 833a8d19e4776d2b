"""The one engine-coverage rule (infra.engines), which the policy pack, drill planning, the drill precheck and the
release precheck all apply."""

from __future__ import annotations

from infra.engines import coverage


def test_each_state_and_its_precedence():
    cov = coverage(
        ["9.0", "8.9", "8.6", "8.0", "7.5", "7.0"],
        {"9.0": "built", "8.9": "added-by-job", "8.6": "onnx-fallback", "8.0": "planned", "7.5": "missing"},
        fallback=["7.5"],
    )
    assert cov.states == {
        "9.0": "built",
        "8.9": "added-by-job",
        "8.6": "onnx-fallback",
        "8.0": "planned",
        "7.5": "onnx-fallback (stack config)",
        "7.0": "missing",
    }
    assert (cov.missing, cov.planned, cov.ok) == (["7.0"], ["8.0"], False)


def test_a_built_engine_wins_over_the_stack_fallback_and_a_fallback_covers_a_planned_engine():
    assert coverage(["9.0"], {"9.0": "built"}, ["9.0"]).states == {"9.0": "built"}
    cov = coverage(["9.0"], {"9.0": "planned"}, ["9.0"])
    assert cov.ok and cov.states == {"9.0": "onnx-fallback (stack config)"}


def test_planned_is_not_ok_and_nothing_needed_is_ok():
    assert not coverage(["9.0"], {"9.0": "planned"}).ok
    assert coverage([], {}).ok
    assert coverage(["9.0", "9.0"], {"9.0": "built"}).states == {"9.0": "built"}  # a capability counts once
