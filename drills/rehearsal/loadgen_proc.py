"""The load generator in its own process: clients that do not share an interpreter with the drill machinery.

In the rehearsal's main process the engine runs the Pulumi programs offline at every config change, the DNS,
health-check and replication models run threads, and all of it shares one GIL: a client thread there would
measure that wait as request latency. Real clients are elsewhere, so `LoadProcess` runs `LoadGenerator` in a
supervised child (`python -m drills.rehearsal.loadgen_proc SPEC OUT`) that writes every request record to OUT
as JSON lines when it stops (at its duration bound, or on SIGTERM/SIGINT from `stop()`).
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drills.rehearsal.loadgen import LoadGenerator, RequestRecord, Resilient, feature_batches
from drills.rehearsal.procs import Child, announce, start_announcing


class LoadProcess:
    """Same use as LoadGenerator (`start()`, `stop()`, `records()`), the generator running in a child of `sup`."""

    def __init__(
        self,
        sup: Any,
        workdir: Path,
        *,
        dns_server: tuple[str, int],
        name: str,
        port: int,
        model: str,
        inputs: list[dict],
        data_seed: int | None,
        rate: float,
        duration: float,
        clients: int,
        timeout: float,
        ip_region: dict[str, str],
        seed: int | None,
        batch: int = 32,
        ready_timeout: float = 30.0,
        resilient: Resilient | None = None,
        shoppers: dict[str, Any] | None = None,
    ):
        """`shoppers`: the A/B rehearsal's shoppers as JSON ({"experiment": the Experiment's JSON, "events": the
        events log's path, "requests": golden requests in the catalogue, "seed": the click seed}): see
        loadgen.LoadGenerator."""
        self.sup, self.workdir = sup, Path(workdir)
        self.spec: dict[str, Any] = {
            "dns_server": list(dns_server),
            "name": name,
            "port": port,
            "model": model,
            "inputs": inputs,
            "data_seed": data_seed,
            "rate": rate,
            "duration": duration,
            "clients": clients,
            "timeout": timeout,
            "ip_region": ip_region,
            "seed": seed,
            "batch": batch,
            "resilient": asdict(resilient) if resilient else None,
            "shoppers": shoppers,
        }
        self.ready_timeout = ready_timeout
        self.child: Child | None = None
        self.log_path: Path | None = None
        self._records: list[RequestRecord] | None = None

    def start(self) -> LoadProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec, self.out = self.workdir / "loadgen.json", self.workdir / "requests.jsonl"
        spec.write_text(json.dumps(self.spec))
        self.out.unlink(missing_ok=True)
        started = self.workdir / "loadgen.started"
        # The child announces once it has built its batches and sends from then on.
        self.child, _ = start_announcing(
            self.sup,
            "loadgen",
            [sys.executable, "-m", "drills.rehearsal.loadgen_proc", str(spec), str(self.out), str(started)],
            started,
            "the load generator",
            self.ready_timeout,
        )
        self.log_path = self.child.log_path
        return self

    def stop(self) -> None:
        if self.child is None:
            return
        # SIGTERM: the child stops sending, waits for requests in flight (bounded by their timeout), writes its records.
        self.sup.stop(self.child, first=signal.SIGTERM, first_to_group=False, grace=self.spec["timeout"] + 15.0)
        self.child = None

    def error(self) -> str | None:
        """Why the child wrote no records (it died: a bad setting, an exception), with its log's last lines; None
        when its records are there. A load generator that died must fail the run, not report zero requests."""
        if getattr(self, "out", None) is not None and self.out.exists():
            return None
        log = self.log_path
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:]) if log and log.exists() else "(no log)"
        return f"the load generator wrote no records; its log ends:\n{tail}"

    def records(self) -> list[RequestRecord]:
        if self._records is None:
            self._records = []
            if getattr(self, "out", None) is not None and self.out.exists():
                self._records = [
                    RequestRecord(**json.loads(line)) for line in self.out.read_text().splitlines() if line.strip()
                ]
        return self._records


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    out, started = Path(argv[1]), Path(argv[2])
    shoppers = _shoppers(spec)
    batches = (
        list(shoppers.catalogue.batches)
        if shoppers is not None
        else feature_batches(spec["inputs"], n=32, batch=spec["batch"], seed=spec["data_seed"])
    )
    lg = LoadGenerator(
        dns_server=tuple(spec["dns_server"]),
        name=spec["name"],
        port=spec["port"],
        model=spec["model"],
        batches=batches,
        rate=spec["rate"],
        duration=spec["duration"],
        clients=spec["clients"],
        timeout=spec["timeout"],
        ip_region=spec["ip_region"],
        seed=spec["seed"],
        resilient=(
            Resilient(**{**spec["resilient"], "retryable_status": tuple(spec["resilient"]["retryable_status"])})
            if spec.get("resilient")
            else None
        ),
        shoppers=shoppers,
    )

    def stop(signum: int, frame: Any) -> None:
        lg._stop.set()  # the schedule loop ends; run() then waits for requests in flight and returns

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    announce(started, "1")
    try:
        records = lg.run()
    finally:
        if shoppers is not None:
            shoppers.writer.close()
    tmp = out.with_suffix(".partial")
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")
    tmp.rename(out)
    return 0


def _shoppers(spec: dict[str, Any]) -> Any:
    s = spec.get("shoppers")
    if not s:
        return None
    from drills.experiment.events import EventWriter
    from drills.experiment.shoppers import Catalogue, Shoppers
    from infra.experiments import Experiment
    from model_build.data import DEFAULT_SEED

    catalogue = Catalogue.golden(spec["data_seed"] or DEFAULT_SEED, int(s["requests"]))
    experiment = Experiment.model_validate_json(s["experiment"])
    return Shoppers(experiment, catalogue, EventWriter(Path(s["events"])), int(s["seed"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
