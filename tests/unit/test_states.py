"""Saved states are sealed: nothing is unpickled unless this installation's key signed it, and
a daemon reads states only from the locations its operator allowed."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from datafactory.states import MAGIC, StateError, check_location, seal, unseal


class Pwn:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATAFACTORY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DATAFACTORY_STATE_KEY", raising=False)
    return tmp_path / "state"


def test_a_sealed_state_round_trips_and_its_key_file_is_private(state_home: Path) -> None:
    obj = {"packs": [1, 2, 3], "time_us": 5}
    assert unseal(seal(obj)) == obj
    key = state_home / "state.key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32


@pytest.mark.parametrize("how", ["plain pickle", "forged mac", "other key", "flipped byte"])
def test_anything_not_sealed_with_our_key_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    marker = tmp_path / "pwned"
    body = pickle.dumps(Pwn(str(marker)))
    if how == "plain pickle":
        data = body
    elif how == "forged mac":
        data = MAGIC + b"\0" * 32 + body
    elif how == "other key":
        monkeypatch.setenv("DATAFACTORY_STATE_KEY", "someone else's key, long enough")
        data = seal(Pwn(str(marker)))
        monkeypatch.delenv("DATAFACTORY_STATE_KEY")
    else:
        good = bytearray(seal({"a": 1}))
        good[-3] ^= 1
        data = bytes(good)
    with pytest.raises(StateError):
        unseal(data, "x.state")
    assert not marker.exists()


def test_a_shared_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFACTORY_STATE_KEY", "a key shared by every shard")
    data = seal([1])
    assert unseal(data) == [1]
    monkeypatch.setenv("DATAFACTORY_STATE_KEY", "short")
    with pytest.raises(StateError, match="too short"):
        unseal(data)


def test_locations_are_resolved_before_they_are_checked(tmp_path: Path) -> None:
    allowed = tmp_path / "states"
    allowed.mkdir()
    (allowed / "ok.state").write_bytes(b"")
    check_location(str(allowed / "ok.state"), [str(allowed)])
    check_location(str(allowed / "sub" / ".." / "ok.state"), [str(allowed)])
    (allowed / "link").symlink_to("/etc")
    for bad in (
        "/etc/shadow",
        str(allowed / ".." / "x"),
        str(allowed / "link" / "shadow"),  # a symbolic link out of the folder
        str(tmp_path / "statesX" / "y"),  # a sibling that shares the prefix
        "s3://other/key",
        "s3://lake/states/../../x",
    ):
        with pytest.raises(StateError, match=r"outside|plain"):
            check_location(bad, [str(allowed), "s3://lake/states"])
    check_location("s3://lake/states/shard-0.state", [str(allowed), "s3://lake/states"])
    with pytest.raises(StateError, match="NUL"):
        check_location("a\x00b", [str(allowed)])
    check_location("/anything", None)  # the CLI: its operator's own path
