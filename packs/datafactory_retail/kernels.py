"""The retail pack's per-block loops in C (``_kernels.c``), where the extension is built.

Optional: each caller keeps its numpy version, which gives the same results;
``DATAFACTORY_FAST_PATH=0`` uses those, as it does for the encoders.
"""

from __future__ import annotations

from typing import Any

from datafactory.encoders import fast

try:
    from datafactory_retail import _kernels  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - installs without a compiler
    _kernels = None


def native() -> Any:
    """The compiled module, or None (not built, or switched off)."""
    return _kernels if _kernels is not None and fast.enabled() else None
