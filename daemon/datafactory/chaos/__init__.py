"""Chaos mode: faults injected on purpose, and a ground-truth manifest of every one.

``steps`` holds one module per fault; :mod:`.chain` applies them to released slices and
renders byte-level faults per sink; :mod:`.manifest` writes down what was done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from datafactory.chaos.base import FaultLog, Step, StepConfig
from datafactory.chaos.chain import Chain
from datafactory.schema import EventSchema

__all__ = ["Chain", "StepConfig", "build_chain", "parse_steps", "step_class"]


def step_class(name: str) -> type[Step]:
    from datafactory.chaos.steps import STEPS

    return STEPS[name]


def parse_steps(
    raw: list[Any],
) -> tuple[list[tuple[int, StepConfig]], list[tuple[tuple[str | int, ...], str]]]:
    """(position in the list, validated config) per valid step, and every problem."""
    from datafactory.chaos.steps import STEPS

    out: list[tuple[int, StepConfig]] = []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    names: dict[str, int] = {}
    for i, item in enumerate(raw):
        loc: tuple[str | int, ...] = ("chaos", i)
        kind = item.get("step") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind not in STEPS:
            shown = repr(kind)[:64]
            problems.append(
                ((*loc, "step"), f"unknown chaos step {shown}; steps: {', '.join(STEPS)}")
            )
            continue
        try:
            cfg = TypeAdapter(STEPS[kind].Config).validate_python(item)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    msg = "unknown key (not allowed here)"
                problems.append(((*loc, *err["loc"]), msg))
            continue
        name = cfg.name or cfg.step
        if name in names:
            problems.append(
                ((*loc, "name"), f"step name {name!r} is used by chaos.{names[name]}: set name")
            )
        names[name] = i
        out.append((i, cfg))
    return out, problems


def applies(cfg: StepConfig, event_type: str) -> bool:
    if cfg.streams is None:
        return True
    return event_type in cfg.streams or event_type.partition(".")[2] in cfg.streams


def build_chain(
    configs: list[StepConfig],
    event_type: str,
    schema: EventSchema,
    run_seed: int,
    report: Callable[[FaultLog], None],
) -> Chain | None:
    """The chain for one stream, or None when no step applies (output is then untouched)."""
    steps = [
        step_class(c.step)(c, event_type, schema, run_seed)
        for c in configs
        if applies(c, event_type)
    ]
    return Chain(event_type, steps, report) if steps else None
