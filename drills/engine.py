"""The drill engine: runs a Plan's steps through a Backend's adapters, journals, watches, rolls back.

Entry points:
  start_drill(plan, state_dir, backend_name=..., backend_options=..., backend=None, clock=None) -> Outcome
  resume_drill(drill_id, state_dir, confirm=ENV, ...) -> Outcome
  rollback_drill(drill_id, state_dir, ...) -> Outcome
  resolve_drill(drill_id, state_dir, confirm=ENV, reason=..., operator=None) -> Outcome

Order of a run: take the environment's lock; build the backend; journal "start" (plan, backend, pid); read and
journal the pre-drill state (config the plan touches, Route 53 records, health, node groups) before any change;
then each step: journal step_begin, run its action, wait its settle/hold time under the monitor, evaluate its
gates, journal step_done with the result, gates and probe statistics. The monitor probes the service every poll
during every wait and evaluates the plan's abort conditions. An abort condition, a failed gate, an error or
SIGINT/SIGTERM leads to `restore()`: faults cleared, config restored and applied, node groups restored,
canaries deleted, then verified against the pre-drill state. A SIGKILL leaves the journal, from which
`drills rollback` runs the same `restore()` in another process.

A stack's `up` (minutes for a real `pulumi up`) runs in a worker thread while the engine keeps polling the monitor
and the abort conditions (`WatchedStacks`); an abort stops the wait, and the rollback waits for that up only where
it must change the same stack again. SIGINT/SIGTERM still let an up finish first (Run.stack_operation).

The environment's lock is released only when the drill's journal says it ended. A drill that stopped mid-way or
whose rollback failed leaves it (drills.lock), so the next drill or release is refused until that drill is rolled
back, resumed or, after a failed rollback, resolved by an operator (`resolve_drill`, `drills resolve`).
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import getpass
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drills.actions import routing_of
from drills.adapters.base import Backend, ProbeResult
from drills.checks import evaluate, window_stats
from drills.clock import Clock, SystemClock
from drills.drillplan import Parameters
from drills.errors import Abort, DrillError, GuardrailError, Interrupted
from drills.journal import (
    Journal,
    JournalError,
    drill_dir,
    host,
    load,
    new_drill_id,
    read_entries,
    rollback_failures,
    summarise,
)
from drills.lock import Lock, resolve_command, rollback_command
from drills.model import Plan
from drills.registry import ACTIONS, CHECKS
from drills.state import RunState
from drills.undo import restore
from infra.capacity import shares_after_loss


@dataclass
class Outcome:
    drill_id: str
    status: str  # completed | aborted | refused | rolled-back | rollback-failed
    reason: str | None = None
    interrupted: bool = False  # SIGINT/SIGTERM stopped it: whoever runs several drills stops too

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "rolled-back": 0, "noop": 0, "resolved": 0, "refused": 3, "rollback-failed": 4}.get(
            self.status, 1
        )


class Monitor:
    """Service probes from `clients` simulated clients at every poll; all results kept, in time order."""

    def __init__(self, run: Run, clients: int):
        self.run, self.clients = run, clients
        self.results: list[ProbeResult] = []

    def sample(self) -> None:
        for c in range(self.clients):
            self.results.append(self.run.backend.probes.service(c))

    def since(self, t: float) -> list[ProbeResult]:
        i = bisect.bisect_left([r.t for r in self.results], t)
        return self.results[i:]


class _Up:
    """One `up` running in a worker thread."""

    def __init__(self, stack: str, t0: float):
        self.stack, self.t0 = stack, t0
        self.done = threading.Event()
        self.guard = threading.Lock()  # orders "finished" against "abandoned": exactly one side journals the outcome
        self.finished = False
        self.abandoned = False
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None


class WatchedStacks:
    """The backend's StackAdapter as a run's actions see it. A drill's `up` runs in a worker thread while this
    thread polls the monitor and the abort conditions every `poll_seconds`, as any other wait does: an abort stops
    the wait at once. The abandoned up runs on (cutting it short would leave the stack with pending operations);
    its outcome is journaled when it ends (`stack_up` with `after_abort`, or `stack_up_failed`), and the next
    operation on that stack (the rollback's) waits for it first. During a rollback `up` is called directly."""

    def __init__(self, inner: Any, run: Run):
        self._inner, self._run = inner, run
        self._ups: dict[str, _Up] = {}

    def __getattr__(self, name: str) -> Any:  # everything else the adapter offers, unchanged
        if name in ("_inner", "_run", "_ups"):  # not set yet (a copy being made): no recursion through _inner
            raise AttributeError(name)
        return getattr(self._inner, name)

    def get_config(self, stack: str, path: str) -> Any:
        return self._inner.get_config(stack, path)

    def outputs(self, stack: str) -> dict[str, Any]:
        return self._inner.outputs(stack)

    def set_config(self, stack: str, values: Any) -> None:
        self.settle(stack)
        self._inner.set_config(stack, values)

    def preview(self, stack: str) -> dict[str, int]:
        self.settle(stack)
        return self._inner.preview(stack)

    def up(self, stack: str, message: str) -> dict[str, Any]:
        self.settle(stack)
        if self._run.in_rollback:
            return self._inner.up(stack, message)
        run = self._run
        u = _Up(stack, run.clock.now())
        self._ups[stack] = u
        threading.Thread(target=self._work, args=(u, message), name=f"drill-up-{stack}", daemon=True).start()
        try:
            while not u.done.wait(self._poll_wall_seconds()):
                run.poll()  # raises Abort when an abort condition trips
        except BaseException as e:
            with u.guard:
                if not u.finished:
                    u.abandoned = True
                    run.journal.write("stack_up_running", stack=stack, reason=str(e) or type(e).__name__)
                    run.log(f"{stack}: stopped waiting for pulumi up ({e}); it runs on, the rollback waits for it")
                    raise
            self._record(u)  # it ended as the abort tripped: journal it, as the action will not
            raise
        if u.error is not None:
            raise u.error
        assert u.result is not None
        return u.result

    def settle(self, stack: str | None = None) -> None:
        """Wait for the abandoned ups (of `stack`, or all) to end; their outcomes are journaled by then."""
        for name, u in list(self._ups.items()):
            if stack in (None, name) and not u.done.is_set():
                self._run.log(f"{name}: waiting for the pulumi up started before the abort to finish")
                u.done.wait()

    def _work(self, u: _Up, message: str) -> None:
        # An adapter may run asyncio code that expects its thread to have an event loop, as the main thread has
        # (the Pulumi SDK: the rehearsal's offline program run fails in a bare thread).
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            u.result = self._inner.up(u.stack, message)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, or journaled if it left
            u.error = e
        finally:
            asyncio.set_event_loop(None)
            loop.close()
        with u.guard:
            u.finished = True
            if u.abandoned:
                self._record(u)
        u.done.set()

    def _record(self, u: _Up) -> None:
        seconds = round(self._run.clock.now() - u.t0, 3)
        if u.error is not None:
            self._run.journal.write(
                "stack_up_failed", stack=u.stack, error=f"{type(u.error).__name__}: {u.error}", seconds=seconds
            )
        else:
            summary = (u.result or {}).get("summary")
            self._run.journal.write("stack_up", stack=u.stack, summary=summary, seconds=seconds, after_abort=True)

    def _poll_wall_seconds(self) -> float:
        # The wait is real time (a fake clock only moves when slept on, and sleeping it would race the worker).
        now, poll = self._run.clock.now(), self._run.params.poll_seconds
        return max(0.01, self._run.clock.to_wall(now + poll) - self._run.clock.to_wall(now))


class Run:
    """One execution of a plan: what actions and checks see."""

    def __init__(
        self, plan: Plan, backend: Backend, journal: Journal, clock: Clock, drill_id: str, log: Callable[[str], None]
    ):
        self.plan, self.backend, self.journal, self.clock, self.drill_id, self.log = (
            plan,
            backend,
            journal,
            clock,
            drill_id,
            log,
        )
        self.params = Parameters.model_validate(plan.parameters)
        # Actions reach the stacks through the watcher; a shallow copy leaves the caller's Backend untouched.
        self.stacks = WatchedStacks(backend.stacks, self)
        self.backend = copy.copy(backend)
        self.backend.stacks = self.stacks
        self.state_dir: Path | None = None  # for the operator commands a refusal or failure names
        self.checks = CHECKS
        self.monitor = Monitor(self, self.params.probe_clients)
        self.state = RunState()
        self.pre_state: dict[str, Any] = {}
        self.weights: dict[str, int] = dict(plan.pre_weights)
        self.roles: dict[str, str] = dict(plan.pre_roles or {})
        self.phase = "steady"
        self.steady_since: float | None = None
        self.current_step: str | None = None
        self.in_rollback = False
        self.stack_operations = 0  # > 0 while a stack's config, preview or up is in progress
        self.pending_signal: int | None = None

    # ---------------------------------------------------------------- helpers for actions and checks
    def event(self, type: str, **data: Any) -> dict:
        return self.journal.write(type, **data)

    @contextmanager
    def stack_operation(self) -> Iterator[None]:
        """SIGINT/SIGTERM wait while a stack is changed: an `up` cut short leaves the stack with pending operations
        (the rehearsal's in-process program run deadlocked on one), so the drill rolls back once it returns."""
        self.stack_operations += 1
        try:
            yield
        finally:
            self.stack_operations -= 1
            if not self.stack_operations and self.pending_signal is not None and not self.in_rollback:
                signum, self.pending_signal = self.pending_signal, None
                raise Interrupted(signum)

    def current_shares(self) -> dict[str, float]:
        if self.plan.mode == "failover":
            return {r: 1.0 if v == "PRIMARY" else 0.0 for r, v in self.roles.items()}
        return shares_after_loss(self.weights, None)

    def poll(self) -> None:
        """One monitor round: probe the service, then judge every abort condition."""
        self.monitor.sample()
        for cond in self.plan.abort_conditions:
            v = evaluate(self, cond.kind, cond.params, mode="abort")
            if not v.ok:
                raise Abort(f"abort condition: {cond.description}: {v.detail}")

    def wait(self, seconds: float, until: Callable[[], bool] | None = None, label: str = "") -> bool:
        """Wait up to `seconds` with the monitor polling; return early (True) once `until()` holds."""
        end = self.clock.now() + max(0.0, seconds)
        while True:
            if until is not None and until():
                return True
            if self.clock.now() >= end:
                return until is None
            self.poll()
            self.clock.sleep(
                min(self.params.poll_seconds, max(0.0, end - self.clock.now())) or self.params.poll_seconds
            )

    def replay(self, entries: list[dict]) -> None:
        """Rebuild the run's state from a journal (resume)."""
        for e in entries:
            t = e["type"]
            if t == "pre_state":
                self.pre_state = e
                self.weights.update(
                    {r: v["weight"] for r, v in e.get("records", {}).items() if v.get("weight") is not None}
                )
            elif t == "change_applied":
                self.state.last_change = {k: v for k, v in e.items() if k.startswith("t_")}
            elif t == "config_set":
                w, r = routing_of(e["values"])
                self.weights.update(w)
                self.roles.update(r)
            elif t == "fault_prepared":
                self.state.fault_added({"t": e["t"], "region": e["region"], "kind": e["kind"], "handle": e["handle"]})
            elif t == "fault_cleared":
                self.state.fault_removed(e["region"])
                self.state.fault = min(self.state.faults.values(), key=lambda f: f["t"], default=None)
            elif t == "canary_written":
                self.state.canaries[e["region"]] = {
                    "key": e["key"],
                    "t_put": e["t_put"],
                    "version_id": e.get("version_id"),
                }


# ---------------------------------------------------------------- pre-drill state, restore, verification
def read_pre_state(plan: Plan, backend: Backend) -> dict:
    """What the drill will restore, read before any change. Config and records are required; capacity is
    recorded where the backend can read it (an error is recorded too)."""
    config = {stack: {p: backend.stacks.get_config(stack, p) for p in paths} for stack, paths in plan.touches.items()}
    records = {
        r: {"weight": s.weight, "failover": s.failover, "health_check_id": s.health_check_id}
        for r, s in backend.route53.records().items()
    }
    out: dict[str, Any] = {"config": config, "records": records}
    try:
        out["health"] = {r: backend.route53.health(r) for r in sorted(plan.stack_names)}
        out["node_groups"] = {
            r: [g.__dict__ for g in backend.capacity.node_groups(r)] for r in sorted(plan.stack_names)
        }
        out["triton"] = {r: list(backend.capacity.triton_ready(r)) for r in sorted(plan.stack_names)}
    except Exception as e:  # noqa: BLE001 - informative figures; the restore does not need them
        out["capacity_error"] = f"{type(e).__name__}: {e}"
    return out


# ---------------------------------------------------------------- execution
def _install_signals(run: Run) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        if run.in_rollback:
            run.log(
                f"signal {signum} during rollback: ignored; the rollback finishes first "
                f"(SIGKILL leaves it to `drills rollback {run.drill_id}`)"
            )
            return
        if run.stack_operations:
            run.pending_signal = signum
            run.log(f"signal {signum}: the stack operation in progress finishes first, then the drill rolls back")
            return
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore_handlers() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore_handlers


def _execute(run: Run, start_index: int = 0) -> Outcome:
    plan, j = run.plan, run.journal
    restore_signals = _install_signals(run)
    try:
        try:
            if not run.pre_state:
                run.pre_state = j.write("pre_state", **read_pre_state(plan, run.backend))
                run.weights.update(
                    {r: v["weight"] for r, v in run.pre_state["records"].items() if v.get("weight") is not None}
                )
            for i in range(start_index, len(plan.steps)):
                step = plan.steps[i]
                run.current_step = step.name
                if step.phase != run.phase:
                    run.phase = step.phase
                    run.steady_since = run.clock.now() if step.phase == "steady" else run.steady_since
                j.write("step_begin", index=i, name=step.name, action=step.action)
                run.log(f"[{i + 1}/{len(plan.steps)}] {step.name}: {step.description}")
                t0 = run.clock.now()
                if step.action not in ACTIONS:
                    raise DrillError(f"step {step.name}: unknown action {step.action!r}")
                result = ACTIONS[step.action](run, step) or {}
                t_action = run.clock.now()
                if step.wait_seconds:
                    run.wait(step.wait_seconds, label=step.name)
                gates = []
                for c in step.checks:
                    v = evaluate(run, c.kind, c.params, mode="gate", since=t_action)
                    gates.append({"kind": c.kind, "description": c.description, "blocking": c.blocking, **v.to_dict()})
                probes = window_stats(run.monitor.since(t0))
                j.write(
                    "step_done",
                    index=i,
                    name=step.name,
                    result=result,
                    gates=gates,
                    probes=probes,
                    seconds=round(run.clock.now() - t0, 3),
                )
                failed = [g for g in gates if not g["ok"] and g["blocking"]]
                if failed:
                    raise Abort(f"{step.name}: gate failed: {failed[0]['description']}: {failed[0]['detail']}")
            j.write("finished", status="completed")
            return Outcome(run.drill_id, "completed")
        except Exception as e:  # noqa: BLE001 - every failure rolls back (Abort, Interrupted, a refusal, an adapter's error)
            status = "refused" if isinstance(e, GuardrailError) else "aborted"
            kind = type(e).__name__
            reason = str(e) if isinstance(e, DrillError) else f"error: {kind}: {e}"
            j.write(
                "abort",
                reason=reason,
                kind=kind,
                step=run.current_step,
                **({"traceback": traceback.format_exc(limit=8)} if not isinstance(e, DrillError) else {}),
            )
            run.log(f"ABORT at {run.current_step}: {reason}; rolling back")
            out = _rollback(run, status, reason)
            out.interrupted = isinstance(e, Interrupted)
            return out
    finally:
        restore_signals()


def _rollback(run: Run, status: str, reason: str) -> Outcome:
    run.in_rollback = True
    j = run.journal
    j.write("rollback_begin", reason=reason)
    try:
        try:
            res = restore(run.backend, run.plan, j, run.clock, run.log)
        finally:
            run.stacks.settle()  # an abandoned up that restore did not wait for: journaled before the verdict
    except Exception as e:  # noqa: BLE001 - a failed rollback is journaled and reported, never raised past the drill
        j.write("rollback_failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
        j.write("finished", status="rollback-failed", reason=reason)
        return Outcome(
            run.drill_id,
            "rollback-failed",
            f"{reason}; rollback failed: {e}" + _resolve_hint(run),
        )
    j.write("rollback_done", **res)
    if not res["verified"]:
        j.write("finished", status="rollback-failed", reason=reason)
        left = [f"undo failed: {f}" for f in res["failed"]] + res["mismatches"]
        return Outcome(
            run.drill_id, "rollback-failed", f"{reason}; after rollback: {'; '.join(left)}" + _resolve_hint(run)
        )
    j.write("finished", status=status, reason=reason)
    return Outcome(run.drill_id, status, reason)


def _resolve_hint(run: Run) -> str:
    if run.state_dir is None:
        return f": run `drills rollback {run.drill_id}`"
    return (
        f". The {run.plan.env} lock stays held: retry `{rollback_command(run.state_dir, run.drill_id)}`, or put it "
        "right by hand and run "
        f"`{resolve_command(run.state_dir, run.plan.env, run.drill_id)}`"
    )


def _finish_lock(lock: Lock, state_dir: Path, drill_id: str) -> None:
    """Release the lock if the drill's journal says it ended (or it never journaled anything); otherwise leave
    it, marked, so that the next drill or release is refused until this one is rolled back, resumed or resolved."""
    jp = drill_dir(state_dir, drill_id) / "journal.jsonl"
    try:
        entries = read_entries(jp) if jp.exists() else []
    except JournalError as e:
        lock.leave(state="journal-unreadable", error=str(e))
        return
    summary = summarise(entries) if entries else {"terminal": True}
    if summary.get("terminal"):
        lock.release()
    else:
        lock.leave(state=summary["status"], failures=rollback_failures(entries))


def _log(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log or (lambda line: None)


def readiness_gate(plan: Plan, backend: Backend) -> None:
    """Refuse (GuardrailError, before any journal or change) while the fleet's readiness fails, naming each failing
    check; a plan without the gate (a restore) or a backend that cannot evaluate readiness passes."""
    if not plan.readiness_gate or backend.readiness is None:
        return
    failing = [r for r in backend.readiness() if not r.ok]
    if failing:
        raise GuardrailError(
            "not-ready",
            f"{plan.env} is not ready, nothing was changed: "
            + "; ".join(f"{r.name}: {r.detail}" for r in failing)
            + f". See `python -m drills readiness --env {plan.env}`; a restore runs regardless.",
        )


def start_drill(
    plan: Plan,
    state_dir: Path,
    *,
    backend_name: str = "aws",
    backend_options: dict | None = None,
    backend: Backend | None = None,
    clock: Clock | None = None,
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Run a plan for real. Refuses (GuardrailError) before any change if the lock is held."""
    from drills.backends import build_backend

    clock = clock or SystemClock()
    drill_id = new_drill_id(plan.env, plan.scenario, clock)
    lock = Lock.acquire(Path(state_dir), plan.env, drill_id)
    owned = backend is None
    try:
        backend = backend or build_backend(backend_name, plan, backend_options or {}, clock)
        readiness_gate(plan, backend)
        journal = Journal.create(Path(state_dir), drill_id, clock)
        journal.write(
            "start",
            drill_id=drill_id,
            plan=plan.model_dump(mode="json"),
            backend={"name": backend.name, "options": backend.options},
            pid=os.getpid(),
            host=host(),
        )
        run = Run(plan, backend, journal, clock, drill_id, _log(log))
        run.state_dir = Path(state_dir)
        try:
            return _execute(run)
        finally:
            run.stacks.settle()  # no up outlives the drill's lock or journal
            journal.close()
    finally:
        try:
            if owned and backend is not None:
                backend.close()
        finally:
            _finish_lock(lock, Path(state_dir), drill_id)


def _reopen(
    drill_id: str, state_dir: Path, backend: Backend | None, options_override: dict | None, clock: Clock
) -> tuple[list[dict], Plan, Backend, bool]:
    from drills.backends import build_backend

    entries = load(Path(state_dir), drill_id)
    start = entries[0]
    plan = Plan.model_validate(start["plan"])
    owned = backend is None
    if backend is None:
        spec = start.get("backend", {})
        backend = build_backend(
            spec.get("name", "aws"), plan, {**spec.get("options", {}), **(options_override or {})}, clock
        )
    return entries, plan, backend, owned


@contextmanager
def _taken_over(
    drill_id: str,
    state_dir: Path,
    env: str,
    backend: Backend | None,
    options_override: dict | None,
    clock: Clock,
    log: Callable[[str], None] | None,
) -> Iterator[tuple[Run, list[dict]]]:
    """A stopped drill taken over by this process: its lock, its journal reopened, its backend rebuilt from the
    journal (or the one given); all released again afterwards."""
    lock = Lock.acquire(Path(state_dir), env, drill_id, takeover_of=drill_id)
    backend_obj = None
    owned = False
    try:
        entries, plan, backend_obj, owned = _reopen(drill_id, state_dir, backend, options_override, clock)
        journal = Journal.open(Path(state_dir), drill_id, clock)
        try:
            run = Run(plan, backend_obj, journal, clock, drill_id, _log(log))
            run.state_dir = Path(state_dir)
            if journal.torn is not None:
                run.log(journal.torn.describe(journal.path) + ": cut off (journal_torn)")
            try:
                yield run, entries
            finally:
                run.stacks.settle()
        finally:
            journal.close()
    finally:
        try:
            if owned and backend_obj is not None:
                backend_obj.close()
        finally:
            _finish_lock(lock, Path(state_dir), drill_id)


def rollback_drill(
    drill_id: str,
    state_dir: Path,
    *,
    backend: Backend | None = None,
    clock: Clock | None = None,
    options_override: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Restore the pre-drill state recorded in a drill's journal (a crashed drill, or one whose rollback failed)."""
    clock = clock or SystemClock()
    entries = load(Path(state_dir), drill_id)
    summary = summarise(entries)
    if summary.get("terminal"):
        return Outcome(drill_id, "noop", f"nothing to roll back: the drill already ended ({summary['status']})")
    with _taken_over(drill_id, state_dir, entries[0]["plan"]["env"], backend, options_override, clock, log) as (run, _):
        run.journal.write("takeover", pid=os.getpid(), host=host(), purpose="rollback", previous=summary.get("status"))
        return _rollback(run, "rolled-back", f"manual rollback after the drill stopped at {summary.get('last_step')}")


def resume_drill(
    drill_id: str,
    state_dir: Path,
    *,
    confirm: str,
    backend: Backend | None = None,
    clock: Clock | None = None,
    options_override: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Continue a crashed drill after its last completed step (a half-done step is re-run: actions set
    absolute values). Its pre-drill state stays the one recorded at the start."""
    clock = clock or SystemClock()
    entries = load(Path(state_dir), drill_id)
    summary = summarise(entries)
    plan_env = entries[0]["plan"]["env"]
    if confirm != plan_env:
        raise GuardrailError(
            "confirm", f"resuming drill {drill_id} changes {plan_env}: confirm with --confirm {plan_env}"
        )
    if (
        summary.get("terminal")
        or summary.get("status", "").startswith("rolling-back")
        or summary.get("status") == "rollback-failed"
    ):
        raise GuardrailError(
            "resume", f"drill {drill_id} is {summary.get('status')}: it cannot be resumed (roll it back instead)"
        )
    with _taken_over(drill_id, state_dir, plan_env, backend, options_override, clock, log) as (run, entries):
        run.replay(entries)
        done = [e["index"] for e in entries if e["type"] == "step_done"]
        start = (max(done) + 1) if done else 0
        run.journal.write("takeover", pid=os.getpid(), host=host(), purpose="resume", from_index=start)
        return _execute(run, start)


def resolve_drill(
    drill_id: str,
    state_dir: Path,
    *,
    confirm: str,
    reason: str,
    operator: str | None = None,
    clock: Clock | None = None,
) -> Outcome:
    """An operator's record that a drill whose rollback failed was put right by hand: who, why and what the
    rollback had left, journaled; the drill ends as "resolved" and the environment's lock is released. Refused
    for a drill in any other state (a crashed drill is rolled back or resumed, not resolved)."""
    clock = clock or SystemClock()
    reason = reason.strip()
    entries = load(Path(state_dir), drill_id)
    env = entries[0]["plan"]["env"]
    if confirm != env:
        raise GuardrailError("confirm", f"resolving drill {drill_id} releases {env}: confirm with --confirm {env}")
    if not reason:
        raise GuardrailError("usage", "--reason: say what was put right by hand and how it was checked")

    def refuse_unless_failed(entries: list[dict]) -> None:
        status = summarise(entries).get("status")
        if status != "rollback-failed":
            raise GuardrailError(
                "resolve",
                f"drill {drill_id} is {status}, not rollback-failed: only a failed rollback is resolved by hand "
                f"(a stopped drill: `drills rollback {drill_id}` or `drills resume {drill_id}`)",
            )

    refuse_unless_failed(entries)
    lock = Lock.acquire(Path(state_dir), env, drill_id, takeover_of=drill_id)
    try:
        entries = load(Path(state_dir), drill_id)  # again, holding the lock: a rollback retry may have ended since
        refuse_unless_failed(entries)
        who = operator or _login_name()
        journal = Journal.open(Path(state_dir), drill_id, clock)
        try:
            journal.write(
                "resolved",
                operator=who,
                reason=reason,
                left=rollback_failures(entries),
                host=host(),
                pid=os.getpid(),
                uid=os.getuid(),
            )
            journal.write("finished", status="resolved", reason=f"resolved by {who}: {reason}")
        finally:
            journal.close()
    finally:
        _finish_lock(lock, Path(state_dir), drill_id)
    return Outcome(drill_id, "resolved", f"resolved by {who}: {reason}; the {env} lock is released")


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER/$LOGNAME (a bare container)
        return f"uid {os.getuid()}"
