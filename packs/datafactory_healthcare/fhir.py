"""FHIR R4 JSON: ``Claim``, ``ClaimResponse`` and ``ExplanationOfBenefit`` with the
``Patient``, ``Practitioner``, ``Organization`` and ``Coverage`` they reference — contained in
the resource, or all of them entries of a ``collection`` Bundle (``fhir_packaging``).

A block's documents are rendered at once from its claims' columns (:class:`Claims`) by a
document program (``datafactory.encoders.documents``): the compiled renderer, or the same
program in Python. A claim's one injected error changes its columns before rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.encoders.documents import DATE, ISO_SECONDS, Pool, Program, texts
from datafactory_healthcare.care import CLAIM_ERRORS, CLASSES, DENIALS, Care
from datafactory_healthcare.fhir_resources import Resources
from datafactory_healthcare.records import Claims

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
DAY = 86_400 * US
FHIR_OUTCOME = ("complete", "partial", "error")
DISPOSITION = (
    "Claim settled as billed under the plan",
    "Claim partially paid: see denied lines",
    "Claim denied",
)
I64 = npt.NDArray[np.int64]
_Body = Callable[[Program, "Claims"], Any]


def error_field(kind: str, lines: int) -> str:
    """Where a claim's error is (ground truth)."""
    return {
        "invalid_icd10": "Claim.diagnosis[0].diagnosisCodeableConcept.coding[0].code",
        "sex_age_mismatch": "Claim.diagnosis[0].diagnosisCodeableConcept.coding[0].code",
        "invalid_npi": "Practitioner.identifier[0].value",
        "service_after_submission": f"Claim.item[{lines - 1}].servicedDate",
        "amounts_mismatch": "Claim.total",
        "missing_fhir_element": "Claim.priority",
        "duplicate_claim": "Claim.identifier",
    }[kind]


class Renderer:
    def __init__(self, care: Care, packaging: str, start_us: int) -> None:
        self.care = care
        self.net = net = care.net
        self.packaging = packaging
        self.contained = packaging == "contained"
        self.start_us = start_us
        self.res = Resources(net, self.contained, start_us)
        dx, px = care.dx, care.px
        self.dx_code, self.dx_desc = Pool(dx.code), Pool(dx.description)
        self.px_code, self.px_desc = Pool(px.code), Pool(px.description)
        self.px_system = Pool(HCPCS if c[0].isalpha() else CPT for c in px.code)
        self.carc = Pool((c for c, _ in DENIALS), as_json=False)
        self.claim_type = Pool(("professional", "professional", "institutional"), as_json=False)
        self.klass = Pool(CLASSES, as_json=False)
        self.outcome = Pool(FHIR_OUTCOME, as_json=False)
        self.disposition = Pool(DISPOSITION)

    # -- documents ---------------------------------------------------------------------------

    def claims(self, c: Claims) -> tuple[str, ...]:
        """Each claim's ``Claim`` (its injected error in it)."""
        return self._documents(c, "Claim", "claim", c.submitted, self._claim)

    def claim_responses(self, c: Claims) -> tuple[str, ...]:
        return self._documents(c, "ClaimResponse", "cr", c.decided, self._claim_response)

    def explanations_of_benefit(self, c: Claims) -> tuple[str, ...]:
        return self._documents(c, "ExplanationOfBenefit", "eob", c.decided, self._eob)

    def _documents(
        self,
        c: Claims,
        kind: str,
        prefix: str,
        created: I64,
        body: Callable[[Program, Claims], Any],
    ) -> tuple[str, ...]:
        p = Program()
        err = c.error if kind == "Claim" else np.full(c.n, -1)
        if self.contained:
            body(p, c)
            p.text(',"contained":[')
            self.res.referenced(p, c, err)
            p.text("]}")
            return texts(c.n, p)
        p.text('{"resourceType":"Bundle","id":"bundle-').text(prefix + "-").integer(c.number)
        p.text('","type":"collection","timestamp":"').time(created, ISO_SECONDS)
        p.text('+00:00","entry":[{"fullUrl":"urn:uuid:')
        rids = [f"{prefix}-{n}" for n in c.number.tolist()]
        self.res.uuids(p, kind, rids).text('","resource":')
        body(p, c)
        p.text("}},")  # the resource, its entry
        self.res.referenced(p, c, err)
        p.text("]}")
        return texts(c.n, p)

    def _claim(self, p: Program, c: Claims) -> None:
        err = c.error
        self._head(p, c, "Claim", "claim", "claim").text(",")
        self._period(p, c).text(',"created":"').time(c.submitted, ISO_SECONDS).text('Z",')
        self._provider(p, c)
        missing = err == CLAIM_ERRORS.index("missing_fhir_element")  # Claim.priority is 1..1
        p.optional(
            ~missing,
            lambda q: q.text(
                f',"priority":{{"coding":[{{"system":"{PRIORITY}","code":"normal"}}]}}'
            ),
        )
        p.text(",")
        self._insurer(p, c).text(",")
        self._facility(p, c).text(",")
        self._diagnoses(p, c, broken=True)
        p.text(',"insurance":[{"sequence":1,"focal":true,"coverage":{"reference":"')
        self.res.ref(p, "Coverage", c.patient).text('"}}],"item":')
        served = c.item_served
        late = np.flatnonzero(err == CLAIM_ERRORS.index("service_after_submission"))
        if len(late):  # the last line served after the claim was submitted
            served = served.copy()
            served[c.item_off[late + 1] - 1] = c.submitted[late] + 3 * DAY
        p.repeat(c.item_off, lambda q: self._claim_item(q, c, served), json_array=True)
        total = c.total
        wrong = np.flatnonzero(err == CLAIM_ERRORS.index("amounts_mismatch"))
        if len(wrong):  # the total is not the sum of the lines
            total = total.copy()
            total[wrong] += 1000 + c.number[wrong] % 5000
        p.text(',"total":')
        _money(p, total)
        p.text(',"extension":[{"url":"urn:datafactory:encounter-class","valueCode":"')
        p.pool(c.klass, self.klass).text('"}]')
        p.optional(
            c.related >= 0,
            lambda q: (
                q.text(',"related":[{"claim":{"reference":"Claim/claim-')
                .integer(c.related[c.related >= 0])
                .text(
                    f'"}},"relationship":{{"coding":[{{"system":"{RELATED}","code":"prior"}}]}}}}]'
                )
            ),
        )

    def _claim_item(self, q: Program, c: Claims, served: I64) -> None:
        q.text('{"sequence":').integer(c.item_seq).text(',"diagnosisSequence":[1],')
        self._product(q, c).text(',"servicedDate":"').time(served, DATE)
        q.text('","quantity":{"value":1},"unitPrice":')
        _money(q, c.item_charge).text(',"net":')
        _money(q, c.item_charge).text(',"encounter":[{"reference":"Encounter/enc-')
        q.integer(c.encounter[c.item_row]).text('"}]}')

    def _claim_response(self, p: Program, c: Claims) -> None:
        self._head(p, c, "ClaimResponse", "cr", "claim-response")
        p.text(',"created":"').time(c.decided, ISO_SECONDS).text('Z",')
        self._insurer(p, c).text(',"requestor":{"reference":"')
        self.res.ref(p, "Practitioner", c.practitioner)
        p.text('"},"request":{"reference":"Claim/claim-').integer(c.number)
        p.text('"},"outcome":"').pool(c.outcome, self.outcome).text('","disposition":')
        p.pool(c.outcome, self.disposition).text(',"item":')
        p.repeat(
            c.item_off,
            lambda q: self._adjudication(
                q.text('{"itemSequence":').integer(c.item_seq).text(","), c
            ).text("}"),
            json_array=True,
        )
        p.text(',"total":')
        self._totals(p, c)
        p.text(
            f',"payment":{{"type":{{"coding":[{{"system":"{PAYMENT_TYPE}","code":"complete"}}]}},'
        )
        p.text('"date":"').time(c.decided, DATE).text('","amount":')
        _money(p, np.add.reduceat(c.benefit, c.item_off[:-1])).text("}")
        denied = c.outcome == 2  # denied
        first = c.reason[c.item_off[:-1][denied]]
        p.optional(
            denied,
            lambda q: (
                q.text(f',"error":[{{"code":{{"coding":[{{"system":"{CARC}","code":"')
                .pool(first, self.carc)
                .text('"}]}}]')
            ),
        )

    def _eob(self, p: Program, c: Claims) -> None:
        self._head(p, c, "ExplanationOfBenefit", "eob", "eob").text(",")
        self._period(p, c).text(',"created":"').time(c.decided, ISO_SECONDS).text('Z",')
        self._insurer(p, c).text(",")
        self._provider(p, c).text(",")
        self._facility(p, c).text(',"claim":{"reference":"Claim/claim-').integer(c.number)
        p.text('"},"claimResponse":{"reference":"ClaimResponse/cr-').integer(c.number)
        p.text('"},"outcome":"').pool(c.outcome, self.outcome).text('",')
        self._diagnoses(p, c, broken=False)
        p.text(',"insurance":[{"focal":true,"coverage":{"reference":"')
        self.res.ref(p, "Coverage", c.patient).text('"}}],"item":')

        def item(q: Program) -> None:
            q.text('{"sequence":').integer(c.item_seq).text(",")
            self._product(q, c).text(',"servicedDate":"').time(c.item_served, DATE)
            q.text('","net":')
            _money(q, c.item_charge).text(",")
            self._adjudication(q, c).text("}")

        p.repeat(c.item_off, item, json_array=True)
        p.text(',"total":')
        self._totals(p, c)
        p.text(',"payment":{"date":"').time(c.decided, DATE).text('","amount":')
        _money(p, np.add.reduceat(c.benefit, c.item_off[:-1])).text("}")

    # -- the parts documents share -----------------------------------------------------------

    def _head(self, p: Program, c: Claims, kind: str, prefix: str, system: str) -> Program:
        """What every document begins with: its type, id, identifier, status, claim type,
        use, and patient."""
        p.text(f'{{"resourceType":"{kind}","id":"{prefix}-').integer(c.number)
        p.text(f'","identifier":[{{"system":"urn:datafactory:{system}","value":"')
        p.integer(c.number).text('"}],"status":"active",')
        self._type(p, c).text(',"use":"claim",')
        return self._patient_ref(p, c)

    def _type(self, p: Program, c: Claims) -> Program:
        p.text(f'"type":{{"coding":[{{"system":"{CLAIM_TYPE}","code":"')
        return p.pool(c.klass, self.claim_type).text('"}]}')

    def _patient_ref(self, p: Program, c: Claims) -> Program:
        p.text('"patient":{"reference":"')
        return self.res.ref(p, "Patient", c.patient).text('"}')

    def _period(self, p: Program, c: Claims) -> Program:
        p.text('"billablePeriod":{"start":"').time(c.start, ISO_SECONDS).text('Z","end":"')
        return p.time(c.end, ISO_SECONDS).text('Z"}')

    def _provider(self, p: Program, c: Claims) -> Program:
        p.text('"provider":{"reference":"')
        return self.res.ref(p, "Practitioner", c.practitioner).text('"}')

    def _insurer(self, p: Program, c: Claims) -> Program:
        p.text('"insurer":{"reference":"')
        return self.res.ref(p, "Payer", self.net.payer[c.patient]).text('"}')

    def _facility(self, p: Program, c: Claims) -> Program:
        p.text('"facility":{"reference":"')
        return self.res.ref(p, "Organization", c.org).text('"}')

    def _product(self, q: Program, c: Claims) -> Program:
        q.text('"productOrService":{"coding":[{"system":').pool(c.item_px, self.px_system)
        q.text(',"code":').pool(c.item_px, self.px_code)
        return q.text(',"display":').pool(c.item_px, self.px_desc).text("}]}")

    def _diagnoses(self, p: Program, c: Claims, broken: bool) -> None:
        dx, code_pool = c.dx, self.dx_code
        if broken:
            first = c.dx_off[:-1]
            swap = np.flatnonzero(c.error == CLAIM_ERRORS.index("sex_age_mismatch"))
            if len(swap):  # a real code the patient's sex rules out
                dx = dx.copy()
                care = self.care
                for row in swap.tolist():
                    sex = str(self.net.sex[c.patient[row]])
                    wrong = [i for i, x in enumerate(care.dx.sex) if x not in ("A", sex)]
                    dx[first[row]] = wrong[int(c.number[row]) % len(wrong)]
            bad = np.flatnonzero(c.error == CLAIM_ERRORS.index("invalid_icd10"))
            codes = dx
            if len(bad):  # not an ICD-10-CM code at all: a digit where a letter goes
                texts_ = [
                    str(int(c.number[r]) % 10) + self.care.dx.code[dx[first[r]]][1:]
                    for r in bad.tolist()
                ]
                code_pool = code_pool.extended(texts_)
                codes = dx.copy()
                codes[first[bad]] = len(self.dx_code) + np.arange(len(bad))
        else:
            codes = dx
        seq = np.arange(len(dx)) - np.repeat(c.dx_off[:-1], np.diff(c.dx_off)) + 1
        p.text('"diagnosis":').repeat(
            c.dx_off,
            lambda q: q.text('{"sequence":').integer(seq)
            .text(f',"diagnosisCodeableConcept":{{"coding":[{{"system":"{ICD10}","code":')
            .pool(codes, code_pool).text(',"display":').pool(dx, self.dx_desc).text("}]}}"),
            json_array=True,
        )  # fmt: skip

    def _adjudication(self, q: Program, c: Claims) -> Program:
        q.text('"adjudication":[')
        _category(q, "submitted")
        _money(q, c.item_charge).text("},")
        _category(q, "eligible")
        _money(q, c.allowed)
        denied = c.reason >= 0
        q.optional(
            denied,
            lambda r: (
                r.text(f',"reason":{{"coding":[{{"system":"{CARC}","code":"')
                .pool(c.reason[denied], self.carc)
                .text('"}]}')
            ),
        )
        q.text("},")
        _category(q, "benefit")
        return _money(q, c.benefit).text("}]")

    def _totals(self, p: Program, c: Claims) -> None:
        starts = c.item_off[:-1]
        p.text("[")
        for name, values in (("submitted", c.item_charge), ("eligible", c.allowed),
                             ("benefit", c.benefit)):  # fmt: skip
            _category(p, name)
            _money(p, np.add.reduceat(values, starts)).text("}" if name == "benefit" else "},")
        p.text("]")

    # -- the referenced resources ------------------------------------------------------------


_PRIORITY = f',"priority":{{"coding":[{{"system":"{PRIORITY}","code":"normal"}}]}}'


def _money(p: Program, cents: npt.ArrayLike) -> Program:
    return p.text('{"value":').decimal(cents, 2).text(',"currency":"USD"}')


def _category(p: Program, code: str) -> None:
    p.text(f'{{"category":{{"coding":[{{"system":"{ADJ}","code":"{code}"}}]}},"amount":')
