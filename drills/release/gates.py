"""Release gates: pure functions from measured figures and thresholds to verdicts. No adapters here.

Each gate returns a `GateResult` (value, threshold, comparison, verdict and a sentence), which the release's
checks put in the journal and the report. Thresholds come from the global stack's `release.gates`.

Online quality without labels: the canary and the stable version score the SAME requests (golden feature rows
sent to both through the load balancer's version pin), and two distribution distances judge how far the
candidate's scores moved:
- the population stability index (PSI) over deciles of the stable scores: sum((a - e) * ln(a / e)). Common
  reading: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 large. Symmetric in spirit (it is the Jeffreys divergence of
  the binned distributions); it weighs shifts in sparsely populated bins strongly.
- the two-sample Kolmogorov-Smirnov statistic D = max |F_stable - F_canary| with its asymptotic p-value. D is
  gated (not the p-value): with thousands of rows any tiny shift is "significant", while D says how large it is.
A model trained on shuffled labels answers every request with about the base rate: its scores collapse into a
narrow band, so both distances are large even though every request succeeds. That is the failure error rates
cannot see. scipy is not a dependency of this project, so both are implemented here on numpy (and tested on
distributions with known answers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from model_build.manifest import Metrics

PSI_BINS = 10
PSI_EPS = 1e-4  # floor of a bin's share, so an empty bin gives a large but finite term


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    threshold: float
    op: str  # "<=" | ">="
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _judge(
    name: str,
    value: float | None,
    threshold: float,
    op: str,
    what: str,
    unit: str = "",
    fmt: str = "{:.4g}",
    figures: dict | None = None,
    missing: str = "not measured",
) -> GateResult:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return GateResult(
            name,
            None,
            threshold,
            op,
            False,
            f"{what}: {missing} (threshold {op} {fmt.format(threshold)}{unit})",
            figures or {},
        )
    ok = value <= threshold if op == "<=" else value >= threshold
    return GateResult(
        name,
        float(value),
        float(threshold),
        op,
        ok,
        f"{what} {fmt.format(value)}{unit} ({'ok' if ok else 'FAIL'}: threshold {op} {fmt.format(threshold)}{unit})",
        figures or {},
    )


# ---------------------------------------------------------------- distribution distances
def psi(
    expected: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    bins: int = PSI_BINS,
    eps: float = PSI_EPS,
) -> float:
    """Population stability index of `actual` against `expected`, on quantile bins of `expected`.

    Bins are the deciles (by default) of the expected sample, so each holds ~1/bins of it whatever its shape;
    repeated quantiles (a distribution with atoms) merge bins rather than create empty ones. Shares are floored
    at `eps`."""
    e = np.asarray(expected, dtype=np.float64).ravel()
    a = np.asarray(actual, dtype=np.float64).ravel()
    if e.size == 0 or a.size == 0:
        raise ValueError("psi needs two non-empty samples")
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1))[1:-1])
    # side="right": a value equal to an edge falls in the bin above it, the same for both samples.
    pe = np.bincount(np.searchsorted(edges, e, side="right"), minlength=edges.size + 1) / e.size
    pa = np.bincount(np.searchsorted(edges, a, side="right"), minlength=edges.size + 1) / a.size
    pe, pa = np.maximum(pe, eps), np.maximum(pa, eps)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: 2 * sum_{j>=1} (-1)^(j-1) exp(-2 j^2 x^2)."""
    if x <= 0:
        return 1.0
    if x < 0.2:  # the series converges slowly here and the value is 1 to double precision
        return 1.0
    s = 0.0
    for j in range(1, 101):
        term = math.exp(-2.0 * j * j * x * x)
        s += term if j % 2 else -term
        if term < 1e-16:
            break
    return float(min(1.0, max(0.0, 2.0 * s)))


def ks_2samp(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (D, asymptotic two-sided p-value).

    D is exact (the largest gap between the two empirical CDFs, evaluated at every observed value). The p-value
    uses the limiting distribution with Stephens' small-sample correction, lambda = (sqrt(ne) + 0.12 +
    0.11 / sqrt(ne)) * D with ne = n*m/(n+m) (as in Numerical Recipes' kstwo)."""
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())
    n, m = x.size, y.size
    if n == 0 or m == 0:
        raise ValueError("ks_2samp needs two non-empty samples")
    allv = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, allv, side="right") / n
    cdf_y = np.searchsorted(y, allv, side="right") / m
    d = float(np.max(np.abs(cdf_x - cdf_y)))
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def describe(scores: Sequence[float] | np.ndarray) -> dict[str, float]:
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {"n": 0}
    q = np.quantile(s, [0.01, 0.5, 0.99])
    return {
        "n": int(s.size),
        "mean": round(float(s.mean()), 6),
        "std": round(float(s.std()), 6),
        "p01": round(float(q[0]), 6),
        "p50": round(float(q[1]), 6),
        "p99": round(float(q[2]), 6),
    }


# ---------------------------------------------------------------- gates
def psi_gate(stable: Sequence[float], canary: Sequence[float], psi_max: float) -> GateResult:
    if len(stable) != len(canary):
        return GateResult(
            "psi",
            None,
            psi_max,
            "<=",
            False,
            f"score PSI: the versions scored different numbers of rows ({len(stable)} vs {len(canary)}); not "
            "comparable",
        )
    v = psi(stable, canary)
    return _judge(
        "psi",
        v,
        psi_max,
        "<=",
        f"score PSI canary vs stable over {len(stable)} identical rows",
        figures={"stable": describe(stable), "canary": describe(canary)},
    )


def ks_gate(stable: Sequence[float], canary: Sequence[float], ks_max: float) -> GateResult:
    if len(stable) != len(canary):
        return GateResult(
            "ks", None, ks_max, "<=", False, "score KS: the versions scored different numbers of rows; not comparable"
        )
    d, p = ks_2samp(stable, canary)
    return _judge(
        "ks",
        d,
        ks_max,
        "<=",
        f"score KS statistic canary vs stable over {len(stable)} identical rows",
        figures={"p_value": p, "stable": describe(stable), "canary": describe(canary)},
    )


def error_rate_gate(
    failures: int,
    requests: int,
    max_rate: float,
    min_requests: int,
    what: str = "canary error rate",
    figures: dict | None = None,
) -> GateResult:
    """Failed / all requests; too few requests is a failed gate (no evidence is not a pass)."""
    figs = {"requests": requests, "failures": failures, **(figures or {})}
    if requests < min_requests:
        return GateResult(
            "error_rate",
            None if requests == 0 else failures / requests,
            max_rate,
            "<=",
            False,
            f"{what}: only {requests} requests answered, fewer than the {min_requests} the gate needs",
            figs,
        )
    return _judge(
        "error_rate", failures / requests, max_rate, "<=", f"{what} ({failures}/{requests})", fmt="{:.3%}", figures=figs
    )


def p99_gate(
    p99_ms: float | None, max_ms: float, source: str, what: str = "canary p99 latency", figures: dict | None = None
) -> GateResult:
    return _judge("p99_ms", p99_ms, max_ms, "<=", f"{what} ({source})", unit=" ms", fmt="{:.1f}", figures=figures)


def offline_gates(metrics: Metrics | None, auc_min: float, ndcg_min: float) -> list[GateResult]:
    """The candidate's offline quality from its manifest (model_build's validation AUC and NDCG@10); `metrics` is
    None when no region holds a manifest of it that verifies."""
    return [
        _judge(
            "offline_auc",
            metrics.validation_auc if metrics else None,
            auc_min,
            ">=",
            "offline AUC (manifest metrics.validation_auc)",
            missing="absent from the manifest",
        ),
        _judge(
            "offline_ndcg",
            metrics.validation_ndcg_at_10 if metrics else None,
            ndcg_min,
            ">=",
            "offline NDCG@10 (manifest metrics.validation_ndcg_at_10)",
            missing="absent from the manifest",
        ),
    ]


def all_ok(results: Iterable[GateResult]) -> bool:
    return all(r.ok for r in results)
