"""The care -> claim -> adjudication lifecycle (of the network's patients, ``network.py``).

Encounters happen at ``visits_per_year`` per patient (Poisson per day), outpatient,
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

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.engine.timeline import PendingEvents, Steps
from datafactory_healthcare import codes
from datafactory_healthcare.network import ORG_KINDS, PAYERS, Network
from datafactory_healthcare.records import Batch, Records, offsets, ragged_take

S = 1_000_000
I64 = npt.NDArray[np.int64]
AGES = 121  # ages the tables cover (patients are 0-99)
DAY = 86_400 * S
YEAR = 365.25 * DAY
CLASSES = ("AMB", "EMER", "IMP")  # FHIR v3 ActCode: ambulatory, emergency, inpatient
CLASS_LETTER = ("o", "e", "i")
CLASS_P = np.array([0.86, 0.1, 0.04])
# what can be wrong with a claim (at most one kind per claim), and with an HL7 message
CLAIM_ERRORS = ("invalid_icd10", "sex_age_mismatch", "invalid_npi", "service_after_submission",
                "amounts_mismatch", "duplicate_claim", "missing_fhir_element")  # fmt: skip
ERROR_KINDS = (*CLAIM_ERRORS, "malformed_hl7")
# adjustment reason codes (X12 CARC) for denied lines
DENIALS = (("16", "Claim/service lacks information needed for adjudication"),
           ("50", "Not deemed a medical necessity by the payer"),
           ("97", "Payment included in the allowance for another service"),
           ("29", "The time limit for filing has expired"),
           ("204", "Service not covered under the patient's current benefit plan"))  # fmt: skip


class Tables:
    """Per (sex, class, age): the diagnoses' cumulative weights (what fits the patient); per
    diagnosis: its usual procedures; per age: the preventive visit's code; per plan: its fee
    factor and coinsurance. The same for every run (not part of a saved state)."""

    def __init__(self) -> None:
        d, px = codes.diagnoses(), codes.procedures()
        ages = np.arange(AGES)
        cdf = np.zeros((2, 3, AGES, len(d.code)))
        for si, sex in enumerate(("F", "M")):
            for c in range(3):
                kind = np.array(
                    [(s in ("A", sex)) and (CLASS_LETTER[c] in cl)
                     for s, cl in zip(d.sex, d.classes, strict=True)]
                )  # fmt: skip
                ok = kind & (d.min_age <= ages[:, None]) & (ages[:, None] <= d.max_age)
                cdf[si, c] = np.cumsum(d.weight * ok, axis=1)
        self.dx_cdf = cdf
        self.dx_proc_off = offsets([len(x) for x in d.procedures])
        self.dx_proc = np.array([px.index(c) for x in d.procedures for c in x], dtype=np.int64)
        self.routine = np.array([c.startswith("Z00") for c in d.code])
        preventive = ("99391", "99392", "99393", "99394", "99395", "99396", "99397")
        self.preventive = np.array(
            [next(px.index(c) for c in preventive if px.min_age[px.index(c)] <= a <= px.max_age[
                px.index(c)]) for a in ages]
        )  # fmt: skip
        self.px_sex = np.array([{"A": 2, "F": 0, "M": 1}[x] for x in px.sex])
        self.em = tuple(
            (np.array([px.index(c) for c in codes_]), np.cumsum(p))
            for codes_, p in (
                (("99212", "99213", "99214", "99215"), (0.15, 0.45, 0.32, 0.08)),
                (("99283", "99284", "99285"), (0.35, 0.45, 0.2)),
                (("99221", "99222", "99223"), (0.2, 0.5, 0.3)),
            )
        )
        self.daily, self.discharge = px.index("99231"), px.index("99238")
        plans = [(f, c) for _, pl, _, _ in PAYERS for _, f, c in pl]
        self.plan_first = np.cumsum([0] + [len(x[1]) for x in PAYERS])[:-1]
        self.fee_factor = np.array([f for f, _ in plans])
        self.coinsurance = np.array([c for _, c in plans])


@functools.cache
def tables() -> Tables:
    return Tables()


class Care(Steps):
    """Encounters, claims and adjudications: the clock moves in steps of an hour, the care is
    made a day at a time (numpy over the day's encounters; what each stream needs is kept as
    columns in :attr:`records`)."""

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
        batch shard's); ``number_base``: where its claim and encounter numbers start.
        ``error_rng`` decides the injected errors alone, so the same seed gives the same
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
        self.error_index = np.array([CLAIM_ERRORS.index(x) for x in self.claim_errors] + [-1])
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
        self.records = Records()
        self.patients = patients or (0, p.patients)
        self.next_claim = number_base + 1
        self.next_encounter = number_base + 1
        self.made_until = 0  # the care is made up to here (a day ahead of the clock at most)

    def _diagnoses(self, sex: I64, klass: I64, age: I64) -> I64:
        """A diagnosis per encounter, by frequency among those that fit (-1: none fits)."""
        cdf = tables().dx_cdf[sex, klass, age]
        total = cdf[:, -1]
        u = self.rng.random(len(sex)) * total
        dx = (cdf <= u[:, None]).sum(axis=1)
        return np.where(total > 0, np.minimum(dx, cdf.shape[1] - 1), -1)

    def _step(self, t0: int, t1: int) -> None:
        """An hour: the model makes a (UTC) day's care at once, at the first hour of it it
        simulates (its events wait in the streams' buffers until their time comes)."""
        if t0 >= self.made_until:
            self.made_until = (t0 // DAY + 1) * DAY
            self._day(t0, self.made_until)

    def _day(self, t0: int, t1: int) -> None:
        p, rng, net = self.p, self.rng, self.net
        lo, hi = self.patients
        lam = (hi - lo) * p.visits_per_year * (t1 - t0) / YEAR
        k = int(rng.poisson(lam))
        if not k:
            return
        start = np.sort(t0 + (rng.random(k) * (t1 - t0)).astype(np.int64) + 1)
        patient = rng.integers(lo, hi, k)
        klass = rng.choice(3, k, p=CLASS_P)
        sex = (net.sex[patient] == "M").astype(np.int64)
        age = net.age[patient]
        dx = self._diagnoses(sex, klass, age)
        none = dx < 0  # nothing fits this class: an outpatient visit
        klass[none] = 0
        dx[none] = self._diagnoses(sex[none], klass[none], age[none])
        keep = dx >= 0
        start, patient, klass, sex, age, dx = (
            x[keep] for x in (start, patient, klass, sex, age, dx)
        )
        k = len(start)
        if not k:
            return
        # a second, chronic condition on a third of the claims
        second = self._diagnoses(sex, np.zeros(k, dtype=np.int64), age)
        second[(rng.random(k) >= 0.35) | (second == dx)] = -1
        days = np.where(klass == 2, rng.integers(1, 7, k), 0)
        end = start + days * DAY + rng.integers(20, 120, k) * 60 * S
        items_off, item_px, served = self._lines(klass, dx, sex, age, days, start, end)
        # who: a hospital's practitioner for inpatient and emergency care
        pool_size = np.where(klass > 0, len(net.hospital_pr), len(net.pr_npi))
        pick = rng.integers(0, pool_size)
        practitioner = np.where(
            klass > 0, net.hospital_pr[np.minimum(pick, len(net.hospital_pr) - 1)], pick
        )
        org = net.pr_org[practitioner]
        submitted = end + rng.integers(1, 11, k) * DAY + rng.integers(0, 8 * 3600, k) * S
        factor = np.array([f for _, f in ORG_KINDS])[net.org_kind[org]]
        charge = np.rint(self.px.fee_cents[item_px] * np.repeat(factor, np.diff(items_off)))
        charge = charge.astype(np.int64)
        has2 = second >= 0
        dx_off = offsets(1 + has2)
        dxs = np.empty(int(dx_off[-1]), dtype=np.int64)
        dxs[dx_off[:-1]] = dx
        dxs[dx_off[:-1][has2] + 1] = second[has2]
        enc_first = self.next_encounter
        self.next_encounter += k
        encounter = enc_first + np.arange(k)
        claims = self._claims(patient, submitted, np.arange(k), items_off, item_px, charge)
        enc_sends = np.zeros(k, dtype=np.int64)
        bad = (
            self.error_rng.random((k, 3)) < self.hl7_error_rate
            if self.hl7_error_rate
            else np.zeros((k, 3), dtype=np.bool_)
        )
        if self.emit["adt"]:  # admitted (or registered), then discharged
            self.adt.add(
                t=np.concatenate([start, end]),
                encounter=np.concatenate([encounter, encounter]),
                trigger=np.concatenate([np.where(klass == 0, 1, 0), np.full(k, 2)]).astype(np.int8),
                bad=np.concatenate([bad[:, 0], bad[:, 1]]),
            )
            enc_sends += 2
        if self.emit["dft"]:  # the charges, when the encounter ends
            self.dft.add(t=end, encounter=encounter, bad=bad[:, 2])
            enc_sends += 1
        self.records.add(
            Batch(
                enc_first=enc_first,
                claim_first=claims.pop("first"),
                enc={"patient": patient, "practitioner": practitioner, "org": org,
                     "klass": klass, "start": start, "end": end},
                dx_off=dx_off,
                dx=dxs,
                item_off=items_off,
                items={"px": item_px, "charge": charge, "served": served},
                claim=claims["claim"],
                claim_item_off=claims["item_off"],
                claim_items=claims["items"],
                enc_sends=enc_sends,
                claim_sends=claims["sends"],
            )
        )  # fmt: skip

    def _lines(
        self, klass: I64, dx: I64, sex: I64, age: I64, days: I64, start: I64, end: I64
    ) -> tuple[npt.NDArray[np.int32], I64, I64]:
        """Each encounter's lines: the visit's E/M code, the diagnosis's usual procedures that
        fit the patient (all of them for an inpatient stay, else 70 %), then daily inpatient
        care and the discharge; each line's service time."""
        rng, px = self.rng, self.px
        k = len(klass)
        u = rng.random(k)
        em = tables().preventive[age].copy()
        for c, (codes_, cdf) in enumerate(tables().em):
            rows = (klass == c) & ~((c == 0) & tables().routine[dx])
            em[rows] = codes_[np.minimum(np.searchsorted(cdf, u[rows], "right"), len(codes_) - 1)]
        # the diagnosis's procedures
        poff, flat = ragged_take(tables().dx_proc_off, dx)
        cand = tables().dx_proc[flat]
        owner = np.repeat(np.arange(k), np.diff(poff))
        fits = (
            ((tables().px_sex[cand] == 2) | (tables().px_sex[cand] == sex[owner]))
            & (px.min_age[cand] <= age[owner])
            & (age[owner] <= px.max_age[cand])
        )
        kept = fits & ((rng.random(len(cand)) < 0.7) | (klass[owner] == 2))
        # order: E/M, procedures, daily care (day 1 ..), discharge
        stay = np.where(klass == 2, days, 0)  # days - 1 daily lines + the discharge
        daily_owner = np.repeat(np.arange(k), np.maximum(stay - 1, 0))
        day_no = (
            np.arange(len(daily_owner))
            - np.repeat(offsets(np.maximum(stay - 1, 0))[:-1], np.maximum(stay - 1, 0))
            + 1
        )
        out_owner = np.concatenate([np.arange(k), owner[kept], daily_owner, np.flatnonzero(stay)])
        part = np.concatenate([np.zeros(k), np.ones(int(kept.sum())), np.full(len(daily_owner), 2),
                               np.full(int((stay > 0).sum()), 3)])  # fmt: skip
        code = np.concatenate([em, cand[kept], np.full(len(daily_owner), tables().daily),
                               np.full(int((stay > 0).sum()), tables().discharge)])  # fmt: skip
        when = np.concatenate([start, start[owner[kept]], start[daily_owner] + day_no * DAY,
                               end[stay > 0]])  # fmt: skip
        order = np.lexsort((part, out_owner))
        return offsets(np.bincount(out_owner, minlength=k)), code[order], when[order]

    def _claims(
        self,
        patient: I64,
        submitted: I64,
        enc_rows: I64,
        item_off: npt.NDArray[np.int32],
        item_px: I64,
        charge: I64,
    ) -> dict[str, Any]:
        """The step's claims (one per encounter, then the corrected resubmissions of some
        denied ones), adjudicated, and their events."""
        rng = self.rng
        k = len(patient)
        related = np.full(k, -1, dtype=np.int64)
        first = self.next_claim
        parts = [self._adjudicate(patient, submitted, enc_rows, related, item_off, item_px, charge)]
        denied = (parts[0]["claim"]["outcome"] == 2) & (rng.random(k) < self.p.resubmit_rate)
        if denied.any():  # corrected and sent again: a new claim that names the first
            again = (
                parts[0]["claim"]["decided"][denied] + rng.integers(5, 21, int(denied.sum())) * DAY
            )
            numbers = first + np.flatnonzero(denied)
            parts.append(
                self._adjudicate(patient[denied], again, enc_rows[denied], numbers, item_off,
                                 item_px, charge)
            )  # fmt: skip
        out: dict[str, Any] = {"first": first}
        out["claim"] = {
            key: np.concatenate([x["claim"][key] for x in parts]) for key in parts[0]["claim"]
        }
        out["items"] = {
            key: np.concatenate([x["items"][key] for x in parts]) for key in parts[0]["items"]
        }
        lines = np.diff(item_off)[out["claim"]["enc"]]
        out["item_off"] = offsets(lines)
        out["sends"] = np.concatenate([x["sends"] for x in parts])
        return out

    def _adjudicate(
        self,
        patient: I64,
        submitted: I64,
        enc_rows: I64,
        related: I64,
        item_off: npt.NDArray[np.int32],
        item_px: I64,
        charge: I64,
    ) -> dict[str, Any]:
        rng, net = self.rng, self.net
        k = len(patient)
        number = self.next_claim + np.arange(k)
        self.next_claim += k
        error = np.full(k, -1, dtype=np.int64)
        if self.claim_errors:
            e = np.searchsorted(self.claim_error_cdf, self.error_rng.random(k), side="right")
            error = self.error_index[e]
        sends = np.full(
            k, sum(self.emit[s] for s in ("claim", "claim_response", "explanation_of_benefit"))
        )
        if self.emit["claim"]:
            self.claims.add(t=submitted, claim=number, dup=np.zeros(k, dtype=np.int64))
            dup = np.flatnonzero(error == CLAIM_ERRORS.index("duplicate_claim"))
            if len(dup):  # sent again, hours later: the copy is the error
                again = submitted[dup] + self.error_rng.integers(1, 48 * 3600, len(dup)) * S
                self.claims.add(t=again, claim=number[dup], dup=np.ones(len(dup), dtype=np.int64))
                sends[dup] += 1
        # adjudication
        plan = tables().plan_first[net.payer[patient]] + net.plan[patient]
        fee_factor, coins = tables().fee_factor[plan], tables().coinsurance[plan]
        decided = submitted + rng.integers(3, 31, k) * DAY + rng.integers(0, 8 * 3600, k) * S
        u = rng.random(k)
        outcome = np.where((u < 0.75) | (related >= 0), 0, np.where(u < 0.9, 1, 2))
        lines_off, flat = ragged_take(item_off, enc_rows)
        lines = np.diff(lines_off)
        owner = np.repeat(np.arange(k), lines)
        outcome[(outcome == 1) & (lines <= 1)] = 0  # one line: nothing to deny but the visit
        denied = outcome[owner] == 2
        partial = np.flatnonzero(outcome == 1)
        if len(partial):  # a line other than the visit itself is denied
            pick = 1 + rng.integers(0, lines[partial] - 1)
            denied[lines_off[partial] + pick] = True
        px = item_px[flat]
        allowed = np.minimum(charge[flat], np.rint(self.px.fee_cents[px] * fee_factor[owner]))
        allowed = np.where(denied, 0, allowed).astype(np.int64)
        benefit = allowed - np.rint(allowed * coins[owner]).astype(np.int64)
        reason = np.full(len(flat), -1, dtype=np.int64)
        reason[denied] = rng.integers(0, len(DENIALS), int(denied.sum()))
        if self.emit["claim_response"]:
            self.responses.add(t=decided, claim=number)
        if self.emit["explanation_of_benefit"]:
            self.eobs.add(t=decided, claim=number)
        return {
            "claim": {"enc": enc_rows, "submitted": submitted, "related": related,
                      "error": error, "decided": decided, "outcome": outcome},
            "items": {"allowed": allowed, "benefit": benefit, "reason": reason},
            "sends": sends,
        }  # fmt: skip

    def sent_encounter(self, numbers: I64) -> None:
        self.records.sent_encounters(numbers)

    def forget(self, numbers: I64) -> None:
        """Documents no stream needs any more (all sent, or their stream is off)."""
        self.records.sent_claims(numbers)
