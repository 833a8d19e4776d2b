"""The strict pydantic base of every config schema (infra.config's stacks, infra.experiments' experiments), Pulumi-free
and importing nothing of the project, so both build on it without importing each other.

  Strict        extra keys refused, frozen, strict types (nothing coerced), no inf/nan
  Items[T]      a tuple field of a strict model: a YAML or JSON list is its input (made a tuple), nothing else is
                coerced
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

_T = TypeVar("_T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _list_as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


Items = Annotated[tuple[_T, ...], BeforeValidator(_list_as_tuple)]
