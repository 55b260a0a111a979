"""Work spread over local worker processes (batch mode's shards, expect's): spawned, so
a worker inherits no threads or event loops from its parent; results in submission order."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def in_processes(fn: Callable[..., T], calls: list[tuple[Any, ...]], workers: int) -> Iterator[T]:
    """``fn(*args)`` for each of ``calls`` in ``workers`` processes, yielded in order as
    they finish (the caller may fold each in while later ones run). When every call is
    done the idle workers are not waited for: they exit while the caller goes on (freeing a
    worker's memory took a quarter of a second of the caller's time; the interpreter joins
    them at exit). When a call failed or the caller stopped early, the calls still running
    are waited for, so none of them writes anything after this returns."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        yield from pool.map(fn, *zip(*calls, strict=True))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=False)
