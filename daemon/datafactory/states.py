"""Saved simulation states: signed before they are ever unpickled, read only where allowed.

A state (a batch shard's checkpoint, the history a stream run continues from, a stream run's
own snapshot) holds the packs' Python objects, so it is a pickle, and a pickle runs code when
it is loaded. So every state is *sealed*: ``MAGIC + HMAC-SHA256(key, body) + body``, and
:func:`unseal` checks the MAC before it unpickles anything: a file that this installation did
not write is refused unread, whatever is in it.

The key is ``$DATAFACTORY_STATE_KEY`` (any string, at least 16 characters; set the same one on
every machine that shares states: batch shards, the daemons that continue them), else a random
key made once in ``<state folder>/state.key`` (mode 0600).

Where a daemon may read states from is the operator's choice (``--states`` /
``$DATAFACTORY_STATE_PATHS``): folders and ``s3://bucket/prefix/`` prefixes. A path is resolved
(symbolic links, ``..``) before it is checked, and nothing outside is opened.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

from datafactory.lifecycle.registry import state_dir

MAGIC = b"DFSTATE1"
_MAC = 32
KEY_ENV = "DATAFACTORY_STATE_KEY"
PATHS_ENV = "DATAFACTORY_STATE_PATHS"


class StateError(Exception):
    """A saved state that cannot be used: not ours, not allowed, or for another run."""


def _key() -> bytes:
    env = os.environ.get(KEY_ENV)
    if env is not None:
        if len(env) < 16:
            raise StateError(f"${KEY_ENV} is too short: use at least 16 characters")
        return hashlib.sha256(env.encode()).digest()
    path = state_dir() / "state.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:  # created once, readable by its owner only; a concurrent first writer wins
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def seal(obj: Any) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + hmac.digest(_key(), body, "sha256") + body


def unseal(data: bytes, where: str = "the state") -> Any:
    """The object in a sealed state; StateError (nothing unpickled) unless the MAC is ours."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _MAC:
        raise StateError(f"{where} is not a datafactory state")
    mac, body = data[len(MAGIC) : len(MAGIC) + _MAC], data[len(MAGIC) + _MAC :]
    if not hmac.compare_digest(mac, hmac.digest(_key(), body, "sha256")):
        raise StateError(
            f"{where} was not written with this installation's state key (${KEY_ENV} or "
            f"{state_dir() / 'state.key'}): refused unread"
        )
    return pickle.loads(body)


def allowed_locations(extra: list[str] | None = None) -> list[str]:
    """The folders and s3:// prefixes states may be read from: the state folder, then
    ``$DATAFACTORY_STATE_PATHS`` (``os.pathsep``-separated), then ``extra``."""
    env = [p for p in os.environ.get(PATHS_ENV, "").split(os.pathsep) if p]
    return [str(state_dir()), *env, *(extra or [])]


def check_location(where: str, allowed: list[str] | None) -> None:
    """StateError unless ``where`` is inside one of ``allowed`` (None: any location)."""
    if allowed is None:
        return
    if where.startswith("s3://"):
        if ".." in where.split("/") or "//" in where[5:]:
            raise StateError(f"{where!r} is not a plain s3://bucket/key")
        ok = any(
            where.startswith(a if a.endswith("/") else a + "/")
            for a in allowed
            if a.startswith("s3://")
        )
    else:
        if "\x00" in where:
            raise StateError("a path cannot hold a NUL character")
        path = Path(where).resolve()
        ok = any(
            path.is_relative_to(Path(a).resolve()) for a in allowed if not a.startswith("s3://")
        )
    if not ok:
        raise StateError(
            f"{where!r} is outside the locations this daemon may read states "
            f"from ({', '.join(allowed)}; the operator sets them with --states or "
            f"${PATHS_ENV})"
        )
