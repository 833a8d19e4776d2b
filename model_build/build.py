"""`python -m model_build`: train, export, gate, assemble the Triton repository, write the manifest last.

The output directory is the model repository (and, published, the bucket's `<model>/<version>/` prefix):

    manifest.json                      written last; every other file below is listed with sha256 and size
    <model>_trt/config.pbtxt           TensorRT model: cc_model_filenames, no default, dynamic batching
    <model>_trt/model.fp16.onnx        the FP16 graph engines are built from (strongly typed)
    <model>_trt/1/model.sm<cc>.plan    engines, where built (on a GPU of that capability only)
    <model>_onnx/config.pbtxt          explicit ONNX Runtime fallback model
    <model>_onnx/1/model.onnx          the FP32 graph (also what <model>_py serves)
    <model>_py/config.pbtxt            python-backend model for the CPU rehearsal
    <model>_py/1/model.py              runs <model>_onnx/1/model.onnx with ONNX Runtime after a hash check
    golden/golden.npz                  golden rows, labels, requests and PyTorch reference scores
    checkpoint/ranker.pt               trained weights (the benchmark's PyTorch side; reproducibility)
    fallback.json                      the degraded answer for clients: item popularity in the training data
    jobs/<env>-engine-sm<cc>.yaml      Kubernetes Job per environment and engine not built here
    engine_records/<engine>.json       added later by those Jobs, next to the engines they publish
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from infra.config import ROOT, ConfigError, envs, load_fleet
from model_build import data, export, fallback, k8s_jobs, parity, signing, triton_repo, trt_engine
from model_build.config import DEFAULT_OUT, RankerConfig, TrainConfig
from model_build.fallback import FALLBACK
from model_build.manifest import (
    MANIFEST,
    SIGNATURE,
    Benchmark,
    EngineEntry,
    FileEntry,
    Manifest,
    Metrics,
    ParityFigure,
    Role,
    file_entry,
    verify,
    write_manifest,
)
from model_build.ranker import Ranker
from model_build.train import train
from model_build.trt_plan import BuildPlan, HardwareCompat, PlanError, Precision, make_plan, model_dirs, sm

GOLDEN = "golden/golden.npz"
CHECKPOINT = "checkpoint/ranker.pt"
LOCAL_TIMING_CACHE = ROOT / "build"  # + timing-cache/tensorrt-<version>/<sm>.cache
KNOWN_TOP = {MANIFEST, SIGNATURE, FALLBACK, "golden", "checkpoint", "jobs", "engine_records"}


class BuildError(Exception):
    """The build cannot produce a trustworthy repository; the message says why."""


class BuildOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    out: Path = DEFAULT_OUT
    train: TrainConfig = TrainConfig()
    envs: list[str] | None = None  # None: every environment with stacks
    opt_batch: int = 256
    precision: Precision = "fp16"
    hardware_compatibility: HardwareCompat = "NONE"
    version_compatible: bool = False
    version: str | None = None  # None: the stack config's model.version
    # Release signature (model_build.signing): "key" signs with `signing_key` (None: the development key), offline;
    # "sigstore" signs keyless with the CI job's OIDC identity (the build workflow on GitHub Actions).
    sign: Literal["key", "sigstore"] = "key"
    signing_key: Path | None = None


@dataclass
class BuildResult:
    out: Path
    manifest: Manifest
    plan: BuildPlan
    timings: dict[str, float] = field(default_factory=dict)
    trt: dict = field(default_factory=dict)


Log = Callable[[str], None]


def plan_for(opts: BuildOptions) -> BuildPlan:
    try:
        names = opts.envs or envs()
        return make_plan(
            [load_fleet(e) for e in names],
            opt_batch=opts.opt_batch,
            precision=opts.precision,
            hardware_compatibility=opts.hardware_compatibility,
            version_compatible=opts.version_compatible,
            version=opts.version,
        )
    except (ConfigError, PlanError) as e:
        raise BuildError(f"fleet config: {e}") from None


def prepare_out(out: Path, model: str) -> None:
    """Empty `out` of a previous build (manifest first, so it never looks complete), or refuse."""
    out.mkdir(parents=True, exist_ok=True)
    ours = KNOWN_TOP | set(model_dirs(model).values())
    entries = {p.name for p in out.iterdir()}
    strangers = sorted(entries - ours)
    if strangers:
        raise BuildError(
            f"refusing to build into {out}: it holds files that are not from a model build: {strangers[:5]}"
        )
    (out / MANIFEST).unlink(missing_ok=True)
    for name in entries - {MANIFEST}:
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def git_info() -> dict[str, str | bool]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        # Dirty only where it changes the model: its code, the fleet config and the schema it reads.
        dirty = bool(git("status", "--porcelain", "--", "model_build", "infra/config.py", "infra/catalog.py", "stacks"))
        return {"revision": rev, "dirty": dirty}
    except Exception as e:  # noqa: BLE001 - provenance is best effort: not a checkout (a tarball), git missing...
        return {"revision": "unknown", "dirty": True, "error": str(e)[:200]}


def save_checkpoint(path: Path, ranker: Ranker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "ranker_config": ranker.cfg.model_dump_json(),
            "cardinalities": data.FEATURES["cardinalities"],
            "n_dense": len(data.FEATURES["dense"]),
            "state_dict": ranker.state_dict(),
        },
        path,
    )


def load_checkpoint(path: Path) -> Ranker:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    n = int(ck["n_dense"])
    ranker = Ranker(
        RankerConfig.model_validate_json(ck["ranker_config"]), list(ck["cardinalities"]), torch.zeros(n), torch.ones(n)
    )
    ranker.load_state_dict(ck["state_dict"])
    return ranker.eval()


def _engine_entry(
    plan: BuildPlan, e, status: Literal["built", "not-built"], reason: str | None, **built
) -> EngineEntry:
    return EngineEntry(
        compute_capability=e.compute_capability,
        serves=e.serves,
        file=e.path,
        status=status,
        reason=reason,
        tensorrt_version=e.tensorrt_version,
        tensorrt_image=e.tensorrt_image,
        precision=e.precision,
        strongly_typed=e.strongly_typed,
        hardware_compatibility=e.hardware_compatibility,
        version_compatible=e.version_compatible,
        profile=e.profile.model_dump(),
        timing_cache_key=e.timing_cache_key,
        onnx=e.onnx,
        record=e.record,
        build_jobs=[j.file for j in plan.jobs if j.compute_capability == e.compute_capability]
        if status == "not-built"
        else [],
        **built,
    )


def _ort_scores(sess: Any, b: dict[str, np.ndarray]) -> np.ndarray:
    """Scores of one batch from an ONNX Runtime session."""
    return sess.run(["score"], b)[0]


def _engine_scores(eng: trt_engine.Engine, b: dict[str, np.ndarray]) -> np.ndarray:
    """Scores of one batch from a TensorRT engine."""
    return eng(b)["score"]


def build(
    opts: BuildOptions, log: Log = print, progress: Callable[[int, int, float], None] | None = None
) -> BuildResult:
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    plan = plan_for(opts)
    out = opts.out.resolve()
    prepare_out(out, plan.model)
    dirs = model_dirs(plan.model)
    log(
        f"plan: {plan.model} {plan.version} for {', '.join(plan.envs)}; "
        f"compute capabilities {plan.compute_capabilities}; "
        f"TensorRT {plan.tensorrt_version} (Triton {plan.triton_release}); "
        f"max batch {plan.max_batch_size}, opt {plan.opt_batch_size}"
    )

    # 1. train
    t = time.perf_counter()
    result = train(opts.train, progress)
    timings["train_s"] = time.perf_counter() - t
    m = result.metrics
    log(
        f"trained {int(m['train_rows'])} rows x {opts.train.epochs} epochs in {m['train_seconds']:.1f} s: "
        "validation AUC "
        f"{m['validation_auc']:.4f} (oracle {m['oracle_auc']:.4f}, chance 0.5), logloss {m['validation_logloss']:.4f}, "
        f"NDCG@10 {m['validation_ndcg_at_10']:.4f}"
        + (" [bad labels: trained on shuffled labels]" if opts.train.bad_labels else "")
    )

    # 2. golden set and PyTorch float32 reference
    golden = data.rows(opts.train.seed, "golden", 0, plan.max_batch_size)
    reference = export.torch_scores(export.scorer(result.ranker, "fp32"), golden.batch(0, len(golden))).ravel()

    # 3. export
    t = time.perf_counter()
    meta = {"model": plan.model, "version": plan.version, "data_seed": str(opts.train.seed)}
    sig = export.signature(plan.max_batch_size)
    fp32_rel = f"{dirs['onnx']}/1/model.onnx"
    graphs: dict[Precision, dict] = {
        "fp32": export.export(
            result.ranker,
            out / fp32_rel,
            "fp32",
            max_batch_size=plan.max_batch_size,
            doc="reco-dr ranker, float32",
            metadata=meta,
        )
    }
    graphs["fp32"]["path"] = fp32_rel
    trt_src = plan.engines[0].onnx if plan.engines else fp32_rel
    if opts.precision == "fp16":
        graphs["fp16"] = export.export(
            result.ranker,
            out / trt_src,
            "fp16",
            max_batch_size=plan.max_batch_size,
            doc="reco-dr ranker, float16 inside (TensorRT strongly typed build source)",
            metadata=meta,
        )
        graphs["fp16"]["path"] = trt_src
    timings["export_s"] = time.perf_counter() - t
    log(
        f"exported ONNX (dynamo, opset {export.OPSET}, dynamic batch, int32 ids): "
        f"{', '.join(g['path'] for g in graphs.values())} "
        f"in {timings['export_s']:.1f} s; ops {graphs['fp32']['ops']}"
    )

    # 4. parity gates, PyTorch <-> ONNX Runtime, every graph at batch 1 / opt / max
    t = time.perf_counter()
    figures: list[ParityFigure] = []
    for graph, info in graphs.items():
        sess = export.ort_session(out / info["path"])
        figures += parity.run_gates(
            reference,
            partial(_ort_scores, sess),
            golden,
            opt=plan.opt_batch_size,
            max_batch=plan.max_batch_size,
            graph=graph,
            runtime="onnxruntime-cpu",
        )
    timings["parity_s"] = time.perf_counter() - t
    for f in figures:
        log(
            f"parity {f.graph} onnxruntime batch {f.batch:>4} ({f.rows} rows): "
            f"max_abs {f.max_abs:.2e} max_rel {f.max_rel:.2e} "
            f"top-{f.topk} overlap mean {f.topk_overlap_mean:.3f} min {f.topk_overlap_min:.3f} "
            f"NDCG delta {f.ndcg_delta:.1e} -> {'ok' if f.passed else 'FAIL'}"
        )
    failed = [f for f in figures if not f.passed]
    if failed:
        raise BuildError(
            "parity gate failed for "
            + ", ".join(f"{f.graph} at batch {f.batch}" for f in failed)
            + f"; limits {parity.LIMITS}. No manifest written: {out} is not a release."
        )

    # 5. TensorRT engines: only for the local GPU's capability, and only with TensorRT present
    env = trt_engine.probe()
    engines: dict[str, EngineEntry] = {}
    built_files: list[tuple[str, Role]] = []
    for e in plan.engines:
        if env["tensorrt"] and env["compute_capability"] == e.compute_capability:
            t = time.perf_counter()
            # Local timing cache under the git-ignored build/ tree, same key as in the bucket.
            cache_path = LOCAL_TIMING_CACHE / e.timing_cache_key
            blob, cache, _io = trt_engine.build_engine(
                (out / e.onnx).read_bytes(),
                shapes=e.profile.shapes({s.name: s.dims for s in sig.inputs}),
                timing_cache=cache_path.read_bytes() if cache_path.is_file() else None,
                hardware_compatibility=e.hardware_compatibility,
                version_compatible=e.version_compatible,
            )
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(cache)
            eng = trt_engine.Engine(blob, host_code_allowed=e.version_compatible)
            try:
                trt_fig = parity.run_gates(
                    reference,
                    partial(_engine_scores, eng),
                    golden,
                    opt=plan.opt_batch_size,
                    max_batch=plan.max_batch_size,
                    graph=e.precision,
                    runtime="tensorrt",
                )
            finally:
                eng.close()
            figures += trt_fig
            if not all(f.passed for f in trt_fig):
                raise BuildError(f"TensorRT parity gate failed for {e.file}: {[f.model_dump() for f in trt_fig]}")
            (out / e.path).parent.mkdir(parents=True, exist_ok=True)
            (out / e.path).write_bytes(blob)
            built_files.append((e.path, "engine"))
            fe = file_entry(out, e.path, "engine")
            engines[e.compute_capability] = _engine_entry(
                plan, e, "built", None, sha256=fe.sha256, size=fe.size, built_on=env["gpu"]
            )
            log(f"built TensorRT engine {e.path} on {env['gpu']} in {time.perf_counter() - t:.1f} s")
        else:
            why = (
                env["reason"]
                or f"this host's GPU is compute capability {env['compute_capability']}, not {e.compute_capability}"
            )
            jobs = [j for j in plan.jobs if j.compute_capability == e.compute_capability]
            where = "; ".join(f"{j.file} on {j.stack} pool {j.pool} ({j.instance_type})" for j in jobs)
            engines[e.compute_capability] = _engine_entry(
                plan,
                e,
                "not-built",
                f"not built here: {why}. Built by {where}",
            )
    trt_summary = {
        "probe": env,
        "built": [cc for cc, e in engines.items() if e.status == "built"],
        "not_built": [cc for cc, e in engines.items() if e.status == "not-built"],
    }

    # 6. Triton repository
    triton_repo.write_config(
        out / dirs["tensorrt"] / "config.pbtxt",
        triton_repo.tensorrt_config(dirs["tensorrt"], sig, plan.cc_model_filenames(), plan.opt_batch_size),
    )
    triton_repo.write_config(
        out / dirs["onnx"] / "config.pbtxt", triton_repo.onnx_config(dirs["onnx"], sig, plan.opt_batch_size)
    )
    triton_repo.write_config(
        out / dirs["python"] / "config.pbtxt", triton_repo.python_config(dirs["python"], sig, fp32_rel, MANIFEST)
    )
    py_model = out / dirs["python"] / "1" / "model.py"
    py_model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("triton_python_model.py"), py_model)

    # 7. golden set, checkpoint, engine Jobs
    (out / GOLDEN).parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / GOLDEN,
        sparse_ids=golden.sparse_ids,
        dense=golden.dense,
        labels=golden.labels,
        request=golden.request,
        reference=reference.astype(np.float32),
    )
    save_checkpoint(out / CHECKPOINT, result.ranker)
    # The degraded answer a client shows when no region can rank (drills.client), signed with the release.
    fallback.write(out, plan.model, plan.version, result.popularity)
    job_files: list[str] = []
    fp16_sha = file_entry(out, trt_src, "onnx").sha256
    for j in plan.jobs:
        ep = plan.engine_for(j.compute_capability)
        if ep is None or engines[ep.compute_capability].status == "built":
            continue
        jp = k8s_jobs.job_plan_json(
            plan,
            ep,
            fp16_sha,
            sig.model_dump(mode="json"),
            {
                "batches": parity.batch_sizes(plan.opt_batch_size, plan.max_batch_size),
                "limits": parity.LIMITS[ep.precision],
                "topk": parity.TOPK,
                "batch1_rows": parity.BATCH1_ROWS,
            },
            GOLDEN,
        )
        k8s_jobs.write(out / j.file, k8s_jobs.render(plan, j, jp))
        job_files.append(j.file)

    # 8. manifest, last
    trt_source: list[tuple[str, Role]] = [(trt_src, "onnx-trt-source")] if trt_src != fp32_rel else []
    roles: list[tuple[str, Role]] = [
        (fp32_rel, "onnx"),
        *trt_source,
        (f"{dirs['tensorrt']}/config.pbtxt", "triton-config"),
        (f"{dirs['onnx']}/config.pbtxt", "triton-config"),
        (f"{dirs['python']}/config.pbtxt", "triton-config"),
        (f"{dirs['python']}/1/model.py", "python-model"),
        (GOLDEN, "golden"),
        (CHECKPOINT, "checkpoint"),
        (FALLBACK, "fallback"),
        *[(f, "k8s-job") for f in job_files],
        *built_files,
    ]
    files: list[FileEntry] = [file_entry(out, rel, role) for rel, role in roles]
    metrics = Metrics(
        validation_auc=m["validation_auc"],
        validation_logloss=m["validation_logloss"],
        validation_ndcg_at_10=m["validation_ndcg_at_10"],
        oracle_auc=m["oracle_auc"],
        validation_ctr=m["validation_ctr"],
        train_rows=int(m["train_rows"]),
        validation_rows=int(m["validation_rows"]),
        train_seconds=m["train_seconds"],
        parity=figures,
    )
    manifest = Manifest(
        model={"name": plan.model, "version": plan.version},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        git=git_info(),
        data={
            "seed": opts.train.seed,
            "generator_version": data.GENERATOR_VERSION,
            "bad_labels": opts.train.bad_labels,
            "train_requests": opts.train.train_requests,
            "validation_requests": opts.train.validation_requests,
            "golden_rows": len(golden),
            "rows_per_request": data.CANDIDATES,
        },
        ranker=opts.train.model.model_dump(mode="json") | {"features": data.FEATURES},
        training=opts.train.model_dump(mode="json", exclude={"model"}),
        metrics=metrics,
        signature=sig,
        onnx={g: dict(info.items()) for g, info in graphs.items()},
        files=files,
        compute_capabilities=plan.compute_capabilities,
        onnx_fallback_for=plan.onnx_fallback_for,
        engines=engines,
        tensorrt_version=plan.tensorrt_version,
        triton={"release": plan.triton_release, "version": plan.triton_version, "images": plan.triton_images},
        serving={
            "tensorrt": dirs["tensorrt"],
            "onnx_fallback": dirs["onnx"],
            "cpu_rehearsal": dirs["python"],
            "load": "tritonserver --model-control-mode=explicit --load-model=<one of these>",
        },
        build_plan=plan.model_dump(mode="json"),
        benchmark=Benchmark(note="not measured by the build; run `python -m model_build bench --out <this directory>`"),
    )
    write_manifest(out, manifest)
    problems = verify(out)
    if not problems:
        log(f"signing every file of the release ({opts.sign}) -> {SIGNATURE}")
        problems = _sign(out, opts)
    if problems:
        (out / MANIFEST).unlink(missing_ok=True)
        (out / SIGNATURE).unlink(missing_ok=True)
        raise BuildError("the fresh repository does not verify: " + "; ".join(problems))
    timings["total_s"] = time.perf_counter() - t_all
    return BuildResult(out, manifest, plan, timings, trt_summary)


def _sign(out: Path, opts: BuildOptions) -> list[str]:
    """Sign the finished repository and check the signature as a consumer will; the problems, [] when signed."""
    if opts.sign == "sigstore":
        signing.sign_with_sigstore(out)
        return []  # verifying needs the identity the stack pins; `model_build verify --stack` checks it
    private = opts.signing_key or signing.dev_key()[0]
    signing.sign_with_key(out, private)
    public = private.with_suffix(".pub")
    if not public.is_file():
        return [f"{public}: the public half of {private} is not beside it (needed to check the signature)"]
    return signing.verify_signature(out, signing.Signer(public_key_pem=public.read_text()))


def summary_lines(r: BuildResult) -> list[str]:
    """What a person needs after a build: where engines come from when this host could not build them."""
    lines = []
    probe = r.trt["probe"]
    if r.trt["not_built"]:
        lines.append(
            f"TensorRT engines NOT built here: {probe['reason'] or 'this GPU is not of the needed capability'}."
        )
        for cc in r.trt["not_built"]:
            e = r.manifest.engines[cc]
            for jf in e.build_jobs:
                job = next(j for j in r.plan.jobs if j.file == jf)
                lines.append(
                    f"  {sm(cc)} ({e.file}, TensorRT {e.tensorrt_version}, {e.tensorrt_image}): build on {job.stack} "
                    f"GPU pool '{job.pool}' ({job.instance_type}) with `kubectl apply -f {r.out / jf}`"
                )
    lines.extend(f"TensorRT engine built here for {sm(cc)}: {r.manifest.engines[cc].file}" for cc in r.trt["built"])
    return lines


def dump_json(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
