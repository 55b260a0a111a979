"""Word lists shipped as package data (``data/<list>.txt``, one entry per line): built once from
Faker's en_US providers and reviewed, never called per record."""

from __future__ import annotations

import functools
from pathlib import Path

DATA = Path(__file__).parent / "data"
LISTS = tuple(sorted(p.stem for p in DATA.glob("*.txt")))


@functools.cache
def words(name: str) -> tuple[str, ...]:
    if name not in LISTS:
        raise KeyError(f"no word list {name!r}; lists: {', '.join(LISTS)}")
    return tuple(x for x in (DATA / f"{name}.txt").read_text().splitlines() if x)
