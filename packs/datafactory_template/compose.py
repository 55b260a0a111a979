"""How a template's fields are put together: derived fields (``expr.py``), arrays of records,
nested objects, references to entities; and a block of every field of a stream (or entity),
in order."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from datafactory.engine.blocks import ListColumn, StructColumn
from datafactory_template.expr import Env, ExprError, Expression, Num, half_away, rescale
from datafactory_template.fields import (
    MAX_DECIMALS,
    Choice,
    Const,
    Context,
    Date,
    Draws,
    Exponential,
    FieldBase,
    LogNormal,
    Made,
    Normal,
    NumberBase,
    Pattern,
    Sequence,
    Time,
    Uniform,
    Uuid,
    Words,
    Zipf,
    invalid,
    number_type,
)

MAX_ITEMS = 100  # items of an array, per event
ITEM_STRIDE = 1000  # an item's draws: its event's seq x this + its place in the list
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


# -- derived values ----------------------------------------------------------------------------


class Derived(FieldBase):
    """Arithmetic over fields before it (``expr.py``): exact in decimals, rounded to its own
    ``decimals`` (or a whole number with ``integer``, else a double)."""

    gen: Literal["expr"]
    expr: str = Field(..., min_length=1, max_length=500)
    decimals: int | None = Field(None, ge=0, le=MAX_DECIMALS)
    integer: bool = False

    def avro(self) -> Any:
        return number_type(self.integer, self.decimals)

    def compute(self, compiled: Expression, env: Env, n: int) -> Made:
        v = compiled.evaluate(env, n)
        places = 0 if self.integer else self.decimals
        if places is None:
            x = v.real()
            bad = ~np.isfinite(x)
            return Made(np.where(bad, 0.0, x), bad if bad.any() else None)
        if v.scale is None:  # floating point: rounded half away from zero
            x = v.values * 10.0**places
            bad = ~np.isfinite(x) | (np.abs(x) >= 9e18)
            x = np.where(bad, 0.0, x)
            return Made(half_away(x).astype(np.int64), bad if bad.any() else None)
        return Made(rescale(v.values, v.scale, places))


class Length(BaseModel):
    """How many items: uniform in [min, max], or by ``weights`` (one per length, min..max)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    min: int = Field(0, ge=0, le=MAX_ITEMS)
    max: int = Field(..., ge=0, le=MAX_ITEMS)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _order(self) -> Length:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.weights is not None:
            if len(self.weights) != self.max - self.min + 1:
                raise ValueError(
                    f"{len(self.weights)} weights for lengths {self.min}..{self.max}: one each"
                )
            if any(w < 0 or not math.isfinite(w) for w in self.weights) or not sum(self.weights):
                raise ValueError("weights are finite, not negative, and not all 0")
        return self

    def draw(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        lo, hi = self.min, self.max
        if self.weights is None:
            return np.asarray(lo + np.minimum((u * (hi - lo + 1)).astype(np.int64), hi - lo))
        cdf = np.cumsum(np.asarray(self.weights, dtype=np.float64))
        k = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), hi - lo)
        out: npt.NDArray[np.int64] = (lo + k).astype(np.int64)
        return out


class Array(FieldBase):
    """A list of items per event, each a record of its own fields (which may be derived from
    the item's fields before them); its length uniform in [min, max]."""

    gen: Literal["array"]
    length: Length
    items: dict[str, AnyField] = Field(..., min_length=1, max_length=50)
    _compiled: dict[str, Expression] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _items(self) -> Array:
        _check_names(self.items, "item field")
        if (inner := _array_in(self.items)) is not None:
            raise ValueError(f"item field {inner!r}: arrays of arrays are not supported")
        self._compiled = compile_fields(self.items, ("items",))
        return self


class Object(FieldBase):
    """A nested record of its own fields (JSON object, Avro record, Parquet struct), made for
    the same event: its derived fields name the fields before them in it, its lookups the
    ref fields in it; the event's derived fields after it name its numbers as
    ``object.field``."""

    gen: Literal["object"]
    fields: dict[str, AnyField] = Field(..., min_length=1, max_length=50)
    _compiled: dict[str, Expression] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _fields(self) -> Object:
        _check_names(self.fields, "field")
        for name, f in self.fields.items():
            if isinstance(f, Posting | Declined):
                raise ValueError(f"field {name!r}: postings are fields of the event itself")
        self._compiled = compile_fields(self.fields, ("fields",))
        return self


def _check_names(fields: dict[str, Any], what: str) -> None:
    for name in fields:
        if not _NAME.match(name):
            raise ValueError(f"{what} name {name!r}: lower case letters, digits, _")


def _array_in(fields: dict[str, Any]) -> str | None:
    """An array among ``fields`` or inside their objects (its name), if any."""
    for name, f in fields.items():
        if isinstance(f, Array):
            return name
        if isinstance(f, Object) and (inner := _array_in(f.fields)) is not None:
            return f"{name}.{inner}"
    return None


class Ref(FieldBase):
    """A reference to one of an entity's members: the value of its ``field`` (the entity's
    key), the member picked uniformly or by Zipf popularity (rank k with weight 1 / k^s, the
    popular ones scattered over the population)."""

    gen: Literal["ref"]
    entity: str
    field: str
    pick: Literal["uniform", "zipf"] = "uniform"
    s: float = Field(1.0, gt=0, le=10, description="zipf: how steep the popularity")


class Lookup(FieldBase):
    """Another field of the member an earlier ``ref`` field of this event picked."""

    gen: Literal["lookup"]
    ref: str = Field(..., description="the ref field (of this event) whose member it is")
    field: str


class Posting(FieldBase):
    """The balance after this event's ``amount`` is posted to the member its ``ref`` field
    picked (``ledger.py``): declined, and the balance unchanged, where it would go below 0."""

    gen: Literal["posting"]
    ref: str
    amount: str

    def avro(self) -> Any:
        raise NotImplementedError  # its entity's balance decides (see the schema)


class Declined(FieldBase):
    """Whether a ``posting`` field of this event was declined."""

    gen: Literal["declined"]
    posting: str

    def avro(self) -> Any:
        return "boolean"


class Member(FieldBase):
    """In a stream of an entity's moves (``transitions``): a field of the member that moved."""

    gen: Literal["member"]
    field: str


AnyField = Annotated[
    Uniform | Normal | LogNormal | Exponential | Zipf | Const | Choice | Sequence | Uuid
    | Words | Pattern | Time | Date | Derived | Array | Object | Ref | Lookup | Member
    | Posting | Declined,
    Field(discriminator="gen"),
]  # fmt: skip
Array.model_rebuild()
Object.model_rebuild()
NUMERIC = (NumberBase, Zipf, Sequence, Derived)
COMPOSED = (Derived, Array, Object, Ref, Lookup, Member, Posting, Declined)  # made below


def _numeric(f: Any) -> bool:
    return isinstance(f, NUMERIC) or (
        isinstance(f, Const | Choice) and f.avro() in ("long", "double")
    )


def compile_fields(
    fields: dict[str, Any],
    where: tuple[str, ...],
    resolve: Callable[[Any], Any] | None = None,
) -> dict[str, Expression]:
    """Each derived field's expression, checked against the fields before it; a problem is
    a validation error at that field's ``expr``. ``resolve``: the entity field a ref, lookup
    or member field gives (its numbers may be used too); without it they may not."""
    known: dict[str, set[str] | None] = {}
    out: dict[str, Expression] = {}
    for name, f in fields.items():
        if resolve is not None and isinstance(f, Ref | Lookup | Member) and _numeric(resolve(f)):
            known[name] = None
        if isinstance(f, Derived):
            try:
                out[name] = Expression(f.expr, known)
            except ExprError as e:
                raise invalid("expr", [((*where, name, "expr"), str(e), f.expr)]) from None
        if isinstance(f, Array):
            known[name] = {k for k, x in f.items.items() if _numeric(x)}
        elif isinstance(f, Object):
            known.update(dict.fromkeys(_numbers_in(f, name)))
        elif _numeric(f):
            known[name] = None
    return out


def _numbers_in(f: Object, path: str) -> list[str]:
    """An object's numbers, as a derived field after it names them (``ship.cost``)."""
    out: list[str] = []
    for name, sub in f.fields.items():
        if isinstance(sub, Object):
            out += _numbers_in(sub, f"{path}.{name}")
        elif _numeric(sub):
            out.append(f"{path}.{name}")
    return out


def refers(fields: dict[str, Any]) -> bool:
    """Whether fields name entities (their expressions are compiled once those are known)."""
    return any(isinstance(f, Ref | Lookup | Member | Posting) for f in fields.values())


def _num_of(f: Any, column: Any) -> Num:
    if getattr(f, "integer", False) or isinstance(f, Zipf | Sequence) or column.dtype.kind == "i":
        if isinstance(f, NumberBase | Derived) and f.decimals is not None:
            return Num(column, f.decimals)
        return Num(column.astype(np.int64), 0)
    return Num(column.astype(np.float64), None)


def make_fields(
    fields: dict[str, Any], compiled: dict[str, Expression], ctx: Context, salts: Salts
) -> tuple[dict[str, Any], dict[str, npt.NDArray[np.bool_]], Env]:
    """A block of every field, in order (derived ones from those before them)."""
    columns: dict[str, Any] = {}
    nulls: dict[str, npt.NDArray[np.bool_]] = {}
    env = Env()
    n = len(ctx.seq)
    picked: dict[str, tuple[str, npt.NDArray[np.int64]]] = {}  # ref field -> its members
    declined: dict[str, npt.NDArray[np.bool_]] = {}  # posting field -> declined events
    for name, f in fields.items():
        d = Draws(ctx.seq, salts.of(name))
        if isinstance(f, Derived):
            made = f.compute(compiled[name], env, n)
        elif isinstance(f, Array):
            made, env.items[name] = _array(f, name, d, ctx, salts)
        elif isinstance(f, Object):
            cols, sub_nulls, sub_env = make_fields(f.fields, f._compiled, ctx, salts.under(name))
            made = Made(StructColumn(cols, sub_nulls))
            env.fields.update({f"{name}.{k}": v for k, v in sub_env.fields.items()})
        elif isinstance(f, Member):
            entity, members = ctx.mover
            made = ctx.world.values(entity, members, f.field)
            _member_number(env, name, ctx.world.entities[entity].fields[f.field], made)
        elif isinstance(f, Posting):
            entity, members = picked[f.ref]
            after, declined[name] = ctx.world.post(entity, members, columns[f.amount])
            made = Made(after)
        elif isinstance(f, Declined):
            made = Made(declined[f.posting])
        elif isinstance(f, Ref | Lookup):
            if isinstance(f, Ref):
                picked[name] = (f.entity, ctx.world.pick(f, d, n))
            entity, members = picked[_ref_of(f, name)]
            made = ctx.world.values(entity, members, f.field)
            _member_number(env, name, ctx.world.entities[entity].fields[f.field], made)
        else:
            made = f.make(d, ctx)
        if isinstance(f, COMPOSED):  # (a plain field's make applies its null rate)
            made = made.or_null(f.null_mask(d))
        columns[name] = made.column
        if made.nulls is not None:
            nulls[name] = made.nulls
        if _numeric(f):
            env.fields[name] = _num_of(f, made.column)
    return columns, nulls, env


def _member_number(env: Env, name: str, target: Any, made: Made) -> None:
    """A member's number, for the expressions after it."""
    if _numeric(target):
        env.fields[name] = _num_of(target, made.column)


def _ref_of(f: Ref | Lookup, name: str) -> str:
    return name if isinstance(f, Ref) else f.ref


def _array(
    f: Array, name: str, d: Draws, ctx: Context, salts: Salts
) -> tuple[Made, tuple[npt.NDArray[np.int32], dict[str, Num]]]:
    lengths = f.length.draw(d.u(lane=1))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    parent = np.repeat(np.arange(len(lengths)), lengths)
    k = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    # an item's draws: by its event's seq and its place in the list
    item_ctx = Context(ctx.seq[parent] * ITEM_STRIDE + k, ctx.event_time[parent], ctx.run_seed,
                       f"{ctx.stream}#{name}", ctx.world)  # fmt: skip
    cols, item_nulls, env = make_fields(f.items, f._compiled, item_ctx, salts.under(name))
    return Made(ListColumn(offsets, cols, item_nulls)), (offsets, env.fields)


class Salts:
    """Each field's own salt, by its path in the template (a function of the run's seed)."""

    def __init__(self, seeds: Any, path: tuple[str, ...]) -> None:
        self.seeds, self.path = seeds, path
        self._cache: dict[str, int] = {}

    def of(self, name: str) -> int:
        if name not in self._cache:
            state = self.seeds.child("template", *self.path, name).generate_state(2, np.uint64)
            self._cache[name] = int(state[0])
        return self._cache[name]

    def under(self, name: str) -> Salts:
        return Salts(self.seeds, (*self.path, name))
