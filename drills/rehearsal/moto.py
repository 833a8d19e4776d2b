"""A real `moto_server` process standing in for the AWS APIs (Route 53, S3, EKS, ...) on 127.0.0.1.

Model of AWS: one endpoint serves every service and region, as moto does; every client talks to it with
explicit dummy credentials passed as client arguments (and, for the server process, in its own
environment only), so nothing here reads or writes `~/.aws` and nothing can reach a real account.

What moto does not do is modelled elsewhere in this package (health checks, DNS answers, replication).
Three moto gaps matter to the rehearsal:
- `GetBucketReplication` answers with a hard-coded `DeleteMarkerReplication: Disabled` and an empty prefix
  filter, whatever was stored (moto 5.2.5 `s3/responses.py`); `replication_config()` merges those two
  fields back from the configuration that was put. moto's model dump (`/moto-api/data.json`) does hold
  the stored form, but once EKS/EC2 models exist it is ~12 MB and takes seconds: not usable in a poll loop.
- `GetHealthCheckStatus` is a hard-coded success; the health checker model is the status source.
- A bucket policy is enforced on object requests without the request's context: a condition other than
  StringEquals counts as met (moto 5.2.5 `iam/policy_conditions.py`), so a TLS-only statement (Deny s3:* where
  aws:SecureTransport is false) denies every object request; `declared.apply_declared` puts bucket policies only
  when asked to (`put_bucket_policies`).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import requests

from drills.rehearsal.moto_server import PRINCIPAL_ENV
from drills.rehearsal.procs import Child, ProcessError, Supervisor, check_ports_free

DUMMY_CREDENTIALS = {"aws_access_key_id": "rehearsal", "aws_secret_access_key": "rehearsal"}

# (what AWS does, what the rehearsal's moto does instead, why): how bucket policies are evaluated here
# (drills.rehearsal.moto_server, fix 2); listed in every report beside the pod's substitutions.
POLICY_SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (
        "bucket policy: TLS-only Deny (aws:SecureTransport)",
        "left out of moto's evaluation",
        "moto's endpoint is plain HTTP as a transport shortcut; the clients stand for production's HTTPS clients",
    ),
    (
        "bucket policy: conditions on aws:PrincipalArn, for each caller",
        "evaluated for one caller, the env's deploy role (the release tooling's identity)",
        "the rehearsal has no IAM identities: every request is made with the same dummy credentials",
    ),
    (
        "bucket policy: create-only writes (s3:if-none-match) on published versions",
        "left out of moto's evaluation; clients send If-None-Match (publish, engine Jobs); asserted on the declared "
        "policy under mocks. Restores write no published key (they pin the pods' fetch to S3 version ids); "
        "the fault injector's overwrite stands for a break-glass or compromised writer",
        "moto evaluates a policy without the request's headers",
    ),
]


class MotoServer:
    """`python -m moto.server -H HOST -p PORT` as a supervised child; `client()` gives boto3 clients on it."""

    def __init__(
        self,
        sup: Supervisor,
        *,
        host: str = "127.0.0.1",
        port: int,
        ready_timeout: float = 20.0,
        principal: str | None = None,
    ):
        """`principal`: the IAM ARN every request stands for when a bucket policy conditions on aws:PrincipalArn
        (POLICY_SUBSTITUTIONS); None leaves such conditions to moto, which counts them as met."""
        self.sup, self.host, self.port, self.ready_timeout = sup, host, port, ready_timeout
        self.principal = principal
        self.child: Child | None = None
        self.ready_s: float | None = None
        self._clients: dict[tuple[str, str], object] = {}
        self._clients_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        check_ports_free([(self.host, self.port)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # The server validates nothing against these, but botocore inside moto may look for them.
        env.update(
            AWS_ACCESS_KEY_ID="rehearsal",
            AWS_SECRET_ACCESS_KEY="rehearsal",
            AWS_DEFAULT_REGION="us-east-1",
            # The AWS managed policies (arn:aws:iam::aws:policy/...) the programs attach to their roles; moto
            # refuses to attach one it has not loaded. Loading them costs ~0.1 s, on the first IAM request.
            MOTO_IAM_LOAD_MANAGED_POLICIES="true",
            PYTHONUNBUFFERED="1",
        )
        if self.principal:
            env[PRINCIPAL_ENV] = self.principal
        t0 = time.monotonic()
        self.child = self.sup.start(
            "moto",
            [sys.executable, "-m", "drills.rehearsal.moto_server", "-H", self.host, "-p", str(self.port)],
            env=env,
        )
        deadline = t0 + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.child.alive():
                tail = self.child.log_tail()
                self.sup.stop(self.child)
                raise ProcessError(
                    f"moto_server exited with status {self.child.popen.returncode} before it was ready"
                    f" on {self.endpoint}:\n{tail}"
                )
            try:
                if requests.get(f"{self.endpoint}/moto-api/", timeout=0.5).status_code == 200:
                    self.ready_s = time.monotonic() - t0
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        tail = self.child.log_tail()
        self.sup.stop(self.child)
        raise ProcessError(f"moto_server not ready on {self.endpoint} after {self.ready_timeout:.0f} s:\n{tail}")

    def stop(self) -> None:
        if self.child:
            self.sup.stop(self.child)

    # ------------------------------------------------------------ clients
    def client(self, service: str, region: str = "us-east-1"):
        """A cached boto3 client (creating one costs ~0.1-0.3 s; botocore clients are thread-safe)."""
        key = (service, region)
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = client(service, self.endpoint, region)
            return self._clients[key]

    def data(self) -> dict:
        """moto's dump of every model instance it tracks (only JSON-serialisable attributes)."""
        r = requests.get(f"{self.endpoint}/moto-api/data.json", timeout=5)
        r.raise_for_status()
        return r.json()

    def reset(self) -> None:
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=5).raise_for_status()


def client(service: str, endpoint: str, region: str = "us-east-1"):
    import boto3
    from botocore.config import Config

    # A fresh session: no profile, no credential files, no environment credentials are consulted.
    session = boto3.session.Session(region_name=region, **DUMMY_CREDENTIALS)
    return session.client(
        service,
        endpoint_url=endpoint,
        config=Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=2,
            read_timeout=15,
            s3={"addressing_style": "path"},
        ),
    )


def replication_config(s3, bucket: str, put: dict | None) -> dict | None:
    """A bucket's replication configuration from the S3 API, with the fields moto drops (each rule's
    DeleteMarkerReplication and Filter) taken from `put`, the configuration written to it (matched by rule
    ID); None when the bucket has none."""
    from botocore.exceptions import ClientError

    try:
        api = s3.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ReplicationConfigurationNotFoundError":
            return None
        raise
    written = {r.get("ID"): r for r in (put or {}).get("Rules", [])}
    rules = []
    for r in api.get("Rules", []):
        w = written.get(r.get("ID"))
        if w is not None:
            r = {**r, "DeleteMarkerReplication": w.get("DeleteMarkerReplication", {"Status": "Disabled"})}
            if "Filter" in w or "Prefix" in w:
                r["Filter"] = w.get("Filter") or ({"Prefix": w["Prefix"]} if "Prefix" in w else {})
        rules.append(r)
    return {**api, "Rules": rules}
