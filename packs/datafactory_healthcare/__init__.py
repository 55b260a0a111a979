"""Healthcare: a patient population, a provider network and payers, and the claims their care
produces — as FHIR R4 JSON, in event time.

Streams (driven by the care model's own clock, like IoT: volume follows ``patients`` x
``visits_per_year``): ``claim`` (a FHIR ``Claim`` when it is submitted) and
``claim_response`` (its ``ClaimResponse`` when adjudicated: paid, partially paid or denied
with reason codes; some denials come back as a new claim naming the first). Each record is
the FHIR document itself (``format: json``), the referenced Patient, Practitioner,
Organizations and Coverage contained in it or beside it in a Bundle (``fhir_packaging``);
``explanation_of_benefit`` (what the patient is told) with the response; ``adt`` and ``dft``
(HL7 v2.5 messages of the same encounters). Error kinds are injected at tunable rates and
labelled (ground truth).

A poll takes the rows its due events name from the care model's records (columns) and renders
the block's documents at once (``fhir.py``, ``hl7.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.blocks import DictColumn, Label, ListColumn, RecordBlock
from datafactory.engine.seeding import SeedTree
from datafactory.engine.timeline import PendingEvents
from datafactory.expect.questions import Question
from datafactory.pack import Pack, Shard, StreamGenerator, StreamSpec
from datafactory_healthcare.care import CLAIM_ERRORS, DENIALS, Care
from datafactory_healthcare.fhir import Renderer, error_field
from datafactory_healthcare.hl7 import TRIGGERS, Hl7Renderer
from datafactory_healthcare.network import PAYERS, Network
from datafactory_healthcare.questions import QUESTIONS
from datafactory_healthcare.records import Claims


class ErrorRates(BaseModel):
    """Share of records with each error (a claim has at most one; labelled as ground truth)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    invalid_icd10: float = Field(
        0, ge=0, le=1, description="a diagnosis code that is not ICD-10-CM"
    )
    sex_age_mismatch: float = Field(
        0, ge=0, le=1, description="a diagnosis the patient's sex or age rules out"
    )
    invalid_npi: float = Field(0, ge=0, le=1, description="an NPI with a wrong check digit")
    service_after_submission: float = Field(
        0, ge=0, le=1, description="a line served after the claim was submitted"
    )
    amounts_mismatch: float = Field(
        0, ge=0, le=1, description="a total that is not the sum of the lines"
    )
    duplicate_claim: float = Field(0, ge=0, le=1, description="a claim submitted twice")
    missing_fhir_element: float = Field(
        0, ge=0, le=1, description="a required FHIR element left out (Claim.priority)"
    )
    malformed_hl7: float = Field(
        0, ge=0, le=1, description="an HL7 message without its PID segment"
    )

    @model_validator(mode="after")
    def _one_per_claim(self) -> ErrorRates:
        total = sum(getattr(self, k) for k in CLAIM_ERRORS)
        if total > 1:
            raise ValueError(f"the claim error rates add up to {total:g}: at most 1")
        return self


class HealthcareParams(BaseModel):
    """Parameters of the healthcare pack (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    patients: int = Field(20_000, ge=1, le=10_000_000, description="patients in the population")
    practitioners: int = Field(300, ge=1, le=1_000_000, description="practitioners (NPIs)")
    organizations: int = Field(40, ge=1, le=100_000, description="clinics, groups, hospitals")
    visits_per_year: float = Field(4.0, gt=0, le=365, description="encounters per patient per year")
    resubmit_rate: float = Field(
        0.4, ge=0, le=1, description="share of denied claims corrected and resubmitted"
    )
    fhir_packaging: Literal["contained", "bundle"] = Field(
        "contained", description="referenced resources contained, or a collection Bundle"
    )
    errors: ErrorRates = Field(
        default_factory=ErrorRates, description="error kinds to inject, by rate (ground truth)"
    )


class HealthcarePack(Pack):
    name = "healthcare"
    description = "Patients, providers and payers: FHIR R4 claims and their adjudication."
    Params = HealthcareParams
    clock_driven = True
    streams: ClassVar[dict[str, StreamSpec]] = {
        "claim": StreamSpec("claim", "A FHIR R4 Claim, when it is submitted.", driven=True),
        "claim_response": StreamSpec(
            "claim_response", "A FHIR R4 ClaimResponse, when the claim is adjudicated.", driven=True
        ),
        "explanation_of_benefit": StreamSpec(
            "explanation_of_benefit",
            "A FHIR R4 ExplanationOfBenefit, when the claim is adjudicated.",
            driven=True,
        ),
        "adt": StreamSpec(
            "adt", "HL7 v2.5 ADT: A01 admit / A04 register, A03 discharge.", driven=True
        ),
        "dft": StreamSpec("dft", "HL7 v2.5 DFT^P03: an encounter's charges.", driven=True),
    }

    shardable = True

    @classmethod
    def questions(cls, params: BaseModel) -> tuple[Question, ...]:
        return QUESTIONS

    @classmethod
    def max_shards(cls, params: BaseModel) -> int:
        return int(params.patients)  # type: ignore[attr-defined]

    def __init__(self, params: BaseModel, seeds: SeedTree, shard: Shard | None = None) -> None:
        super().__init__(params, seeds, shard)
        p = (
            params
            if isinstance(params, HealthcareParams)
            else HealthcareParams.model_validate(params)
        )
        self.p = p
        # a shard: the care of its part of the patients; the network (patients, practitioners,
        # organisations, payers) is everyone's, the same in every shard
        sh = self.shard
        lo, hi = sh.range(p.patients)
        if hi <= lo:
            raise ValueError(f"healthcare: {sh.count} shards need at least as many patients")
        self.shard_share = (hi - lo) / p.patients
        self.network = Network(p, seeds.rng("healthcare", "network"))
        self.care = Care(
            p,
            seeds.rng("healthcare", "care", *sh.tag),
            self.network,
            seeds.rng("healthcare", "errors", *sh.tag),
            patients=(lo, hi),
            number_base=0 if sh.count == 1 else sh.index * 10**12,
        )
        self.renderer: Renderer | None = None
        self.hl7: Hl7Renderer | None = None

    def stream(self, name: str) -> StreamGenerator:
        if name not in self.streams:
            raise KeyError(f"healthcare has no stream {name!r}; streams: {sorted(self.streams)}")
        self.care.emit[name] = True
        if name in ("adt", "dft"):
            return Messages(self, name)
        return Documents(self, name)

    def begin(self, now_us: int) -> None:
        """The renderers and the care model begin with the run."""
        self.start(now_us)
        self.care.begin(now_us)

    def advance(self, now_us: int) -> None:
        """The care model's whole steps up to ``now_us`` (a batch's window closing)."""
        self.start(now_us)
        self.care.advance(now_us)

    def due(
        self, until_us: int | None, limit: int, final: bool, buffer: PendingEvents
    ) -> dict[str, Any] | None:
        """A stream's events due by ``until_us`` (the care model simulated up to it)."""
        if until_us is not None:
            self.start(until_us)
        return self.care.due(until_us, limit, final, buffer)

    def start(self, until_us: int) -> None:
        """The renderers, once: ages and birth dates are as of the run's first midnight."""
        if self.renderer is None:
            day = 86_400_000_000
            self.renderer = Renderer(self.care, self.p.fhir_packaging, until_us // day * day)
            self.hl7 = Hl7Renderer(self.care, until_us // day * day)


class _Driven(StreamGenerator):
    """A stream of the care model: what its buffer holds, due by the clock."""

    def __init__(self, pack: HealthcarePack, name: str) -> None:
        self.pack = pack
        self.name = name
        self.schema = pack.schema_for(name)
        care = pack.care
        self.buffer = {
            "claim": care.claims,
            "claim_response": care.responses,
            "explanation_of_benefit": care.eobs,
            "adt": care.adt,
            "dft": care.dft,
        }[name]


PAYER_IDS = tuple(f"P{i + 1:03d}" for i in range(len(PAYERS)))  # as the payer's identifier
CARCS = tuple(code for code, _ in DENIALS)


def adjudication(claims: Claims) -> dict[str, Any]:
    """A claim response's decision as columns: the amount paid (the document's
    ``payment.amount``: the lines' benefit, cents) and the lines denied with their reasons."""
    paid = np.add.reduceat(claims.benefit, claims.item_off[:-1]) if claims.n else claims.benefit
    denied = claims.reason >= 0
    before = np.concatenate([[0], np.cumsum(denied)])  # denied lines before each line
    offsets = before[claims.item_off] - before[claims.item_off[0]]
    lines = ListColumn(
        offsets.astype(np.int32),
        {
            "item_sequence": claims.item_seq[denied].astype(np.int32),
            "carc": DictColumn(claims.reason[denied].astype(np.int32), CARCS),
        },
    )
    return {"paid": paid.astype(np.int64), "denials": lines}


class Documents(_Driven):
    """``claim`` / ``claim_response`` / ``explanation_of_benefit``: one FHIR document per
    record (and its envelope: ids, payer, status; a response's decision)."""

    def __init__(self, pack: HealthcarePack, name: str) -> None:
        super().__init__(pack, name)
        self.fields = {f["name"] for f in self.schema.fields}

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        pk, care = self.pack, self.pack.care
        ev = pk.due(until_us, limit, final, self.buffer)
        if ev is None:
            return None
        assert pk.renderer is not None
        numbers = ev["claim"]
        claims = care.records.claims(numbers)
        render = {
            "claim": pk.renderer.claims,
            "claim_response": pk.renderer.claim_responses,
            "explanation_of_benefit": pk.renderer.explanations_of_benefit,
        }[self.name]
        texts = render(claims)
        n = claims.n
        labels: list[Label] = []
        if self.name == "claim":  # ground truth: which record, what kind, which field
            wrong = (claims.error >= 0) & (
                (claims.error != CLAIM_ERRORS.index("duplicate_claim")) | (ev["dup"] == 1)
            )
            lines = np.diff(claims.item_off)
            for code in np.unique(claims.error[wrong]).tolist():
                kind = CLAIM_ERRORS[code]
                rows = np.flatnonzero(wrong & (claims.error == code))
                details = [
                    {"record_id": f"claim-{claims.number[i]}", "error": kind,
                     "field": error_field(kind, int(lines[i]))}
                    for i in rows.tolist()
                ]  # fmt: skip
                labels.append(Label(kind, rows.astype(np.intp), details))
        patient = claims.patient
        care.forget(numbers)
        if self.name != "claim":
            status = claims.outcome + 2  # complete, partial, denied
        else:
            status = (claims.related >= 0).astype(np.int64)  # submitted, resubmitted
        pool = ("submitted", "resubmitted", "complete", "partial", "denied")
        columns: dict[str, Any] = {
            "claim_id": numbers.astype(np.int64),
            "patient_id": DictColumn(patient.astype(np.int32), pk.network.patient_ids),
            "payer_id": DictColumn(pk.network.payer[patient].astype(np.int32), PAYER_IDS),
            "status": DictColumn(status.astype(np.int32), pool),
            "resource": DictColumn(np.arange(n, dtype=np.int32), texts),
        }
        if self.name == "claim_response":  # what it decided, as the document says it
            columns.update(adjudication(claims))
        columns = {k: v for k, v in columns.items() if k in self.fields}
        return RecordBlock(
            stream=f"healthcare.{self.name}",
            seq=np.arange(seq_start, seq_start + n, dtype=np.int64),
            event_time=ev["t"],
            key=patient,
            columns=columns,
            labels=tuple(labels),
        )


class Messages(_Driven):
    """``adt`` / ``dft``: one HL7 v2.5 message per record."""

    def poll(
        self, until_us: int | None, seq_start: int, limit: int, final: bool = False
    ) -> RecordBlock | None:
        pk, care = self.pack, self.pack.care
        ev = pk.due(until_us, limit, final, self.buffer)
        if ev is None:
            return None
        assert pk.hl7 is not None
        n = len(ev["t"])
        seq = np.arange(seq_start, seq_start + n, dtype=np.int64)
        cols = care.records.encounters(ev["encounter"])
        bad = ev["bad"].astype(np.bool_)  # the PID segment left out: a structure error
        if self.name == "adt":
            trigger = ev["trigger"].astype(np.int64)
            texts = pk.hl7.adt(cols, trigger, ev["t"], seq, bad)
            types = tuple(f"ADT^{TRIGGERS[k]}" for k in trigger.tolist())
        else:
            texts = pk.hl7.dft(cols, ev["t"], seq, bad)
            types = ("DFT^P03",) * n
        care.sent_encounter(ev["encounter"])
        rows = np.flatnonzero(bad)
        labels: tuple[Label, ...] = ()
        if len(rows):
            labels = (
                Label(
                    "malformed_hl7",
                    rows.astype(np.intp),
                    [{"record_id": f"{types[i]}:V{int(ev['encounter'][i])}",
                      "error": "malformed_hl7", "field": "PID"} for i in rows.tolist()],
                ),
            )  # fmt: skip
        patient = cols.patient
        type_pool = tuple(sorted(set(types)))
        return RecordBlock(
            stream=f"healthcare.{self.name}",
            seq=seq,
            event_time=ev["t"],
            key=patient,
            columns={
                "message_type": DictColumn(
                    np.array([type_pool.index(x) for x in types], dtype=np.int32), type_pool
                ),
                "encounter_id": ev["encounter"].astype(np.int64),
                "patient_id": DictColumn(patient.astype(np.int32), pk.network.patient_ids),
                "message": DictColumn(np.arange(n, dtype=np.int32), texts),
            },
            labels=labels,
        )
