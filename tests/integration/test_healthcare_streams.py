"""Healthcare streams through Kafka (a real Kafka-protocol broker, Tansu) and Kinesis (moto)
like any other stream: each FHIR claim arrives as one message that validates as a FHIR R4
Claim, each HL7 message as one message that parses strictly, keyed by patient. (Batch to
JSON lines and Parquet: tests/integration/test_batch.py.)"""

from __future__ import annotations

import uuid

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.lifecycle.local import Moto, Tansu
from datafactory.runtime.engine import Engine
from tests.integration.conftest import consume
from tests.integration.test_kinesis import read_stream

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


async def test_claims_and_responses_stream_to_kinesis(
    moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir.resources.R4B.claim import Claim
    from fhir.resources.R4B.claimresponse import ClaimResponse

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    uid = uuid.uuid4().hex[:8]
    cfg = parse_config(
        orjson.dumps(
            {
                "run": {
                    "name": f"hk{uid}",
                    "seed": 5,
                    "clock": "simulated",
                    "start": "2026-03-02T00:00:00Z",
                    "duration": "20d",
                },
                "packs": {
                    "healthcare": {
                        "params": {"patients": 2000},
                        "streams": {"claim": {}, "claim_response": {}},
                    }
                },
                # one call in flight: moto loses records of concurrent PutRecords
                "sinks": {
                    "kin": {
                        "type": "aws_kinesis",
                        "endpoint_url": moto.endpoint,
                        "stream": f"hc-{uid}-{{stream}}",
                        "shards": 2,
                        "max_in_flight": 1,
                    }
                },
                "telemetry": {"enabled": False},
            }
        ).decode()
    )
    summary = await Engine(cfg).run()
    sent = summary["sinks"]["kin"]["sent"]
    assert sent["healthcare.claim"] > 50 and sent["healthcare.claim_response"] > 20
    claims = await read_stream(moto.endpoint, f"hc-{uid}-claim")
    responses = await read_stream(moto.endpoint, f"hc-{uid}-claim_response")
    assert len(claims) == sent["healthcare.claim"]
    assert len(responses) == sent["healthcare.claim_response"]
    claim_ids = set()
    for r in claims:
        doc = orjson.loads(r["Data"])
        Claim.model_validate(doc)
        claim_ids.add(doc["id"])
        patient = next(x for x in doc["contained"] if x["resourceType"] == "Patient")
        assert r["PartitionKey"] == str(int(patient["id"].removeprefix("pat-")) - 1)
    for r in responses:
        doc = orjson.loads(r["Data"])
        ClaimResponse.model_validate(doc)
        # every response answers a claim that went through the same run
        assert doc["request"]["reference"].split("/")[-1].lstrip("#") in claim_ids
