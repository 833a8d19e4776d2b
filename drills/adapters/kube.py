"""A minimal Kubernetes API client for EKS: bearer token from STS, endpoint and CA from DescribeCluster.

The drills need three calls (read Triton deployments' readiness, scale them, read them back), which do not
justify the `kubernetes` package and a kubeconfig per region. The token is the one `aws eks get-token` makes: a
presigned STS GetCallerIdentity URL carrying the `x-k8s-aws-id: <cluster>` header, base64url-encoded with the
`k8s-aws-v1.` prefix (aws-iam-authenticator's format). Not executed here (no cluster); `token()` is tested
offline since presigning needs no network.
"""

from __future__ import annotations

import base64
import tempfile
import time
from typing import Any

import requests


def eks_token(session: Any, region: str, cluster: str, expires: int = 60) -> str:
    sts = session.client("sts", region_name=region, endpoint_url=f"https://sts.{region}.amazonaws.com")

    def add_header(request: Any, **_: Any) -> None:
        request.headers.add_header("x-k8s-aws-id", cluster)

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_header)
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=expires, HttpMethod="GET")
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class EksKube:
    def __init__(self, session: Any, region: str, cluster: str, timeout: float = 10.0):
        self.session, self.region, self.cluster, self.timeout = session, region, cluster, timeout
        self._endpoint: str | None = None
        self._ca: str | None = None
        self._token: tuple[float, str] | None = None

    def _setup(self) -> None:
        if self._endpoint:
            return
        c = self.session.client("eks", region_name=self.region).describe_cluster(name=self.cluster)["cluster"]
        self._endpoint = c["endpoint"]
        with tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False) as f:
            f.write(base64.b64decode(c["certificateAuthority"]["data"]))
        self._ca = f.name

    def _url(self, path: str) -> str:
        self._setup()
        assert self._endpoint is not None  # _setup() sets it or raises
        return self._endpoint + path

    def _headers(self) -> dict[str, str]:
        if not self._token or time.time() - self._token[0] > 600:  # tokens live 15 min; renew well before
            self._token = (time.time(), eks_token(self.session, self.region, self.cluster))
        return {"Authorization": f"Bearer {self._token[1]}"}

    def get(self, path: str, **params: Any) -> dict:
        r = requests.get(self._url(path), params=params, headers=self._headers(), verify=self._ca, timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def get_text(self, path: str, **params: Any) -> str:
        """A non-JSON read, e.g. a pod's /metrics through the API server's proxy subresource."""
        r = requests.get(self._url(path), params=params, headers=self._headers(), verify=self._ca, timeout=self.timeout)
        r.raise_for_status()
        return r.text

    def patch(self, path: str, body: dict) -> dict:
        r = requests.patch(
            self._url(path),
            json=body,
            verify=self._ca,
            timeout=self.timeout,
            headers={**self._headers(), "Content-Type": "application/merge-patch+json"},
        )
        r.raise_for_status()
        return r.json()
