"""Step actions of a release, a restore and the sub-region drills, registered with the drills engine.

Each follows the engine's rules (drills/actions.py): every change is journaled before it is made, with what it
replaces (`config_set`/`stack_up` for stack config, so the engine's rollback and `drills rollback` restore it;
`pins_writing`, `lkg_writing` for bucket writes), and values are absolute, so `drills resume` can re-run a
half-done step. State the gates read lives in `run.state.release` (see `state()`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from drills.actions import ActionFn, change_stack
from drills.adapters.base import release_s3
from drills.errors import Abort, GuardrailError
from drills.measure import percentile
from drills.release import artifacts as A
from drills.release.gates import offline_gates
from drills.release.metrics import delta, snapshots
from drills.release.planning import (
    CANARY_VERSION,
    CANARY_WEIGHT,
    NO_CANARY,
    RELEASE_TOOLING,
    VERSION,
    pinned_scoring_refusal,
    same_model_value,
)
from drills.undo import put_pointer_back
from infra.engines import coverage
from model_build.signing import signer_from_config

if TYPE_CHECKING:
    from drills.adapters.base import MetricsSource, ScoreProbe, ServingAdapter
    from drills.engine import Run
    from drills.model import Step
    from model_build.manifest import Metrics


def state(run: Run) -> dict:
    """baseline: "<region>/<track>" -> {t, snaps}: the metrics scrape a gate window starts from;
    probe: "<region>/<track>" -> {requests, errors, latency_ms}: what the score probes saw since that baseline;
    scores: region -> {t, stable, canary}: the last pair of score results (shared by the PSI and KS gates);
    active: region -> canary weight while the candidate takes traffic (the abort condition watches these);
    lkg: region -> pointer read; detection, node_loss: scenario results."""
    if not run.state.release:
        run.state.release.update({"baseline": {}, "probe": {}, "scores": {}, "active": {}, "lkg": {}})
    return run.state.release


def require_release_backend(run: Run, need: tuple[str, ...] = ("serving", "scores", "metrics")) -> None:
    b = run.backend
    missing = [n for n in need if getattr(b, n, None) is None]
    missing += [f"s3.{m}" for m in ("get_object", "list_keys", "restore_version") if not hasattr(b.s3, m)]
    if missing:
        raise GuardrailError(
            "backend",
            f"backend {b.name!r} lacks what a release needs ({', '.join(missing)}; see drills/adapters/base.py "
            "ServingAdapter, ScoreProbe, MetricsSource, ArtifactStore). Nothing was changed.",
        )


# Backend's optional adapters, typed: a release backend has them (require_release_backend refuses one without).
def _serving(run: Run) -> ServingAdapter:
    assert run.backend.serving is not None
    return run.backend.serving


def _scores(run: Run) -> ScoreProbe:
    assert run.backend.scores is not None
    return run.backend.scores


def _metrics(run: Run) -> MetricsSource:
    assert run.backend.metrics is not None
    return run.backend.metrics


def _stack(run: Run, region: str) -> str:
    return run.plan.stack_names[region]


def served_version(run: Run, region: str) -> str:
    return str(run.backend.stacks.get_config(_stack(run, region), VERSION))


@functools.lru_cache(maxsize=4)
def golden(seed: int, rows: int) -> dict:
    """The golden feature rows model_build's parity gates use: the same requests for both versions."""
    from model_build.data import golden_batch

    return golden_batch(seed, rows)


# ----------------------------------------------------------- stack changes (drills.actions.change_stack, release rules)
def apply_region(run: Run, stack: str, values: dict[str, Any], allow_deletes: int, message: str) -> dict:
    """Set config, preview, up. A release step may create resources (a canary) and a promotion may delete
    exactly the canary's; anything else destructive (a replace, more deletes) is refused before `up`."""

    def refuse(preview: dict) -> str | None:
        replaces = {k: v for k, v in preview.items() if k in ("replace", "create-replacement", "delete-replaced") and v}
        if replaces or preview.get("delete", 0) > allow_deletes:
            return (
                f"{preview}: a release step may delete at most the canary's {allow_deletes} resources and replace none"
            )
        return None

    ch = change_stack(run, stack, values, message, refuse)
    return {k: ch[k] for k in ("stack", "preview", "up_seconds")}


def verified(run: Run, region: str, model: str, version: str) -> A.BucketVerification:
    """The version as it is in the region's bucket, verified against the region's live stack config: the signer
    it names and the manifest digest it pins for `version` (a version it does not pin does not verify)."""
    stack = _stack(run, region)
    digests = run.backend.stacks.get_config(stack, "model.digests") or {}
    pinned = digests.get(version) if isinstance(digests, dict) else None
    signer = signer_from_config(run.backend.stacks.get_config(stack, "model.signer"))
    return A.verify_in_bucket(run.backend.s3, region, model, version, signer, pinned)


def tracks(run: Run, region: str) -> dict[str, Any]:
    return _serving(run).tracks(region)


def take_baseline(run: Run, region: str) -> None:
    """The metrics every later gate of this region differences against, and fresh probe counters."""
    st = state(run)
    for track in ("stable", "canary"):
        key = f"{region}/{track}"
        try:
            st["baseline"][key] = {"t": run.clock.now(), "snaps": snapshots(_metrics(run).scrape(region, track))}
        except Exception as e:  # noqa: BLE001 - no pods of that track yet: its gates say so
            st["baseline"][key] = {"t": run.clock.now(), "snaps": {}, "error": f"{type(e).__name__}: {e}"}
        st["probe"][key] = {"requests": 0, "errors": 0, "latency_ms": []}
    st["scores"].pop(region, None)


def measure(run: Run, region: str, track: str) -> dict[str, Any]:
    """Requests, failures, error rate and p99 of a track since its baseline: Triton's counters plus what the score
    probes saw fail. A failure both saw counts twice, which only makes the gate stricter (the server does not
    count every failure: see drills/release/metrics.py)."""
    st = state(run)
    key = f"{region}/{track}"
    base = st["baseline"].get(key)
    if base is None:
        raise LookupError(f"no metrics baseline for {key}: the step that changed it did not record one")
    d = delta(base["snaps"], snapshots(_metrics(run).scrape(region, track)))
    pr = st["probe"].get(key, {"requests": 0, "errors": 0, "latency_ms": []})
    requests = int(d.requests) + pr["errors"]
    failures = int(d.failure) + pr["errors"]
    p99, source = d.p99_ms, "Triton summary quantile 0.99, worst instance"
    if p99 is None and pr["latency_ms"]:
        p99, source = percentile(pr["latency_ms"], 99), f"score probes, {len(pr['latency_ms'])} requests"
    return {
        "requests": requests,
        "failures": failures,
        "server": d.to_dict(),
        "probe_errors": pr["errors"],
        "p99_ms": p99,
        "p99_source": source,
        "seconds": round(run.clock.now() - base["t"], 3),
    }


def score_pair(run: Run, region: str, rows: int, seed: int, since: float | None) -> dict[str, Any]:
    """Both versions' scores on the same golden rows, computed once per gate evaluation and shared."""
    st = state(run)
    hit = st["scores"].get(region)
    if hit and hit["rows"] == rows and (since is None or hit["t"] >= since):
        return hit
    inputs = golden(seed, rows)
    out: dict[str, Any] = {"t": run.clock.now(), "rows": rows}
    for track in ("stable", "canary"):
        r = _scores(run).scores(region, track, inputs)
        out[track] = r
        pr = st["probe"].setdefault(f"{region}/{track}", {"requests": 0, "errors": 0, "latency_ms": []})
        pr["requests"] += len(r.latency_ms)
        pr["errors"] += r.errors
        pr["latency_ms"] += list(r.latency_ms)
    st["scores"][region] = out
    return out


# ---------------------------------------------------------------- release
def _release_precheck(run: Run, step: Step) -> dict:
    require_release_backend(run)
    b, p = run.backend, step.params
    rel = p["release"]
    cand, model = rel["candidate"], rel["model"]
    unpinned = [s for s in rel.get("pinned_scoring", {}).values() if not b.stacks.get_config(s, RELEASE_TOOLING)]
    if unpinned:
        raise pinned_scoring_refusal(unpinned)
    problems: list[str] = []
    for stack, values in p["expect_config"].items():
        for path, want in values.items():
            got = b.stacks.get_config(stack, path)
            if not same_model_value(path, got, want):
                problems.append(
                    f"{stack} {path} is {got!r} live but the plan was made from {want!r} (re-plan from the live config)"
                )
    serving = {}
    for r in rel["order"]:
        if not b.route53.health(r):
            problems.append(f"{r}'s health check is unhealthy before the release")
        t = tracks(run, r)
        serving[r] = {k: v.to_dict() for k, v in t.items()}
        stable = t.get("stable")
        if stable is None or stable.version != rel["stable"][r]:
            problems.append(
                f"{r} serves {getattr(stable, 'version', None)!r}, not the stable version {rel['stable'][r]!r} in its "
                "stack config"
            )
        if "canary" in t and t["canary"].weight > 0:
            problems.append(f"{r} already sends {t['canary'].weight}% to a canary ({t['canary'].version})")
    verdicts: list[dict] = []
    metrics: Metrics | None = None  # the candidate's offline figures, from the first manifest that verifies
    sha: dict[str, str | None] = {}
    for r in rel["order"]:
        v = verified(run, r, model, cand)
        sha[r] = v.manifest_sha256
        verdicts.append(
            {
                "name": f"manifest {r}",
                "ok": v.ok,
                "blocking": True,
                "detail": (
                    f"{model}/{cand}/ verifies in {r}'s bucket ({len(v.files)} files, manifest sha256 "
                    f"{str(v.manifest_sha256)[:12]})"
                    if v.ok
                    else f"{r}: " + "; ".join(v.problems[:4])
                ),
                "figures": {"manifest_sha256": v.manifest_sha256, "problems": v.problems[:20]},
            }
        )
        if v.present:
            c = coverage(p["regions"][r]["ccs"], v.engines, p["regions"][r]["fallback"])
            # A listed engine without a build (or a Job's record) cannot serve: planned counts as missing here.
            cov: dict[str, Any] = {"engines": c.states, "missing": c.missing + c.planned, "ok": c.ok}
        else:
            cov = {"ok": False, "missing": p["regions"][r]["ccs"], "engines": {}}
        verdicts.append(
            {
                "name": f"engines {r}",
                "ok": cov["ok"],
                "blocking": True,
                "detail": (f"{r}: " + ", ".join(f"{cc} {s}" for cc, s in cov["engines"].items()))
                if cov["ok"]
                else f"{r}: no engine for compute capability {', '.join(cov['missing'])} (build it, or declare "
                "model.onnx_fallback_for)",
                "figures": cov,
            }
        )
        if metrics is None and v.manifest is not None:
            metrics = v.manifest.metrics
    g = rel["gates"]
    verdicts.extend(
        {
            "name": gr.name,
            "ok": gr.ok,
            "blocking": rel["offline_blocking"],
            "detail": gr.detail,
            "figures": gr.to_dict(),
        }
        for gr in offline_gates(metrics, g["auc_min"], g["ndcg_min"])
    )
    run.event("candidate_verdicts", candidate=cand, verdicts=verdicts, serving=serving)
    refused = [v for v in verdicts if not v["ok"] and v["blocking"]]
    if problems or refused:
        raise GuardrailError(
            "candidate",
            f"{cand} refused before any traffic moved: "
            + "; ".join(problems + [v["detail"] for v in refused])
            + ". Nothing was changed.",
        )
    if p.get("baseline_seconds"):
        run.wait(p["baseline_seconds"], label="baseline probes")
    state(run)["candidate"] = {"version": cand, "manifest_sha256": sha}
    return {"verdicts": verdicts, "manifest_sha256": sha, "serving": serving}


def _release_set(run: Run, step: Step) -> dict:
    require_release_backend(run)
    p = step.params
    region, want = p["region"], p["ready"]
    st = state(run)
    # Until the new weight is known to be live, the abort condition must not judge a baseline from before it.
    st["active"].pop(region, None)
    res = apply_region(run, p["stack"], p["values"], p.get("allow_deletes", 0), f"release {run.drill_id}: {step.name}")
    t0 = run.clock.now()

    def matched() -> bool:
        t = tracks(run, region)
        tr = t.get(want["track"])
        if (
            tr is None
            or tr.version != want["version"]
            or tr.ready < 1
            or tr.ready < tr.desired
            or tr.weight != want["weight"]
        ):
            return False
        return want["track"] != "stable" or "canary" not in t

    if not run.wait(p["timeout"], until=matched, label=f"{region} {want['track']} ready"):
        raise Abort(
            f"{region}: the {want['track']} pods did not serve {want['version']} at {want['weight']}% within "
            f"{p['timeout']:g} s: { {k: v.to_dict() for k, v in tracks(run, region).items()} }"
        )
    ready_s = round(run.clock.now() - t0, 3)
    take_baseline(run, region)
    if want["track"] == "canary" and want["weight"] > 0:
        st["active"][region] = want["weight"]
    t = tracks(run, region)
    run.event("serving", region=region, tracks={k: v.to_dict() for k, v in t.items()})
    return {**res, "ready_seconds": ready_s, "tracks": {k: v.to_dict() for k, v in t.items()}}


def _expect_caught(run: Run, step: Step) -> dict:
    raise Abort(
        f"the deliberately bad candidate {step.params['candidate']} passed every canary gate: the gates are too lax "
        "(see the PSI/KS figures); rolling the canary back"
    )


def _release_verify(run: Run, step: Step) -> dict:
    v = step.params["version"]
    bad, out = [], {}
    for r in step.params["regions"]:
        t = tracks(run, r)
        out[r] = {k: x.to_dict() for k, x in t.items()}
        stable = t.get("stable")
        if stable is None or stable.version != v or stable.ready < max(1, stable.desired) or "canary" in t:
            bad.append(f"{r}: {out[r]}")
        stack = _stack(run, r)
        cfg = {path: run.backend.stacks.get_config(stack, path) for path in (VERSION, CANARY_VERSION, CANARY_WEIGHT)}
        if not (
            cfg[VERSION] == v
            and same_model_value(CANARY_VERSION, cfg[CANARY_VERSION], NO_CANARY)
            and same_model_value(CANARY_WEIGHT, cfg[CANARY_WEIGHT], 0)
        ):
            bad.append(f"{stack} config {cfg}")
    if bad:
        raise Abort(f"not every region serves {v} alone: " + "; ".join(bad))
    return {"serving": out}


def _pointer_doc(
    run: Run, s3: Any, region: str, model: str, version: str, v: Any
) -> tuple[dict, dict | None, str | None]:
    """(the pointer to write for a verified version, the region's current pointer, its S3 version id)."""
    prev, prev_vid = A.read_pointer(s3, region, model)
    files = A.pin(s3, region, model, version, v.files)
    doc = A.pointer(
        region, model, version, v.manifest_sha256 or "", files, run.clock.to_wall(run.clock.now()), run.drill_id, prev
    )
    return doc, prev, prev_vid


def _write_pointer(
    run: Run, s3: Any, region: str, model: str, doc: dict, prev: dict | None, prev_vid: str | None
) -> None:
    """Write a region's pointer, journaled first with what it replaces (drills.undo puts it back on rollback)."""
    run.event(
        "lkg_writing",
        region=region,
        key=A.lkg_key(model, region),
        version=doc["version"],
        previous_version_id=prev_vid,
        previous=(prev or {}).get("version"),
    )
    vid = A.write_pointer(s3, region, model, doc)
    run.event(
        "lkg_written",
        region=region,
        version=doc["version"],
        version_id=vid,
        manifest_sha256=doc["manifest_sha256"],
        files={k: f["sha256"] for k, f in doc["files"].items()},
    )


def _record_lkg(run: Run, step: Step) -> dict:
    """Verify again, then write every region's pointer; if a write fails, put back the pointers already
    written (the release is rolled back by the engine, and a pointer must not name a version no region serves)."""
    s3, p = release_s3(run.backend.s3), step.params
    model, version = p["model"], p["version"]
    docs, written = {}, []
    for r in p["regions"]:
        v = verified(run, r, model, version)
        if not v.ok:
            raise Abort(f"{r}: {model} {version} no longer verifies in its bucket: " + "; ".join(v.problems[:4]))
        docs[r] = _pointer_doc(run, s3, r, model, version, v)
    try:
        for r, (doc, prev, prev_vid) in docs.items():
            _write_pointer(run, s3, r, model, doc, prev, prev_vid)
            written.append(r)
    except Exception as e:
        for r in written:
            prev_vid = docs[r][2]
            put_pointer_back(s3, r, A.lkg_key(model, r), prev_vid)
            run.event("lkg_reverted", region=r, key=A.lkg_key(model, r), to_version_id=prev_vid)
        raise Abort(
            f"writing the last-known-good pointers failed ({type(e).__name__}: {e}); the ones written were put back"
        ) from e
    return {
        "pointers": {
            r: {"version": version, "manifest_sha256": d[0]["manifest_sha256"], "previous": (d[1] or {}).get("version")}
            for r, d in docs.items()
        }
    }


# ---------------------------------------------------------------- last-known-good: read, restore, adopt
def _read_lkg(run: Run, region: str, model: str) -> dict:
    ptr, vid = A.read_pointer(run.backend.s3, region, model)
    if ptr is None:
        raise GuardrailError(
            "no-lkg",
            f"{region} has no last-known-good pointer ({A.lkg_key(model, region)}): a promoted release writes one; "
            f"`python -m drills restore --env {run.plan.env} --region {region} --adopt` records the verified version "
            "it serves now. Nothing was changed.",
        )
    if ptr.get("unreadable") or not ptr.get("files"):
        raise GuardrailError(
            "no-lkg", f"{region}'s last-known-good pointer is not readable ({ptr}); nothing was changed"
        )
    state(run)["lkg"][region] = {**ptr, "pointer_version_id": vid}
    return ptr


def _lkg_precheck(run: Run, step: Step) -> dict:
    require_release_backend(run, ("serving",))
    p = step.params
    region, model = p["region"], p["model"]
    problems = []
    for stack, values in p.get("expect_config", {}).items():
        for path, want in values.items():
            got = run.backend.stacks.get_config(stack, path)
            if not same_model_value(path, got, want):
                problems.append(f"{stack} {path} is {got!r} live but the plan was made from {want!r}")
    ptr = _read_lkg(run, region, model)
    differ = A.compare_to_pointer(run.backend.s3, region, ptr)
    served = served_version(run, region)
    if p.get("require_clean"):
        if differ:
            problems.append(
                f"{region}'s bucket already differs from its last-known-good pointer ({', '.join(differ)}): restore it "
                "first"
            )
        if served != ptr["version"]:
            problems.append(
                f"{region} serves {served}, its last-known-good pointer names {ptr['version']}: the drill starts from "
                "a region at its pointer"
            )
    if problems:
        raise GuardrailError("precheck", "; ".join(problems) + ". Nothing was changed.")
    hashes = A.fetched_hashes(run.backend.s3, region, model, ptr["version"], sorted(ptr["files"]))
    state(run).setdefault("hashes_before", {})[region] = hashes
    return {
        "pointer": {k: ptr.get(k) for k in ("version", "manifest_sha256", "recorded_at", "drill_id")},
        "served": served,
        "differ": differ,
        "hashes_before": hashes,
    }


def pin_region(run: Run, s3: Any, region: str, ptr: dict, differ: dict) -> dict[str, str]:
    """Restore by version id: write the region's fetch pins for the pointer (journaled first), so every pod's
    fetch takes the pointer's S3 versions of its files; nothing under the published prefix is written. Returns
    {path: pinned S3 version id} for the files that differed."""
    key = A.pins_key(ptr["model"], region)
    run.event("pins_writing", region=region, key=key, version=ptr["version"], paths=sorted(differ))
    vid = A.write_pins(s3, region, ptr)
    pinned = {path: ptr["files"][path]["version_id"] for path in sorted(differ)}
    run.event("pins_written", region=region, key=key, version_id=vid, pinned=pinned)
    return pinned


def restore_region(run: Run, region: str, model: str, allow_deletes: int, timeout: float) -> dict:
    """Pin the fetch to the pointer's S3 versions, re-point the config, roll the pods if needed, wait; returns the
    evidence (what a pod fetches, before and after)."""
    s3, st = run.backend.s3, state(run)
    ptr = st["lkg"].get(region) or _read_lkg(run, region, model)
    before = A.fetched_hashes(s3, region, model, ptr["version"], sorted(ptr["files"]))
    differ = A.differing(ptr, before)
    pinned = pin_region(run, s3, region, ptr, differ) if differ else {}
    fault = run.state.fault or {}
    if fault.get("region") == region and fault.get("kind") == "corrupt-artifact":
        # The pins are what clearing this fault means: the engine must not "clear" it again on rollback (the
        # altered object stays the key's current version, as evidence; pods no longer fetch it).
        run.event("fault_cleared", region=region, kind="corrupt-artifact", by="restore")
        run.state.fault_removed(region)
        run.state.fault = None
    stack = _stack(run, region)
    values = {VERSION: ptr["version"], CANARY_VERSION: NO_CANARY, CANARY_WEIGHT: 0}
    live = {p: run.backend.stacks.get_config(stack, p) for p in values}
    changed = not all(same_model_value(p, live[p], v) for p, v in values.items())
    up = (
        apply_region(
            run, stack, values, allow_deletes, f"restore {region} to its last-known-good version {ptr['version']}"
        )
        if changed
        else None
    )
    restarted = False
    if pinned and live[VERSION] == ptr["version"]:
        # Every pod of the version fetches again, at the pinned versions (none keeps bytes fetched before the pins).
        run.event("pods_restarting", region=region, track="stable", reason="fetch pinned to the pointer's versions")
        _serving(run).restart(region, "stable")
        restarted = True
    t0 = run.clock.now()

    def ready() -> bool:
        t = tracks(run, region)
        s = t.get("stable")
        return s is not None and s.version == ptr["version"] and s.ready >= max(1, s.desired) and "canary" not in t

    if not run.wait(timeout, until=ready, label=f"{region} serving its last-known-good version"):
        raise Abort(f"{region} does not serve {ptr['version']} with every pod ready {timeout:g} s after the restore")
    after = A.fetched_hashes(s3, region, model, ptr["version"], sorted(ptr["files"]))
    f_t = (st.get("fault_t") or {}).get(region)
    out = {
        "pointer": {
            "version": ptr["version"],
            "manifest_sha256": ptr["manifest_sha256"],
            "recorded_at": ptr.get("recorded_at"),
        },
        "pinned": pinned,
        "hashes_before": before,
        "hashes_after": after,
        "config_changed": changed,
        "config_before": live,
        "restarted": restarted,
        "ready_seconds": round(run.clock.now() - t0, 3),
        "up": up,
        # RPO of a restore: how old the recovery point was when the fault struck (what is given up by going back).
        # The pointer keeps wall time (another drill, another clock wrote it); measured here in this drill's seconds.
        "rpo_seconds": round(f_t - run.clock.to_drill(ptr["recorded_at"]), 3)
        if f_t is not None and ptr.get("recorded_at") is not None
        else None,
    }
    run.event(
        "restored",
        region=region,
        version=ptr["version"],
        pinned=sorted(pinned),
        restarted=restarted,
        hashes_before=before,
        hashes_after=after,
        rpo_seconds=out["rpo_seconds"],
    )
    return out


def _restore_lkg(run: Run, step: Step) -> dict:
    require_release_backend(run, ("serving",))
    p = step.params
    return restore_region(run, p["region"], p["model"], p["allow_deletes"], p["timeout"])


def _adopt_lkg(run: Run, step: Step) -> dict:
    s3, p = run.backend.s3, step.params
    region, model = p["region"], p["model"]
    version = served_version(run, region)
    v = verified(run, region, model, version)
    if not v.ok:
        raise GuardrailError(
            "adopt",
            f"{region} serves {version}, which does not verify in its bucket: "
            + "; ".join(v.problems[:4])
            + ". It cannot be a last-known-good version. Nothing was changed.",
        )
    doc, prev, prev_vid = _pointer_doc(run, s3, region, model, version, v)
    _write_pointer(run, s3, region, model, doc, prev, prev_vid)
    return {"pointer": {"version": version, "manifest_sha256": doc["manifest_sha256"], "files": len(doc["files"])}}


# ---------------------------------------------------------------- artifact corruption
def _verify_served(run: Run, step: Step) -> dict:
    """The check every pod start and every release precheck depends on: does the served version still verify?"""
    region, model = step.params["region"], step.params["model"]
    version = served_version(run, region)
    t = run.clock.now()
    v = verified(run, region, model, version)
    fault = run.state.fault or {}
    state(run).setdefault("fault_t", {})
    if fault.get("region") == region:
        state(run)["fault_t"][region] = fault["t"]
    det = {
        "region": region,
        "version": version,
        "ok": v.ok,
        "problems": v.problems[:20],
        "t": t,
        "after_fault": round(t - fault["t"], 3) if fault.get("t") is not None else None,
        "fault": fault.get("handle"),
    }
    state(run)["detection"] = det
    if not v.ok:
        run.event("corruption_detected", **{k: det[k] for k in ("region", "version", "problems", "after_fault")})
    serving = {k: x.to_dict() for k, x in tracks(run, region).items()} if run.backend.serving else {}
    return {**det, "serving": serving}


def _verify_regions(run: Run, step: Step) -> dict:
    """Replication copies a corrupt object as faithfully as a good one. Watch every other region until the writes
    the source made to the corrupted key since the fault (the corrupt version) have been replicated there (counted
    in the key's versions), recording when it arrived; then restore the region by version id like the source (its
    fetch pins, if what a pod would fetch differs from its own last-known-good pointer) until it is exact. At the
    deadline, pin any region not yet exact from its own pointer: a late replica may still land."""
    s3, p = release_s3(run.backend.s3), step.params
    model = p["model"]
    handle: dict[str, Any] = (state(run).get("detection") or {}).get("fault") or {}
    key, source, before = handle.get("key"), handle.get("region"), handle.get("versions_before") or {}
    t_fault = (run.state.release.get("fault_t") or {}).get(source)
    out: dict[str, dict] = {}
    ptrs = {}
    for r in p["regions"]:
        ptr, _ = A.read_pointer(s3, r, model)
        ptrs[r] = ptr
        out[r] = {
            "pointer": (ptr or {}).get("version"),
            "saw_corrupt": None,
            "exact_at": None,
            "replicated_writes": 0,
            "pinned": {},
        }
    t0 = run.clock.now()

    def since_fault() -> float:
        return round(run.clock.now() - (t_fault if t_fault is not None else t0), 3)

    def check() -> bool:
        expected = (
            (len(s3.versions(source, key)) - before.get(source, 0))
            if key and source is not None and source in before
            else 0
        )
        for r, ptr in ptrs.items():
            if ptr is None or out[r]["exact_at"] is not None:
                continue
            arrived = (len(s3.versions(r, key)) - before.get(r, 0)) if key and r in before else expected
            out[r]["replicated_writes"] = f"{arrived}/{expected}"
            differ = A.compare_to_pointer(s3, r, ptr)
            if out[r]["saw_corrupt"] is None and (arrived >= 1 or handle.get("path") in differ):
                out[r]["saw_corrupt"] = since_fault()  # the first write replicated after the fault is the corrupt one
            if arrived >= expected and differ:
                out[r]["pinned"] = pin_region(run, s3, r, ptr, differ)
                differ = A.compare_to_pointer(s3, r, ptr)
            if arrived >= expected and not differ:
                out[r]["exact_at"] = since_fault()
        return all(v["exact_at"] is not None for r, v in out.items() if ptrs[r] is not None)

    run.wait(p["timeout"], until=check, label="the corrupt version replicated to every other region, then pinned")
    for r, ptr in ptrs.items():
        if ptr is None:
            v = verified(run, r, model, served_version(run, r))
            out[r].update(
                note="no last-known-good pointer: verified against its manifest only",
                problems=v.problems[:5],
                exact_at=since_fault() if v.ok else None,
            )
            continue
        if out[r]["exact_at"] is not None:
            continue
        # Pinned whether or not the bytes differ now: a late replica of the corrupt version cannot reach a pod.
        out[r]["pinned"] = pin_region(run, s3, r, ptr, A.compare_to_pointer(s3, r, ptr))
        out[r]["note"] = (
            f"not every write was replicated within {p['timeout']:g} s ({out[r]['replicated_writes']}): its fetch is "
            "pinned to its own last-known-good versions, so a late replica cannot reach a pod"
        )
        out[r]["exact_at"] = since_fault() if not A.compare_to_pointer(s3, r, ptr) else None
    state(run)["regions"] = out
    run.event("regions_verified", regions=out, key=key, source=source)
    return {"regions": out}


# ---------------------------------------------------------------- node loss
def node_loss_capacity(min_ready: int, pre_ready: int, fig: dict[str, Any]) -> dict[str, Any]:
    """The lowest serving capacity through a node loss against the N+1 figures, as fractions of the region's pods.

    On AWS one Triton pod serves one GPU, so the fraction of pods left ready times the GPUs at desired size is the
    GPUs serving. A model of the region with fewer pods (the rehearsal: one CPU pod per node) compares the same way:
    its lowest fraction against the fraction of the desired GPUs that the region's share of peak needs."""
    frac = (min_ready / pre_ready) if pre_ready else 0.0
    gpus = frac * fig["gpus_desired"]
    need = fig["gpus_required_at_peak"]
    return {
        "capacity_fraction_min": round(frac, 4),
        "capacity_fraction_predicted": round(fig["gpus_after_loss"] / fig["gpus_desired"], 4)
        if fig["gpus_desired"]
        else None,
        "capacity_fraction_required": round(need / fig["gpus_desired"], 4) if fig["gpus_desired"] else None,
        "gpus_serving_min": round(gpus, 2),
        "gpus_required_at_peak": need,
        "covered_peak_through_loss": gpus >= need,
    }


def _observe_node_loss(run: Run, step: Step) -> dict:
    """From the node's loss until the region's Triton pods are all ready again: capacity, readiness and the
    region's own inference latency at every poll (service probes run beside, as in every drill)."""
    b, p = run.backend, step.params
    region = p["region"]
    fault = run.state.fault or {}
    t0 = fault.get("t", run.clock.now())
    pre = (run.pre_state.get("triton") or {}).get(region) or list(b.capacity.triton_ready(region))
    pre_ready = int(pre[0])
    series: list[dict] = []
    m: dict[str, Any] = {"dropped_at": None, "recovered_at": None, "min_ready": pre_ready}

    def progress() -> bool:
        now = run.clock.now()
        ready, desired = b.capacity.triton_ready(region)
        rp, ip = b.probes.ready(region), b.probes.infer(region)
        series.append(
            {
                "t": round(now - t0, 3),
                "ready": ready,
                "desired": desired,
                "ready_probe": rp.ok,
                "infer_ok": ip.ok,
                "infer_ms": ip.latency_ms,
            }
        )
        m["min_ready"] = min(m["min_ready"], ready)
        if m["dropped_at"] is None and ready < pre_ready:
            m["dropped_at"] = round(now - t0, 3)
        if m["dropped_at"] is not None and m["recovered_at"] is None and ready >= pre_ready:
            m["recovered_at"] = round(now - t0, 3)
        return m["recovered_at"] is not None

    ok = run.wait(p["timeout"], until=progress, label="node loss and recovery")
    infer = [s["infer_ms"] for s in series if s["infer_ok"]]
    fig = p["figures"]
    result = {
        "pre_ready": pre_ready,
        **m,
        "samples": len(series),
        "infer_errors": sum(1 for s in series if not s["infer_ok"]),
        "ready_probe_failures": sum(1 for s in series if not s["ready_probe"]),
        "infer_p50_ms": percentile(infer, 50),
        "infer_p99_ms": percentile(infer, 99),
        **node_loss_capacity(m["min_ready"], pre_ready, fig),
        "figures": fig,
        "series": series[-200:],
    }
    state(run)["node_loss"] = result
    run.event("node_loss", region=region, **{k: v for k, v in result.items() if k != "series"})
    if not ok:
        raise Abort(
            f"{region}'s Triton pods were not all ready again {p['timeout']:g} s after the node loss "
            f"(dropped at {m['dropped_at']} s, min ready {m['min_ready']}/{pre_ready})"
        )
    return result


# The actions of releases, restores and the sub-region drills (composed in drills.registry).
ACTIONS: dict[str, ActionFn] = {
    "release_precheck": _release_precheck,
    "release_set": _release_set,
    "expect_caught": _expect_caught,
    "release_verify": _release_verify,
    "record_lkg": _record_lkg,
    "lkg_precheck": _lkg_precheck,
    "restore_lkg": _restore_lkg,
    "adopt_lkg": _adopt_lkg,
    "verify_served": _verify_served,
    "verify_regions": _verify_regions,
    "observe_node_loss": _observe_node_loss,
}
