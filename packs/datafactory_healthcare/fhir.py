"""FHIR R4 JSON: ``Claim`` and ``ClaimResponse`` with the ``Patient``, ``Practitioner``,
``Organization`` and ``Coverage`` they reference — contained in the resource, or all of them
entries of a ``collection`` Bundle (``fhir_packaging``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from datafactory_healthcare.care import CLASSES, PAYERS, SPECIALTIES, STATES, Care

NPI = "http://hl7.org/fhir/sid/us-npi"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
ADJ = "http://terminology.hl7.org/CodeSystem/adjudication"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
TERMS = "http://terminology.hl7.org/CodeSystem/"
COVERAGE_CLASS = TERMS + "coverage-class"
PRIORITY = TERMS + "processpriority"
RELATED = TERMS + "ex-relatedclaimrelationship"
PAYMENT_TYPE = TERMS + "ex-paymenttype"
SUBSCRIBER = TERMS + "subscriber-relationship"
US = 1_000_000


def _ts(us: int) -> str:
    return dt.datetime.fromtimestamp(us / US, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(us: int) -> str:
    return dt.datetime.fromtimestamp(us / US, dt.UTC).strftime("%Y-%m-%d")


def _money(cents: int) -> dict[str, Any]:
    return {"value": cents / 100, "currency": "USD"}


class Renderer:
    def __init__(self, care: Care, packaging: str, start_us: int) -> None:
        self.care = care
        self.net = care.net
        self.packaging = packaging
        self.start_us = start_us

    # -- the referenced resources -----------------------------------------------------------

    def patient(self, i: int) -> dict[str, Any]:
        net = self.net
        birth = self.start_us - int(net.birth_offset_days[i]) * 86_400 * US
        return {
            "resourceType": "Patient",
            "id": net.patient_ids[i],
            "identifier": [{"system": "urn:datafactory:mrn", "value": net.patient_ids[i]}],
            "name": [{"family": net.family[i], "given": [net.given[i]]}],
            "gender": "female" if net.sex[i] == "F" else "male",
            "birthDate": _date(birth),
            "address": [
                {"state": STATES[int(net.state[i])][0], "postalCode": net.zip[i], "country": "US"}
            ],
        }

    def practitioner(self, i: int) -> dict[str, Any]:
        net = self.net
        code, name = SPECIALTIES[int(net.pr_specialty[i])]
        return {
            "resourceType": "Practitioner",
            "id": f"pr-{net.pr_npi[i]}",
            "identifier": [{"system": NPI, "value": net.pr_npi[i]}],
            "name": [{"family": net.pr_family[i], "given": [net.pr_given[i]], "prefix": ["Dr."]}],
            "qualification": [
                {
                    "code": {
                        "coding": [
                            {"system": "http://nucc.org/provider-taxonomy", "code": code,
                             "display": name}
                        ]
                    }
                }
            ],
        }  # fmt: skip

    def organization(self, i: int) -> dict[str, Any]:
        net = self.net
        return {
            "resourceType": "Organization",
            "id": f"org-{net.org_npi[i]}",
            "identifier": [{"system": NPI, "value": net.org_npi[i]}],
            "active": True,
            "name": net.org_names[i],
            "address": [{"state": STATES[int(net.org_state[i])][0], "country": "US"}],
        }

    def payer(self, k: int) -> dict[str, Any]:
        return {
            "resourceType": "Organization",
            "id": f"payer-{k + 1}",
            "identifier": [{"system": "urn:datafactory:payer", "value": f"P{k + 1:03d}"}],
            "active": True,
            "name": PAYERS[k][0],
        }

    def coverage(self, i: int) -> dict[str, Any]:
        net = self.net
        payer, plan = int(net.payer[i]), int(net.plan[i])
        return {
            "resourceType": "Coverage",
            "id": f"cov-{net.patient_ids[i]}",
            "status": "active",
            "subscriberId": net.member_id[i],
            "beneficiary": {"reference": self.ref("Patient", net.patient_ids[i])},
            "relationship": {
                "coding": [
                    {"system": SUBSCRIBER,
                     "code": "self"}
                ]
            },
            "payor": [{"reference": self.ref("Organization", f"payer-{payer + 1}")}],
            "class": [
                {
                    "type": {"coding": [{"system": COVERAGE_CLASS, "code": "plan"}]},
                    "value": f"PLAN-{payer + 1}-{plan + 1}",
                    "name": PAYERS[payer][1][plan][0],
                }
            ],
        }  # fmt: skip

    def _practitioner_ref(self, doc: dict[str, Any]) -> str:
        return self.ref("Practitioner", f"pr-{self.net.pr_npi[doc['practitioner']]}")

    def ref(self, kind: str, rid: str) -> str:
        return f"#{rid}" if self.packaging == "contained" else f"urn:uuid:{_uuid(kind, rid)}"

    # -- documents ---------------------------------------------------------------------------

    def _refs(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        net = self.net
        p = doc["patient"]
        return [
            self.patient(p),
            self.practitioner(doc["practitioner"]),
            self.organization(doc["org"]),
            self.coverage(p),
            self.payer(int(net.payer[p])),
        ]

    def claim(self, doc: dict[str, Any]) -> dict[str, Any]:
        net, care = self.net, self.care
        p = doc["patient"]
        dx, px = care.dx, care.px
        klass = doc["class"]
        items = []
        day = 0
        for i, (code, charge) in enumerate(zip(doc["items"], doc["charge"], strict=True)):
            system = HCPCS if code[0].isalpha() else CPT
            if code == "99231":  # daily inpatient care: the days after admission
                day += 1
            served = (
                doc["end"]
                if code == "99238"
                else doc["start"] + (day * 86_400 * US if code == "99231" else 0)
            )
            items.append(
                {
                    "sequence": i + 1,
                    "diagnosisSequence": [1],
                    "productOrService": {
                        "coding": [{"system": system, "code": code,
                                    "display": px.description[px.index(code)]}]
                    },
                    "servicedDate": _date(served),
                    "quantity": {"value": 1},
                    "unitPrice": _money(charge),
                    "net": _money(charge),
                    "encounter": [{"reference": f"Encounter/enc-{doc['encounter']}"}],
                }
            )  # fmt: skip
        claim: dict[str, Any] = {
            "resourceType": "Claim",
            "id": f"claim-{doc['number']}",
            "identifier": [{"system": "urn:datafactory:claim", "value": str(doc["number"])}],
            "status": "active",
            "type": {
                "coding": [
                    {"system": CLAIM_TYPE,
                     "code": "institutional" if klass == 2 else "professional"}
                ]
            },
            "use": "claim",
            "patient": {"reference": self.ref("Patient", net.patient_ids[p])},
            "billablePeriod": {"start": _ts(doc["start"]), "end": _ts(doc["end"])},
            "created": _ts(doc["submitted"]),
            "provider": {"reference": self._practitioner_ref(doc)},
            "priority": {"coding": [{"system": PRIORITY, "code": "normal"}]},
            "insurer": {"reference": self.ref("Organization", f"payer-{int(net.payer[p]) + 1}")},
            "facility": {"reference": self.ref("Organization", f"org-{net.org_npi[doc['org']]}")},
            "diagnosis": [
                {"sequence": k + 1,
                 "diagnosisCodeableConcept": {
                     "coding": [{"system": ICD10, "code": dx.code[d],
                                 "display": dx.description[d]}]}}
                for k, d in enumerate(doc["dxs"])
            ],
            "insurance": [
                {"sequence": 1, "focal": True,
                 "coverage": {"reference": self.ref("Coverage", f"cov-{net.patient_ids[p]}")}}
            ],
            "item": items,
            "total": _money(sum(doc["charge"])),
            "extension": [
                {"url": "urn:datafactory:encounter-class", "valueCode": CLASSES[klass]}
            ],
        }  # fmt: skip
        if doc["related"] is not None:
            claim["related"] = [
                {"claim": {"reference": f"Claim/claim-{doc['related']}"},
                 "relationship": {"coding": [{"system": RELATED, "code": "prior"}]}}
            ]  # fmt: skip
        refs = self._refs(doc)
        if doc.get("error") is not None:
            doc["field"] = self._break(claim, refs, doc)
        return self._package(claim, doc, refs)

    def _break(self, claim: dict[str, Any], refs: list[dict[str, Any]], doc: dict[str, Any]) -> str:
        """The claim's one error (its kind in ``doc["error"]``); returns the field it is in."""
        kind, care = doc["error"], self.care
        if kind == "invalid_icd10":  # not an ICD-10-CM code at all: a digit where a letter goes
            coding = claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]
            coding["code"] = str(doc["number"] % 10) + coding["code"][1:]
            return "Claim.diagnosis[0].diagnosisCodeableConcept.coding[0].code"
        if kind == "sex_age_mismatch":  # a real code the patient's sex rules out
            sex = str(self.net.sex[doc["patient"]])
            wrong = [i for i, x in enumerate(care.dx.sex) if x not in ("A", sex)]
            d = wrong[doc["number"] % len(wrong)]
            claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0].update(
                code=care.dx.code[d], display=care.dx.description[d]
            )
            return "Claim.diagnosis[0].diagnosisCodeableConcept.coding[0].code"
        if kind == "invalid_npi":  # the practitioner's NPI with a wrong check digit
            ident = refs[1]["identifier"][0]
            ident["value"] = ident["value"][:9] + str((int(ident["value"][9]) + 1) % 10)
            return "Practitioner.identifier[0].value"
        if kind == "service_after_submission":
            late = _date(doc["submitted"] + 3 * 86_400 * US)
            claim["item"][-1]["servicedDate"] = late
            return f"Claim.item[{len(claim['item']) - 1}].servicedDate"
        if kind == "amounts_mismatch":  # the total is not the sum of the lines
            claim["total"] = _money(sum(doc["charge"]) + 1000 + doc["number"] % 5000)
            return "Claim.total"
        if kind == "missing_fhir_element":  # Claim.priority is required (1..1)
            del claim["priority"]
            return "Claim.priority"
        if kind == "duplicate_claim":  # the copy is the error; the first is clean
            return "Claim.identifier"
        raise ValueError(f"no such claim error {kind!r}")

    def _adjudication(
        self, doc: dict[str, Any]
    ) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]], int]:
        """Per line (submitted, eligible, benefit; a denial's reason), totals, amount paid."""
        lines = []
        for charge, allowed, benefit, reason in zip(
            doc["charge"], doc["allowed"], doc["benefit"], doc["reason"], strict=True
        ):
            adj: list[dict[str, Any]] = [
                {"category": {"coding": [{"system": ADJ, "code": "submitted"}]},
                 "amount": _money(charge)},
                {"category": {"coding": [{"system": ADJ, "code": "eligible"}]},
                 "amount": _money(allowed)},
                {"category": {"coding": [{"system": ADJ, "code": "benefit"}]},
                 "amount": _money(benefit)},
            ]  # fmt: skip
            if reason is not None:
                adj[1]["reason"] = {"coding": [{"system": CARC, "code": reason}]}
            lines.append(adj)
        paid = sum(doc["benefit"])
        totals = [
            {"category": {"coding": [{"system": ADJ, "code": "submitted"}]},
             "amount": _money(sum(doc["charge"]))},
            {"category": {"coding": [{"system": ADJ, "code": "eligible"}]},
             "amount": _money(sum(doc["allowed"]))},
            {"category": {"coding": [{"system": ADJ, "code": "benefit"}]},
             "amount": _money(paid)},
        ]  # fmt: skip
        return lines, totals, paid

    def explanation_of_benefit(self, doc: dict[str, Any]) -> dict[str, Any]:
        """What the patient is told: the claim's lines, diagnoses and coverage, adjudicated."""
        net = self.net
        p = doc["patient"]
        lines, totals, paid = self._adjudication(doc)
        claim = self.claim({**doc, "error": None})
        main = claim if self.packaging == "contained" else claim["entry"][0]["resource"]
        items = [
            {"sequence": it["sequence"], "productOrService": it["productOrService"],
             "servicedDate": it["servicedDate"], "net": it["net"], "adjudication": adj}
            for it, adj in zip(main["item"], lines, strict=True)
        ]  # fmt: skip
        eob: dict[str, Any] = {
            "resourceType": "ExplanationOfBenefit",
            "id": f"eob-{doc['number']}",
            "identifier": [{"system": "urn:datafactory:eob", "value": str(doc["number"])}],
            "status": "active",
            "type": main["type"],
            "use": "claim",
            "patient": {"reference": self.ref("Patient", net.patient_ids[p])},
            "billablePeriod": main["billablePeriod"],
            "created": _ts(doc["decided"]),
            "insurer": main["insurer"],
            "provider": main["provider"],
            "facility": main["facility"],
            "claim": {"reference": f"Claim/claim-{doc['number']}"},
            "claimResponse": {"reference": f"ClaimResponse/cr-{doc['number']}"},
            "outcome": {"complete": "complete", "partial": "partial",
                        "denied": "error"}[doc["outcome"]],
            "diagnosis": main["diagnosis"],
            "insurance": [  # (no sequence on an EOB's insurance)
                {"focal": True, "coverage": main["insurance"][0]["coverage"]}
            ],
            "item": items,
            "total": totals,
            "payment": {"date": _date(doc["decided"]), "amount": _money(paid)},
        }  # fmt: skip
        return self._package(eob, doc, self._refs(doc))

    def claim_response(self, doc: dict[str, Any]) -> dict[str, Any]:
        net = self.net
        p = doc["patient"]
        lines, totals, paid = self._adjudication(doc)
        items = [{"itemSequence": i + 1, "adjudication": adj} for i, adj in enumerate(lines)]
        outcome = {"complete": "complete", "partial": "partial", "denied": "error"}[doc["outcome"]]
        resp: dict[str, Any] = {
            "resourceType": "ClaimResponse",
            "id": f"cr-{doc['number']}",
            "identifier": [
                {"system": "urn:datafactory:claim-response", "value": str(doc["number"])}
            ],
            "status": "active",
            "type": {"coding": [{"system": CLAIM_TYPE, "code": _claim_type(doc)}]},
            "use": "claim",
            "patient": {"reference": self.ref("Patient", net.patient_ids[p])},
            "created": _ts(doc["decided"]),
            "insurer": {"reference": self.ref("Organization", f"payer-{int(net.payer[p]) + 1}")},
            "requestor": {"reference": self._practitioner_ref(doc)},
            "request": {"reference": f"Claim/claim-{doc['number']}"},
            "outcome": outcome,
            "disposition": {"complete": "Claim settled as billed under the plan",
                            "partial": "Claim partially paid: see denied lines",
                            "denied": "Claim denied"}[doc["outcome"]],
            "item": items,
            "total": totals,
            "payment": {
                "type": {"coding": [{"system": PAYMENT_TYPE, "code": "complete"}]},
                "date": _date(doc["decided"]),
                "amount": _money(paid),
            },
        }  # fmt: skip
        if doc["outcome"] == "denied":
            resp["error"] = [{"code": {"coding": [{"system": CARC, "code": doc["reason"][0]}]}}]
        return self._package(resp, doc, self._refs(doc))

    def _package(
        self, resource: dict[str, Any], doc: dict[str, Any], refs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.packaging == "contained":
            resource["contained"] = refs
            return resource
        entries = [resource, *refs]
        return {
            "resourceType": "Bundle",
            "id": f"bundle-{resource['id']}",
            "type": "collection",
            "timestamp": resource["created"].replace("Z", "+00:00"),
            "entry": [
                {"fullUrl": f"urn:uuid:{_uuid(r['resourceType'], r['id'])}", "resource": r}
                for r in entries
            ],
        }


def _claim_type(doc: dict[str, Any]) -> str:
    return "institutional" if doc["class"] == 2 else "professional"


def _uuid(kind: str, rid: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"datafactory/{kind}/{rid}"))


def dumps(resource: dict[str, Any]) -> str:
    return orjson.dumps(resource).decode()
