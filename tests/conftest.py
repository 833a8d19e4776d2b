"""Shared by the drills and release tests: no real AWS credentials, profiles or drill settings leak in, and moto
runs once per test module (`aws`): creating EKS node groups initialises moto's EC2 backend per region, which costs
seconds."""

from __future__ import annotations

import os

import pytest

# Dummy credentials: moto needs some to sign, and nothing can reach a real account with them.
AWS_DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "DRILLS_MANIFEST",
    "DRILLS_PLUGINS",
    "DRILLS_STATE_DIR",
    "DRILLS_RELEASE_CANDIDATE",
)


@pytest.fixture
def no_aws(monkeypatch):
    for k in _CLEARED:
        monkeypatch.delenv(k, raising=False)
    for k, v in AWS_DUMMY.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def aws():
    from moto import mock_aws

    old = {k: os.environ.get(k) for k in AWS_DUMMY}
    os.environ.update(AWS_DUMMY)
    with mock_aws():
        yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
