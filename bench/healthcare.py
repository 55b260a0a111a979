"""Healthcare end to end against what a user would otherwise write, timed in the same run.

The anchor (as issue 19 defines it): Faker building equivalent FHIR R4 Claims (the Claim
with its Patient and Practitioner contained, 1-2 diagnoses, 2-4 lines) and ``json.dumps``, on
one core. Ours contain the Organization, Coverage and payer as well. The case: the
healthcare pack through the real engine (simulated clock, all five streams: Claim,
ClaimResponse, ExplanationOfBenefit, ADT, DFT) to JSON files, events of every stream per
second of wall time, both cores. A population big enough that start-up is not what is timed.

    .venv/bin/python bench/healthcare.py [--patients N] [--days D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def faker_claims(seconds: float) -> tuple[float, float]:
    """Faker + json.dumps FHIR Claims: (documents/s, mean bytes)."""
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(1)
    rnd = random.Random(1)

    def money(v: float) -> dict[str, Any]:
        return {"value": round(v, 2), "currency": "USD"}

    def claim(n: int) -> dict[str, Any]:
        pid, npi, org = (
            fake.bothify("pat-#######"),
            fake.numerify("1#########"),
            fake.numerify("2#########"),
        )
        start = fake.date_time_this_year()
        items = []
        for i in range(rnd.randint(2, 4)):
            price = round(rnd.uniform(20, 400), 2)
            items.append({
                "sequence": i + 1, "diagnosisSequence": [1],
                "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                                 "code": fake.numerify("99###"),
                                                 "display": fake.sentence(nb_words=5)}]},
                "servicedDate": start.date().isoformat(), "quantity": {"value": 1},
                "unitPrice": money(price), "net": money(price),
                "encounter": [{"reference": f"Encounter/enc-{n}"}],
            })  # fmt: skip
        dx = [
            {"sequence": k + 1, "diagnosisCodeableConcept": {"coding": [
                {"system": "http://hl7.org/fhir/sid/icd-10-cm",
                 "code": fake.bothify("?##.#").upper(), "display": fake.sentence(nb_words=4)}]}}
            for k in range(rnd.randint(1, 2))
        ]  # fmt: skip
        return {
            "resourceType": "Claim", "id": f"claim-{n}",
            "identifier": [{"system": "urn:datafactory:claim", "value": str(n)}],
            "status": "active",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                                 "code": "professional"}]},
            "use": "claim", "patient": {"reference": f"#{pid}"},
            "billablePeriod": {"start": start.isoformat() + "Z", "end": start.isoformat() + "Z"},
            "created": fake.iso8601() + "Z", "provider": {"reference": f"#pr-{npi}"},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                     "code": "normal"}]},
            "insurer": {"reference": "#payer-1"}, "facility": {"reference": f"#org-{org}"},
            "diagnosis": dx,
            "insurance": [{"sequence": 1, "focal": True,
                           "coverage": {"reference": f"#cov-{pid}"}}],
            "item": items, "total": money(sum(i["net"]["value"] for i in items)),
            "contained": [
                {"resourceType": "Patient", "id": pid,
                 "identifier": [{"system": "urn:datafactory:mrn", "value": pid}],
                 "name": [{"family": fake.last_name(), "given": [fake.first_name()]}],
                 "gender": rnd.choice(["female", "male"]),
                 "birthDate": fake.date_of_birth().isoformat(),
                 "address": [{"state": fake.state_abbr(), "postalCode": fake.zipcode(),
                              "country": "US"}]},
                {"resourceType": "Practitioner", "id": f"pr-{npi}",
                 "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": npi}],
                 "name": [{"family": fake.last_name(), "given": [fake.first_name()],
                           "prefix": ["Dr."]}]},
            ],
        }  # fmt: skip

    best, size, n = 0.0, 0, 0
    for _ in range(3):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            docs = [json.dumps(claim(n + i)) for i in range(100)]
            n += 100
            count += len(docs)
            size = sum(map(len, docs)) // len(docs)
        best = max(best, count / (time.perf_counter() - t0))
    return best, float(size)


def engine(patients: int, days: int) -> tuple[float, float]:
    """The pack end to end to JSON files: (events/s, mean Claim bytes)."""
    from datafactory.config import parse_config
    from datafactory.runtime.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "run": {"name": "bench", "seed": 1, "clock": "simulated",
                    "start": "2026-03-02T00:00:00Z", "duration": f"{days}d"},
            "packs": {"healthcare": {"params": {"patients": patients}}},
            "sinks": {"files": {"type": "file", "path": tmp, "format": "json",
                                "max_bytes": "256MiB"}},
            "telemetry": {"enabled": False},
        }  # fmt: skip
        t0 = time.perf_counter()
        summary = asyncio.run(Engine(parse_config(json.dumps(cfg))).run())
        rate = sum(v["released"] for v in summary["streams"].values()) / (time.perf_counter() - t0)
        claims = list(Path(tmp).rglob("claim/*.jsonl"))
        lines = sum(f.read_bytes().count(b"\n") for f in claims)
        return rate, sum(f.stat().st_size for f in claims) / max(lines, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=3.0, help="time for the anchor")
    ap.add_argument("--json", default="artifacts/bench-healthcare.json")
    args = ap.parse_args()
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    anchor, anchor_bytes = faker_claims(args.seconds)
    rate, claim_bytes = engine(args.patients, args.days)
    print(
        f"healthcare, FHIR + HL7 end to end (2 cores, {args.patients:,} patients, {args.days} d): "
        f"{rate:,.0f} ev/s = {rate / anchor:.1f}x Faker FHIR Claims + json.dumps "
        f"({anchor:,.0f} docs/s, one core; {anchor_bytes:,.0f} vs our {claim_bytes:,.0f} bytes "
        f"per Claim) (goal >= 30x)"
    )
    out = {"events_per_s": rate, "faker_claims_per_s": anchor, "ratio": rate / anchor,
           "faker_claim_bytes": anchor_bytes, "claim_bytes": claim_bytes,
           "patients": args.patients, "days": args.days}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
