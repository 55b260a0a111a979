"""The chaos steps, one module each; ``STEPS`` maps a config's ``step:`` to its class."""

from __future__ import annotations

from datafactory.chaos.base import Step
from datafactory.chaos.steps.corrupt_bytes import CorruptBytes
from datafactory.chaos.steps.corrupt_value import CorruptValue
from datafactory.chaos.steps.delay import Delay
from datafactory.chaos.steps.drop import Drop
from datafactory.chaos.steps.duplicate import Duplicate
from datafactory.chaos.steps.hot_key import HotKey
from datafactory.chaos.steps.oversize import Oversize
from datafactory.chaos.steps.poison_pill import PoisonPill
from datafactory.chaos.steps.schema_drift import SchemaDrift
from datafactory.chaos.steps.timestamp_skew import TimestampSkew

STEPS: dict[str, type[Step]] = {
    "drop": Drop,
    "duplicate": Duplicate,
    "delay": Delay,
    "reorder": Delay,
    "schema_drift": SchemaDrift,
    "corrupt_value": CorruptValue,
    "corrupt_bytes": CorruptBytes,
    "poison_pill": PoisonPill,
    "timestamp_skew": TimestampSkew,
    "oversize": Oversize,
    "hot_key": HotKey,
}
