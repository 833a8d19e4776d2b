"""The release world's serving model applies an experiment's arms in the order the regional stack's `up` does on AWS:
an arm's pods are ready before the load balancer's table routes its cell, a retired arm is unrouted before its pods
stop, a refused arm pod leaves its cells unrouted (they fall through to the stable version), and the stable version's
cells route to the stable track. Pods and the load balancer are recording stand-ins: the order is the subject."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from drills.rehearsal.release_serving import STABLE, Deployment, Pod, ServingModel
from drills.rehearsal.repo import ArtifactError
from infra.arms import arm_track

STABLE_V, MORE, BAD = "2026.11.0", "2026.11.0-more", "2026.11.0-bad"


class _Server:
    def __init__(self, log: list[tuple], name: str) -> None:
        self.log, self.name, self.state = log, name, "ready"
        self.address, self.http_port = "127.0.0.1", 8000

    def stop(self) -> None:
        self.state = "stopped"
        self.log.append(("stop", self.name))


class _Proxy:
    def __init__(self, log: list[tuple]) -> None:
        self.log = log

    def set(self, region: str, weight: int, targets: dict, canary: bool = False, **kw: Any) -> None:
        ready = {t for t, pods in targets.items() if pods}
        self.log.append(("route", dict(kw.get("arms") or {}), frozenset(ready)))


class _Serving(ServingModel):
    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        model = SimpleNamespace(name="ranker", digests={STABLE_V: "a", MORE: "b", BAD: "c"})
        # The stand-in world has what ServingModel reads; the stand-in proxy records the tables pushed.
        world: Any = SimpleNamespace(
            fleet=SimpleNamespace(regions={"r1": SimpleNamespace(model=model)}), regions=["r1"]
        )
        super().__init__(world)
        self.log: list[tuple] = []
        self.refuse = refuse
        self.proxies["r1"] = cast(Any, _Proxy(self.log))
        self.deps["r1"] = {STABLE: Deployment(STABLE_V, 1, [self._pod(STABLE, STABLE_V)])}

    def _pod(self, track: str, version: str) -> Pod:
        server: Any = _Server(self.log, f"{track}-{version}")
        return Pod(f"{track}-{version}", track, version, server, cast(Any, None), 0.0)  # no repository read

    def start_pod(self, region: str, track: str, version: str) -> Pod:
        if version in self.refuse:
            raise ArtifactError(f"{version}: sha256 mismatch")
        self.log.append(("start", track))
        return self._pod(track, version)


def _model(version: str = STABLE_V) -> Any:
    return SimpleNamespace(version=version, canary_version=None, canary_weight=0, digests={})


ARMS = {"more.control": STABLE_V, "more.holdout": STABLE_V, "more.candidate": MORE}


def test_an_arm_is_ready_before_its_cell_is_routed_and_the_stable_cells_route_to_stable():
    s = _Serving()
    s.apply("r1", _model(), ARMS)
    start = s.log.index(("start", arm_track(MORE)))
    routed = next(i for i, e in enumerate(s.log) if e[0] == "route" and "more.candidate" in e[1])
    assert start < routed
    table = s.log[routed][1]
    assert table == {"more.control": STABLE, "more.holdout": STABLE, "more.candidate": arm_track(MORE)}
    assert arm_track(MORE) in s.log[routed][2]  # its pod is a ready target when the rule names it
    assert set(s.tracks("r1")) == {STABLE}  # arms are no share of the release's weighted split


def test_a_retired_arm_is_unrouted_before_its_pods_stop():
    s = _Serving()
    s.apply("r1", _model(), ARMS)
    s.log.clear()
    s.apply("r1", _model(), {})
    unrouted = next(i for i, e in enumerate(s.log) if e[0] == "route" and not e[1])
    stopped = s.log.index(("stop", f"{arm_track(MORE)}-{MORE}"))
    assert unrouted < stopped
    assert arm_track(MORE) not in s.deps["r1"] and ("stop", f"{STABLE}-{STABLE_V}") not in s.log


def test_a_refused_arm_pod_leaves_its_cells_unrouted():
    s = _Serving(refuse=frozenset({MORE}))
    s.apply("r1", _model(), ARMS | {"bad.candidate": BAD})
    last = [e for e in s.log if e[0] == "route"][-1][1]
    assert "more.candidate" not in last  # falls through to the ordinary routes: the stable version
    assert last["bad.candidate"] == arm_track(BAD) and last["more.control"] == STABLE
    assert any(e["event"] == "rollout-stalled" and e["version"] == MORE for e in s.events)
