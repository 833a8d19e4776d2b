"""Command line: `python -m model_build [build] ...`, `verify DIR`, `publish DIR --stack STACK`, `bench`, `plan`.

With no subcommand (or only options), `build` runs: `python -m model_build --out DIR` is the build.
Exit codes: 0 ok; 1 the build, a gate, verify or publish failed (the message says what and which file);
2 bad usage or config.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SUBCOMMANDS = ("build", "verify", "publish", "bench", "plan")


def _console() -> Console:
    c = Console(highlight=False)
    return c if c.is_terminal else Console(width=160, highlight=False)


def _batches(text: str) -> list[int]:
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of batch sizes, got {text!r}") from None
    if not out or out[0] < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return out


def parser() -> argparse.ArgumentParser:
    from model_build import data
    from model_build.config import DEFAULT_OUT, TrainConfig

    d = TrainConfig()  # one source of truth for the defaults

    ap = argparse.ArgumentParser(
        prog="python -m model_build",
        description="Build the ranker into a Triton model repository with TensorRT engine plans, verify it, "
        "publish it, benchmark it. "
        "With no subcommand, `build` runs (so `python -m model_build --out DIR` builds).",
    )
    sub = ap.add_subparsers(dest="cmd", metavar="{build,verify,publish,bench,plan}")

    b = sub.add_parser(
        "build",
        help="train, export ONNX, parity gates, Triton repository, engine Jobs, manifest (the default)",
        description="Train the ranker on seeded synthetic data (CPU), export ONNX (dynamo), run the parity gates, "
        "write the Triton repository, TensorRT engines where TensorRT and a GPU are present (else a "
        "Kubernetes Job per engine) and the manifest, last.",
    )
    b.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory = the model repository (default {DEFAULT_OUT})"
    )
    b.add_argument("--seed", type=int, default=data.DEFAULT_SEED, help="data and training seed (default %(default)s)")
    b.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (default %(default)s)")
    b.add_argument(
        "--train-requests",
        type=int,
        default=d.train_requests,
        help=f"training requests, {data.CANDIDATES} rows each (default %(default)s)",
    )
    b.add_argument(
        "--validation-requests",
        type=int,
        default=d.validation_requests,
        help="validation requests (default %(default)s)",
    )
    b.add_argument(
        "--bad-labels",
        action="store_true",
        help="train on shuffled labels: a valid model that passes parity but learned nothing (AUC ~0.5), "
        "the deliberately bad candidate for a release-rollback drill",
    )
    b.add_argument(
        "--env",
        action="append",
        dest="envs",
        metavar="ENV",
        help="build for this environment's fleet (repeatable; default every environment in stacks/)",
    )
    b.add_argument(
        "--version",
        help="model version to build (default: model.version from the stack config); "
        "for a candidate that is not in the stack config yet, e.g. --bad-labels --version 2026.11.1-bad",
    )
    b.add_argument(
        "--opt-batch",
        type=int,
        default=256,
        help="TensorRT profile opt batch and the parity gates' middle batch (default %(default)s)",
    )
    b.add_argument(
        "--precision",
        choices=["fp16", "fp32"],
        default="fp16",
        help="precision of the graph TensorRT engines are built from (default %(default)s)",
    )
    b.add_argument(
        "--hardware-compatibility",
        choices=["NONE", "AMPERE_PLUS"],
        default="NONE",
        help="AMPERE_PLUS: one hardware-compatible engine for every Ampere+ GPU instead of one per capability",
    )
    b.add_argument(
        "--version-compatible",
        action="store_true",
        help="build version-compatible engines (Triton then needs version-compatible=true)",
    )
    b.add_argument(
        "--sign",
        choices=["key", "sigstore"],
        default="key",
        help="release signature: key (offline, --signing-key) or sigstore (keyless, the CI job's OIDC identity)",
    )
    b.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        help="EC private key (PEM) for --sign key, its public half beside it as .pub (default: $RECO_DR_SIGNING_KEY, "
        "else the development key .signing/release.key, made on first use)",
    )

    v = sub.add_parser(
        "verify",
        help="check a repository: its release signature, pinned digest and every file against its manifest",
        description="Exit 1 naming every offending file when the release signature (model.sig) is missing or not "
        "the pinned signer's, the manifest's sha256 is not the pinned digest, a hash, size or tensor signature does "
        "not match the manifest, a file is missing, or a file is there that the manifest does not list. The signer "
        "and digest come from --stack (its model.signer and model.digests), else --public-key and --digest, else the "
        "development key that local builds sign with. Prints the manifest digest a stack pins.",
    )
    v.add_argument("dir", type=Path, help="repository directory (holding manifest.json)")
    v.add_argument("--stack", help="regional stack whose model.signer and model.digests[version] must match")
    v.add_argument("--public-key", type=Path, help="PEM public key of the signer (instead of --stack)")
    v.add_argument("--digest", help="expected sha256 of manifest.json (instead of --stack)")
    v.add_argument("--stacks-dir", type=Path, default=None, help="directory of Pulumi.<stack>.yaml (default: stacks/)")

    p = sub.add_parser(
        "publish",
        help="upload a verified, signed repository to the stack's regional bucket, manifest last",
        description="Refuse a release not signed by the stack's model.signer; upload to <bucket>/<model>/<version>/ "
        "with SHA-256 checksums and If-None-Match, the signature and then the manifest last; refuse an existing "
        "version; check every object after upload. It serves once the stack pins its digest (model.digests).",
    )
    p.add_argument("dir", type=Path, help="repository directory (holding manifest.json)")
    p.add_argument(
        "--stack",
        required=True,
        help="regional stack, e.g. prod-use1 (gives the region, and the bucket if --bucket is absent)",
    )
    p.add_argument(
        "--bucket",
        help="bucket name; overrides the stack's bucket_name output (read via the Pulumi Automation API otherwise)",
    )
    p.add_argument("--endpoint-url", help="S3 endpoint, e.g. a moto_server for the local rehearsal")
    p.add_argument("--stacks-dir", type=Path, default=None, help="directory of Pulumi.<stack>.yaml (default: stacks/)")

    be = sub.add_parser(
        "bench",
        help="PyTorch eager vs ONNX Runtime (and TensorRT where present) latency/throughput into the manifest",
        description="Measure p50/p99 latency and rows/s per batch size for every runtime side by side, and "
        "record them in the manifest's benchmark section (qps_per_gpu only for a GPU measured).",
    )
    be.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"repository to benchmark (default {DEFAULT_OUT})")
    be.add_argument(
        "--batches", type=_batches, default=None, help="comma-separated batch sizes (default 1,8,64,256,1024,4096)"
    )
    be.add_argument(
        "--seconds", type=float, default=0.4, help="time budget per (runtime, batch) point (default %(default)s)"
    )
    be.add_argument(
        "--latency-budget-ms",
        type=float,
        default=50.0,
        help="p99 bound for the throughput figures (default %(default)s)",
    )
    be.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads per CPU runtime "
        "(default %(default)s: like one Triton CPU instance, and steady on a shared machine)",
    )

    pl = sub.add_parser(
        "plan",
        help="print the TensorRT build plan for the fleet (engines, profiles, files, timing caches, Jobs)",
        description="Print the build plan as JSON; needs neither TensorRT nor a GPU.",
    )
    pl.add_argument("--env", action="append", dest="envs", metavar="ENV", help="environment (repeatable; default all)")
    pl.add_argument("--opt-batch", type=int, default=256)
    pl.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    pl.add_argument("--hardware-compatibility", choices=["NONE", "AMPERE_PLUS"], default="NONE")
    pl.add_argument("--version-compatible", action="store_true")
    return ap


def _normalise(argv: list[str]) -> list[str]:
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        return ["build", *argv]
    return argv


def cmd_build(a: argparse.Namespace, con: Console) -> int:
    from pydantic import ValidationError
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from model_build.build import BuildError, BuildOptions, build, summary_lines
    from model_build.config import TrainConfig

    t0 = time.perf_counter()
    try:
        opts = BuildOptions(
            out=a.out,
            envs=a.envs,
            version=a.version,
            sign=a.sign,
            signing_key=a.signing_key,
            opt_batch=a.opt_batch,
            precision=a.precision,
            hardware_compatibility=a.hardware_compatibility,
            version_compatible=a.version_compatible,
            train=TrainConfig(
                seed=a.seed,
                epochs=a.epochs,
                train_requests=a.train_requests,
                validation_requests=a.validation_requests,
                bad_labels=a.bad_labels,
            ),
        )
    except ValidationError as e:  # pydantic validation of the options
        con.print(f"[red]error:[/red] {e}")
        return 2
    with Progress(
        TextColumn("[bold]training[/bold]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        console=con,
        transient=True,
    ) as prog:
        task = prog.add_task("train", total=None, loss=float("nan"))

        def progress(step: int, total: int, loss: float) -> None:
            prog.update(task, completed=step, total=total, loss=loss)

        try:
            r = build(
                opts, log=lambda s: con.print(f"[dim]{time.perf_counter() - t0:6.1f}s[/dim] {s}"), progress=progress
            )
        except BuildError as e:
            con.print(f"[red]BUILD FAILED:[/red] {e}")
            return 1
    m = r.manifest
    t = Table(title=f"{m.model['name']} {m.model['version']} -> {r.out}")
    for col in (
        "graph",
        "runtime",
        "batch",
        "rows",
        "max abs err",
        "max rel err",
        "top-k overlap (mean/min)",
        "NDCG delta",
        "gate",
    ):
        t.add_column(col)
    for f in m.metrics.parity:
        t.add_row(
            f.graph,
            f.runtime,
            str(f.batch),
            str(f.rows),
            f"{f.max_abs:.2e}",
            f"{f.max_rel:.2e}",
            f"{f.topk_overlap_mean:.3f}/{f.topk_overlap_min:.3f}",
            f"{f.ndcg_delta:.1e}",
            "[green]pass[/green]" if f.passed else "[red]FAIL[/red]",
        )
    con.print(t)
    con.print(
        f"validation AUC [bold]{m.metrics.validation_auc:.4f}[/bold] (oracle {m.metrics.oracle_auc:.4f}, chance 0.5), "
        f"logloss {m.metrics.validation_logloss:.4f}"
        + ("  [yellow](--bad-labels: deliberately bad candidate)[/yellow]" if a.bad_labels else "")
    )
    for line in summary_lines(r):
        con.print(line)
    con.print(
        f"manifest: {r.out / 'manifest.json'} ({len(m.files)} files hashed); verify: ok; "
        f"build took {time.perf_counter() - t0:.1f} s (train {r.timings['train_s']:.1f} s, "
        f"export {r.timings['export_s']:.1f} s, parity {r.timings['parity_s']:.1f} s)"
    )
    return 0


def _stack_signer(model: Any) -> Any:
    """model_build's Signer for a stack's validated `model.signer`."""
    from model_build.signing import signer_from_config

    signer = signer_from_config(model.signer.model_dump())
    assert signer is not None  # the stack validated: a well-formed signer
    return signer


def _trust(a: argparse.Namespace, version: str | None) -> tuple[Any, str | None, list[str]]:
    """(Signer, pinned digest or None, problems) from --stack, else --public-key/--digest, else the development
    key. With --stack a version it does not pin is a problem: it could not serve there."""
    from model_build.publish import regional_config
    from model_build.signing import Signer, dev_key

    if a.stack:
        m = regional_config(a.stack, a.stacks_dir).model
        pinned = m.digest(version) if version else None
        unpinned = [f"manifest.json: {a.stack} pins no digest for {version} (model.digests)"] if version else []
        return _stack_signer(m), pinned, unpinned if pinned is None else []
    public = a.public_key or dev_key()[1]
    return Signer(public_key_pem=Path(public).read_text()), a.digest, []


def cmd_verify(a: argparse.Namespace, con: Console) -> int:
    from infra.config import ConfigError
    from model_build.manifest import load_manifest, verify
    from model_build.publish import PublishError
    from model_build.signing import manifest_digest, verify_signature

    problems = verify(a.dir)
    version = None
    if not problems:
        version = str(load_manifest(a.dir).model["version"])
    try:
        signer, pinned, unpinned = _trust(a, version)
    except (ConfigError, OSError, ValueError, PublishError) as e:
        con.print(f"[red]error:[/red] no signer to verify against: {e}")
        return 2
    problems += unpinned + verify_signature(a.dir, signer)
    digest = manifest_digest(a.dir) if (a.dir / "manifest.json").is_file() else None
    if pinned is not None and digest != pinned:
        problems.append(f"manifest.json: sha256 {digest} is not the pinned digest {pinned}")
    for p in problems:
        con.print(f"[red]VERIFY FAILED[/red] {p}", soft_wrap=True)
    if problems:
        return 1
    m = load_manifest(a.dir)
    con.print(
        f"verify ok: {a.dir} is {m.model['name']} {m.model['version']} "
        f"({len(m.files)} files match their sha256 and size; "
        f"ONNX and config.pbtxt signatures match; no unexpected files; signed by {signer.describe()}"
        + ("; manifest digest is the pinned one" if pinned else "")
        + ")"
    )
    con.print(f'manifest sha256 (model.digests["{m.model["version"]}"]): {digest}')
    return 0


def cmd_publish(a: argparse.Namespace, con: Console) -> int:
    from infra.config import ConfigError
    from model_build.publish import PublishError, bucket_from_stack, publish, regional_config
    from model_build.signing import verify_signature

    try:
        cfg = regional_config(a.stack, a.stacks_dir)
        region = cfg.region
        unsigned = verify_signature(a.dir, _stack_signer(cfg.model))
        if unsigned:  # nothing another signer made is published where this stack would pin it
            con.print(f"[red]PUBLISH FAILED:[/red] {a.dir}: {unsigned[0]}; nothing uploaded")
            return 1
        bucket = a.bucket or bucket_from_stack(a.stack)
        con.print(f"publishing {a.dir} to s3://{bucket} ({region}{', ' + a.endpoint_url if a.endpoint_url else ''})")
        up = publish(a.dir, bucket, region=region, endpoint_url=a.endpoint_url, log=con.print)
    except ConfigError as e:
        con.print(f"[red]error:[/red] {e}")
        return 2
    except PublishError as e:
        con.print(f"[red]PUBLISH FAILED:[/red] {e}")
        return 1
    con.print(
        f"published {len(up)} objects, manifest last ({up[-1].key}, version {up[-1].version_id}); "
        "every checksum verified"
    )
    return 0


def cmd_bench(a: argparse.Namespace, con: Console) -> int:
    from model_build.bench import BenchError, run_bench

    try:
        b = run_bench(a.out, a.batches, a.seconds, a.latency_budget_ms, log=con.print, threads=a.threads)
    except BenchError as e:
        con.print(f"[red]BENCH FAILED:[/red] {e}")
        return 1
    t = Table(
        title=f"benchmark ({b.host.get('cpu')}, {b.host.get('threads_per_runtime')} thread(s) per CPU runtime; "
        f"GPU: {b.host.get('gpu') or 'none'})"
    )
    runtimes = list(dict.fromkeys(r.runtime for r in b.runs))
    t.add_column("batch")
    for rt in runtimes:
        t.add_column(f"{rt}\np50 / p99 ms")
        t.add_column(f"{rt}\nrows/s")
    for batch in sorted({r.batch for r in b.runs}):
        row = [str(batch)]
        for rt in runtimes:
            r = next(x for x in b.runs if x.batch == batch and x.runtime == rt)
            row += [f"{r.p50_ms:.3f} / {r.p99_ms:.3f}", f"{r.rows_per_s:,.0f}"]
        t.add_row(*row)
    con.print(t)
    if b.cpu:
        con.print(
            f"CPU ({b.cpu['runtime']}, p99 <= {b.latency_budget_ms} ms): {b.cpu['rows_per_s']:,.0f} rows/s = "
            f"{b.cpu['requests_per_s']:,.0f} ranking requests/s at batch {b.cpu['batch']} "
            "(recorded under benchmark.cpu)"
        )
    con.print(
        f"qps_per_gpu: {b.qps_per_gpu or '{} (no GPU measured here; infra.capacity keeps the configured figures)'}"
    )
    con.print(f"recorded in {Path(a.out) / 'manifest.json'}")
    return 0


def cmd_plan(a: argparse.Namespace, con: Console) -> int:
    from model_build.build import BuildError, BuildOptions, dump_json, plan_for

    try:
        plan = plan_for(
            BuildOptions(
                envs=a.envs,
                opt_batch=a.opt_batch,
                precision=a.precision,
                hardware_compatibility=a.hardware_compatibility,
                version_compatible=a.version_compatible,
            )
        )
    except BuildError as e:
        con.print(f"[red]error:[/red] {e}")
        return 2
    print(dump_json(plan.model_dump(mode="json")))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_normalise(list(sys.argv[1:] if argv is None else argv)))
    con = _console()
    return {"build": cmd_build, "verify": cmd_verify, "publish": cmd_publish, "bench": cmd_bench, "plan": cmd_plan}[
        args.cmd
    ](args, con)


if __name__ == "__main__":
    sys.exit(main())
