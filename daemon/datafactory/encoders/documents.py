"""Documents rendered in bulk from columns (a FHIR resource, an HL7 message per row).

A pack describes its documents once as a *program* built with :class:`Program`: literal text,
and values taken from numpy columns (integers, zero-padded integers, decimals in minor units,
times in the styles documents use, entries of pre-rendered :class:`Pool` s), with repeated
parts (an array's items, a message's segments, an optional element) over ragged child rows.
:func:`render` runs it over every row: in the compiled renderer (``_fastrender.c``, the ops of
``datafactory.encoders.fast`` plus its document ops), or, without it, the same program in
Python (:func:`render_python`): the same bytes either way (tested).

Text goes in as it should come out: a JSON pool holds its strings as JSON (quotes, escapes), an
HL7 pool its values escaped; literals are written as given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.encoders import fast
from datafactory.encoders.fast import DATE as DATE  # the time styles (of ``Program.time``)
from datafactory.encoders.fast import DEC, INT, JOIN, LIT, PADINT, POOL, TIME
from datafactory.encoders.fast import HL7_DATE as HL7_DATE
from datafactory.encoders.fast import HL7_SECONDS as HL7_SECONDS
from datafactory.encoders.fast import ISO_SECONDS as ISO_SECONDS
from datafactory.encoders.fast import LIST as JSON_LIST

_STRFTIME = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d", "%Y%m%d%H%M%S", "%Y%m%d")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Pool:
    """Strings rendered once (as JSON strings, or as given), indexed by code."""

    def __init__(self, texts: Iterable[str], as_json: bool = True) -> None:
        self.as_json = as_json
        strings = tuple(texts)
        if as_json:  # as the JSON encoders write strings
            self.offsets, self.data = fast.render_pool(strings, "json")
            return
        parts = [t.encode() for t in strings]
        self.offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=self.offsets[1:])
        self.data = b"".join(parts)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def extended(self, texts: Sequence[str]) -> Pool:
        """This pool and ``texts`` after it (codes ``len(self)`` on), rendered alike."""
        more = Pool(texts, self.as_json)
        out = Pool((), self.as_json)
        out.offsets = np.concatenate([self.offsets, more.offsets[1:] + self.offsets[-1]])
        out.data = self.data + more.data
        return out

    def entry(self, code: int) -> bytes:
        return self.data[int(self.offsets[code]) : int(self.offsets[code + 1])]


class Program:
    """Ops over the rows of one block (or over the child rows of a repeated part)."""

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []
        self._text: list[str] = []

    def _flush(self) -> None:
        if self._text:
            self.ops.append((LIT, "".join(self._text).encode()))
            self._text = []

    def _op(self, *op: Any) -> Program:
        self._flush()
        self.ops.append(op)
        return self

    def text(self, s: str) -> Program:
        self._text.append(s)
        return self

    def integer(self, values: npt.ArrayLike, width: int = 0) -> Program:
        a = np.ascontiguousarray(values, dtype=np.int64)
        return self._op(PADINT, a, width) if width else self._op(INT, a)

    def decimal(self, minor: npt.ArrayLike, scale: int) -> Program:
        return self._op(DEC, np.ascontiguousarray(minor, dtype=np.int64), scale)

    def time(self, us: npt.ArrayLike, style: int) -> Program:
        return self._op(TIME, np.ascontiguousarray(us, dtype=np.int64), style)

    def pool(self, codes: npt.ArrayLike, pool: Pool) -> Program:
        c = np.ascontiguousarray(codes, dtype=np.int64)
        return self._op(POOL, c, pool.offsets, pool.data)

    def repeat(
        self,
        offsets: npt.ArrayLike,
        part: Callable[[Program], Any],
        sep: str = ",",
        json_array: bool = False,
    ) -> Program:
        """Child rows ``offsets[i] .. offsets[i + 1]`` of row i, each rendered by ``part``
        (over the child rows' columns), joined by ``sep`` (a JSON array: ``[`` ... ``]``)."""
        child = Program()
        part(child)
        child._flush()
        off = np.ascontiguousarray(offsets, dtype=np.int32)
        if json_array:
            return self._op(JSON_LIST, off, child.ops)
        return self._op(JOIN, off, child.ops, sep.encode())

    def optional(self, present: npt.NDArray[np.bool_], part: Callable[[Program], Any]) -> Program:
        """``part`` where ``present`` (over the rows where it is, in order)."""
        offsets = np.zeros(len(present) + 1, dtype=np.int32)
        np.cumsum(present, out=offsets[1:])
        return self.repeat(offsets, part, sep="")

    def done(self) -> list[tuple[Any, ...]]:
        self._flush()
        return self.ops


def render(rows: int, program: Program, native: bool | None = None) -> tuple[bytes, list[int]]:
    """The rows' documents: (all bytes, offsets with ``rows + 1`` entries)."""
    ops = program.done()
    if native is None:
        native = fast.available()
    if native and rows:
        payload, offsets = fast.NATIVE.render(fast.FMT_CODE["json"], rows, ops)
        return bytes(payload), np.frombuffer(offsets, dtype=np.int64).tolist()
    return render_python(rows, ops)


def texts(rows: int, program: Program, native: bool | None = None) -> tuple[str, ...]:
    """The rows' documents as strings."""
    data, off = render(rows, program, native)
    return tuple(data[off[i] : off[i + 1]].decode() for i in range(rows))


# -- the same program in Python (no compiler) -----------------------------------------------


def render_python(rows: int, ops: Sequence[tuple[Any, ...]]) -> tuple[bytes, list[int]]:
    out = bytearray()
    offsets = [0]
    for r in range(rows):
        _run(out, ops, r)
        offsets.append(len(out))
    return bytes(out), offsets


def _run(out: bytearray, ops: Sequence[tuple[Any, ...]], row: int) -> None:
    for op in ops:
        code = op[0]
        if code == LIT:
            out += op[1]
        elif code == INT:
            out += str(int(op[1][row])).encode()
        elif code == PADINT:
            v = int(op[1][row])
            out += (("-" if v < 0 else "") + str(abs(v)).rjust(op[2], "0")).encode()
        elif code == DEC:
            v, scale = int(op[1][row]), op[2]
            whole, frac = divmod(abs(v), 10**scale)
            sign = "-" if v < 0 else ""
            out += (f"{sign}{whole}.{frac:0{scale}d}" if scale else f"{sign}{whole}").encode()
        elif code == TIME:
            t = _EPOCH + dt.timedelta(microseconds=int(op[1][row]))
            out += t.strftime(_STRFTIME[op[2]]).encode()
        elif code == POOL:
            c, off, data = int(op[1][row]), op[2], op[3]
            out += data[int(off[c]) : int(off[c + 1])]
        elif code in (JOIN, JSON_LIST):
            lo, hi = int(op[1][row]), int(op[1][row + 1])
            sep = b"," if code == JSON_LIST else op[3]
            if code == JSON_LIST:
                out += b"["
            for j in range(lo, hi):
                if j > lo:
                    out += sep
                _run(out, op[2], j)
            if code == JSON_LIST:
                out += b"]"
        else:
            raise ValueError(f"documents: op {code} is not a document op")
