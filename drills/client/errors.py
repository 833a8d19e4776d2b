"""The client's errors: bad configuration is refused at construction, a bad fallback file when it is loaded."""

from __future__ import annotations


class ClientConfigError(ValueError):
    """A constructor argument (or a per-call `prefer` / `deadline_ms`) breaks a rule: names the key, value and rule."""

    def __init__(self, key: str, value: object, rule: str) -> None:
        super().__init__(f"{key}={value!r}: {rule}")
        self.key, self.value, self.rule = key, value, rule


class FallbackError(ValueError):
    """A fallback ranking file that cannot be used: unreadable, malformed, or not the file that was published."""
