"""Document programs: the compiled renderer and the same program in Python give the same
bytes, op by op and in combination."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from datafactory.encoders import fast
from datafactory.encoders.documents import (
    DATE,
    HL7_DATE,
    HL7_SECONDS,
    ISO_SECONDS,
    Pool,
    Program,
    render,
)

needs_native = pytest.mark.skipif(not fast.available(), reason="the compiled renderer is not built")


def program(n: int, rng: np.random.Generator) -> Program:
    us = rng.integers(-3_000_000_000_000_000, 4_000_000_000_000_000, n)  # 1874 .. 2096
    names = Pool(["Zoë", 'say "hi"', "back\\slash", "plain"])
    raw = Pool(["A|B", "x"], as_json=False).extended(["added"])
    counts = rng.integers(0, 4, n)
    off = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=off[1:])
    child = rng.integers(-50, 50_000, int(off[-1]))
    present = rng.random(n) < 0.5
    p = Program().text('{"t":"').time(us, ISO_SECONDS).text('Z","d":"').time(us, DATE)
    p.text('","h":"').time(us, HL7_SECONDS).text("|").time(us, HL7_DATE)
    p.text('","n":').integer(rng.integers(-(10**12), 10**12, n))
    p.text(',"pad":"').integer(rng.integers(0, 10**9, n), 7).text('","m":')
    p.decimal(rng.integers(-(10**7), 10**7, n), 2).text(',"name":')
    p.pool(rng.integers(0, len(names), n), names).text(',"raw":"')
    p.pool(rng.integers(0, len(raw), n), raw).text('","list":')
    p.repeat(off, lambda q: q.decimal(child, 3), json_array=True).text(',"joined":"')
    p.repeat(off, lambda q: q.text("<").integer(child, 4).text(">"), sep="~").text('"')
    p.optional(present, lambda q: q.text(',"opt":').integer(np.arange(int(present.sum()))))
    return p.text("}")


@needs_native
def test_the_compiled_renderer_and_python_give_the_same_bytes() -> None:
    n = 2_000
    fast_bytes = render(n, program(n, np.random.default_rng(1)), native=True)
    slow_bytes = render(n, program(n, np.random.default_rng(1)), native=False)
    assert fast_bytes == slow_bytes


def test_what_each_op_writes() -> None:
    t = int(dt.datetime(1931, 7, 4, 5, 6, 7, 890, tzinfo=dt.UTC).timestamp() * 1e6)
    p = Program().time([t], ISO_SECONDS).text(" ").time([t], DATE).text(" ")
    p.time([t], HL7_SECONDS).text(" ").time([t], HL7_DATE).text(" ").integer([42], 5)
    p.text(" ").decimal([-5], 2).text(" ").decimal([1200], 2).text(" ")
    p.repeat([0, 0], lambda q: q.text("never"), json_array=True).text(" ")
    p.optional(np.array([False]), lambda q: q.text("never"))
    for native in (False, True) if fast.available() else (False,):
        data, offsets = render(1, p, native=native)
        assert offsets == [0, len(data)]
        assert (
            data == b"1931-07-04T05:06:07 1931-07-04 19310704050607 19310704 00042 -0.05 12.00 [] "
        )
