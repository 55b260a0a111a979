"""Template: a user's own event shapes, declared in the scenario file, without writing a pack.

    packs:
      template:
        params:
          streams:
            orders:
              fields:
                order_id: {gen: pattern, pattern: "ORD-{seq:08d}"}
                status: {gen: choice, values: [placed, paid, shipped], weights: [5, 3, 2]}
                amount: {gen: lognormal, mu: 3.5, sigma: 0.6, min: 1, decimals: 2}
                coupon: {gen: pattern, pattern: "[A-Z]{6}", null_rate: 0.8}
        streams:
          orders: {rate: {profile: constant, base: 500}}

Each stream's Avro schema is derived from its fields (``event_id`` and ``event_time`` first,
as in every stream), so the rate controller, chaos chain, encoders, sinks, batch mode, the
manifest and ``verify`` work on template streams as on the built-in ones. A field's values
are made a block at a time in numpy (``fields.py``), from the seed, stream, field and seq.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from datafactory.engine.blocks import DictColumn, RecordBlock
from datafactory.engine.rate import ConstantProfile, RateProfile
from datafactory.engine.seeding import SeedTree
from datafactory.engine.timeline import PendingEvents
from datafactory.pack import Pack, Shard, StreamGenerator, StreamSpec
from datafactory.schema import EventSchema, make_schema
from datafactory_template import ownschema
from datafactory_template.compose import (
    AnyField,
    Array,
    Lookup,
    Member,
    Object,
    Posting,
    Ref,
    Salts,
    compile_fields,
    make_fields,
    refers,
)
from datafactory_template.entities import (
    EntityTemplate,
    World,
    check_references,
    resolved,
    stateful,
)
from datafactory_template.expr import Expression
from datafactory_template.fields import Context, Problem, invalid
from datafactory_template.machines import Machine

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED = ("event_id", "event_time")
MAX_FIELDS = 500
MAX_STREAMS = 100
DEFAULT_RATE = 10.0


class Moves(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    entity: str = Field(..., description="an entity with states: an event per member's move")


class StreamTemplate(BaseModel):
    """One stream's events: its fields, in order; a ``transitions`` stream's events are an
    entity's members' moves (``from_state``, ``to_state``, then the fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    doc: str | None = Field(None, max_length=2000, description="what the events are")
    transitions: Moves | None = None
    fields: dict[str, AnyField] = Field(default_factory=dict, max_length=MAX_FIELDS)
    avsc: dict[str, Any] | str | None = Field(
        None, description="your own schema (inline, or a file beside the scenario): checked"
    )
    _compiled: dict[str, Expression] = PrivateAttr(default_factory=dict)
    _own: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _own_schema(self, info: ValidationInfo) -> StreamTemplate:
        if self.avsc is not None:
            base = (info.context or {}).get("base_dir")
            try:
                self._own = ownschema.load(self.avsc, base)
            except ValueError as e:
                value = self.avsc if isinstance(self.avsc, str) else "..."
                raise invalid("avsc", [(("avsc",), str(e), value)]) from None
        return self

    @model_validator(mode="after")
    def _derived(self) -> StreamTemplate:
        if not refers(self.fields):  # (else once the entities are known: TemplateParams)
            self._compiled = compile_fields(self.fields, ("fields",))
        return self

    @field_validator("fields")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME.match(name):
                raise ValueError(
                    f"field name {name!r}: lower case letters, digits and _, a letter first"
                )
            if name in RESERVED or name in ("from_state", "to_state"):
                raise ValueError(f"{name!r} is in the events already: name the field otherwise")
        return v


class TemplateParams(BaseModel):
    """Parameters of the template pack: the streams it makes, the entities they draw from."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    streams: dict[str, StreamTemplate] = Field(
        ..., min_length=1, max_length=MAX_STREAMS, description="stream name -> its fields"
    )
    entities: dict[str, EntityTemplate] = Field(
        default_factory=dict, max_length=MAX_STREAMS, description="populations streams refer to"
    )

    @field_validator("streams", "entities")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME.match(name):
                raise ValueError(f"name {name!r}: lower case letters, digits and _, a letter first")
        return v

    @model_validator(mode="after")
    def _references(self) -> TemplateParams:
        problems: list[Problem] = []
        for name, t in self.streams.items():
            mover = t.transitions.entity if t.transitions is not None else None
            if mover is not None and (
                mover not in self.entities or self.entities[mover].states is None
            ):
                problems.append(
                    (("streams", name, "transitions", "entity"),
                     f"no entity {mover!r} with states", mover)
                )  # fmt: skip
                mover = None
            elif mover is None and not t.fields:
                problems.append((("streams", name, "fields"), "a stream needs fields", name))
            where = ("streams", name, "fields")
            problems += check_references(t.fields, self.entities, where, mover)
        posters: dict[str, str] = {}  # an entity's balances: one stream posts to them
        for name, t in self.streams.items():
            for fname, f in t.fields.items():
                if isinstance(f, Posting) and isinstance(ref := t.fields.get(f.ref), Ref):
                    other = posters.setdefault(ref.entity, name)
                    if other != name:
                        problems.append(
                            (("streams", name, "fields", fname),
                             f"{other!r} posts to {ref.entity!r} already: one stream posts "
                             "to an entity's balances (their order is its seq order)", name)
                        )  # fmt: skip
        if problems:
            raise invalid("reference", problems)
        for name, t in self.streams.items():
            if refers(t.fields):  # a member's numbers may be used in expressions
                t._compiled = compile_fields(
                    t.fields, ("streams", name, "fields"), self._resolver(t)
                )
        mismatched = [
            (("streams", name, "avsc"), "the template does not make your schema: " + "; ".join(d),
             name)
            for name, t in self.streams.items()
            if t._own is not None
            and (d := ownschema.differences(t._own, derive_schema(name, t, self.entities).raw))
        ]  # fmt: skip
        if mismatched:
            raise invalid("avsc", mismatched)
        return self

    def _resolver(self, t: StreamTemplate) -> Callable[[Any], Any]:
        mover = t.transitions.entity if t.transitions is not None else None

        def resolve(f: Any) -> Any:
            return resolved(f, t.fields, self.entities, mover)

        return resolve


class TemplatePack(Pack):
    name = "template"
    description = "Your own event shapes, declared in the scenario file (params.streams)."
    Params = TemplateParams
    streams: ClassVar[dict[str, StreamSpec]] = {}  # they come from the params

    shardable = True

    @classmethod
    def max_shards(cls, params: BaseModel) -> int:
        """As many as the smallest entity with states or a balance has members (a shard
        owns a part of them); without one, any number (every value is a hash of its seq)."""
        assert isinstance(params, TemplateParams)
        return min((e.count for e in params.entities.values() if stateful(e)), default=1 << 20)

    def __init__(self, params: BaseModel, seeds: SeedTree, shard: Shard | None = None) -> None:
        super().__init__(params, seeds, shard)
        p = params if isinstance(params, TemplateParams) else TemplateParams.model_validate(params)
        self.p = p
        # a shard: 1/N of every paced stream (its own seqs), its own part of the members with
        # states or balances (their moves and postings), every other member as it is
        self.shard_share = 1.0 / self.shard.count
        self.world = World(p.entities, seeds, self.shard)
        self.machines = {}
        for name, e in p.entities.items():
            if e.states is not None:
                lo, hi = self.world.owned[name]
                salt = Salts(seeds, ("machine",)).of(name)
                self.machines[name] = Machine(e.states, hi - lo, salt, lo)

    def begin(self, now_us: int) -> None:
        for m in self.machines.values():
            m.begin(now_us)

    def advance(self, now_us: int) -> None:
        for m in self.machines.values():
            m.advance(now_us)

    @classmethod
    def streams_for(cls, params: BaseModel | None) -> dict[str, StreamSpec]:
        if not isinstance(params, TemplateParams):
            return {}
        return {
            name: StreamSpec(
                name,
                t.doc or f"template stream {name}",
                None if t.transitions else ConstantProfile(base=DEFAULT_RATE),
                driven=t.transitions is not None,
            )
            for name, t in params.streams.items()
        }

    @classmethod
    def driven_follow_clock(cls) -> bool:
        return True  # moves follow the clock when no paced stream of the template runs

    @classmethod
    def default_rate(cls, stream: str, params: BaseModel | None) -> RateProfile | None:
        return ConstantProfile(base=DEFAULT_RATE)

    @classmethod
    def schema_of(cls, stream: str, params: BaseModel | None) -> EventSchema:
        if not isinstance(params, TemplateParams) or stream not in params.streams:
            raise KeyError(f"template has no stream {stream!r}")
        return derive_schema(stream, params.streams[stream], params.entities)

    def stream(self, name: str) -> StreamGenerator:
        if name not in self.p.streams:
            raise KeyError(f"template has no stream {name!r}; streams: {sorted(self.p.streams)}")
        if self.p.streams[name].transitions is not None:
            return MoveStream(self, name)
        return TemplateStream(self, name)


def derive_schema(
    stream: str, t: StreamTemplate, entities: dict[str, EntityTemplate]
) -> EventSchema:
    """The stream's Avro schema: the envelope, then each field's type (nullable where it has a
    null rate; a reference has the type of the entity field it gives)."""
    raw: dict[str, Any] = {
        "type": "record",
        "name": _record_name(stream) or "Event",
        "namespace": "datafactory.template",
        "fields": [
            {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            *(_MOVE_FIELDS if t.transitions else []),
            *_avro_fields(t.fields, entities, t.transitions.entity if t.transitions else None),
        ],
    }
    if t.doc:
        raw["doc"] = t.doc
    return make_schema(f"template.{stream}", raw)


def _record_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


_MOVE_FIELDS = [{"name": "from_state", "type": "string"}, {"name": "to_state", "type": "string"}]


def _avro_fields(
    fields: dict[str, Any],
    entities: dict[str, EntityTemplate],
    mover: str | None = None,
    path: str = "",
) -> list[Any]:
    """The fields' Avro fields; nested records are named by their path (``ShipGeo``), so
    names never clash."""
    out = []
    for name, f in fields.items():
        nullable = f.null_rate > 0
        if isinstance(f, Array):
            inner = _avro_fields(f.items, entities, None, f"{path}{name}_item_")
            items = {"type": "record", "name": _record_name(path + name) + "Item", "fields": inner}
            t: Any = {"type": "array", "items": items}
        elif isinstance(f, Object):
            t = {"type": "record", "name": _record_name(path + name),
                 "fields": _avro_fields(f.fields, entities, mover, f"{path}{name}_")}  # fmt: skip
        elif isinstance(f, Ref | Lookup | Member | Posting):
            target = resolved(f, fields, entities, mover)
            t, nullable = target.avro(), nullable or target.null_rate > 0
        else:
            t = f.avro()
        field: dict[str, Any] = {"name": name, "type": ["null", t] if nullable else t}
        if f.doc:
            field["doc"] = f.doc
        out.append(field)
    return out


class TemplateStream(StreamGenerator):
    """A paced stream of a template: every field of a block made at once."""

    def __init__(self, pack: TemplatePack, name: str) -> None:
        self.pack = pack
        self.name = name
        self.template = pack.p.streams[name]
        self.schema = pack.schema_of(name, pack.p)
        self.event_type = f"template.{name}"
        self.run_seed = pack.seeds.seed
        self.salts = Salts(pack.seeds, (name,))
        self.world = pack.world

    def generate(self, seq_start: int, event_time: npt.NDArray[np.int64]) -> RecordBlock:
        n = len(event_time)
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        ctx = Context(seq, event_time, self.run_seed, self.event_type, self.world)
        t = self.template
        columns, nulls, _ = make_fields(t.fields, t._compiled, ctx, self.salts)
        return RecordBlock(self.event_type, seq, event_time.astype(np.int64), seq, columns, nulls)


class MoveStream(StreamGenerator):
    """A driven stream: an event per move of an entity's members, in time order."""

    def __init__(self, pack: TemplatePack, name: str) -> None:
        self.pack = pack
        self.name = name
        self.template = pack.p.streams[name]
        assert self.template.transitions is not None
        self.entity = self.template.transitions.entity
        self.machine = pack.machines[self.entity]
        self.buffer = PendingEvents()
        self.machine.buffers.append(self.buffer)
        self.schema = pack.schema_of(name, pack.p)
        self.event_type = f"template.{name}"
        self.salts = Salts(pack.seeds, (name,))

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        if until_us is None:
            return None
        self.machine.advance(until_us)
        ev = self.buffer.take(until_us, limit)
        if ev is None:
            return None
        n = len(ev["t"])
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        ctx = Context(seq, ev["t"], self.pack.seeds.seed, self.event_type, self.pack.world)
        ctx.mover = (self.entity, ev["member"])
        t = self.template
        columns, nulls, _ = make_fields(t.fields, t._compiled, ctx, self.salts)
        states = self.machine.states
        moves = {
            "from_state": DictColumn(ev["before"].astype(np.int32), states),
            "to_state": DictColumn(ev["after"].astype(np.int32), states),
        }
        return RecordBlock(
            self.event_type, seq, ev["t"].astype(np.int64), ev["member"].astype(np.int64),
            {**moves, **columns}, nulls,
        )  # fmt: skip
