"""Step actions, by name, in a registry: `fn(run, step) -> result dict` (journaled with the step).

Every change goes through `run.event(...)` *before* it is made (write-ahead), with what it replaces, so the
engine's rollback and `drills rollback` after a crash know what to undo. Actions set absolute values (weights,
roles, sizes), so re-running a step after a crash (`drills resume`) is harmless. New actions (a release's canary
share, a node loss) register with `@action("name")`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drills.checks import evaluate, window_stats
from drills.errors import Abort, DrillError, GuardrailError
from drills.manifest import served_facts
from drills.measure import Slo, SloRecovery, plan_slo
from drills.undo import compare_to_pre, delete_canaries, records_match
from infra.engines import coverage
from model_build.manifest import ManifestError

if TYPE_CHECKING:
    from drills.engine import Run
    from drills.model import Step

ActionFn = Callable[["Run", "Step"], dict]

_WEIGHT = re.compile(r"^routing\.regions\.([a-z0-9-]+)\.weight$")
_ROLE = re.compile(r"^routing\.regions\.([a-z0-9-]+)\.failover$")


# ---------------------------------------------------------------- shared helpers
def routing_of(values: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """Weights and failover roles named by global-stack config paths."""
    w = {m[1]: int(v) for p, v in values.items() if (m := _WEIGHT.match(p))}
    r = {m[1]: str(v) for p, v in values.items() if (m := _ROLE.match(p))}
    return w, r


def change_stack(
    run: Run, stack: str, values: dict[str, Any], message: str, refuse: Callable[[dict], str | None]
) -> dict:
    """Journal the config change, set it, preview, `refuse(preview)` (a reason aborts before `up`), up, journal the
    result. A signal waits for `up` to return (drills.engine.Run.stack_operation). Returns preview and timings."""
    stacks = run.backend.stacks
    before = {p: stacks.get_config(stack, p) for p in values}
    run.event("config_set", stack=stack, values=values, before=before)
    t_set = run.clock.now()
    with run.stack_operation():
        stacks.set_config(stack, values)
        preview = stacks.preview(stack)
        why = refuse(preview)
        if why:
            raise Abort(f"pulumi preview of {stack} shows {why}; not applying")
        t_up = run.clock.now()
        res = stacks.up(stack, message)
        t_done = run.clock.now()
        run.event("stack_up", stack=stack, preview=preview, summary=res.get("summary"), seconds=round(t_done - t_up, 3))
    return {"stack": stack, "preview": preview, "up_seconds": round(t_done - t_up, 3), "t_set": t_set, "t_done": t_done}


def _only_updates(preview: dict) -> str | None:
    destructive = {
        k: v for k, v in preview.items() if k in ("delete", "replace", "create-replacement", "delete-replaced") and v
    }
    return f"{destructive}: a drill only updates resources" if destructive else None


def apply_stack(run: Run, stack: str, values: dict[str, Any], message: str) -> dict:
    """Set config, preview (refuse deletes/replaces: a drill only updates), up; for the global stack wait until
    Route 53 carries the new records and answers by them. Returns the timings."""
    ch = change_stack(run, stack, values, message, _only_updates)
    t_set, t_done = ch["t_set"], ch["t_done"]
    out = {"stack": stack, "preview": ch["preview"], "up_seconds": ch["up_seconds"]}
    weights, roles = routing_of(values)
    if stack == run.plan.global_stack and (weights or roles):
        in_sync = run.wait(
            120, until=lambda: records_match(run.backend.route53, weights, roles), label="Route 53 change in sync"
        )
        t_sync = run.clock.now()
        run.weights.update(weights)
        run.roles.update(roles)
        want = {r for r, s in run.current_shares().items() if s > 0}
        answered = run.wait(
            120,
            until=lambda: {r for r, s in run.backend.route53.dns_answer().items() if s > 0} == want,
            label="DNS answers follow the records",
        )
        t_answer = run.clock.now()
        change = {
            "t_set": t_set,
            "t_up_done": t_done,
            "t_in_sync": t_sync,
            "t_answer": t_answer,
            "in_sync": in_sync,
            "answer_follows": answered,
            "step": run.current_step,
        }
        run.state.last_change = change
        run.event("change_applied", **change)
        if not in_sync:
            raise Abort(
                f"Route 53 records of {run.plan.fqdn} did not reach {weights or roles} within 120 s of `pulumi up`"
            )
        out.update(in_sync_seconds=round(t_sync - t_set, 3), answer_seconds=round(t_answer - t_set, 3))
    return out


class SwitchTracker:
    """Clients moving off `away` regions after t0, from the monitor's per-client results.

    A client is *hit* once, after t0, it fails or is answered by an away region; it has *moved* at its first
    success from another region after that (a later failure or away answer makes it hit again). first_success:
    the first move; drained: when every hit client has moved (the last move). SLO recovered: `drills.measure`'s rule
    over the service probes since t0.
    """

    def __init__(self, away: set[str], t0: float):
        self.away, self.t0 = away, t0
        self.hit: dict[int, float] = {}
        self.moved: dict[int, float] = {}
        self.results: list = []
        self.first_any: float | None = None
        self._recovery: SloRecovery | None = None

    def feed(self, results: list) -> None:
        for r in results:
            if r.t < self.t0:
                continue
            self.results.append(r)
            c = r.client if r.client is not None else -1
            bad = (not r.ok) or (r.region in self.away)
            if bad:
                self.hit.setdefault(c, r.t)
                self.moved.pop(c, None)
            elif c in self.hit and c not in self.moved:
                self.moved[c] = r.t
            if r.ok and r.region not in self.away and self.first_any is None:
                self.first_any = r.t

    @property
    def first_success(self) -> float | None:
        return min(self.moved.values()) if self.moved else (self.first_any if not self.hit else None)

    @property
    def drained(self) -> float | None:
        if any(c not in self.moved for c in self.hit):
            return None
        return max(self.moved.values()) if self.moved else self.first_any

    def slo_recovered(self, now: float, slo: Slo) -> float | None:
        """`drills.measure`'s SLO recovery over the results fed so far, from t0 (the fault or the change)."""
        if self._recovery is None:
            self._recovery = SloRecovery(slo, self.t0)
        self._recovery.feed(self.results[len(self._recovery.records) :])
        return self._recovery.judge(now)


def _milestones(t0: float, named: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(v - t0, 3) if v is not None else None) for k, v in named.items()}


# ---------------------------------------------------------------- actions
def _precheck(run: Run, step: Step) -> dict:
    b, p = run.backend, step.params
    problems: list[str] = []
    for stack, values in p.get("expect_config", {}).items():
        for path, want in values.items():
            got = b.stacks.get_config(stack, path)
            if got != want:
                problems.append(
                    f"{stack} {path} is {got!r} live but the plan was made from {want!r} (re-plan from the live config)"
                )
    regions = sorted(run.plan.stack_names)
    health = {r: b.route53.health(r) for r in regions}
    problems += [f"{r}'s health check is unhealthy before the drill" for r, ok in health.items() if not ok]
    groups: dict[str, list] = {}
    for r in p.get("engines_for", {}):
        groups[r] = [g.__dict__ for g in b.capacity.node_groups(r)]
        problems += [f"{r}/{g['pool']} node group is {g['status']}" for g in groups[r] if g["status"] != "ACTIVE"]
    engines: dict[str, Any] = {}
    for r, ccs in p.get("engines_for", {}).items():
        if not ccs:
            engines[r] = "ONNX fallback only"
            continue
        doc, sha = b.s3.current_manifest(r)
        try:
            facts = served_facts(r, doc)
        except ManifestError as e:
            engines[r] = {"manifest_sha256": sha, "engines": [], "missing": list(ccs), "invalid": str(e)}
            problems.append(f"{r}: {e}: cannot verify its engines")
            continue
        # The plan's `engines_for` already leaves out the stack's ONNX fallbacks; a listed engine must be built here.
        cov = coverage(ccs, facts.available if facts else {})
        missing = [cc for cc, s in cov.states.items() if s in ("missing", "planned")]
        engines[r] = {"manifest_sha256": sha, "engines": sorted(facts.built if facts else ()), "missing": missing}
        if facts is None:
            # current_manifest gives a hash without a document for bytes that are not JSON
            what = "the manifest in its bucket is not valid JSON" if sha else "no model manifest in its bucket"
            problems.append(f"{r}: {what} for the version it serves: cannot verify its engines")
        elif missing:
            problems.append(
                f"{r}: the manifest in its bucket has no engine for compute capability {', '.join(missing)}"
            )
    for r in p.get("buckets", []):
        if not b.s3.bucket_ok(r):
            problems.append(f"{r}: artifact bucket does not answer")
    if problems:
        raise GuardrailError("precheck", "; ".join(problems) + ". Nothing was changed.")
    if p.get("baseline_seconds"):
        run.wait(p["baseline_seconds"], label="baseline probes")
    return {"health": health, "engines": engines, "node_groups": groups}


def _set_config(run: Run, step: Step) -> dict:
    # The global stack last: pools and regional settings first, then the traffic move that relies on them.
    order = sorted(step.params["changes"].items(), key=lambda kv: kv[0] == run.plan.global_stack)
    return {
        "stacks": [apply_stack(run, stack, values, f"drill {run.drill_id}: {step.name}") for stack, values in order]
    }


def _scale_pools(run: Run, step: Step) -> dict:
    cap = run.backend.capacity
    done = {}
    for region, pools in step.params["targets"].items():
        live = {g.pool: g for g in cap.node_groups(region)}
        for pool, n in pools.items():
            g = live.get(pool)
            if g is None:
                raise Abort(f"{region}: no node group for GPU pool {pool}")
            if n > g.max:
                raise Abort(
                    f"{region}/{pool}: target {n} exceeds the node group's live max {g.max} (config and cluster differ)"
                )
            after = {"min": max(g.min, n), "desired": max(g.desired, n)}
            run.event(
                "pools_scaling", region=region, pool=pool, before={"min": g.min, "desired": g.desired}, after=after
            )
            cap.set_scaling(region, pool, **after)
            done[f"{region}/{pool}"] = {"before": {"min": g.min, "desired": g.desired}, "after": after}
    return {"scaled": done}


def _wait_capacity(run: Run, step: Step) -> dict:
    t0 = run.clock.now()
    ok = run.wait(
        step.params["timeout"],
        label="capacity",
        until=lambda: evaluate(run, "capacity_ready", {"targets": step.params["targets"]}).ok,
    )
    return {"ready": ok, "seconds": round(run.clock.now() - t0, 3)}


def _restore_pools(run: Run, step: Step) -> dict:
    pre = run.pre_state.get("node_groups", {})
    out = {}
    for region, pools in step.params["pools"].items():
        for pool in pools:
            g = next((x for x in pre.get(region, []) if x["pool"] == pool), None)
            if g is None:
                continue
            run.event("pools_restoring", region=region, pool=pool, to={"min": g["min"], "desired": g["desired"]})
            run.backend.capacity.set_scaling(region, pool, min=g["min"], desired=g["desired"])
            out[f"{region}/{pool}"] = {"min": g["min"], "desired": g["desired"]}
    return {"restored": out}


def _hold(run: Run, step: Step) -> dict:
    return {}


def _fault_regions(step: Step) -> list[str]:
    """The regions a fault step acts on: its `regions` (total-outage: every region of the environment), or its one
    `region` (region-outage)."""
    return list(step.params["regions"]) if "regions" in step.params else [step.params["region"]]


def _inject(run: Run, step: Step) -> dict:
    """Inject the fault in each region in turn, each journaled (`fault_prepared`, with its handle) before it is made,
    so a rollback clears every fault that was injected, also when an injection part-way fails."""
    kind = step.params["fault"]
    injected: dict[str, dict[str, Any]] = {}
    for region in _fault_regions(step):
        handle = run.backend.faults.prepare(region, kind)
        run.event("fault_prepared", region=region, kind=kind, handle=handle)
        run.backend.faults.inject(region, kind, handle)
        t = run.clock.now()
        run.state.fault_added({"t": t, "region": region, "kind": kind, "handle": handle})
        run.event("fault_injected", region=region, kind=kind)
        injected[region] = {"t_fault": t, "handle": handle}
    if "regions" not in step.params:
        return next(iter(injected.values()))
    return {"t_fault": min(v["t_fault"] for v in injected.values()), "regions": injected}


def _clear(run: Run, step: Step) -> dict:
    """Clear the fault in each region with the handle its own injection recorded."""
    kind = step.params["fault"]
    t_begin = run.clock.now()
    cleared = {}
    for region in _fault_regions(step):
        run.backend.faults.clear(region, kind, run.state.handle(region))
        run.event("fault_cleared", region=region, kind=kind)
        run.state.fault_removed(region)
        cleared[region] = round(run.clock.now() - t_begin, 3)
    run.state.fault_cleared_at = run.clock.now()
    if "regions" not in step.params:
        return {"t_cleared": run.clock.now()}
    return {"t_cleared": run.clock.now(), "cleared_after": cleared}


def _observe_outage(run: Run, step: Step) -> dict:
    """Every region down (total-outage): from the first fault, wait until every region's health check is unhealthy,
    measuring each one's detection and what the service probes saw. No DNS assertion: with every record unhealthy,
    Route 53 answers with all of them (it fails open); the answer is recorded."""
    b, regions = run.backend, list(step.params["regions"])
    fault = run.state.fault
    if fault is None:
        raise DrillError("observe_outage: no fault was injected before it")
    t0 = fault["t"]
    detected: dict[str, float | None] = dict.fromkeys(regions)

    def every_region_down() -> bool:
        now = run.clock.now()
        for r in regions:
            if detected[r] is None and not b.route53.health(r):
                detected[r] = now
                run.event("detected", region=r, after=round(now - t0, 3))
        return all(t is not None for t in detected.values())

    deadline = step.params["deadline"]
    done = run.wait(deadline - (run.clock.now() - t0), until=every_region_down, label="every region down")
    probes = run.monitor.since(t0)
    first_failure = next((p.t for p in probes if not p.ok), None)
    after = _milestones(t0, detected)
    result = {
        "t_fault": t0,
        "detected": after,
        "all_down": max((t for t in after.values() if t is not None), default=None) if done else None,
        "first_failure": None if first_failure is None else round(first_failure - t0, 3),
        "dns_answer": b.route53.dns_answer(),
        "during": window_stats(probes),
    }
    run.event("outage", regions=regions, **{k: v for k, v in result.items() if k != "during"})
    if not done:
        still = ", ".join(r for r, t in detected.items() if t is None)
        raise Abort(
            f"not every region's health check was unhealthy {deadline:g} s after the fault: still healthy {still}"
        )
    return result


def _observe_failover(run: Run, step: Step) -> dict:
    b, region = run.backend, step.params["region"]
    fault = run.state.fault
    if fault is None:
        raise DrillError("observe_failover: no fault was injected before it")
    t0 = fault["t"]
    slo = plan_slo(run.plan.objectives, run.params)
    tr = SwitchTracker({region}, t0)
    seen = {"n": len(run.monitor.results) - len(run.monitor.since(t0))}  # results before the fault are not fed
    m: dict[str, float | None] = {"detected": None, "dns_changed": None, "slo_recovered": None}

    def progress() -> bool:
        now = run.clock.now()
        if m["detected"] is None and not b.route53.health(region):
            m["detected"] = now
            run.event("detected", region=region, after=round(now - t0, 3))
        if m["dns_changed"] is None and b.route53.dns_answer().get(region, 0.0) == 0.0:
            m["dns_changed"] = now
            run.event("dns_changed", region=region, after=round(now - t0, 3))
        new = run.monitor.results[seen["n"] :]
        seen["n"] += len(new)
        tr.feed(new)
        if m["slo_recovered"] is None and m["dns_changed"] is not None:
            m["slo_recovered"] = tr.slo_recovered(now, slo)
            if m["slo_recovered"] is not None:
                run.state.slo_recovered_at = m["slo_recovered"]
        dns_changed = m["dns_changed"]
        return (
            None not in m.values()
            and tr.drained is not None
            and dns_changed is not None
            and now >= dns_changed + run.plan.ttl
        )

    done = run.wait(step.params["deadline"] - (run.clock.now() - t0), until=progress, label="failover")
    milestones = _milestones(
        t0,
        {
            "detected": m["detected"],
            "dns_changed": m["dns_changed"],
            "first_success": tr.first_success,
            "drained": tr.drained,
            "slo_recovered": m["slo_recovered"],
        },
    )
    result = {
        "t_fault": t0,
        "milestones": milestones,
        "ttl": run.plan.ttl,
        "clients_hit": len(tr.hit),
        "during": window_stats(tr.results),
        "rto_seconds": milestones["slo_recovered"],
    }
    run.event("rto", kind="failover", region=region, **{k: v for k, v in result.items() if k != "during"})
    if not done:
        raise Abort(f"failover of {region} not complete {step.params['deadline']:g} s after the fault: {milestones}")
    return result


def _observe_switch(run: Run, step: Step) -> dict:
    change = run.state.last_change or {}
    t0 = change.get("t_set", run.clock.now())
    away = set(step.params["away_from"])
    slo = plan_slo(run.plan.objectives, run.params)
    tr = SwitchTracker(away, t0)
    seen = {"n": len(run.monitor.results) - len(run.monitor.since(t0))}
    recovered: dict[str, float | None] = {"t": None}

    def progress() -> bool:
        new = run.monitor.results[seen["n"] :]
        seen["n"] += len(new)
        tr.feed(new)
        if recovered["t"] is None and tr.drained is not None:
            recovered["t"] = tr.slo_recovered(run.clock.now(), slo)
        return recovered["t"] is not None and tr.drained is not None

    done = run.wait(step.params["timeout"], until=progress, label="switch")
    milestones = _milestones(
        t0,
        {
            "records_in_sync": change.get("t_in_sync"),
            "dns_changed": change.get("t_answer"),
            "first_success": tr.first_success,
            "drained": tr.drained,
            "slo_recovered": recovered["t"],
        },
    )
    drained, slo_recovered = milestones["drained"], milestones["slo_recovered"]
    result = {
        "t_change": t0,
        "from": sorted(away),
        "milestones": milestones,
        "ttl": run.plan.ttl,
        "clients_hit": len(tr.hit),
        "during": window_stats(tr.results),
        # A planned move is complete when every client has left and the SLO held: the later of the two.
        "switch_seconds": None if drained is None or slo_recovered is None else max(drained, slo_recovered),
    }
    run.event("rto", kind="switch", **{k: v for k, v in result.items() if k != "during"})
    if not done:
        raise Abort(
            f"traffic did not leave {', '.join(sorted(away))} with the SLO met within {step.params['timeout']:g} s: "
            f"{milestones}"
        )
    return result


def _observe_recovery(run: Run, step: Step) -> dict:
    """Wait until the faulted region (`region`) or every one of `regions` is healthy again and answered where it
    carries traffic; with `slo_recovery` also until the SLO has recovered since the fault was cleared (total-outage:
    the service itself was down), which sets the `slo_recovered` moment. Then one TTL for the clients to return."""
    b, p = run.backend, step.params
    regions = _fault_regions(step)
    t0 = run.clock.now()
    shares = run.current_shares()
    answered = [r for r in regions if shares.get(r, 0) > 0]
    healthy_at: dict[str, float | None] = dict.fromkeys(regions)
    answered_at: dict[str, float | None] = {"t": None}
    start = run.state.fault_cleared_at if run.state.fault_cleared_at is not None else t0
    slo = SloRecovery(plan_slo(run.plan.objectives, run.params), start) if p.get("slo_recovery") else None
    seen = {"n": len(run.monitor.results) - len(run.monitor.since(start))}
    recovered: dict[str, float | None] = {"t": None}

    def back() -> bool:
        now = run.clock.now()
        health = {r: b.route53.health(r) for r in regions}
        for r, ok in health.items():
            if ok and healthy_at[r] is None:
                healthy_at[r] = now
        if slo is not None:
            new = run.monitor.results[seen["n"] :]
            seen["n"] += len(new)
            slo.feed(new)
            recovered["t"] = slo.judge(now)
        if not all(health.values()):
            return False
        if answered:
            ans = b.route53.dns_answer()
            if not all(ans.get(r, 0) > 0 for r in answered):
                return False
            if answered_at["t"] is None:
                answered_at["t"] = now
        return slo is None or recovered["t"] is not None

    ok = run.wait(p["timeout"], until=back, label="recovery")
    t1 = run.clock.now()
    if slo is not None and recovered["t"] is not None:
        run.state.slo_recovered_at = recovered["t"]
    figures = {  # seconds after the fault was cleared
        "healthy": _milestones(start, healthy_at),
        "dns_answers_every_region": _milestones(start, answered_at)["t"],
        "slo_recovered": _milestones(start, recovered)["t"] if slo is not None else None,
    }
    if "regions" in p:
        run.event("recovery", regions=regions, ok=ok, **figures)
    if not ok:
        waiting = [f"{r} healthy" for r, t in healthy_at.items() if t is None]
        if answered and answered_at["t"] is None:
            waiting.append(f"DNS answers with {', '.join(answered)}")
        if slo is not None and recovered["t"] is None:
            waiting.append("the SLO recovered")
        raise Abort(
            f"{', '.join(regions)} not recovered within {p['timeout']:g} s of clearing the fault: "
            f"still waiting for {'; '.join(waiting) or 'a stable verdict'}"
        )
    run.state.fault = None
    # Clients return as their caches expire; let one TTL pass under the monitor before the gates judge.
    run.wait(run.plan.ttl, label="clients return")
    out: dict[str, Any] = {"healthy_after": round(t1 - t0, 3)}
    if "regions" in p:
        out.update(figures)
    return out


def _verify(run: Run, step: Step) -> dict:
    mismatches = compare_to_pre(run.backend, run.pre_state, run.journal.entries())
    if mismatches:
        raise Abort("not back to the pre-drill state: " + "; ".join(mismatches))
    return {"verified": True}


def _canary_write(run: Run, step: Step) -> dict:
    out = {}
    for src in step.params["sources"]:
        key = f"drills/canary/{run.drill_id}/{src}.json"
        body = json.dumps({"drill_id": run.drill_id, "source": src, "t": run.clock.now()}).encode()
        run.event("canary_writing", region=src, key=key)
        t = run.clock.now()
        version = run.backend.s3.put_object(src, key, body)
        run.event("canary_written", region=src, key=key, version_id=version, t_put=t)
        out[src] = {"key": key, "t_put": t, "version_id": version}
    run.state.canaries = out
    return {"canaries": out}


def _measure_replication(run: Run, step: Step) -> dict:
    """Each canary's arrival in every other region: its lag from the PUT, or with `since_heal` (a replication
    partition drill) from the heal when that came later (the catch-up)."""
    canaries = run.state.canaries
    regions = sorted(run.plan.stack_names)
    lags: dict[str, dict[str, float | None]] = {src: {d: None for d in regions if d != src} for src in canaries}
    healed = run.state.fault_cleared_at if step.params.get("since_heal") else None

    def all_seen() -> bool:
        now = run.clock.now()
        for src, c in canaries.items():
            for dst, lag in lags[src].items():
                if lag is None and run.backend.s3.head(dst, c["key"]) is not None:
                    lags[src][dst] = round(now - max(c["t_put"], healed or c["t_put"]), 3)
                    run.event("replicated", source=src, destination=dst, lag=lags[src][dst])
        return all(v is not None for d in lags.values() for v in d.values())

    run.wait(step.params["timeout"], until=all_seen, label="replication")
    seen = [v for d in lags.values() for v in d.values() if v is not None]
    missing = [f"{s}->{d}" for s, dd in lags.items() for d, v in dd.items() if v is None]
    rep = {"lags": lags, "rpo_seconds": max(seen) if seen else None, "missing": missing}
    run.state.replication = rep
    run.event("rpo", **rep)
    return rep


def _readiness_check(run: Run, step: Step) -> dict:
    """Evaluate the fleet's readiness (the backend's, as `drills readiness` does) and compare with `expect`: [] (ready)
    or the names of the checks that must fail; anything else aborts naming what differed."""
    if run.backend.readiness is None:
        raise DrillError(f"the {run.backend.name} backend cannot evaluate readiness")
    results = run.backend.readiness()
    failing = sorted(r.name for r in results if not r.ok)
    run.event("readiness", checks=[{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results])
    expect = sorted(step.params.get("expect") or [])
    if failing != expect:
        raise Abort(
            f"readiness: failing {failing or 'none'}, expected {expect or 'none'}: "
            + "; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok)
        )
    return {"failing": failing}


def _measure_startup(run: Run, step: Step) -> dict:
    """The Triton pods each region added since the fault, with their time to first good inference in parts (the
    backend's `pod_startups`), once every one serves or after the step's `timeout` (drill s; the fault stays injected
    meanwhile); recorded as `pod_startup` events, which the report turns into the capacity part of RTO. A backend
    that cannot tell reports so, and the step passes: the measurement is evidence, not a gate."""
    fault = run.state.fault
    if fault is None:
        raise DrillError("measure_startup: no fault was injected before it")
    if run.backend.pod_startups is None:
        return {"measured": False, "why": f"the {run.backend.name} backend cannot read pod start-ups"}
    read = run.backend.pod_startups
    seen: dict[str, list[dict]] = {}

    def all_serving() -> bool:  # every pod added so far has served (its total is known)
        seen.update({r: read(r, fault["t"]) for r in step.params["regions"]})
        return all(p.get("total") is not None for pods in seen.values() for p in pods)

    t0 = run.clock.now()
    settled = run.wait(step.params.get("timeout", 0.0), until=all_serving, label="pods serving")
    for r, pods in seen.items():
        run.event("pod_startup", region=r, since=fault["t"], pods=pods)
    return {
        "measured": True,
        "all_serving": settled,
        "waited": round(run.clock.now() - t0, 3),
        "regions": {r: len(pods) for r, pods in seen.items()},
    }


def _manifest_skew(run: Run, step: Step) -> dict:
    regions: dict[str, Any] = {}
    for r in step.params["regions"]:
        doc, sha = run.backend.s3.current_manifest(r)
        regions[r] = {"present": doc is not None or sha is not None, "version": None, "sha256": sha, "engines": []}
        try:
            facts = served_facts(r, doc)
        except ManifestError as e:
            regions[r]["invalid"] = str(e)
            continue
        if facts is not None:
            regions[r] |= {"version": facts.model_version, "engines": sorted(facts.built)}
    versions = sorted({str(v["version"]) for v in regions.values() if v["version"] is not None})
    hashes = sorted({v["sha256"] for v in regions.values() if v["sha256"]})
    skew = len(versions) > 1 or len(hashes) > 1 or any(not v["present"] or v.get("invalid") for v in regions.values())
    out = {"regions": regions, "versions": versions, "skew": skew}
    run.event("skew", **out)
    return out


def _canary_delete(run: Run, step: Step) -> dict:
    return {"deleted": delete_canaries(run.backend, run.journal, run.journal.entries(), sorted(run.plan.stack_names))}


# The actions a plan step can name (the engine reads them through drills.registry).
ACTIONS: dict[str, ActionFn] = {
    "precheck": _precheck,
    "set_config": _set_config,
    "scale_pools": _scale_pools,
    "wait_capacity": _wait_capacity,
    "restore_pools": _restore_pools,
    "hold": _hold,
    "inject_fault": _inject,
    "clear_fault": _clear,
    "observe_failover": _observe_failover,
    "observe_switch": _observe_switch,
    "observe_recovery": _observe_recovery,
    "observe_outage": _observe_outage,
    "verify_restored": _verify,
    "canary_write": _canary_write,
    "measure_replication": _measure_replication,
    "manifest_skew": _manifest_skew,
    "canary_delete": _canary_delete,
    "readiness_check": _readiness_check,
    "measure_startup": _measure_startup,
}
