"""Client traffic in the rehearsal: real feature rows of the served model's signature, sent by clients that resolve
the service name through the DNS model and reach whichever region it answered, in this process or in a child.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from drills.rehearsal.loadgen import LoadGenerator, Resilient, feature_batches


class Traffic:
    def __init__(
        self,
        *,
        inputs: list[dict],
        data_seed: int | None,
        model: Callable[[], str],
        dns_address: tuple[str, int],
        fqdn: str,
        http_port: int,
        ip_region: dict[str, str],
        seed: int | None,
        sup: Any,
        workdir: Path,
    ):
        # `data_seed`: the build's golden rows (its data seed), not the world's RNG seed. `model`: the served model's
        # name, known once a region serves.
        self.inputs, self.data_seed, self._model = inputs, data_seed, model
        self.dns_address, self.fqdn, self.http_port, self.ip_region = dns_address, fqdn, http_port, ip_region
        self.seed, self.sup, self.workdir = seed, sup, workdir

    @property
    def model(self) -> str:
        return self._model()

    def batches(self, n: int = 32, batch: int = 32) -> list:
        return feature_batches(self.inputs, n=n, batch=batch, seed=self.data_seed)

    def loadgen(
        self,
        *,
        rate: float,
        duration: float | None = None,
        count: int | None = None,
        clients: int = 8,
        timeout: float = 1.0,
        batch: int = 32,
        stagger: bool = True,
        resilient: Resilient | None = None,
    ) -> LoadGenerator:
        return LoadGenerator(
            dns_server=self.dns_address,
            name=self.fqdn,
            port=self.http_port,
            model=self.model,
            batches=self.batches(batch=batch),
            rate=rate,
            duration=duration,
            count=count,
            clients=clients,
            timeout=timeout,
            ip_region=self.ip_region,
            stagger=stagger,
            seed=self.seed,
            resilient=resilient,
        )

    def process(
        self,
        *,
        rate: float,
        duration: float,
        clients: int = 8,
        timeout: float = 1.0,
        batch: int = 32,
        resilient: Resilient | None = None,
        shoppers: dict[str, Any] | None = None,
    ) -> Any:
        """The same traffic from a supervised child process (`loadgen_proc.LoadProcess`): its clients do not share this
        process's GIL with the drill machinery, so their latencies are the servers' and the network's, not ours."""
        from drills.rehearsal.loadgen_proc import LoadProcess

        return LoadProcess(
            self.sup,
            self.workdir / "loadgen",
            dns_server=self.dns_address,
            name=self.fqdn,
            port=self.http_port,
            model=self.model,
            inputs=self.inputs,
            data_seed=self.data_seed,
            rate=rate,
            duration=duration,
            clients=clients,
            timeout=timeout,
            ip_region=self.ip_region,
            seed=self.seed,
            batch=batch,
            resilient=resilient,
            shoppers=shoppers,
        )
