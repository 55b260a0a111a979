"""Entities: named populations (customers, devices, accounts) that streams draw from.

An entity has a ``count`` and fields, made like a stream's but with the member's index in the
place of the event's seq: a member's fields are a function of the seed, the entity and its
index, so nothing is stored (a billion members cost nothing) and every stream that refers to
a member sees the same values. A ``ref`` field picks a member per event (uniformly, or by
Zipf popularity) and gives one of its fields (its key); ``lookup`` fields give other fields
of the same member.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from datafactory.engine.seeding import SeedTree
from datafactory.pack import Shard
from datafactory_template.compose import (
    AnyField,
    Array,
    Declined,
    Lookup,
    Member,
    Object,
    Posting,
    Ref,
    Salts,
    compile_fields,
    make_fields,
)
from datafactory_template.expr import Expression
from datafactory_template.fields import (
    Context,
    Date,
    Draws,
    Made,
    Problem,
    Time,
    number_type,
    power_law_rank,
)
from datafactory_template.ledger import Balance, Ledger
from datafactory_template.machines import MAX_MEMBERS_WITH_STATE, StateMachine

MAX_MEMBERS = 1_000_000_000
_PRIMES = (1_000_003, 999_983, 2_147_483_647, 3_000_017)
I64 = npt.NDArray[np.int64]


class EntityTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    doc: str | None = Field(None, max_length=2000)
    count: int = Field(..., ge=1, le=MAX_MEMBERS, description="members of the population")
    fields: dict[str, AnyField] = Field(..., min_length=1, max_length=200)
    states: StateMachine | None = Field(None, description="each member's state machine")
    balance: Balance | None = Field(None, description="a running balance per member, never < 0")
    _compiled: dict[str, Expression] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _fields(self) -> EntityTemplate:
        for name, f in self.fields.items():
            if isinstance(f, Ref | Lookup | Array | Object | Time | Member) or (
                isinstance(f, Date) and f.between is None
            ):
                raise ValueError(
                    f"field {name!r}: an entity's fields are plain values or derived from "
                    "its other fields (no ref, lookup, member, array, object or time; a date "
                    "is between two dates)"
                )
        if self.balance is not None:
            opening = self.fields.get(self.balance.opening)
            if opening is None or getattr(opening, "decimals", None) != self.balance.decimals:
                raise ValueError(
                    f"balance.opening: {self.balance.opening!r} is a field of the entity with "
                    f"{self.balance.decimals} decimals"
                )
        if (self.states is not None or self.balance is not None) and (
            self.count > MAX_MEMBERS_WITH_STATE
        ):
            raise ValueError(
                f"an entity with states or a balance has at most {MAX_MEMBERS_WITH_STATE:,} "
                "members (what they are in is kept)"
            )
        self._compiled = compile_fields(self.fields, ("fields",))
        return self


def stateful(e: EntityTemplate) -> bool:
    """Whether its members keep something (states, a balance): a shard owns a part of them."""
    return e.states is not None or e.balance is not None


class World:
    """The run's entities, as the streams' fields see them."""

    def __init__(
        self, entities: dict[str, EntityTemplate], seeds: SeedTree, shard: Shard | None = None
    ) -> None:
        self.entities = entities
        self.seeds = seeds
        self.run_seed = seeds.seed
        shard = shard or Shard()
        # members a shard owns, [lo, hi): of an entity with states or a balance, the shard's
        # own part (what they are in is kept, by one shard); of the others, every member
        # (a member is a function of its index: each shard sees it alike)
        self.owned = {
            name: shard.range(e.count) if stateful(e) else (0, e.count)
            for name, e in entities.items()
        }
        self.ledgers = {
            name: Ledger(hi - lo, lo)
            for name, e in entities.items()
            if e.balance is not None
            for lo, hi in [self.owned[name]]
        }

    def post(self, entity: str, members: I64, amounts: Any) -> tuple[I64, Any]:
        """Amounts (minor units) to members' balances: (balances after, declined)."""
        e = self.entities[entity]
        assert e.balance is not None
        opening = self.values(entity, members, e.balance.opening).column
        return self.ledgers[entity].post(members, np.asarray(amounts, dtype=np.int64), opening)

    def pick(self, f: Ref, d: Draws, n: int) -> I64:
        """A member per event (of those this shard owns)."""
        lo, hi = self.owned[f.entity]
        count = hi - lo
        u = d.u(lane=2)
        if f.pick == "uniform":
            return lo + np.minimum((u * count).astype(np.int64), count - 1)
        rank = power_law_rank(u, count, f.s)
        # the popular members scattered over the population (a bijection of 0..count-1)
        prime = next(p for p in _PRIMES if count % p)
        return lo + ((rank - 1) * prime) % count

    def values(self, entity: str, members: I64, field: str) -> Made:
        """``field`` of each member."""
        e = self.entities[entity]
        ctx = Context(members, np.zeros(len(members), dtype=np.int64), self.run_seed,
                      f"entity.{entity}")  # fmt: skip
        wanted = {}
        for name, f in e.fields.items():  # the field and those before it (derived ones)
            wanted[name] = f
            if name == field:
                break
        columns, nulls, _ = make_fields(
            wanted, e._compiled, ctx, Salts(self.seeds, ("entity", entity))
        )
        return Made(columns[field], nulls.get(field))


def check_references(
    fields: dict[str, Any],
    entities: dict[str, EntityTemplate],
    where: tuple[str | int, ...],
    mover: str | None = None,
) -> list[Problem]:
    """What is wrong with a stream's ref, lookup and member fields: (location, message,
    value). ``mover``: the entity whose moves the stream's events are."""
    problems: list[Problem] = []
    refs: dict[str, str] = {}  # ref field -> its entity
    seen: set[str] = set()
    postings: set[str] = set()
    for name, f in fields.items():
        loc = (*where, name)
        if isinstance(f, Array):
            problems += check_references(f.items, entities, (*loc, "items"))
        if isinstance(f, Object):
            problems += check_references(f.fields, entities, (*loc, "fields"), mover)
        if isinstance(f, Ref):
            if f.entity not in entities:
                known = ", ".join(sorted(entities)) or "none"
                problems.append(
                    ((*loc, "entity"), f"no entity {f.entity!r} (entities: {known})", f.entity)
                )
                continue
            if f.field not in entities[f.entity].fields:
                problems.append(
                    ((*loc, "field"), f"entity {f.entity!r} has no field {f.field!r}", f.field)
                )
            refs[name] = f.entity
        if isinstance(f, Member):
            if mover is None:
                problems.append(
                    ((*loc, "gen"), "member fields are for transitions streams", "member")
                )
            elif f.field not in entities[mover].fields:
                problems.append(
                    ((*loc, "field"), f"entity {mover!r} has no field {f.field!r}", f.field)
                )
        if isinstance(f, Posting):
            if f.ref not in refs or entities[refs[f.ref]].balance is None:
                problems.append(
                    ((*loc, "ref"), f"{f.ref!r} is no ref field (before this one) to an entity "
                     "with a balance", f.ref)
                )  # fmt: skip
            else:
                balance = entities[refs[f.ref]].balance
                assert balance is not None
                amount = fields.get(f.amount)
                places = 0 if getattr(amount, "integer", False) else getattr(amount, "decimals", -1)
                if f.amount not in seen or places != balance.decimals:
                    problems.append(
                        ((*loc, "amount"), f"{f.amount!r} is a field before this one with the "
                         f"balance's {balance.decimals} decimals", f.amount)
                    )  # fmt: skip
            postings.add(name)
        if isinstance(f, Declined) and f.posting not in postings:
            problems.append(
                ((*loc, "posting"), f"no posting field {f.posting!r} before", f.posting)
            )
        seen.add(name)
        if isinstance(f, Lookup):
            if f.ref not in refs:
                problems.append(((*loc, "ref"), f"no ref field {f.ref!r} before this one", f.ref))
            elif f.field not in entities[refs[f.ref]].fields:
                problems.append(
                    ((*loc, "field"), f"entity {refs[f.ref]!r} has no field {f.field!r}", f.field)
                )
    return problems


def resolved(
    f: Any, fields: dict[str, Any], entities: dict[str, EntityTemplate], mover: str | None = None
) -> Any:
    """The entity field a ref, lookup or member field gives (its type is that field's)."""
    if isinstance(f, Member) and mover is not None:
        return entities[mover].fields[f.field]
    if isinstance(f, Posting):
        balance = entities[fields[f.ref].entity].balance
        return _BalanceType(balance.decimals if balance is not None else 2)
    if isinstance(f, Ref):
        return entities[f.entity].fields[f.field]
    if isinstance(f, Lookup):
        ref = fields[f.ref]
        return entities[ref.entity].fields[f.field]
    return f


class _BalanceType:
    """The type of a posting field: a decimal with the balance's places."""

    null_rate = 0.0

    def __init__(self, decimals: int) -> None:
        self.decimals = decimals

    def avro(self) -> Any:
        return number_type(False, self.decimals)
