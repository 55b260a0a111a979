"""The population, the provider network and the care -> claim -> adjudication lifecycle.

Encounters happen at ``visits_per_year`` per patient (Poisson per step), outpatient,
emergency or inpatient (1-6 days). The diagnosis is drawn from the curated ICD-10-CM list by
frequency among the codes that fit the patient's sex and age and the encounter class;
procedures follow the diagnosis (those that fit sex and age), plus the E/M visit code of the
class (a preventive visit by age band for a routine examination), plus daily inpatient care.

A claim is submitted 1-10 days after the encounter ends; adjudicated 3-30 days after that:
paid, partially paid (some lines denied) or denied, with X12 claim adjustment reason codes;
some denials are corrected and resubmitted (a new claim that names the first). Charges are
the procedure's base fee x the organisation's charge factor; the payer allows base fee x its
plan's fee factor and pays the allowed amount less the plan's coinsurance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.engine.timeline import PendingEvents, Steps
from datafactory_healthcare import codes
from datafactory_healthcare.npi import make_npis

S = 1_000_000
DAY = 86_400 * S
YEAR = 365.25 * DAY
CLASSES = ("AMB", "EMER", "IMP")  # FHIR v3 ActCode: ambulatory, emergency, inpatient
CLASS_LETTER = ("o", "e", "i")
CLASS_P = np.array([0.86, 0.1, 0.04])
GIVEN_F = ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Maria", "Susan", "Aisha",
           "Mei", "Sofia", "Emma", "Olivia", "Fatima", "Priya", "Grace", "Chloe")  # fmt: skip
GIVEN_M = ("James", "Robert", "John", "Michael", "David", "William", "Carlos", "Wei",
           "Ahmed", "Raj", "Liam", "Noah", "Lucas", "Daniel", "Omar", "Ethan")  # fmt: skip
FAMILY = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
          "Rodriguez", "Martinez", "Nguyen", "Patel", "Kim", "Chen", "Lopez", "Wilson",
          "Anderson", "Thomas", "Taylor", "Moore")  # fmt: skip
STATES = (("MA", "021"), ("NY", "100"), ("TX", "750"), ("CA", "940"), ("IL", "606"),
          ("FL", "331"), ("WA", "981"), ("GA", "303"))  # fmt: skip
# payer, plans (name, fee factor, coinsurance), share of patients, min age
PAYERS = (
    ("Medicare", (("Original Medicare Part B", 1.0, 0.20),), 0.18, 65),
    ("Medicaid", (("Medicaid Managed Care", 0.8, 0.0),), 0.20, 0),
    ("Blue Harbor Health", (("Blue Harbor PPO", 1.6, 0.2), ("Blue Harbor HMO", 1.4, 0.1)), 0.27, 0),
    ("Summit Mutual", (("Summit Choice PPO", 1.5, 0.25),), 0.2, 0),
    ("Keystone Care", (("Keystone Select HMO", 1.3, 0.15),), 0.15, 0),
)  # fmt: skip
SPECIALTIES = (("208D00000X", "General Practice"), ("207Q00000X", "Family Medicine"),
               ("207R00000X", "Internal Medicine"), ("208000000X", "Pediatrics"),
               ("207P00000X", "Emergency Medicine"), ("207V00000X", "Obstetrics & Gynecology"),
               ("207X00000X", "Orthopaedic Surgery"), ("2084P0800X", "Psychiatry"))  # fmt: skip
ORG_KINDS = (("Clinic", 1.8), ("Medical Group", 2.0), ("Hospital", 2.8))
# adjustment reason codes (X12 CARC) for denied lines
# what can be wrong with a claim (at most one kind per claim), and with an HL7 message
CLAIM_ERRORS = ("invalid_icd10", "sex_age_mismatch", "invalid_npi", "service_after_submission",
                "amounts_mismatch", "duplicate_claim", "missing_fhir_element")  # fmt: skip
ERROR_KINDS = (*CLAIM_ERRORS, "malformed_hl7")
DENIALS = (("16", "Claim/service lacks information needed for adjudication"),
           ("50", "Not deemed a medical necessity by the payer"),
           ("97", "Payment included in the allowance for another service"),
           ("29", "The time limit for filing has expired"),
           ("204", "Service not covered under the patient's current benefit plan"))  # fmt: skip


class Network:
    """Patients with coverage, practitioners and organisations (NPIs), payers and plans."""

    def __init__(self, p: Any, rng: np.random.Generator) -> None:
        n = p.patients
        self.sex = np.where(rng.random(n) < 0.51, "F", "M")
        band = rng.choice(10, n, p=[0.06, 0.12, 0.12, 0.13, 0.13, 0.13, 0.13, 0.1, 0.06, 0.02])
        self.age = np.minimum(band * 10 + rng.integers(0, 10, n), 99)
        self.birth_offset_days = self.age * 365 + rng.integers(0, 365, n)
        self.given = [
            (GIVEN_F if s == "F" else GIVEN_M)[k]
            for s, k in zip(self.sex.tolist(), rng.integers(0, 16, n).tolist(), strict=True)
        ]
        self.family = [FAMILY[k] for k in rng.integers(0, len(FAMILY), n).tolist()]
        self.state = rng.integers(0, len(STATES), n)
        self.zip = [
            STATES[s][1] + f"{z:02d}"
            for s, z in zip(self.state.tolist(), rng.integers(0, 100, n).tolist(), strict=True)
        ]
        # coverage: Medicare from 65, otherwise by share
        share = np.array([x[2] for x in PAYERS])
        payer = rng.choice(len(PAYERS), n, p=share / share.sum())
        payer[self.age >= 65] = np.where(rng.random(int((self.age >= 65).sum())) < 0.85, 0, 2)
        payer[(self.age < 65) & (payer == 0)] = 2
        self.payer = payer
        self.plan = np.array(
            [int(rng.integers(0, len(PAYERS[k][1]))) for k in payer.tolist()], dtype=np.int64
        )
        self.member_id = tuple(f"M{rng.integers(10**8, 10**9)}" for _ in range(n))
        self.patient_ids = tuple(f"pat-{i + 1:07d}" for i in range(n))
        # organisations and their practitioners
        k = p.organizations
        self.org_kind = rng.choice(len(ORG_KINDS), k, p=[0.6, 0.3, 0.1])
        self.org_npi = make_npis(rng, k, 1)
        self.org_names = tuple(
            f"{FAMILY[int(rng.integers(0, len(FAMILY)))]} {ORG_KINDS[t][0]}"
            for t in self.org_kind.tolist()
        )
        self.org_state = rng.integers(0, len(STATES), k)
        m = p.practitioners
        self.pr_npi = make_npis(rng, m, 1)
        self.pr_org = rng.integers(0, k, m)
        self.pr_specialty = rng.integers(0, len(SPECIALTIES), m)
        self.pr_given = [(GIVEN_F + GIVEN_M)[int(x)] for x in rng.integers(0, 32, m).tolist()]
        self.pr_family = [FAMILY[int(x)] for x in rng.integers(0, len(FAMILY), m).tolist()]
        hospitals = np.flatnonzero(self.org_kind == 2)
        self.hospital_pr = np.flatnonzero(np.isin(self.pr_org, hospitals))
        if not len(self.hospital_pr):  # every network has somewhere to admit patients
            self.pr_org[0] = hospitals[0] if len(hospitals) else 0
            self.org_kind[self.pr_org[0]] = 2
            self.hospital_pr = np.array([0])


class Care(Steps):
    """Encounters, claims and adjudications in steps of an hour."""

    def __init__(
        self,
        p: Any,
        rng: np.random.Generator,
        net: Network,
        error_rng: np.random.Generator,
        patients: tuple[int, int] | None = None,
        number_base: int = 0,
    ) -> None:
        """``patients``: the range of the network's patients whose care this simulates (a
        batch shard's); ``number_base``: where its claim and encounter numbers start."""
        """``error_rng`` decides the injected errors alone, so the same seed gives the same
        care with or without them."""
        super().__init__(3600 * S)
        self.p, self.rng, self.net = p, rng, net
        self.error_rng = error_rng
        rates = p.errors.model_dump()
        self.claim_errors = tuple(k for k in CLAIM_ERRORS if rates[k] > 0)
        self.claim_error_cdf = np.cumsum([rates[k] for k in self.claim_errors])
        self.hl7_error_rate = rates["malformed_hl7"]
        self.dx = codes.diagnoses()
        self.px = codes.procedures()
        d = self.dx
        self.dx_fits = {  # (sex, class) -> which codes apply, before the age check
            (sex, c): np.array(
                [(s in ("A", sex)) and (CLASS_LETTER[c] in cl) for s, cl in
                 zip(d.sex, d.classes, strict=True)]
            )
            for sex in ("F", "M") for c in range(3)
        }  # fmt: skip
        self.claims = PendingEvents()
        self.responses = PendingEvents()
        self.eobs = PendingEvents()
        self.adt = PendingEvents()
        self.dft = PendingEvents()
        self.emit = {
            "claim": False,
            "claim_response": False,
            "explanation_of_benefit": False,
            "adt": False,
            "dft": False,
        }
        self.encounters: dict[int, dict[str, Any]] = {}  # what the HL7 messages need
        self.patients = patients or (0, p.patients)
        self.next_claim = number_base + 1
        self.next_encounter = number_base + 1
        self.docs: dict[int, dict[str, Any]] = {}  # claim number -> what its documents need

    def _step(self, t0: int, t1: int) -> None:
        p, rng = self.p, self.rng
        lo, hi = self.patients
        lam = (hi - lo) * p.visits_per_year * (t1 - t0) / YEAR
        k = int(rng.poisson(lam))
        if not k:
            return
        start = np.sort(t0 + (rng.random(k) * (t1 - t0)).astype(np.int64) + 1)
        patient = rng.integers(lo, hi, k)
        klass = rng.choice(3, k, p=CLASS_P)
        for i in range(k):
            self._encounter(int(start[i]), int(patient[i]), int(klass[i]))

    def _diagnosis(self, patient: int, klass: int) -> int | None:
        net, d = self.net, self.dx
        age = int(net.age[patient])
        ok = self.dx_fits[(str(net.sex[patient]), klass)] & (d.min_age <= age) & (age <= d.max_age)
        if not ok.any():
            return None
        w = d.weight * ok
        return int(self.rng.choice(len(w), p=w / w.sum()))

    def _encounter(self, start: int, patient: int, klass: int) -> None:
        rng, net, px = self.rng, self.net, self.px
        dx = self._diagnosis(patient, klass)
        if dx is None:
            klass = 0
            dx = self._diagnosis(patient, 0)
            if dx is None:
                return
        age, sex = int(net.age[patient]), str(net.sex[patient])
        dxs = [dx]
        if rng.random() < 0.35:  # a second, chronic condition on the claim
            other = self._diagnosis(patient, 0)
            if other is not None and other != dx:
                dxs.append(other)
        days = int(rng.integers(1, 7)) if klass == 2 else 0
        end = start + days * DAY + int(rng.integers(20, 120)) * 60 * S
        code = self.dx.code[dx]
        if klass == 0:
            if code.startswith("Z00"):
                em = next(
                    c
                    for c in ("99391", "99392", "99393", "99394", "99395", "99396", "99397")
                    if px.min_age[px.index(c)] <= age <= px.max_age[px.index(c)]
                )
            else:
                em = ("99212", "99213", "99214", "99215")[
                    int(rng.choice(4, p=[0.15, 0.45, 0.32, 0.08]))
                ]
        elif klass == 1:
            em = ("99283", "99284", "99285")[int(rng.choice(3, p=[0.35, 0.45, 0.2]))]
        else:
            em = ("99221", "99222", "99223")[int(rng.choice(3, p=[0.2, 0.5, 0.3]))]
        items = [em]
        for c in self.dx.procedures[dx]:
            j = px.index(c)
            fits = px.sex[j] in ("A", sex) and px.min_age[j] <= age <= px.max_age[j]
            if fits and (rng.random() < 0.7 or klass == 2):
                items.append(c)
        if klass == 2:
            items += ["99231"] * max(0, days - 1) + ["99238"]
        # who: a hospital's practitioner for inpatient and emergency care
        pool = net.hospital_pr if klass > 0 else np.arange(len(net.pr_npi))
        practitioner = int(pool[int(rng.integers(0, len(pool)))])
        encounter = self.next_encounter
        self.next_encounter += 1
        submitted = end + int(rng.integers(1, 11)) * DAY + int(rng.integers(0, 8 * 3600)) * S
        doc = self._claim(
            submitted, patient, practitioner, klass, encounter, start, end, dxs, items, None
        )
        sends = 0
        bad = self.error_rng.random(3) < self.hl7_error_rate if self.hl7_error_rate else [0] * 3
        if self.emit["adt"]:  # admitted (or registered), then discharged
            self.adt.add(
                t=np.array([start, end]),
                encounter=np.array([encounter, encounter]),
                trigger=np.array([1 if klass == 0 else 0, 2], dtype=np.int8),
                bad=np.array(bad[:2], dtype=np.bool_),
            )
            sends += 2
        if self.emit["dft"]:  # the charges, when the encounter ends
            self.dft.add(
                t=np.array([end]),
                encounter=np.array([encounter]),
                bad=np.array(bad[2:], dtype=np.bool_),
            )
            sends += 1
        if sends:
            keys = ("patient", "practitioner", "org", "class", "encounter", "start", "end",
                    "dxs", "items", "charge")  # fmt: skip
            self.encounters[encounter] = {k: doc[k] for k in keys} | {"sends": sends}

    def _claim(
        self,
        submitted: int,
        patient: int,
        practitioner: int,
        klass: int,
        encounter: int,
        start: int,
        end: int,
        dxs: list[int],
        items: list[str],
        related: int | None,
    ) -> dict[str, Any]:
        rng, net, px = self.rng, self.net, self.px
        org = int(net.pr_org[practitioner])
        factor = ORG_KINDS[int(net.org_kind[org])][1]
        charge = [round(px.fee_cents[px.index(c)] * factor) for c in items]
        number = self.next_claim
        self.next_claim += 1
        doc: dict[str, Any] = {
            "number": number, "patient": patient, "practitioner": practitioner, "org": org,
            "class": klass, "encounter": encounter, "start": start, "end": end, "dxs": dxs,
            "items": items, "charge": charge, "submitted": submitted, "related": related,
        }  # fmt: skip
        self.docs[number] = doc
        error = None
        if self.claim_errors:
            k = int(np.searchsorted(self.claim_error_cdf, self.error_rng.random(), side="right"))
            error = self.claim_errors[k] if k < len(self.claim_errors) else None
        doc["error"] = error
        doc["need"] = (
            self.emit["claim"] + self.emit["claim_response"] + self.emit["explanation_of_benefit"]
        )
        if self.emit["claim"]:
            self.claims.add(t=np.array([submitted]), claim=np.array([number]), dup=np.array([0]))
            if error == "duplicate_claim":  # sent again, hours later: the copy is the error
                again = submitted + int(self.error_rng.integers(1, 48 * 3600)) * S
                self.claims.add(t=np.array([again]), claim=np.array([number]), dup=np.array([1]))
                doc["need"] += 1
        # adjudication
        payer, plan = int(net.payer[patient]), int(net.plan[patient])
        _, fee_factor, coins = PAYERS[payer][1][plan]
        decided = submitted + int(rng.integers(3, 31)) * DAY + int(rng.integers(0, 8 * 3600)) * S
        u = rng.random()
        outcome = "complete" if u < 0.75 or related is not None else (
            "partial" if u < 0.9 else "denied"
        )  # fmt: skip
        denied = np.zeros(len(items), dtype=bool)
        if outcome == "denied":
            denied[:] = True
        elif outcome == "partial":
            if len(items) > 1:  # a line other than the visit itself is denied
                denied[1 + int(rng.integers(0, len(items) - 1))] = True
            else:
                outcome = "complete"
        allowed = [
            0 if denied[i] else min(charge[i], round(px.fee_cents[px.index(c)] * fee_factor))
            for i, c in enumerate(items)
        ]
        benefit = [a - round(a * coins) for a in allowed]
        reason = [
            DENIALS[int(rng.integers(0, len(DENIALS)))][0] if denied[i] else None
            for i in range(len(items))
        ]
        doc.update(
            decided=decided, outcome=outcome, allowed=allowed, benefit=benefit, reason=reason,
            payer=payer, plan=plan,
        )  # fmt: skip
        if self.emit["claim_response"]:
            self.responses.add(t=np.array([decided]), claim=np.array([number]))
        if self.emit["explanation_of_benefit"]:
            self.eobs.add(t=np.array([decided]), claim=np.array([number]))
        if outcome == "denied" and related is None and rng.random() < self.p.resubmit_rate:
            again = decided + int(rng.integers(5, 21)) * DAY
            self._claim(
                again, patient, practitioner, klass, encounter, start, end, dxs, items, number
            )
        return doc

    def sent_encounter(self, numbers: npt.NDArray[np.int64]) -> None:
        for n in numbers.tolist():
            e = self.encounters.get(n)
            if e is not None:
                e["sends"] -= 1
                if e["sends"] <= 0:
                    del self.encounters[n]

    def forget(self, numbers: npt.NDArray[np.int64]) -> None:
        """Documents no stream needs any more (both sent, or their stream is off)."""
        for n in numbers.tolist():
            d = self.docs.get(n)
            if d is not None:
                d["sent"] = d.get("sent", 0) + 1
                if d["sent"] >= d["need"]:
                    del self.docs[n]
