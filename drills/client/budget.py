"""Retry budget: gRPC retry throttling (gRFC A6), one token bucket per client instance.

The bucket starts full (`max_tokens`). Every attempt that fails in a retryable way takes one token, every
success gives back `token_ratio` (never above `max_tokens`). Retries and hedges are sent only while the
bucket holds more than half of `max_tokens`; the first attempt of a request is never throttled. So a total
outage costs at most about `max_tokens / 2` extra attempts before the client stops amplifying, and a healthy
period of `1 / token_ratio` successes per token refills it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from drills.client.errors import ClientConfigError


@dataclass(frozen=True)
class RetryBudgetPolicy:
    """gRPC's `retryThrottling` settings; the defaults are gRPC's documented example (10 tokens, 0.1 per success)."""

    max_tokens: float = 10.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not self.max_tokens > 0:
            raise ClientConfigError("retry_budget.max_tokens", self.max_tokens, "must be > 0")
        if not self.token_ratio > 0:
            raise ClientConfigError("retry_budget.token_ratio", self.token_ratio, "must be > 0")


class RetryBudget:
    """The token bucket. Thread-safe: one lock around three float operations."""

    def __init__(self, policy: RetryBudgetPolicy) -> None:
        self.policy = policy
        self._tokens = policy.max_tokens
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        with self._lock:
            return self._tokens

    def allows_extra_attempt(self) -> bool:
        """May a retry or hedge be sent now?"""
        with self._lock:
            return self._tokens > self.policy.max_tokens / 2

    def record_failure(self) -> None:
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1)

    def record_success(self) -> None:
        with self._lock:
            self._tokens = min(self.policy.max_tokens, self._tokens + self.policy.token_ratio)
