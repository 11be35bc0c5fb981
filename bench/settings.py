"""`--set NAME=VALUE` for the benchmarks: a settings dataclass with some fields changed."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def with_sets(base: T, items: list[str], **changes: Any) -> T:
    """`base` (a dataclass instance) with each NAME=VALUE of `items` converted to its field's type (a bool
    from 1/true/yes, a tuple from comma-separated ints), then `changes`; an unknown name stops the run."""
    fields = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    parsed: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set {item}: {type(base).__name__} has no {key}")
        current = getattr(base, key)
        if isinstance(current, bool):
            parsed[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            parsed[key] = tuple(int(v) for v in value.split(","))
        else:
            parsed[key] = type(current)(value)
    return dataclasses.replace(base, **parsed, **changes)  # type: ignore[type-var]


def at_machine_precision(config: T, items: list[str], width: int) -> T:
    """`config` at the precision a user's `engine train` would get on this CPU for networks `width` channels
    wide (bf16 where the CPU runs it natively, fp32 below 32 channels), unless `items` set one."""
    import torch

    from engine.device import default_precision

    if any(item.startswith("precision=") for item in items):
        return config
    return dataclasses.replace(config, precision=default_precision(torch.device("cpu"), width))  # type: ignore[type-var]


def described(config: Any, items: list[str]) -> str:
    """The settings column of a benchmark's table: the precision, then the other --set items."""
    others = [item for item in items if not item.startswith("precision=")]
    return ", ".join([f"precision={config.precision.value}", *others])
