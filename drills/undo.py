"""Undo of a drill's journaled changes: `restore()` and the table it dispatches by event type.

Every event type a drill journals is in exactly one of two tables (tests/drills/test_undo.py enumerates them from
the source): `UNDO`, a change to the world and the function that undoes it, or `NO_UNDO`, with the reason it needs
none (a record of what was observed, an undo's own record, or a change that restores rather than alters).
`restore()` runs the undos in `UNDO`'s order (traffic back first, then capacity, then objects), carries on past
one that fails, and verifies the result against the pre-drill state the journal recorded. Within an undo each part
(a fault, a stack, a node group, a pointer) is tried even when another fails, and every failed part is reported.

Each undo reads the journal, not the process that wrote it: `drills rollback` runs the same code after a SIGKILL.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from drills.adapters.base import Backend, release_s3
from drills.clock import Clock
from drills.journal import Journal
from drills.model import Plan


def records_match(route53: Any, weights: dict[str, int], roles: dict[str, str]) -> bool:
    recs = route53.records()
    return all(r in recs and recs[r].weight == w for r, w in weights.items()) and all(
        r in recs and recs[r].failover == v for r, v in roles.items()
    )


@dataclass
class UndoContext:
    backend: Backend
    plan: Plan
    journal: Journal
    clock: Clock
    pre: dict
    wait_seconds: float
    log: Callable[[str], None] = field(default=lambda line: None)

    def entries(self) -> list[dict]:
        return self.journal.entries()


class PartsFailed(Exception):
    """Some parts of one undo failed; `done` lists the parts that were put back nonetheless."""

    def __init__(self, done: list[str], failed: list[str]):
        self.done, self.failed = done, failed
        super().__init__("; ".join(failed))


class _Parts:
    """An undo's parts, each tried on its own: `with parts.part(name): ...`; `result()` raises PartsFailed if
    any failed."""

    def __init__(self, c: UndoContext):
        self.c = c
        self.done: list[str] = []
        self.failed: list[str] = []

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:  # noqa: BLE001 - one part that cannot be put back must not keep the next from it
            self.failed.append(f"{name}: {type(e).__name__}: {e}")
            self.c.log(f"rollback: {self.failed[-1]}\n{traceback.format_exc(limit=4)}")

    def result(self) -> list[str]:
        if self.failed:
            raise PartsFailed(self.done, self.failed)
        return self.done


# ---------------------------------------------------------------- what is still changed, from the journal
def _active_faults(entries: list[dict]) -> dict[tuple[str, str], dict]:
    active: dict[tuple[str, str], dict] = {}
    for e in entries:
        if e["type"] == "fault_prepared":
            active[(e["region"], e["kind"])] = e["handle"]
        elif e["type"] == "fault_cleared":
            active.pop((e["region"], e["kind"]), None)
    return active


def _scaled_pools(entries: list[dict]) -> dict[tuple[str, str], dict]:
    out: dict[tuple[str, str], dict] = {}
    for e in entries:
        if e["type"] == "pools_scaling":
            out.setdefault((e["region"], e["pool"]), e["before"])
    return out


def _pointer_writes(entries: list[dict]) -> dict[tuple[str, str], dict]:
    """(region, key) -> the first `lkg_writing` of it not put back since: its previous version is the pre-drill one."""
    out: dict[tuple[str, str], dict] = {}
    for e in entries:
        if e["type"] == "lkg_writing":
            out.setdefault((e["region"], e.get("key", "")), e)
        elif e["type"] == "lkg_reverted":
            out = {k: v for k, v in out.items() if k[0] != e["region"]}
    return out


# ---------------------------------------------------------------- undos, by event type
def clear_faults(c: UndoContext) -> list[str]:
    parts = _Parts(c)
    for (region, kind), handle in _active_faults(c.entries()).items():
        with parts.part(f"fault {kind} in {region}"):
            c.backend.faults.clear(region, kind, handle)
            c.journal.write("fault_cleared", region=region, kind=kind, by="rollback")
            parts.done.append(f"cleared fault {kind} in {region}")
    return parts.result()


# Event types saying a stack may differ from its pre-drill config or applied state.
_STACK_CHANGES = ("config_set", "stack_up", "stack_up_running", "stack_up_failed")


def restore_config(c: UndoContext) -> list[str]:
    """Stack config back to the pre-drill values and `pulumi up` (the global stack first: traffic before capacity),
    then wait for Route 53's records to carry the pre-drill weights and roles."""
    parts = _Parts(c)
    touched = {e["stack"] for e in c.entries() if e["type"] in _STACK_CHANGES}
    stacks = c.backend.stacks
    for stack in sorted(c.pre["config"], key=lambda s: s != c.plan.global_stack):
        with parts.part(f"stack {stack}"):
            values = c.pre["config"][stack]
            diff = {p: v for p, v in values.items() if stacks.get_config(stack, p) != v}
            if diff or stack in touched:
                c.journal.write("config_set", stack=stack, values=diff, before=None, by="rollback")
                if diff:
                    stacks.set_config(stack, diff)
                preview = stacks.preview(stack)
                res = stacks.up(stack, f"drill rollback: restore {', '.join(diff) or 'applied state'}")
                c.journal.write("stack_up", stack=stack, preview=preview, summary=res.get("summary"), by="rollback")
                parts.done.append(f"{stack}: restored {diff or 'config unchanged'}, pulumi up")
    want_w = {r: v["weight"] for r, v in c.pre["records"].items() if v.get("weight") is not None}
    want_r = {r: v["failover"] for r, v in c.pre["records"].items() if v.get("failover")}
    global_failed = any(f.startswith(f"stack {c.plan.global_stack}:") for f in parts.failed)
    if c.pre["config"] and not global_failed:  # records cannot follow a global stack that was not applied
        end = c.clock.now() + c.wait_seconds
        while not records_match(c.backend.route53, want_w, want_r) and c.clock.now() < end:
            c.clock.sleep(1.0)
    return parts.result()


def restore_pools(c: UndoContext) -> list[str]:
    parts = _Parts(c)
    groups = {r: {g["pool"]: g for g in gs} for r, gs in c.pre.get("node_groups", {}).items()}
    for (region, pool), before in _scaled_pools(c.entries()).items():
        want = groups.get(region, {}).get(pool, before)
        with parts.part(f"node group {region}/{pool}"):
            c.backend.capacity.set_scaling(region, pool, min=want["min"], desired=want["desired"])
            c.journal.write(
                "pools_restoring",
                region=region,
                pool=pool,
                to={"min": want["min"], "desired": want["desired"]},
                by="rollback",
            )
            parts.done.append(f"{region}/{pool}: min/desired back to {want['min']}/{want['desired']}")
    return parts.result()


def delete_canaries(backend: Backend, journal: Journal, entries: list[dict], regions: list[str]) -> list[str]:
    written = [e["key"] for e in entries if e["type"] == "canary_writing"]
    gone = {e["key"] for e in entries if e["type"] == "canary_deleted"}
    out = []
    for key in dict.fromkeys(written):
        if key in gone:
            continue
        for r in regions:
            backend.s3.delete_object(r, key)
        journal.write("canary_deleted", key=key)
        out.append(key)
    return out


def _delete_canaries(c: UndoContext) -> list[str]:
    keys = delete_canaries(c.backend, c.journal, c.entries(), sorted(c.plan.stack_names))
    return [f"deleted canary {k}" for k in keys]


def put_pointer_back(s3: Any, region: str, key: str, previous_version_id: str | None) -> None:
    """A pointer back to an earlier S3 version (a server-side copy: the replaced one stays as a noncurrent
    version), or removed where there was none before."""
    if previous_version_id:
        s3.restore_version(region, key, previous_version_id)
    else:
        s3.delete_object(region, key)


def restore_pointers(c: UndoContext) -> list[str]:
    """Last-known-good pointers back to the S3 version they had before the drill (a server-side copy of that
    version: the drill's pointer stays as a noncurrent version), or deleted where the drill wrote the first one.
    Journaled before the write, so a pointer whose write never happened is put back to what it already was."""
    parts = _Parts(c)
    s3 = release_s3(c.backend.s3)
    for (region, key), e in _pointer_writes(c.entries()).items():
        with parts.part(f"pointer {key or '?'} in {region}"):
            if not key:
                raise RuntimeError(
                    f"{region}: the journal's lkg_writing (version {e.get('version')}) does not name the pointer's "
                    f"key (a journal from before pointers were undoable); put it back by hand to S3 version "
                    f"{e.get('previous_version_id') or '(none: delete it)'}"
                )
            prev = e.get("previous_version_id")
            put_pointer_back(s3, region, key, prev)
            c.journal.write("lkg_reverted", region=region, key=key, to_version_id=prev, by="rollback")
            parts.done.append(
                f"{region}: last-known-good pointer back to " + (f"S3 version {prev}" if prev else "none")
            )
    return parts.result()


Undo = Callable[[UndoContext], list[str]]

# Every journaled change and its undo, in the order restore() runs them. A new change type must be added here (or to
# NO_UNDO with its reason): tests/drills/test_undo.py fails on an event type in neither.
UNDO: dict[str, Undo] = {
    "fault_prepared": clear_faults,
    "config_set": restore_config,
    "stack_up": restore_config,
    # an up the drill stopped waiting for at an abort (still running), or one that failed part-way
    "stack_up_running": restore_config,
    "stack_up_failed": restore_config,
    "pools_scaling": restore_pools,
    "canary_writing": _delete_canaries,
    "lkg_writing": restore_pointers,
}

NO_UNDO: dict[str, str] = {
    # changes that restore rather than alter
    "pins_writing": "points the region's pod fetches at the S3 versions the last-known-good pointer pins: undoing "
    "it would let pods fetch the altered objects the restore stepped around",
    "pods_restarting": "restarts pods of the version the config declares: they load the same version again",
    # the undos' own records
    "fault_cleared": "records a fault's clearing",
    "pools_restoring": "records node groups put back",
    "canary_deleted": "records a canary object's deletion",
    "lkg_reverted": "records a pointer put back",
    "pins_written": "records the outcome of pins_writing",
    # observations and the drill's own bookkeeping
    "start": "the drill's plan and backend",
    "pre_state": "the state restore() returns to",
    "step_begin": "bookkeeping",
    "step_done": "bookkeeping",
    "abort": "bookkeeping",
    "rollback_begin": "bookkeeping",
    "rollback_done": "bookkeeping",
    "rollback_failed": "bookkeeping",
    "finished": "bookkeeping",
    "takeover": "bookkeeping",
    "resolved": "an operator's record that the environment was put right by hand after a failed rollback",
    "journal_torn": "records a torn last record cut off on reopening (its change was never made)",
    "fault_injected": "the fault was prepared (fault_prepared) before it was injected",
    "canary_written": "the canary was journaled (canary_writing) before it was written",
    "lkg_written": "the pointer was journaled (lkg_writing) before it was written",
    "change_applied": "an observation: when the records and DNS answers followed a config change",
    "detected": "an observation",
    "dns_changed": "an observation",
    "rto": "a measurement",
    "outage": "a measurement (total-outage: detection per region, what the probes saw)",
    "recovery": "a measurement (total-outage: health, DNS and SLO back after the fault was cleared)",
    "rpo": "a measurement",
    "readiness": "a measurement (the fleet's readiness checks, read only)",
    "pod_startup": "a measurement (the Triton pods added since the fault, read only)",
    "skew": "a measurement",
    "replicated": "an observation",
    "serving": "an observation",
    "candidate_verdicts": "an observation",
    "corruption_detected": "an observation",
    "regions_verified": "an observation",
    "restored": "records the evidence of restore_lkg (its changes are journaled as config_set and pins_writing)",
    "node_loss": "the figures of a node loss (the loss itself is a fault: fault_prepared)",
}


# ---------------------------------------------------------------- restore and verify
def compare_to_pre(backend: Backend, pre: dict, entries: list[dict]) -> list[str]:
    """Differences between the live state and the recorded pre-drill state, as sentences."""
    bad = []
    for stack, values in pre.get("config", {}).items():
        for path, want in values.items():
            got = backend.stacks.get_config(stack, path)
            if got != want:
                bad.append(f"{stack} {path} = {got!r}, was {want!r}")
    if pre.get("config"):
        recs = backend.route53.records()
        for r, want in pre.get("records", {}).items():
            got = recs.get(r)
            if got is None or got.weight != want.get("weight") or got.failover != want.get("failover"):
                bad.append(
                    f"Route 53 record {r}: weight {getattr(got, 'weight', None)} / "
                    f"{getattr(got, 'failover', None)}, was {want.get('weight')} / {want.get('failover')}"
                )
    groups = {r: {g["pool"]: g for g in gs} for r, gs in pre.get("node_groups", {}).items()}
    for (region, pool), before in _scaled_pools(entries).items():
        want = groups.get(region, {}).get(pool, before)
        live = next((g for g in backend.capacity.node_groups(region) if g.pool == pool), None)
        if live is None or (live.min, live.desired) != (want["min"], want["desired"]):
            bad.append(
                f"{region}/{pool} node group min/desired {getattr(live, 'min', None)}/"
                f"{getattr(live, 'desired', None)}, was {want['min']}/{want['desired']}"
            )
    bad += [f"fault {k} still injected in {r}" for (r, k) in _active_faults(entries)]
    bad += _pointer_mismatches(backend, entries)
    return bad


def _pointer_mismatches(backend: Backend, entries: list[dict]) -> list[str]:
    """Every pointer the drill wrote, compared byte for byte with its pre-drill version."""
    pending = _pointer_writes(entries)
    bad = [f"{r}: last-known-good pointer {k} written by the drill and not put back" for r, k in pending]
    s3 = release_s3(backend.s3)
    first: dict[tuple[str, str], str | None] = {}  # the first write's previous version is the pre-drill one
    for e in entries:
        if e["type"] == "lkg_writing" and e.get("key"):
            first.setdefault((e["region"], e["key"]), e.get("previous_version_id"))
    for (region, key), prev in first.items():
        if (region, key) in pending:
            continue
        got = s3.get_object(region, key)
        want = s3.get_object(region, key, prev) if prev else None
        if got != want:
            bad.append(f"{region}: last-known-good pointer {key} differs from its pre-drill version {prev or '(none)'}")
    return bad


def restore(
    backend: Backend, plan: Plan, journal: Journal, clock: Clock, log: Callable[[str], None], wait_seconds: float = 120
) -> dict:
    """Undo everything the journal says may have changed, then verify against the pre-drill state. An undo that
    fails does not stop the others: each failure is reported, and the result is then not verified."""
    entries = journal.entries()
    pre = next((e for e in entries if e["type"] == "pre_state"), None)
    ctx = UndoContext(backend, plan, journal, clock, pre or {}, wait_seconds, log)
    done: list[str] = []
    failed: list[str] = []
    # Each undo acts only where the journal (or, for config, the live state) differs from before the drill. Before
    # the pre-drill state was read nothing but a fault can have been prepared.
    runs = UNDO if pre is not None else {"fault_prepared": UNDO["fault_prepared"]}
    for undo in dict.fromkeys(runs.values()):
        try:
            done += undo(ctx)
        except PartsFailed as e:  # each part logged as it failed
            done += e.done
            failed += [f"{undo.__name__.lstrip('_')}: {f}" for f in e.failed]
        except Exception as e:  # noqa: BLE001 - one failed undo must not keep the others from running
            failed.append(f"{undo.__name__.lstrip('_')}: {type(e).__name__}: {e}")
            log(f"rollback: {failed[-1]}\n{traceback.format_exc(limit=4)}")
    if pre is None:
        return {
            "restored": done,
            "failed": failed,
            "verified": not failed,
            "mismatches": [],
            "note": "the drill stopped before its pre-drill state was read: nothing had changed",
        }
    mismatches = compare_to_pre(backend, pre, journal.entries())
    return {"restored": done, "failed": failed, "verified": not mismatches and not failed, "mismatches": mismatches}
