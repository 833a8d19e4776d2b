"""The tests' one factory for model manifests: `manifest(...)` builds a complete `model_build.manifest.Manifest`.

Every test that needs a manifest (a file on disk, an object in a bucket, a dict handed to a reader) builds it here,
so it is schema-valid by construction and a test states only what it is about: which compute capabilities have an
engine built, planned ("not-built") or an ONNX fallback, the TensorRT version of the build and of each engine, the
benchmarked QPS per GPU, the files. Write it with `model_build.manifest.write_manifest(dir, m)`, or use
`as_json(m)` (`model_dump(mode="json")`) where a reader takes the parsed JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from model_build.manifest import (
    Benchmark,
    EngineEntry,
    FileEntry,
    Manifest,
    Metrics,
    Signature,
    TensorSpec,
)

VERSION = "2026.11.0"  # the version the stacks serve
TENSORRT = "10.8.0"  # Triton 25.01's TensorRT (infra.catalog)
SEED = 20261100  # model_build.data.DEFAULT_SEED: the golden rows
ONNX = "ranker_onnx/1/model.onnx"
ENGINE_FILE = "ranker_trt/1/model.sm{sm}.plan"  # {cc} and {sm} ("8.9", "89") are filled in per engine
MAX_BATCH = 4096


def engine(
    cc: str,
    status: Literal["built", "not-built"],
    *,
    tensorrt_version: str = TENSORRT,
    file: str | None = None,
    onnx: str = ONNX,
    max_batch_size: int = MAX_BATCH,
    built_file: FileEntry | None = None,
) -> EngineEntry:
    """An engine entry as model_build writes it: built for `cc` ("built"), or planned for its build Job
    ("not-built"). `built_file`: the engine's entry among the manifest's files, for its hash and size."""
    sm = cc.replace(".", "")
    return EngineEntry(
        compute_capability=cc,
        serves=[cc],
        file=file or ENGINE_FILE.format(cc=cc, sm=sm),
        status=status,
        reason=None if status == "built" else "not built here: the engine-build Job on the region's GPU pool builds it",
        tensorrt_version=tensorrt_version,
        tensorrt_image="nvcr.io/nvidia/tensorrt:25.01-py3",
        precision="fp16",
        strongly_typed=True,
        hardware_compatibility="NONE",
        version_compatible=False,
        profile={"min": 1, "opt": 256, "max": max_batch_size},
        timing_cache_key="t",
        onnx=onnx,
        record=f"engine_records/model.sm{sm}.json",
        sha256=built_file.sha256 if built_file else None,
        size=built_file.size if built_file else None,
        built_on=f"a GPU of compute capability {cc}" if status == "built" else None,
    )


def manifest(
    version: str = VERSION,
    *,
    built: Iterable[str] = (),
    not_built: Iterable[str] = (),
    onnx_fallback: Iterable[str] = (),
    tensorrt_version: str = TENSORRT,
    engine_tensorrt: Mapping[str, str] | None = None,
    qps_per_gpu: Mapping[str, float] | None = None,
    files: Sequence[FileEntry] = (),
    engine_file: str = ENGINE_FILE,
    onnx: str = ONNX,
    name: str = "ranker",
    validation_auc: float = 0.76,
    validation_ndcg_at_10: float = 0.66,
    data: Mapping[str, int | str | bool] | None = None,
    training: Mapping[str, Any] | None = None,
    serving: Mapping[str, str] | None = None,
    created_at: str = "2026-11-24T00:00:00+00:00",
) -> Manifest:
    """A full, valid manifest of `name` `version`.

    `built`, `not_built`, `onnx_fallback`: the compute capabilities with a built engine, a planned one, or served by
    the ONNX Runtime model on purpose (together: `compute_capabilities`, in that order). `tensorrt_version`: the
    build's, and every engine's unless `engine_tensorrt` {cc: version} says otherwise. `qps_per_gpu`: benchmarked
    figures ({}: not measured). `files`: the repository's files (`model_build.manifest.file_entry`); a built engine
    listed there takes its hash and size from it. The signature is the ranker's: sparse_ids int32 [8], dense float32
    [8] -> score float32 [1], max_batch_size 4096.
    """
    built, not_built, onnx_fallback = list(built), list(not_built), list(onnx_fallback)
    by_path = {f.path: f for f in files}

    def entry(cc: str, status: Literal["built", "not-built"]) -> EngineEntry:
        path = engine_file.format(cc=cc, sm=cc.replace(".", ""))
        return engine(
            cc,
            status,
            tensorrt_version=(engine_tensorrt or {}).get(cc, tensorrt_version),
            file=path,
            onnx=onnx,
            built_file=by_path.get(path) if status == "built" else None,
        )

    engines = {cc: entry(cc, "built") for cc in built} | {cc: entry(cc, "not-built") for cc in not_built}
    qps = dict(qps_per_gpu or {})
    return Manifest(
        model={"name": name, "version": version},
        created_at=created_at,
        git={"revision": "test", "dirty": False},
        data=dict(data) if data is not None else {"seed": SEED, "bad_labels": False},
        ranker={},
        training=dict(training or {}),
        metrics=Metrics(
            validation_auc=validation_auc,
            validation_logloss=0.54,
            validation_ndcg_at_10=validation_ndcg_at_10,
            oracle_auc=0.81,
            validation_ctr=0.34,
            train_rows=1000,
            validation_rows=100,
            train_seconds=1.0,
            parity=[],
        ),
        signature=Signature(
            max_batch_size=MAX_BATCH,
            inputs=[
                TensorSpec(name="sparse_ids", dtype="int32", dims=[8]),
                TensorSpec(name="dense", dtype="float32", dims=[8]),
            ],
            outputs=[TensorSpec(name="score", dtype="float32", dims=[1])],
        ),
        onnx={"fp32": {"path": onnx}},
        files=list(files),
        compute_capabilities=list(dict.fromkeys([*built, *not_built, *onnx_fallback])),
        onnx_fallback_for=onnx_fallback,
        engines=engines,
        tensorrt_version=tensorrt_version,
        triton={"release": "25.01", "version": "2.54.0", "images": ["nvcr.io/nvidia/tritonserver:25.01-py3"]},
        serving=dict(serving) if serving is not None else {"onnx_fallback": "ranker_onnx"},
        build_plan={},
        benchmark=Benchmark(status="measured", qps_per_gpu=qps) if qps else Benchmark(),
    )


def as_json(m: Manifest) -> dict[str, Any]:
    """The parsed JSON of `m`, as a manifest.json file or a bucket object holds it."""
    return m.model_dump(mode="json")
