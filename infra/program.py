"""Dispatch on the stack's role: the same program serves every regional and global stack."""

from __future__ import annotations

import pulumi

from infra.config import ConfigError, GlobalConfig, from_pulumi


def main() -> None:
    try:
        cfg = from_pulumi()
    except ConfigError as e:
        # RunError prints the message without a Python traceback, and nothing has been declared yet.
        raise pulumi.RunError(str(e)) from None
    stack = pulumi.get_stack()
    if isinstance(cfg, GlobalConfig):
        from infra.global_stack import declare_global

        declare_global(stack, cfg)
    else:
        from infra.regional import declare_regional

        declare_regional(stack, cfg)
