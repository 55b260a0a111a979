"""Healthcare streams through Kafka (a real Kafka-protocol broker, Tansu) like any other
stream: each FHIR claim arrives as one message that validates as a FHIR R4 Claim, each HL7
message as one message that parses strictly, keyed by patient."""

from __future__ import annotations

import uuid

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.engine.pipeline import Engine
from datafactory.lifecycle.local import Tansu
from tests.integration.conftest import consume

pytestmark = pytest.mark.integration


async def test_claims_and_hl7_messages_stream_to_kafka(tansu: Tansu) -> None:
    from fhir.resources.R4B.claim import Claim
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    uid = uuid.uuid4().hex[:8]
    cfg = parse_config(
        orjson.dumps(
            {
                "run": {
                    "name": f"hc{uid}",
                    "seed": 2,
                    "clock": "simulated",
                    "start": "2026-02-02T00:00:00Z",
                    "duration": "15d",
                },
                "packs": {
                    "healthcare": {
                        "params": {"patients": 3000},
                        "streams": {"claim": {}, "adt": {}},
                    }
                },
                "sinks": {
                    "bus": {
                        "type": "kafka",
                        "bootstrap": tansu.bootstrap,
                        "topic": f"hc-{uid}-{{stream}}",
                        "partitions": 2,
                    }
                },
                "telemetry": {"enabled": False},
                "engine": {"max_attempts": 50, "retry_backoff": 0.2, "retry_backoff_max": 1},
            }
        ).decode()
    )
    summary = await Engine(cfg).run()
    n_claims = summary["sinks"]["bus"]["sent"]["healthcare.claim"]
    n_adt = summary["sinks"]["bus"]["sent"]["healthcare.adt"]
    assert n_claims > 100 and n_adt > 500
    claims = await consume(tansu.bootstrap, f"hc-{uid}-claim", n_claims)
    assert len(claims) == n_claims
    for m in claims:
        doc = orjson.loads(m.value)
        Claim.model_validate(doc)
        patient = next(r for r in doc["contained"] if r["resourceType"] == "Patient")
        assert m.key.decode() == str(int(patient["id"].removeprefix("pat-")) - 1)
    adt = await consume(tansu.bootstrap, f"hc-{uid}-adt", n_adt)
    assert len(adt) == n_adt
    for m in adt[::5]:
        parse_message(m.value.decode(), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
