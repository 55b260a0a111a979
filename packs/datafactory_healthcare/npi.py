"""National Provider Identifiers: 10 digits, the last a Luhn check digit computed over the
9-digit base prefixed with 80840 (the health-industry issuer prefix, per CMS)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def check_digit(base9: str) -> int:
    """The Luhn check digit of ``80840`` + the 9-digit base."""
    digits = [int(c) for c in "80840" + base9]
    total = 0
    for i, d in enumerate(reversed(digits)):  # double every second digit from the right
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def is_valid(npi: str) -> bool:
    return len(npi) == 10 and npi.isdigit() and check_digit(npi[:9]) == int(npi[9])


def make_npis(rng: np.random.Generator, n: int, first: int) -> tuple[str, ...]:
    """``n`` distinct valid NPIs starting with ``first`` (1: individuals, 2: organisations)."""
    bases: npt.NDArray[np.int64] = rng.choice(10**8, n, replace=False) + first * 10**8
    return tuple(f"{b}{check_digit(str(b))}" for b in bases.tolist())
