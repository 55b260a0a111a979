"""A template's field generators: what a field is (its Avro type) and how a block of it is
made, all at once, in numpy.

Every value is a function of the run's seed, the stream, the field and the event's seq (a
counter-based hash: splitmix64, as the chaos steps draw), never of a generator's state: the
same seq is the same event however time is sliced, after a restart too, in stream and batch
mode alike.
"""

from __future__ import annotations

import collections.abc
import datetime as dt
import functools
import math
import re
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from datafactory.engine.blocks import DictColumn
from datafactory.engine.identity import event_ids, splitmix64
from datafactory_template.expr import half_away
from datafactory_template.words import LISTS, words

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_TO_UNIT = 1.0 / 2**53
MAX_DECIMALS = 9
MAX_ZIPF_N = 10_000_000
ZIPF_TABLE = 100_000  # ranks up to this from a table; beyond, the continuous power law
LIMIT = 1e15
MAX_CHOICES = 100_000


Problem: TypeAlias = tuple[tuple[str | int, ...], str, Any]  # (where, what is wrong, the value)


def invalid(kind: str, problems: collections.abc.Sequence[Problem]) -> ValidationError:
    """A validation error with each problem at its own place in the template (so the config
    error names that field's line)."""
    return ValidationError.from_exception_data(
        "template",
        [InitErrorDetails(type=PydanticCustomError(kind, msg), loc=loc, input=value)
         for loc, msg, value in problems],
    )  # fmt: skip


class Draws:
    """Independent uniform draws in [0, 1) per event, per field, per lane."""

    def __init__(self, seq: I64, salt: int) -> None:
        self.seq = seq.astype(np.uint64)
        self.salt = np.uint64(salt)

    def u(self, lane: int = 0) -> F64:
        with np.errstate(over="ignore"):
            lane_key = np.uint64(((lane + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
            h = splitmix64(self.seq ^ self.salt ^ lane_key)
        return (h >> np.uint64(11)).astype(np.float64) * _TO_UNIT


class Made:
    """What a block of one field is: a column, and where it is null (None: nowhere)."""

    def __init__(self, column: Any, nulls: npt.NDArray[np.bool_] | None = None) -> None:
        self.column = column
        self.nulls = nulls

    def or_null(self, extra: npt.NDArray[np.bool_] | None) -> Made:
        """Null where it was, and where ``extra`` says too."""
        if extra is None:
            return self
        return Made(self.column, extra if self.nulls is None else self.nulls | extra)


class FieldBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    null_rate: float = Field(0.0, ge=0, le=1, description="share of events where it is null")
    doc: str | None = Field(None, max_length=1000, description="what the field means")

    @model_validator(mode="after")
    def _magnitudes(self) -> FieldBase:
        """Every number a template gives is within ±1e15 (its values stay exact in int64 and
        float64, and never overflow)."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            for x in value if isinstance(value, list | tuple) else (value,):
                if isinstance(x, int | float) and not isinstance(x, bool) and abs(x) > LIMIT:
                    raise ValueError(f"{name}: {x!r} is beyond ±{LIMIT:.0e}")
        return self

    def avro(self) -> Any:
        raise NotImplementedError

    def values(self, d: Draws, ctx: Context) -> Any:
        raise NotImplementedError

    def make(self, d: Draws, ctx: Context) -> Made:
        return Made(self.values(d, ctx)).or_null(self.null_mask(d))

    def null_mask(self, d: Draws) -> npt.NDArray[np.bool_] | None:
        """Where its null rate makes it null (None: nowhere)."""
        return d.u(lane=31) < self.null_rate if self.null_rate > 0 else None


class Context:
    """What every field of a block sees: the events' seqs and times, the stream's seed, and
    the entities its references draw from (``world``: see ``entities.py``)."""

    def __init__(
        self, seq: I64, event_time: I64, run_seed: int, stream: str, world: Any = None
    ) -> None:
        self.seq, self.event_time, self.run_seed, self.stream = seq, event_time, run_seed, stream
        self.world = world
        self.mover: Any = None  # (entity, members): the members whose moves these events are


# -- numbers -----------------------------------------------------------------------------------


def number_type(integer: bool, decimals: int | None) -> Any:
    """A number's Avro type: long, a decimal (18 digits, its places), or double."""
    if integer:
        return "long"
    if decimals is not None:
        return {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": decimals}
    return "double"


class NumberBase(FieldBase):
    min: float | None = Field(None, description="values below are raised to it")
    max: float | None = Field(None, description="values above are lowered to it")
    decimals: int | None = Field(
        None, ge=0, le=MAX_DECIMALS, description="a decimal with this many places"
    )
    integer: bool = Field(False, description="a whole number (long)")

    @model_validator(mode="after")
    def _bounds(self) -> NumberBase:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        if self.integer and self.decimals is not None:
            raise ValueError("a field is an integer or has decimals, not both")
        return self

    def avro(self) -> Any:
        return number_type(self.integer, self.decimals)

    def raw(self, d: Draws) -> F64:
        raise NotImplementedError

    def values(self, d: Draws, ctx: Context) -> Any:
        x = self.raw(d)
        if self.min is not None or self.max is not None:
            x = np.clip(x, self.min, self.max)
        if self.integer:
            return np.floor(x + 0.5).astype(np.int64)
        if self.decimals is not None:  # minor units, rounded half away from zero
            return half_away(x * 10**self.decimals).astype(np.int64)
        return x


class Uniform(NumberBase):
    gen: Literal["uniform"]
    min: float
    max: float

    def raw(self, d: Draws) -> F64:
        assert self.min is not None and self.max is not None
        return self.min + d.u() * (self.max - self.min)


def _normal(d: Draws) -> F64:
    """Standard normal draws (Box-Muller over two lanes)."""
    u1 = 1.0 - d.u(0)  # (0, 1]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * math.pi * d.u(1))


class Normal(NumberBase):
    gen: Literal["normal"]
    mean: float
    sd: float = Field(..., gt=0)

    def raw(self, d: Draws) -> F64:
        return self.mean + self.sd * _normal(d)


class LogNormal(NumberBase):
    gen: Literal["lognormal"]
    mu: float = Field(..., description="mean of the value's natural logarithm")
    sigma: float = Field(..., gt=0, le=10, description="its standard deviation")

    def raw(self, d: Draws) -> F64:
        return np.exp(self.mu + self.sigma * _normal(d))


class Exponential(NumberBase):
    gen: Literal["exponential"]
    mean: float = Field(..., gt=0)

    def raw(self, d: Draws) -> F64:
        return -self.mean * np.log(1.0 - d.u())


class Zipf(FieldBase):
    """A rank 1..n, rank k with weight 1 / k^s (a few very popular, a long tail); beyond
    100,000 ranks, the continuous power law on [1, n + 1) (no table), as entities' picks."""

    gen: Literal["zipf"]
    n: int = Field(..., ge=1, le=MAX_ZIPF_N)
    s: float = Field(1.0, gt=0, le=10)

    def avro(self) -> Any:
        return "long"

    def values(self, d: Draws, ctx: Context) -> Any:
        u = d.u()
        if self.n <= ZIPF_TABLE:
            cdf = _zipf_cdf(self.n, self.s)
            return np.searchsorted(cdf, u * cdf[-1], side="right").astype(np.int64) + 1
        return power_law_rank(u, self.n, self.s)


def power_law_rank(u: F64, n: int, s: float) -> I64:
    """A rank 1..n per uniform draw: the continuous power law (density ~ 1 / x^s) on
    [1, n + 1), by its inverse CDF; no table, whatever n."""
    top = float(n + 1)
    if abs(s - 1.0) < 1e-9:
        rank = np.floor(top**u)
    else:
        a = 1.0 - s
        rank = np.floor((1.0 + u * (top**a - 1.0)) ** (1.0 / a))
    out: I64 = np.clip(rank, 1, n).astype(np.int64)
    return out


@functools.lru_cache(maxsize=32)
def _zipf_cdf(n: int, s: float) -> F64:
    return np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -s)


# -- categories, identifiers, text -------------------------------------------------------------

Scalar: TypeAlias = str | bool | int | float


def _kind(values: list[Scalar]) -> str:
    kinds = {
        "boolean" if isinstance(v, bool) else "long" if isinstance(v, int) else
        "double" if isinstance(v, float) else "string" for v in values
    }  # fmt: skip
    if kinds == {"long", "double"}:
        return "double"
    if len(kinds) != 1:
        raise ValueError(f"values of one field are of one type; these mix {sorted(kinds)}")
    return kinds.pop()


class Const(FieldBase):
    gen: Literal["const"]
    value: Scalar

    def avro(self) -> Any:
        return _kind([self.value])

    def values(self, d: Draws, ctx: Context) -> Any:
        n = len(ctx.seq)
        if isinstance(self.value, str):
            return DictColumn(np.zeros(n, dtype=np.int32), (self.value,))
        return np.full(n, self.value, dtype=_NP[_kind([self.value])])


_NP = {"long": np.int64, "double": np.float64, "boolean": np.bool_}


class Choice(FieldBase):
    gen: Literal["choice"]
    values_: list[Scalar] = Field(
        ..., alias="values", min_length=1, max_length=MAX_CHOICES, description="what it can be"
    )
    weights: list[float] | None = Field(None, description="relative weights (default: equal)")

    @model_validator(mode="after")
    def _check(self) -> Choice:
        _kind(self.values_)
        if self.weights is not None:
            if len(self.weights) != len(self.values_):
                raise ValueError(
                    f"{len(self.weights)} weights for {len(self.values_)} values: one each"
                )
            if any(w < 0 or not math.isfinite(w) for w in self.weights) or not sum(self.weights):
                raise ValueError("weights are finite, not negative, and not all 0")
        return self

    def avro(self) -> Any:
        return _kind(self.values_)

    def values(self, d: Draws, ctx: Context) -> Any:
        w = np.asarray(self.weights if self.weights is not None else [1.0] * len(self.values_))
        cdf = np.cumsum(w)
        codes = np.searchsorted(cdf, d.u() * cdf[-1], side="right")
        codes = np.minimum(codes, len(cdf) - 1)
        kind = _kind(self.values_)
        if kind == "string":
            return DictColumn(codes.astype(np.int32), tuple(str(v) for v in self.values_))
        return np.asarray(self.values_, dtype=_NP[kind])[codes]


class Sequence(FieldBase):
    """start + step x the event's place in the stream (its seq)."""

    gen: Literal["sequence"]
    start: int = 1
    step: int = 1

    def avro(self) -> Any:
        return "long"

    def values(self, d: Draws, ctx: Context) -> Any:
        return self.start + self.step * ctx.seq.astype(np.int64)


class Uuid(FieldBase):
    gen: Literal["uuid"]

    def avro(self) -> Any:
        return {"type": "string", "logicalType": "uuid"}

    def values(self, d: Draws, ctx: Context) -> Any:
        # the run's event-id function, under a name of this field's own (its salt)
        return event_ids(ctx.run_seed, f"{ctx.stream}#{int(d.salt)}", ctx.seq)


class Words(FieldBase):
    gen: Literal["words"]
    list: str = Field(..., description=f"a shipped list: {', '.join(LISTS)}")

    @model_validator(mode="after")
    def _known(self) -> Words:
        if self.list not in LISTS:
            raise ValueError(f"no word list {self.list!r}; lists: {', '.join(LISTS)}")
        return self

    def avro(self) -> Any:
        return "string"

    def values(self, d: Draws, ctx: Context) -> Any:
        pool = words(self.list)
        codes = np.minimum((d.u() * len(pool)).astype(np.int32), len(pool) - 1)
        return DictColumn(codes, pool)


_PATTERN = re.compile(r"\{seq(?::(0?\d{1,2})d)?\}|\[([^\]]+)\](?:\{(\d{1,3})\})?|[#?]")
_CLASSES = {"#": "0123456789", "?": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _char_class(body: str) -> str:
    """``A-Z0-9_`` -> the characters."""
    out, i = [], 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = ord(body[i]), ord(body[i + 2])
            if hi < lo or hi - lo > 200:
                raise ValueError(f"bad character range {body[i : i + 3]!r}")
            out += [chr(c) for c in range(lo, hi + 1)]
            i += 3
        else:
            out.append(body[i])
            i += 1
    if not out or any(not c.isprintable() or ord(c) > 127 for c in out):
        raise ValueError(f"a character class is printable ASCII: [{body}]")
    return "".join(dict.fromkeys(out))


class Pattern(FieldBase):
    """Text from a pattern: ``{seq}`` or ``{seq:08d}`` (the event's seq), ``#`` a digit, ``?``
    a capital letter, ``[A-Z0-9]`` one of a class, ``[a-z]{3}`` several; the rest as is."""

    gen: Literal["pattern"]
    pattern: str = Field(..., min_length=1, max_length=200)

    @model_validator(mode="after")
    def _parse(self) -> Pattern:
        self.parts()
        return self

    def parts(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        pos = 0
        for m in _PATTERN.finditer(self.pattern):
            if m.start() > pos:
                out.append(("text", self.pattern[pos : m.start()]))
            tok = m.group(0)
            if tok.startswith("{seq"):
                out.append(("seq", int(m.group(1) or 0)))
            elif tok in _CLASSES:
                out.append(("chars", (_CLASSES[tok], 1)))
            else:
                out.append(("chars", (_char_class(m.group(2)), int(m.group(3) or 1))))
            pos = m.end()
        if pos < len(self.pattern):
            out.append(("text", self.pattern[pos:]))
        if any(k == "text" and ("{" in v or "}" in v) for k, v in out):
            raise ValueError(f"unknown placeholder in {self.pattern!r}: use {{seq}} or {{seq:08d}}")
        return out

    def avro(self) -> Any:
        return "string"

    def values(self, d: Draws, ctx: Context) -> Any:
        n = len(ctx.seq)
        pieces: list[npt.NDArray[np.bytes_]] = []
        lane = 0
        for kind, arg in self.parts():
            if kind == "text":
                pieces.append(np.full(n, arg.encode(), dtype=f"S{max(len(arg), 1)}"))
            elif kind == "seq":
                width = arg
                text = np.char.zfill(ctx.seq.astype(np.int64).astype("S20"), width)
                pieces.append(text)
            else:
                chars, count = arg
                table = np.frombuffer(chars.encode(), dtype="S1")
                cols = []
                for _ in range(count):
                    idx = np.minimum((d.u(lane) * len(chars)).astype(np.int64), len(chars) - 1)
                    lane += 1
                    cols.append(table[idx])
                pieces.append(np.frombuffer(np.stack(cols, axis=1).tobytes(), dtype=f"S{count}"))
        out = pieces[0] if pieces else np.full(n, b"", dtype="S1")
        for p in pieces[1:]:
            out = np.char.add(out, p)
        return out


# -- times -------------------------------------------------------------------------------------


class Time(FieldBase):
    """A time around the event's own: ``offset`` seconds from it, uniform between the two."""

    gen: Literal["time"]
    offset: tuple[float, float] = Field((0.0, 0.0), description="[from, to] seconds")

    @model_validator(mode="after")
    def _order(self) -> Time:
        lo, hi = self.offset
        if lo > hi or max(abs(lo), abs(hi)) > 100 * 365 * 86400:
            raise ValueError("offset is [from, to] seconds, from <= to, within 100 years")
        return self

    def avro(self) -> Any:
        return {"type": "long", "logicalType": "timestamp-micros"}

    def values(self, d: Draws, ctx: Context) -> Any:
        lo, hi = self.offset
        return ctx.event_time + ((lo + d.u() * (hi - lo)) * 1e6).astype(np.int64)


DAY_US = 86_400_000_000
_YEAR_1, _YEAR_9999 = dt.date(1, 1, 1), dt.date(9999, 12, 31)
_EPOCH = dt.date(1970, 1, 1)


class Date(FieldBase):
    """A calendar date (Avro ``date``; JSON ``"2026-03-02"``): ``offset`` whole days from the
    event's own (UTC) date, uniform between the two (both included), or uniform ``between``
    two dates."""

    gen: Literal["date"]
    offset: tuple[int, int] | None = Field(None, description="[from, to] days from the event's")
    between: tuple[dt.date, dt.date] | None = Field(None, description="[first, last] dates")

    @model_validator(mode="after")
    def _range(self) -> Date:
        if self.offset is not None and self.between is not None:
            raise ValueError("offset (days from the event's date) or between (two dates): one")
        lo, hi = self.offset or (0, 0)
        if lo > hi or max(abs(lo), abs(hi)) > 200 * 366:
            raise ValueError("offset is [from, to] days, from <= to, within 200 years")
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError("between is [first, last]: first is not after last")
        return self

    def avro(self) -> Any:
        return {"type": "int", "logicalType": "date"}

    def values(self, d: Draws, ctx: Context) -> Any:
        if self.between is not None:
            first, last = ((x - _EPOCH).days for x in self.between)
            base = np.full(len(ctx.seq), first, dtype=np.int64)
            lo, hi = 0, last - first
        else:
            base = np.floor_divide(ctx.event_time, DAY_US)
            lo, hi = self.offset or (0, 0)
        days = base + lo + np.minimum((d.u() * (hi - lo + 1)).astype(np.int64), hi - lo)
        # the years every format writes (a date 200 years from 9990 stays within them)
        floor, ceiling = (_YEAR_1 - _EPOCH).days, (_YEAR_9999 - _EPOCH).days
        return np.clip(days, floor, ceiling).astype(np.int32)
