"""Derived fields: arithmetic over the other fields of the same event, vectorised.

    total: {expr: "round(sum(items.qty * items.price) * (1 + tax), 2)", decimals: 2}

The text is parsed once (Python's ``ast``, ``eval`` mode) and only these are allowed: numbers,
names of fields defined before it, ``items.qty`` (a field of an array's items), ``ship.cost``
(a number of an object before it), ``+ - * / // %``, unary ``-``, and the functions ``sum``
(over an array's items), ``min`` / ``max`` (two values), ``abs``, ``round(x, places)``.
Nothing else is evaluated: no attribute but an item field or an object's number, no
subscripts, no other calls. A name that is not a field, an array used where a
value is meant, or anything else is a config error naming the field.

Values with decimals are exact: a decimal is carried as integers in minor units with its
scale (``9.99`` is 999 at scale 2), ``+ - *`` and ``sum`` stay exact, ``round`` rounds half
away from zero; ``/`` and numbers with more than 12 places go to floating point.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_LENGTH = 500
MAX_NODES = 200
MAX_SCALE = 12

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Num:
    """A value per event (or per item): exact integers at a scale, or floats (scale None)."""

    values: Any  # int64 (exact, in units of 10^-scale) or float64
    scale: int | None
    per_item: bool = False  # one value per array item, not per event

    def real(self) -> npt.NDArray[np.float64]:
        if self.scale is None:
            return np.asarray(self.values, dtype=np.float64)
        return np.asarray(self.values, dtype=np.float64) / 10.0**self.scale

    def at(self, scale: int) -> Num:
        assert self.scale is not None and scale >= self.scale
        return Num(self.values * 10 ** (scale - self.scale), scale, self.per_item)


class ExprError(ValueError):
    pass


class Env:
    """What an expression can name: fields (per event) and arrays' item fields (per item),
    with the arrays' offsets (each event's items)."""

    def __init__(self) -> None:
        self.fields: dict[str, Num] = {}
        self.items: dict[str, tuple[npt.NDArray[np.int32], dict[str, Num]]] = {}


class Expression:
    def __init__(self, text: str, known: dict[str, set[str] | None]) -> None:
        """``known``: the names defined before it (an array's: its item fields)."""
        if len(text) > MAX_LENGTH:
            raise ExprError(f"an expression is at most {MAX_LENGTH} characters")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as e:
            raise ExprError(f"not an expression: {e.msg} at column {e.offset}") from None
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise ExprError(f"an expression has at most {MAX_NODES} parts")
        self.text = text
        self.tree = tree.body
        self.uses: set[str] = set()
        self._check(self.tree, known, in_sum=False)

    def _check(self, node: ast.AST, known: dict[str, set[str] | None], in_sum: bool) -> None:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExprError(f"only numbers are constants here, not {node.value!r}")
            return
        if isinstance(node, ast.Name):
            if node.id not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ExprError(f"no field {node.id!r} before this one (fields before: {names})")
            if known[node.id] is not None:
                raise ExprError(f"{node.id!r} is an array: use sum({node.id}.<field>)")
            self.uses.add(node.id)
            return
        if isinstance(node, ast.Attribute):
            path = _dotted(node)
            if path is not None and path in known and known[path] is None:  # an object's
                self.uses.add(path)
                return
            base = node.value
            if not isinstance(base, ast.Name) or base.id not in known or known[base.id] is None:
                raise ExprError(
                    f"no number {path or ast.unparse(node)!r} before this one: a dot names an "
                    "object's number (ship.cost) or an array's item field (sum(items.qty))"
                )
            item_fields = known[base.id] or set()
            if node.attr not in item_fields:
                raise ExprError(f"array {base.id!r} has no item field {node.attr!r}")
            if not in_sum:
                raise ExprError(f"{base.id}.{node.attr} is per item: use sum(...) over it")
            self.uses.add(base.id)
            return
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div | ast.FloorDiv
                              | ast.Mod):  # fmt: skip
                raise ExprError(f"operator {type(node.op).__name__} is not allowed")
            self._check(node.left, known, in_sum)
            self._check(node.right, known, in_sum)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            self._check(node.operand, known, in_sum)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            name, args = node.func.id, node.args
            arity = {"sum": 1, "abs": 1, "min": 2, "max": 2, "round": 2}
            if name not in arity:
                raise ExprError(f"function {name!r} is not allowed; allowed: {sorted(arity)}")
            if len(args) != arity[name]:
                raise ExprError(f"{name}() takes {arity[name]} argument(s)")
            if name == "sum" and in_sum:
                raise ExprError("sum() inside sum()")
            if name == "round" and not (
                isinstance(args[1], ast.Constant) and type(args[1].value) is int
                and 0 <= args[1].value <= 9
            ):  # fmt: skip
                raise ExprError("round(x, places): places is a whole number 0-9")
            for a in args if name != "round" else args[:1]:
                self._check(a, known, in_sum or name == "sum")
            return
        raise ExprError(f"{type(node).__name__} is not allowed in an expression")

    def evaluate(self, env: Env, n: int) -> Num:
        out = _eval(self.tree, env, n, None)
        if out.per_item:
            raise ExprError("the expression is per item: use sum(...)")
        return out


def _const(value: int | float, n: int) -> Num:
    if isinstance(value, int):
        return Num(np.full(n, value, dtype=np.int64), 0)
    d = Decimal(repr(value))
    exp = d.as_tuple().exponent
    scale = max(0, -exp) if isinstance(exp, int) else 0
    if scale > MAX_SCALE or abs(value) > 1e6:
        return Num(np.full(n, value, dtype=np.float64), None)
    return Num(np.full(n, int(d.scaleb(scale)), dtype=np.int64), scale)


def _eval(node: ast.AST, env: Env, n: int, items: str | None) -> Num:
    if isinstance(node, ast.Constant):
        size = n if items is None else len(next(iter(env.items[items][1].values())).values)
        assert isinstance(node.value, int | float)  # (checked when compiled)
        return _const(node.value, size)
    if isinstance(node, ast.Name):
        return env.fields[node.id]
    if isinstance(node, ast.Attribute):
        path = _dotted(node)
        if path in env.fields:  # an object's number
            return env.fields[path]
        assert isinstance(node.value, ast.Name)
        return env.items[node.value.id][1][node.attr]
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env, n, items)
        return Num(-v.values, v.scale, v.per_item) if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env, n, items), _eval(node.right, env, n, items)
        return _binop(node.op, a, b)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    name = node.func.id
    if name == "sum":
        array = _array_of(node.args[0], env)
        off, _ = env.items[array]
        v = _eval(node.args[0], env, n, array)
        totals = np.zeros(n, dtype=v.values.dtype)
        counts = np.diff(off)
        has = counts > 0
        if has.any():
            totals[has] = np.add.reduceat(v.values, off[:-1][has].astype(np.int64))
        return Num(totals, v.scale)
    if name == "abs":
        v = _eval(node.args[0], env, n, items)
        return Num(np.abs(v.values), v.scale, v.per_item)
    if name in ("min", "max"):
        a, b = _align(_eval(node.args[0], env, n, items), _eval(node.args[1], env, n, items))
        f = np.minimum if name == "min" else np.maximum
        return Num(f(a.values, b.values), a.scale, a.per_item or b.per_item)
    # round(x, places): half away from zero
    v = _eval(node.args[0], env, n, items)
    places = node.args[1].value  # type: ignore[attr-defined]
    if v.scale is None:
        return Num(half_away(v.values * 10.0**places) / 10.0**places, None)
    if v.scale <= places:
        return v
    return Num(rescale(v.values, v.scale, places), places, v.per_item)


def half_away(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Whole numbers, halves rounded away from zero."""
    out: npt.NDArray[np.float64] = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return out


def rescale(values: I64, scale: int, places: int) -> I64:
    """Exact integers in units of 10^-scale as units of 10^-places (halves away from zero
    where there are fewer places)."""
    out: I64
    if scale <= places:
        out = values * 10 ** (places - scale)
    else:
        q = 10 ** (scale - places)
        out = np.sign(values) * ((np.abs(values) + q // 2) // q)
    return out


def _array_of(node: ast.AST, env: Env) -> str:
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.value, ast.Name)
            and (sub.value.id in env.items)
        ):
            return sub.value.id
    raise ExprError("sum() is over an array's item fields (sum(items.price))")


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` of names and attributes (None: something else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)) is not None:
        return f"{base}.{node.attr}"
    return None


def _align(a: Num, b: Num) -> tuple[Num, Num]:
    if a.scale is None or b.scale is None:
        return Num(a.real(), None, a.per_item), Num(b.real(), None, b.per_item)
    s = max(a.scale, b.scale)
    return a.at(s), b.at(s)


def _binop(op: ast.operator, a: Num, b: Num) -> Num:
    per = a.per_item or b.per_item
    if isinstance(op, ast.Add | ast.Sub):
        x, y = _align(a, b)
        v = x.values + y.values if isinstance(op, ast.Add) else x.values - y.values
        return Num(v, x.scale, per)
    if isinstance(op, ast.Mult):
        if a.scale is not None and b.scale is not None and a.scale + b.scale <= MAX_SCALE:
            return Num(a.values * b.values, a.scale + b.scale, per)
        return Num(a.real() * b.real(), None, per)
    fa, fb = a.real(), b.real()
    with np.errstate(divide="ignore", invalid="ignore"):
        if isinstance(op, ast.Div):
            v = fa / fb
        elif isinstance(op, ast.FloorDiv):
            v = np.floor_divide(fa, fb)
        else:
            v = np.mod(fa, fb)
    return Num(np.where(np.isfinite(v), v, np.nan), None, per)
