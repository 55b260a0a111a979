"""Human units in config: durations ("30s", "10m", "24h", "1d", "250ms") and sizes ("64MiB")."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DUR_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like "1.5h"; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 10m, 24h, 1d or a number of seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DUR.match(value)
        if m:
            return float(m.group(1)) * _DUR_UNITS[m.group(2)]
    raise ValueError(
        f"expected a duration like 30s, 10m, 24h, 1d or a number of seconds, got {value!r}"
    )


def parse_size(value: Any) -> int:
    """Bytes from a number or a string like "64MiB"."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512KiB, 64MiB, 1GB or a number of bytes")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ValueError(f"expected a size like 512KiB, 64MiB, 1GB or a number of bytes, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
