"""Survivor capacity in the rehearsal (`rehearse --capacity-model declared|no-reservations`): load in proportion to the
environment's peak, each region carrying what its running nodes carry, and a survivor scaling up when its share
exceeds that, timed part by part.

Scale: the load generator's `--rate` stands for the environment's peak (`capacity.peak_qps` of its global stack), so
one production QPS is `rate / peak_qps` requests a second here, for the traffic and for every node alike. A node
carries `gpus x qps_per_gpu` (the global stack's figure for its compute capability), the same figure the capacity
plan, the drills' guardrails and `infra.capacity` use.

Before the drill each region runs what its steady share of peak needs at the declared target utilisation (its node
groups' declared desired size, more where that share needs more: the autoscaler has settled at peak). The region's load
balancer admits what those nodes carry (alb_proc `capacity_rps`), queueing a request up to QUEUE_MS, then answering 503.

The autoscaler (`SurvivorScaler`), every AUTOSCALER_SYNC_S (scaled), compares each region's offered inference rate
over the last RATE_WINDOW_S (the load balancer's request log: admitted and shed alike) with what its nodes carry at the
declared target utilisation (the HPA's, with its 10% tolerance). Over it, it decides the nodes that carry the offered
load at that target (`scale_target`: guaranteed instances first, then infra.postures.instances_for, up to each pool's
max), writes the node groups' desired size (moto's EKS, as Cluster Autoscaler or Karpenter acts on the cluster the
regional stack declares) and launches them as one batch per capacity source:
  EC2 capacity        0 for nodes a reservation covers (the pool's guaranteed instances, infra.capacity), the stated
                      INSUFFICIENT_CAPACITY_WAIT for the others: modelled, scaled;
  node boot           stated (infra.catalog CAPACITY_STARTUP), modelled, scaled;
  image pull          stated, modelled, scaled;
  model fetch+verify  real: the declared fetch-model script from the region's bucket, every file's hash checked;
  Triton load+warm-up real: the declared Triton args; the config's model_warmup runs inside the load;
  first good inference real: one request through the new pod, finite scores demanded;
then the pod joins the region's targets with the batch's nodes' capacity. Substitution: a batch's nodes are one
Triton process carrying all their throughput (EC2 launches them in parallel, so they are ready together).
`--capacity-model no-reservations` runs the same with every pool's reservations ignored (guaranteed = min).

Times: modelled parts are stated in drill seconds and slept scaled; real parts run at this machine's speed and are
reported in wall seconds unscaled (a drill second on the scaled clock would count them 1/scale times over). The
capacity part of RTO is the scale-up's from its decision to its pod serving, stated parts + real parts, with and
without reservations (the same real parts; EC2 capacity differs).

The drills' own service probes (infra.names.PROBE_USER_AGENT) are neither admitted against capacity nor counted as
offered load: at this machine's scaled-down rate they were about 40% of each region's inference requests.

Known limit, seen on this machine (prod, scale 0.1): a survivor that sheds trips its own ALB 5xx alarm, which the
calculated health check (issue 16) follows, so Route 53 takes the overloaded survivor out too, and the drill stops at
its guardrail (survivors must stay healthy). The option stays opt-in (`off` by default) until that is resolved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra.capacity import guaranteed_instances, qps_per_gpu, shares_after_loss
from infra.catalog import AUTOSCALER_SYNC_S, CAPACITY_STARTUP, INSUFFICIENT_CAPACITY_WAIT
from infra.config import Fleet, RegionConfig
from infra.postures import instances_for

RATE_WINDOW_S = 60.0  # the offered rate is averaged over this (drill s), as a Prometheus rate() over 1m feeds the HPA
HPA_TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance: no scaling within 10% of target
QUEUE_MS = 100.0  # how long a request waits for a GPU turn before its pod sheds it (Triton's queue, full)
MODES = ("off", "declared", "no-reservations")
MODELLED = ("node boot", "image pull")  # the stated CAPACITY_STARTUP parts the rehearsal sleeps; the rest run real
REAL = ("model fetch+verify", "Triton load+warm-up", "first good inference")


# ---------------------------------------------------------------- pure
def node_qps(fleet: Fleet, region: RegionConfig, nodes: dict[str, int]) -> float:
    """Production QPS the region's nodes carry."""
    return sum(
        nodes.get(p.name, 0) * p.gpu.gpus * qps_per_gpu(fleet, p.gpu.compute_capability) for p in region.gpu_pools
    )


def wanted_qps(region: RegionConfig, offered_qps: float) -> float:
    """What the region's nodes must carry for `offered_qps`: the HPA keeps GPUs at the declared target utilisation
    (triton.target_gpu_utilization), so it asks for offered / target."""
    return offered_qps * 100 / region.triton.target_gpu_utilization  # a percentage


def steady_nodes(fleet: Fleet, region: str, desired: dict[str, int]) -> dict[str, int]:
    """What the region runs at peak before an incident: its declared desired size, more where its share of peak needs
    more at the declared target utilisation (the autoscaler has settled)."""
    share = shares_after_loss(fleet.glob.routing.weights(), None).get(region, 0.0)
    cfg = fleet.regions[region]
    return instances_for(fleet, cfg, wanted_qps(cfg, share * fleet.glob.capacity.peak_qps), None, start=desired)


def scale_target(
    fleet: Fleet, region: RegionConfig, running: dict[str, int], offered_qps: float, reservations: bool, at: datetime
) -> dict[str, int]:
    """Nodes per pool that carry `offered_qps`: first the guaranteed instances not yet running (reserved and paid for
    already, and certain to launch: Karpenter prefers reserved capacity too), the most throughput first, then
    instances_for's choice, up to each pool's max."""
    count = dict(running)
    held = {p.name: min(p.max, guaranteed_instances(p, at) if reservations else p.min) for p in region.gpu_pools}
    while node_qps(fleet, region, count) < offered_qps - 1e-6:
        free = [p for p in region.gpu_pools if count.get(p.name, 0) < held[p.name]]
        if not free:
            break
        best = max(free, key=lambda p: (p.gpu.gpus * qps_per_gpu(fleet, p.gpu.compute_capability), p.name))
        count[best.name] = count.get(best.name, 0) + 1
    return instances_for(fleet, region, offered_qps, None, start=count)


@dataclass(frozen=True)
class Launch:
    """Nodes of one pool a scale-up launches from one capacity source."""

    pool: str
    nodes: int
    reserved: bool  # a reservation covers them: no wait for EC2 capacity


def launches(
    region: RegionConfig, running: dict[str, int], target: dict[str, int], reservations: bool, at: datetime
) -> list[Launch]:
    """The nodes to add per pool, split into those the pool's guaranteed capacity covers (running nodes use it
    first) and those EC2 On-Demand must find; `reservations` False judges every pool at its min."""
    out = []
    for p in region.gpu_pools:
        add = target.get(p.name, 0) - running.get(p.name, 0)
        if add <= 0:
            continue
        guaranteed = guaranteed_instances(p, at) if reservations else p.min
        covered = min(add, max(0, guaranteed - running.get(p.name, 0)))
        out += [Launch(p.name, n, r) for n, r in ((covered, True), (add - covered, False)) if n]
    return out


def stated_parts(reserved: bool) -> dict[str, float]:
    """The modelled parts of one launch, in drill seconds."""
    stated = {s.name: float(s.seconds) for s in CAPACITY_STARTUP}
    return {INSUFFICIENT_CAPACITY_WAIT.name: 0.0 if reserved else float(INSUFFICIENT_CAPACITY_WAIT.seconds)} | {
        k: stated[k] for k in MODELLED
    }


# ---------------------------------------------------------------- the autoscaler
@dataclass
class ScaleUp:
    region: str
    pools: dict[str, int]
    reserved: bool
    decided_wall: float
    offered_qps: float
    carried_qps: float
    parts: dict[str, float] = field(default_factory=dict)  # stated parts in drill s, real parts in wall s
    serving_wall: float | None = None
    error: str | None = None


class SurvivorScaler:
    """The modelled autoscaler and node provisioning of every region (see the module). `serving` is the world's
    TritonPerRegion; `node_groups(region)` and `set_desired(region, pool, n)` reach the regional stacks' node groups
    (the drills' capacity adapter over moto); `scale` the drill-to-wall factor."""

    def __init__(
        self,
        world: Any,
        serving: Any,
        *,
        rate: float,
        scale: float,
        reservations: bool,
        node_groups: Callable[[str], dict[str, tuple[int, int]]],
        set_desired: Callable[[str, str, int], None],
        log: Callable[[str], None] = lambda s: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.world, self.serving, self.scale, self.reservations, self.log = world, serving, scale, reservations, log
        self.fleet: Fleet = world.fleet
        self.rps_per_qps = rate / self.fleet.glob.capacity.peak_qps
        self.node_groups, self.set_desired, self.now = node_groups, set_desired, now
        self.running: dict[str, dict[str, int]] = {}
        self.declared: dict[str, dict[str, int]] = {}
        self.scale_ups: list[ScaleUp] = []
        self.windows: list[dict[str, Any]] = []  # per sync: region -> offered and carried QPS
        self._busy: set[str] = set()
        self._since: dict[str, int] = {}
        self._arrivals: dict[str, list[float]] = {}  # region -> users' inference arrivals (wall) in the rate window
        self._started = time.time()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Each region at its steady nodes, its load balancer admitting what they carry (before traffic starts)."""
        for r in self.world.regions:
            groups = self.node_groups(r)
            self.declared[r] = {p: d for p, (d, _) in groups.items()}
            self.running[r] = steady_nodes(self.fleet, r, self.declared[r])
            for pool, n in self.running[r].items():
                if n != self.declared[r].get(pool):
                    self.set_desired(r, pool, n)
            self.serving.set_capacity(r, self._rps(r), QUEUE_MS)

    def _rps(self, region: str) -> float:
        return node_qps(self.fleet, self.fleet.regions[region], self.running[region]) * self.rps_per_qps

    def start(self) -> None:
        t = threading.Thread(target=self._loop, name="survivor-scaler", daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self) -> None:
        """Stop deciding and launching; the regions' load balancers admit everything again (the capacity model ends
        with its drill; the pods it added keep serving)."""
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=self.world.scale.ready_timeout + 5)
        for r in self.world.regions:
            self.serving.set_capacity(r, None)

    def _offered(self, region: str, now: float) -> float:
        """Users' inference requests to the region over the last RATE_WINDOW_S (scaled; shorter at the start), in
        production QPS: what the HPA's metric (a rate over a window) reads."""
        nxt, entries = self.serving.proxies[region].requests(self._since.get(region, 0))
        self._since[region] = nxt
        seen = self._arrivals.setdefault(region, [])
        seen += [float(e[0]) for e in entries if str(e[4]).endswith("/infer") and not (len(e) > 5 and e[5])]
        window = min(RATE_WINDOW_S * self.scale, now - self._started)
        self._arrivals[region] = seen = [t for t in seen if t >= now - window]
        return len(seen) / window / self.rps_per_qps if window > 0 else 0.0

    def _loop(self) -> None:
        period = AUTOSCALER_SYNC_S * self.scale
        self._started = time.time()
        for r in self.world.regions:
            self._offered(r, self._started)  # start counting from now
        while not self._stop.wait(period):
            window: dict[str, Any] = {"wall": time.time()}
            for r in self.world.regions:
                offered = self._offered(r, window["wall"])
                cfg = self.fleet.regions[r]
                carried = node_qps(self.fleet, cfg, self.running[r])
                window[r] = {"offered_qps": round(offered), "carried_qps": round(carried)}
                at_target = carried * cfg.triton.target_gpu_utilization / 100
                if offered <= at_target * (1 + HPA_TOLERANCE) or r in self._busy:
                    continue
                at = self.now()
                target = scale_target(self.fleet, cfg, self.running[r], wanted_qps(cfg, offered), self.reservations, at)
                todo = launches(cfg, self.running[r], target, self.reservations, at)
                if not todo:
                    continue  # every pool at max: nothing more to ask for
                self._busy.add(r)
                for pool, n in target.items():
                    if n != self.running[r].get(pool):
                        self.set_desired(r, pool, n)
                for reserved in (True, False):
                    pools = {lc.pool: lc.nodes for lc in todo if lc.reserved == reserved}
                    if pools:
                        up = ScaleUp(r, pools, reserved, time.time(), round(offered), round(carried))
                        self.scale_ups.append(up)
                        th = threading.Thread(target=self._provision, args=(up,), name=f"scale-{r}", daemon=True)
                        self._threads.append(th)
                        th.start()
                self.log(
                    f"autoscaler: {r} offered {offered:,.0f} QPS over {carried:,.0f} carried: adding "
                    + ", ".join(f"{lc.nodes} {lc.pool} ({'reserved' if lc.reserved else 'on-demand'})" for lc in todo)
                )
            self.windows.append(window)

    def _provision(self, up: ScaleUp) -> None:
        try:
            for part, drill_s in stated_parts(up.reserved).items():
                up.parts[part] = drill_s
                if self._stop.wait(drill_s * self.scale):
                    up.error = "stopped before the nodes were up"
                    return
            k = 1 + [u for u in self.scale_ups if u.region == up.region].index(up)  # its own pod address
            name = f"{up.region}-scale-{k}"
            timings: dict[str, float] = {}
            server = self.serving.start_pod(up.region, name, self.serving.pod_address(up.region, k), timings)
            up.parts |= {p: round(timings[p], 3) for p in REAL}
            with self._lock:
                for pool, n in up.pools.items():
                    self.running[up.region][pool] = self.running[up.region].get(pool, 0) + n
                self.serving.add_target(up.region, server, self._rps(up.region))
                up.serving_wall = time.time()
            self.log(
                f"autoscaler: {name} serving {', '.join(f'{n} {p}' for p, n in up.pools.items())}; "
                + ", ".join(f"{p} {s:g} s" for p, s in up.parts.items())
            )
        except Exception as e:  # noqa: BLE001 - a failed scale-up is reported, the drill goes on without it
            up.error = f"{type(e).__name__}: {e}"
            self.log(f"[red]autoscaler: scale-up of {up.region} failed[/red]: {up.error}")
        finally:
            with self._lock:
                if all(u.serving_wall is not None or u.error for u in self.scale_ups if u.region == up.region):
                    self._busy.discard(up.region)  # the next sync may scale the region again

    def pod_startups(self, clock: Any) -> Callable[[str, float], list[dict[str, Any]]]:
        """The backend's `pod_startups` (drills.adapters.base.Backend) over this scaler: each scale-up of the region
        serving after `since` (drill clock) or still starting, its parts named as the AWS backend names them
        (drills/adapters/pod_startup.py PARTS: EC2 capacity and boot are the node's readiness)."""

        def startups(region: str, since: float) -> list[dict[str, Any]]:
            out = []
            for k, u in enumerate(u for u in self.scale_ups if u.region == region):
                if u.serving_wall is not None and clock.to_drill(u.serving_wall) < since:
                    continue
                p = u.parts
                wait, boot = p.get(INSUFFICIENT_CAPACITY_WAIT.name), p.get("node boot")
                parts = {
                    "node ready": wait + boot if wait is not None and boot is not None else None,
                    "image pulled": p.get("image pull"),
                    **{name: p.get(name) for name in REAL},
                }
                done = u.serving_wall is not None and None not in parts.values()
                out.append(
                    {
                        "pod": f"{region}-scale-{k + 1}",
                        "node": ", ".join(f"{n} {pool}" for pool, n in u.pools.items()),
                        "created": clock.to_drill(u.decided_wall),
                        "parts": parts,
                        "total": round(sum(v for v in parts.values() if v is not None), 3) if done else None,
                    }
                )
            return out

        return startups

    def report(self, to_drill: Callable[[float], float], fault_wall: float | None) -> dict[str, Any]:
        """The report's `capacity` section: the scale, each region's capacity, each scale-up's parts and the capacity
        part of RTO with and without reservations (drill seconds for stated parts, wall for real ones)."""
        ups = []
        fault_drill = to_drill(fault_wall) if fault_wall is not None else None
        for u in self.scale_ups:
            d = asdict(u)
            real = sum(u.parts[k] for k in REAL) if all(k in u.parts for k in REAL) else None
            d["decided_at_drill_s"] = (
                round(to_drill(u.decided_wall) - fault_drill, 1) if fault_drill is not None else None
            )
            d["serving_at_drill_s"] = (
                round(to_drill(u.serving_wall) - fault_drill, 1)
                if fault_drill is not None and u.serving_wall is not None
                else None
            )
            # The whole stated figures (a launch the drill's end cut short has not slept them all) plus the real parts.
            with_res, without = (sum(stated_parts(r).values()) for r in (True, False))
            d["capacity_part_s"] = {
                "measured": round((with_res if u.reserved else without) + real, 1)
                if u.serving_wall is not None and real is not None
                else None,
                "with_reservations": round(with_res + real, 1) if real is not None else None,
                "without_reservations": round(without + real, 1) if real is not None else None,
            }
            ups.append(d)
        return {
            "model": "declared" if self.reservations else "no-reservations",
            "rps_per_qps": self.rps_per_qps,
            "queue_ms": QUEUE_MS,
            "autoscaler_sync_s": AUTOSCALER_SYNC_S,
            "declared_nodes": self.declared,
            "nodes": self.running,
            "scale_ups": ups,
            "windows": self.windows,
            "stated": {s.name: s.seconds for s in (*CAPACITY_STARTUP, INSUFFICIENT_CAPACITY_WAIT)},
        }
