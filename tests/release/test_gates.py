"""Gate math on distributions with known answers (numpy implementations; scipy is not a dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drills.release.gates import (
    error_rate_gate,
    kolmogorov_sf,
    ks_2samp,
    ks_gate,
    offline_gates,
    p99_gate,
    psi,
    psi_gate,
)
from tests.manifests import manifest


def test_psi_of_a_sample_against_itself_is_zero_and_of_a_shift_is_its_squared_size():
    r = np.random.default_rng(7)
    a = r.normal(0, 1, 40_000)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, r.normal(0, 1, 40_000)) < 0.005  # sampling noise only
    # For two unit normals a mean shift d apart the binned PSI approaches the Jeffreys divergence d^2.
    assert psi(a, r.normal(0.5, 1, 40_000)) == pytest.approx(0.25, rel=0.08)
    assert psi(a, r.normal(1.0, 1, 40_000)) == pytest.approx(1.0, rel=0.15)


def test_psi_hand_computed_on_two_bins():
    # Expected splits 50/50 at its median (0.5); actual puts 80% below: (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5).
    e = [0.0, 0.0, 1.0, 1.0]
    a = [0.0] * 8 + [1.0] * 2
    want = 0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5)
    assert psi(e, a, bins=2) == pytest.approx(want)


def test_psi_collapsed_scores_are_a_huge_shift():
    """A model trained on shuffled labels answers ~the base rate: its scores collapse into one bin."""
    r = np.random.default_rng(3)
    stable = 1 / (1 + np.exp(-r.normal(-0.7, 1.2, 4096)))
    bad = 0.34 + 0.004 * r.standard_normal(4096)
    assert psi(stable, bad) > 2.0
    assert ks_2samp(stable, bad)[0] > 0.3


def test_psi_handles_atoms_in_the_expected_sample():
    e = np.array([0.5] * 900 + list(np.linspace(0, 1, 100)))
    assert psi(e, e) == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(psi(e, np.linspace(0, 1, 1000)))


def test_ks_statistic_exact_on_small_samples():
    assert ks_2samp([1, 2, 3], [4, 5, 6])[0] == 1.0
    assert ks_2samp([1, 2, 3, 4], [3, 4, 5, 6])[0] == pytest.approx(0.5)
    d, p = ks_2samp([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert d == 0.0 and p == 1.0


def test_ks_against_the_normal_shift_and_its_p_value():
    r = np.random.default_rng(11)
    a, b = r.normal(0, 1, 20_000), r.normal(0.5, 1, 20_000)
    d, p = ks_2samp(a, b)
    # Population value for N(0,1) vs N(0.5,1): 2*Phi(0.25) - 1 = 0.1974.
    assert d == pytest.approx(0.1974, abs=0.01)
    assert p < 1e-50
    d0, p0 = ks_2samp(a, r.normal(0, 1, 20_000))
    assert d0 < 0.03 and p0 > 0.001


def test_kolmogorov_distribution_known_values():
    # P(K > 1.358) = 0.05 and P(K > 1.628) = 0.01: the classic critical values.
    assert kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=5e-4)
    assert kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=2e-4)
    assert kolmogorov_sf(0.0) == 1.0 and kolmogorov_sf(5.0) < 1e-20


def test_drift_gates_verdicts_and_figures():
    r = np.random.default_rng(5)
    a = list(r.normal(0, 1, 5000))
    assert psi_gate(a, a, 0.2).ok and ks_gate(a, a, 0.15).ok
    shifted = [x + 1 for x in a]
    g = psi_gate(a, shifted, 0.2)
    assert (
        not g.ok
        and g.value is not None
        and g.value > 0.2
        and g.threshold == 0.2
        and g.op == "<="
        and "FAIL" in g.detail
    )
    k = ks_gate(a, shifted, 0.15)
    assert not k.ok and "p_value" in k.figures
    # Different row counts are not "the same requests": refused, not compared.
    assert not psi_gate(a, a[:10], 0.2).ok


def test_error_rate_gate_needs_evidence():
    assert error_rate_gate(0, 500, 0.01, 200).ok
    assert not error_rate_gate(6, 500, 0.01, 200).ok
    few = error_rate_gate(0, 50, 0.01, 200)
    assert not few.ok and "fewer than the 200" in few.detail


def test_p99_and_offline_gates():
    assert p99_gate(120.0, 250, "summary").ok and not p99_gate(300.0, 250, "summary").ok
    assert not p99_gate(None, 250, "summary").ok
    ok = offline_gates(manifest(validation_auc=0.76, validation_ndcg_at_10=0.66).metrics, 0.7, 0.55)
    assert all(g.ok for g in ok)
    bad = offline_gates(manifest(validation_auc=0.5, validation_ndcg_at_10=0.45).metrics, 0.7, 0.55)
    assert [g.ok for g in bad] == [False, False] and bad[0].op == ">="
    assert not any(g.ok for g in offline_gates(None, 0.7, 0.55))
