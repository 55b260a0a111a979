"""Config diff: the one description of how a live run changes.

``diff(old, new)`` compares two validated configs per component key (Vector's
``config/diff.rs``): streams by event type, sinks by name, chaos steps by name, each as
``to_add / to_change / to_remove``, plus what cannot change while the run goes on (sinks, pack
params, the run section, the manifest, a stream's sinks or max_events). ``Engine.apply`` is the
only thing that acts on a diff, and every change reaches it the same way: the file watcher,
SIGHUP, ``POST /v1/reload`` and the live rate and chaos endpoints. The endpoints first turn
their request into an edit of the run's config text (:func:`edit`), validated exactly as a
file is, so the edited config is also what a later reload compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from datafactory.config import Config, merge


@dataclass(frozen=True, slots=True)
class Changes:
    """One kind of component: the keys added, changed and removed."""

    to_add: tuple[str, ...] = ()
    to_change: tuple[str, ...] = ()
    to_remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.to_add or self.to_change or self.to_remove)

    @classmethod
    def of(cls, old: dict[str, Any], new: dict[str, Any]) -> Changes:
        return cls(
            tuple(k for k in new if k not in old),
            tuple(k for k in new if k in old and new[k] != old[k]),
            tuple(k for k in old if k not in new),
        )


@dataclass(frozen=True, slots=True)
class Diff:
    old: Config
    new: Config
    streams: Changes = field(default_factory=Changes)
    sinks: Changes = field(default_factory=Changes)
    chaos: Changes = field(default_factory=Changes)
    # what differs and cannot change while the run goes on (the run must be rebuilt)
    restart: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.streams or self.sinks or self.chaos or self.restart)

    def described(self) -> list[str]:
        """What a run not yet built takes as it is (named as ``Engine.apply`` names it)."""
        out = ["chaos"] if self.chaos else []
        out += [f"rate:{x}" for x in self.streams.to_change]
        out += [f"added:{x}" for x in self.streams.to_add]
        return out + [f"removed:{x}" for x in self.streams.to_remove]


def diff(old: Config, new: Config) -> Diff:
    old_streams = {p.event_type: p for p in old.streams}
    new_streams = {p.event_type: p for p in new.streams}
    streams = Changes.of(
        {k: p.rate for k, p in old_streams.items()}, {k: p.rate for k, p in new_streams.items()}
    )
    sinks = Changes.of(dict(old.sinks), dict(new.sinks))
    old_steps = {c.name or c.step: c for c in old.chaos}
    new_steps = {c.name or c.step: c for c in new.chaos}
    chaos = Changes.of(old_steps, new_steps)
    if not chaos and list(old_steps) != list(new_steps):  # the same steps, in another order
        chaos = Changes(to_change=tuple(new_steps))
    restart: list[str] = []
    if sinks:
        restart.append("sinks")
    restart += [
        f"packs.{p}.params"
        for p in sorted(set(old.pack_params) | set(new.pack_params))
        if p in old.pack_params and old.pack_params.get(p) != new.pack_params.get(p)
    ]
    if new.run != old.run:
        restart.append("run")
    if new.model.manifest != old.model.manifest:
        restart.append("manifest")
    for k, p in new_streams.items():
        o = old_streams.get(k)
        if o is not None and (o.sinks != p.sinks or o.max_events != p.max_events):
            restart.append(f"streams.{k}")
    return Diff(old, new, streams, sinks, chaos, tuple(restart))


def edit(text: str, overrides: dict[str, Any], config: Config) -> str:
    """``text`` (a run's config) with ``overrides`` merged in, as YAML text to validate and
    apply like any config file. ``${VAR}`` references stay references; comments are lost.
    A pack whose streams were implicit (all of them) lists them, so an edit of one stream
    does not disable the others."""
    data = yaml.safe_load(text)
    for pname, sec in (overrides.get("packs") or {}).items():
        if "streams" in sec:
            psec = data.setdefault("packs", {}).setdefault(pname, {}) or {}
            data["packs"][pname] = psec
            if psec.get("streams") is None:
                psec["streams"] = {p.stream: {} for p in config.streams if p.pack == pname}
    return yaml.safe_dump(merge(data, overrides), sort_keys=False, allow_unicode=True)
