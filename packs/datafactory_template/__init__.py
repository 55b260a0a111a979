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
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from datafactory.engine.blocks import RecordBlock
from datafactory.engine.rate import ConstantProfile, RateProfile
from datafactory.engine.seeding import SeedTree
from datafactory.pack import Pack, Shard, StreamGenerator, StreamSpec
from datafactory.schema import EventSchema, make_schema
from datafactory_template.compose import (
    AnyField,
    Array,
    Lookup,
    Ref,
    Salts,
    compile_fields,
    make_fields,
)
from datafactory_template.entities import EntityTemplate, World, check_references, resolved
from datafactory_template.expr import Expression
from datafactory_template.fields import Context

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED = ("event_id", "event_time")
MAX_FIELDS = 500
MAX_STREAMS = 100
DEFAULT_RATE = 10.0


class StreamTemplate(BaseModel):
    """One stream's events: its fields, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    doc: str | None = Field(None, max_length=2000, description="what the events are")
    fields: dict[str, AnyField] = Field(..., min_length=1, max_length=MAX_FIELDS)
    _compiled: dict[str, Expression] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _derived(self) -> StreamTemplate:
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
            if name in RESERVED:
                raise ValueError(f"{name!r} is in every event already: name the field otherwise")
        return v


class TemplateParams(BaseModel):
    """Parameters of the template pack: the streams it makes, the entities they draw from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
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
        problems = [
            p
            for name, t in self.streams.items()
            for p in check_references(t.fields, self.entities, ("streams", name, "fields"))
        ]
        if problems:
            raise ValidationError.from_exception_data(
                "template",
                [InitErrorDetails(type=PydanticCustomError("reference", msg), loc=loc, input=value)
                 for loc, msg, value in problems],
            )  # fmt: skip
        return self


class TemplatePack(Pack):
    name = "template"
    description = "Your own event shapes, declared in the scenario file (params.streams)."
    Params = TemplateParams
    streams: ClassVar[dict[str, StreamSpec]] = {}  # they come from the params

    def __init__(self, params: BaseModel, seeds: SeedTree, shard: Shard | None = None) -> None:
        super().__init__(params, seeds, shard)
        p = params if isinstance(params, TemplateParams) else TemplateParams.model_validate(params)
        self.p = p

    @classmethod
    def streams_for(cls, params: BaseModel | None) -> dict[str, StreamSpec]:
        if not isinstance(params, TemplateParams):
            return {}
        return {
            name: StreamSpec(
                name, t.doc or f"template stream {name}", ConstantProfile(base=DEFAULT_RATE)
            )
            for name, t in params.streams.items()
        }

    @classmethod
    def default_rate(cls, stream: str, params: BaseModel | None) -> RateProfile | None:
        return ConstantProfile(base=DEFAULT_RATE)

    @classmethod
    def schema_of(cls, stream: str, params: BaseModel | None) -> EventSchema:
        if not isinstance(params, TemplateParams) or stream not in params.streams:
            raise KeyError(f"template has no stream {stream!r}")
        return derive_schema(stream, params.streams[stream], params.entities)

    def schema_for(self, stream: str) -> EventSchema:  # type: ignore[override]
        return self.schema_of(stream, self.p)

    def stream(self, name: str) -> StreamGenerator:
        if name not in self.p.streams:
            raise KeyError(f"template has no stream {name!r}; streams: {sorted(self.p.streams)}")
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
            *_avro_fields(t.fields, entities),
        ],
    }
    if t.doc:
        raw["doc"] = t.doc
    return make_schema(f"template.{stream}", raw)


def _record_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _avro_fields(fields: dict[str, Any], entities: dict[str, EntityTemplate]) -> list[Any]:
    out = []
    for name, f in fields.items():
        nullable = f.null_rate > 0
        if isinstance(f, Array):
            items = {"type": "record", "name": _record_name(name) + "Item",
                     "fields": _avro_fields(f.items, entities)}  # fmt: skip
            t: Any = {"type": "array", "items": items}
        elif isinstance(f, Ref | Lookup):
            target = resolved(f, fields, entities)
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
        self.schema = pack.schema_for(name)
        self.event_type = f"template.{name}"
        self.run_seed = pack.seeds.seed
        self.salts = Salts(pack.seeds, (name,))
        self.world = World(pack.p.entities, pack.seeds)

    def generate(self, seq_start: int, event_time: npt.NDArray[np.int64]) -> RecordBlock:
        n = len(event_time)
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        ctx = Context(seq, event_time, self.run_seed, self.event_type, self.world)
        t = self.template
        columns, nulls, _ = make_fields(t.fields, t._compiled, ctx, self.salts)
        return RecordBlock(self.event_type, seq, event_time.astype(np.int64), seq, columns, nulls)
