"""StackAdapter over the Pulumi Automation API (a local program: the project's Pulumi.yaml and stacks/).

Written to the documented API of pulumi 3.x `pulumi.automation`: `select_stack(stack_name, work_dir=...)`,
`Stack.get_config(key, path=True)`, `Stack.set_all_config(ConfigMap, path=True)`, `Stack.preview()`
(`PreviewResult.change_summary`), `Stack.up(message=..., on_output=...)` (`UpResult.summary`,
`UpResult.outputs`) and `Stack.outputs()`. With `path=True` the CLI stores integers as numbers and
"true"/"false" as booleans, so `routing.regions.us-east-1.weight = 20` stays an integer in the stack file.

It needs the Pulumi CLI and the stack's backend credentials, which this workplace does not have; the tests
exercise it with a fake Stack (the keys, paths and values it sets are what they check).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infra.config import PROJECT, ROOT


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class AutomationStackAdapter:
    def __init__(
        self,
        work_dir: Path = ROOT,
        *,
        project: str = PROJECT,
        org: str | None = None,
        env_vars: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        select: Callable[..., Any] | None = None,
    ):
        """`org`: prefix stack names as <org>/<stack> (Pulumi Cloud); `select` is injectable for tests."""
        self.work_dir, self.project, self.org = Path(work_dir), project, org
        self.env_vars = dict(env_vars or {})
        self.log = log or (lambda line: None)
        self._select = select
        self._stacks: dict[str, Any] = {}

    def _stack(self, name: str) -> Any:
        if name not in self._stacks:
            if self._select is None:
                from pulumi import automation as auto

                opts = auto.LocalWorkspaceOptions(env_vars=self.env_vars) if self.env_vars else None
                self._stacks[name] = auto.select_stack(
                    stack_name=self._qualified(name), work_dir=str(self.work_dir), opts=opts
                )
            else:
                self._stacks[name] = self._select(stack_name=self._qualified(name), work_dir=str(self.work_dir))
        return self._stacks[name]

    def _qualified(self, name: str) -> str:
        return f"{self.org}/{name}" if self.org else name

    def key(self, path: str) -> str:
        return f"{self.project}:{path}"

    def get_config(self, stack: str, path: str) -> Any:
        return _decode(self._stack(stack).get_config(self.key(path), path=True).value)

    def set_config(self, stack: str, values: Mapping[str, Any]) -> None:
        from pulumi.automation import ConfigValue

        self._stack(stack).set_all_config(
            {self.key(p): ConfigValue(value=_encode(v)) for p, v in values.items()}, path=True
        )

    def preview(self, stack: str) -> dict[str, int]:
        res = self._stack(stack).preview(on_output=self.log)
        return {str(k): int(v) for k, v in (res.change_summary or {}).items()}

    def up(self, stack: str, message: str) -> dict[str, Any]:
        res = self._stack(stack).up(message=message, on_output=self.log)
        summary = getattr(res.summary, "resource_changes", None) or {}
        return {
            "summary": {str(k): int(v) for k, v in summary.items()},
            "outputs": {k: v.value for k, v in (res.outputs or {}).items()},
        }

    def outputs(self, stack: str) -> dict[str, Any]:
        return {k: v.value for k, v in self._stack(stack).outputs().items()}
