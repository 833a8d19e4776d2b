"""Errors a drill reports to a person: each carries what happened and what to do, never a traceback."""

from __future__ import annotations


class DrillError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = 2


class GuardrailError(DrillError):
    """A guardrail refused the drill before anything changed. `code` names the guardrail (stable, for tests
    and automation); the message says why and what to do."""

    exit_code = 3

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)

    def __str__(self) -> str:  # one line a person can act on
        return f"REFUSED ({self.code}): {self.args[0]}"


class Abort(DrillError):
    """An abort condition or a failed gate stopped a running drill; the engine rolls back."""

    exit_code = 1


class Interrupted(DrillError):
    """SIGINT/SIGTERM arrived while a drill ran; the engine rolls back."""

    exit_code = 130

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")


class RollbackFailed(DrillError):
    exit_code = 4
