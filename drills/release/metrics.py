"""Triton's Prometheus metrics, parsed and differenced: the server-side source of the release gates.

Pure: `parse(text)` reads the text exposition format; `snapshot(text, model)` sums one model's counters (over
its Triton model versions and failure reasons); `delta(before, after)` differences two scrapes of every
instance (pod or server) of a track and gives requests, failures, error rate and latency over the interval.

Metrics used (Triton 2.51, checked against a live server's /metrics: tests/release/fixtures/):
  nv_inference_request_success / nv_inference_request_failure{reason=...}  requests, per model (counters)
  nv_inference_count, nv_inference_exec_count                               rows inferred, batches executed
  nv_inference_request_duration_us, nv_inference_queue_duration_us         cumulative microseconds
  nv_inference_request_summary_us{quantile=...}                             with --metrics-config summary_latencies=true
  nv_gpu_utilization                                                        0..1 per GPU (gauge)

What the counters do not see, measured on that server: a python-backend response that carries an error
(InferenceResponse(error=...)) answers HTTP 500 but counts as a *success*; a malformed request (400) is
rejected before the model and counts nowhere; only a backend exception counts as a failure (reason BACKEND).
So the release's error-rate gate adds the failures its own probes saw to the server's counters rather than
trusting either alone.

Latency: the mean over an interval comes from the duration counters (exact). A p99 needs the summary, whose
quantiles cover Triton's recent window rather than exactly the interval, and quantiles of different instances
cannot be merged: the delta reports the worst instance's p99, an upper bound, and says so.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*(?P<k>[a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?P<v>(?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _unescape(v: str) -> str:
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def _float(v: str) -> float:
    return float(v)  # Python reads the format's special values too: "+Inf", "-Inf", "NaN"


def parse(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (format 0.0.4): `# HELP`/`# TYPE` and blank lines skipped,
    labels with escaped quotes, special values, optional timestamps. A malformed line raises ValueError."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"line {n}: not a Prometheus sample: {raw!r}")
        labels: dict[str, str] = {}
        body = m["labels"] or ""
        pos = 0
        while pos < len(body):
            lm = _LABEL.match(body, pos)
            if not lm or lm.end() == pos:
                raise ValueError(f"line {n}: bad labels {body!r}")
            labels[lm["k"]] = _unescape(lm["v"])
            pos = lm.end()
        out.append(Sample(m["name"], labels, _float(m["value"])))
    return out


@dataclass(frozen=True)
class TritonSnapshot:
    """One instance's counters for one model (summed over Triton model versions and failure reasons)."""

    success: float = 0.0
    failure: float = 0.0
    inferences: float = 0.0
    executions: float = 0.0
    request_us: float = 0.0
    queue_us: float = 0.0
    quantiles_us: dict[str, float] = field(default_factory=dict)  # "0.99" -> microseconds (summary)
    gpu_utilization: float | None = None  # mean over the instance's GPUs
    found: bool = False  # the model's counters were present at all

    def to_dict(self) -> dict:
        return asdict(self)


_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
}


def snapshot(text: str, model: str | None = None) -> TritonSnapshot:
    """Counters of `model` (every model when None) in one instance's /metrics text."""
    sums = dict.fromkeys(_COUNTERS.values(), 0.0)
    quant: dict[str, float] = {}
    gpus: list[float] = []
    found = False
    for s in parse(text):
        if s.name == "nv_gpu_utilization":
            gpus.append(s.value)
            continue
        if model is not None and s.labels.get("model") != model:
            continue
        if s.name in _COUNTERS:
            sums[_COUNTERS[s.name]] += s.value
            found = True
        elif s.name == "nv_inference_request_summary_us" and "quantile" in s.labels and not math.isnan(s.value):
            q = s.labels["quantile"]
            quant[q] = max(quant.get(q, 0.0), s.value)  # several models or versions: the worst
    return TritonSnapshot(
        **sums, quantiles_us=quant, gpu_utilization=(sum(gpus) / len(gpus)) if gpus else None, found=found
    )


@dataclass(frozen=True)
class TritonDelta:
    instances: int
    requests: float  # success + failure in the interval
    success: float
    failure: float
    inferences: float
    error_rate: float | None  # failure / requests (None without requests)
    mean_request_ms: float | None  # duration counter / successful requests
    mean_queue_ms: float | None
    p99_ms: float | None  # worst instance's summary quantile 0.99 (an upper bound; see the module doc)
    gpu_utilization: float | None
    restarted: list[str] = field(default_factory=list)  # instances whose counters went backwards (reset)
    appeared: list[str] = field(default_factory=list)  # instances absent from the first scrape

    def to_dict(self) -> dict:
        return asdict(self)


def _diff(a: float, b: float) -> tuple[float, bool]:
    """Counter increase from a to b; a decrease means the instance restarted (counted from zero again)."""
    return (b, True) if b < a else (b - a, False)


def delta(before: dict[str, TritonSnapshot], after: dict[str, TritonSnapshot]) -> TritonDelta:
    """Increase of every counter between two scrapes of the same track, summed over instances.

    An instance present only in `after` counts from zero (it started in the interval); one present only in
    `before` is gone and contributes nothing (its last requests are lost to the gate, a known blind spot)."""
    tot = dict.fromkeys(("success", "failure", "inferences", "request_us", "queue_us"), 0.0)
    restarted, appeared = [], []
    p99s, gpus = [], []
    for inst, b in after.items():
        a = before.get(inst)
        if a is None:
            appeared.append(inst)
            a = TritonSnapshot()
        reset = False
        for k in tot:
            d, r = _diff(getattr(a, k), getattr(b, k))
            tot[k] += d
            reset = reset or r
        if reset:
            restarted.append(inst)
        if "0.99" in b.quantiles_us:
            p99s.append(b.quantiles_us["0.99"] / 1000.0)
        if b.gpu_utilization is not None:
            gpus.append(b.gpu_utilization)
    req = tot["success"] + tot["failure"]
    return TritonDelta(
        instances=len(after),
        requests=req,
        success=tot["success"],
        failure=tot["failure"],
        inferences=tot["inferences"],
        error_rate=(tot["failure"] / req) if req else None,
        mean_request_ms=(tot["request_us"] / tot["success"] / 1000.0) if tot["success"] else None,
        mean_queue_ms=(tot["queue_us"] / tot["success"] / 1000.0) if tot["success"] else None,
        p99_ms=max(p99s) if p99s else None,
        gpu_utilization=(sum(gpus) / len(gpus)) if gpus else None,
        restarted=sorted(restarted),
        appeared=sorted(appeared),
    )


def snapshots(texts: dict[str, str], model: str | None = None) -> dict[str, TritonSnapshot]:
    return {inst: snapshot(t, model) for inst, t in texts.items()}


def render(
    counters: dict[str, float],
    model: str,
    version: str = "1",
    quantiles_us: dict[str, float] | None = None,
    gpu_utilization: float | None = None,
) -> str:
    """The /metrics text a Triton with these counter values would serve (for test servers and fakes), in the
    same layout as Triton 2.51's, so they exercise the same parser."""
    lab = f'model="{model}",version="{version}"'
    lines = []
    for metric, key in _COUNTERS.items():
        lines.append(f"# TYPE {metric} counter")
        if metric == "nv_inference_request_failure":
            lines.append(f'{metric}{{model="{model}",reason="BACKEND",version="{version}"}} {counters.get(key, 0):g}')
        else:
            lines.append(f"{metric}{{{lab}}} {counters.get(key, 0):g}")
    if quantiles_us:
        lines.append("# TYPE nv_inference_request_summary_us summary")
        for q, v in sorted(quantiles_us.items()):
            lines.append(f'nv_inference_request_summary_us{{{lab},quantile="{q}"}} {v:g}')
    if gpu_utilization is not None:
        lines += ["# TYPE nv_gpu_utilization gauge", f'nv_gpu_utilization{{gpu_uuid="GPU-0"}} {gpu_utilization:g}']
    return "\n".join(lines) + "\n"
