"""The resources a claim's documents reference (its Patient, Practitioner, Organization,
Coverage and payer Organization): contained in the document (``#id``), or entries of its
Bundle (``urn:uuid:`` of a name-based UUID)."""

from __future__ import annotations

import functools
import uuid

import numpy as np
import numpy.typing as npt
import orjson

from datafactory.encoders.documents import DATE, Pool, Program
from datafactory_healthcare.care import CLAIM_ERRORS
from datafactory_healthcare.network import FAMILY, GIVEN, PAYERS, SPECIALTIES, STATES, Network
from datafactory_healthcare.records import Claims

NPI = "http://hl7.org/fhir/sid/us-npi"
TERMS = "http://terminology.hl7.org/CodeSystem/"
COVERAGE_CLASS = TERMS + "coverage-class"
SUBSCRIBER = TERMS + "subscriber-relationship"
DAY = 86_400_000_000
I64 = npt.NDArray[np.int64]


@functools.lru_cache(maxsize=1 << 16)
def _uuid(kind: str, rid: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"datafactory/{kind}/{rid}"))


class Resources:
    def __init__(self, net: Network, contained: bool, start_us: int) -> None:
        self.net = net
        self.contained = contained
        self.start_us = start_us  # ages (birth dates) are as of this day
        self.given, self.family = Pool(GIVEN), Pool(FAMILY)
        self.state = Pool(s for s, _ in STATES)
        self.zip_prefix = Pool((z for _, z in STATES), as_json=False)
        self.pr_npi = Pool(net.pr_npi, as_json=False)
        self.org_npi = Pool(net.org_npi, as_json=False)
        self.org_name = Pool(net.org_names)
        self.specialty = Pool((f'"{c}","display":{_j(n)}' for c, n in SPECIALTIES), as_json=False)
        self.payer_name = Pool(p[0] for p in PAYERS)
        plans = [(k, j) for k, p in enumerate(PAYERS) for j in range(len(p[1]))]
        self.plan_first = np.cumsum([0] + [len(p[1]) for p in PAYERS])[:-1]
        self.plan_name = Pool(PAYERS[k][1][j][0] for k, j in plans)
        self.plan_value = Pool((f"PLAN-{k + 1}-{j + 1}" for k, j in plans), as_json=False)

    def ref(self, p: Program, kind: str, rows: I64) -> Program:
        """A reference to the resource ``kind`` of each row (its patient, practitioner, ...)."""
        if not self.contained:
            p.text("urn:uuid:")
            return self.uuids(p, _KIND[kind], [self._rid(kind, int(r)) for r in rows.tolist()])
        p.text("#")
        return self._id(p, kind, rows)

    def _id(self, p: Program, kind: str, rows: I64) -> Program:
        if kind == "Patient":
            return p.text("pat-").integer(rows + 1, 7)
        if kind == "Coverage":
            return p.text("cov-pat-").integer(rows + 1, 7)
        if kind == "Practitioner":
            return p.text("pr-").pool(rows, self.pr_npi)
        if kind == "Organization":
            return p.text("org-").pool(rows, self.org_npi)
        return p.text("payer-").integer(rows + 1)  # Payer

    def _rid(self, kind: str, row: int) -> str:
        net = self.net
        return {
            "Patient": lambda: f"pat-{row + 1:07d}",
            "Coverage": lambda: f"cov-pat-{row + 1:07d}",
            "Practitioner": lambda: f"pr-{net.pr_npi[row]}",
            "Organization": lambda: f"org-{net.org_npi[row]}",
            "Payer": lambda: f"payer-{row + 1}",
        }[kind]()

    def uuids(self, p: Program, kind: str, rids: list[str]) -> Program:
        pool = Pool((_uuid(kind, r) for r in rids), as_json=False)
        return p.pool(np.arange(len(rids)), pool)

    def referenced(self, p: Program, c: Claims, err: I64) -> None:
        """Patient, Practitioner, Organization, Coverage, payer: contained, or Bundle entries."""
        payer = self.net.payer[c.patient]
        parts = (
            ("Patient", c.patient, self._patient),
            ("Practitioner", c.practitioner, lambda q, rows: self._practitioner(q, rows, c, err)),
            ("Organization", c.org, self._organization),
            ("Coverage", c.patient, self._coverage),
            ("Payer", payer, self._payer),
        )
        for i, (kind, rows, resource) in enumerate(parts):
            if i:
                p.text(",")
            if not self.contained:
                p.text('{"fullUrl":"')
                self.ref(p, kind, rows).text('","resource":')
            resource(p, rows)
            if not self.contained:
                p.text("}")

    def _patient(self, p: Program, rows: I64) -> None:
        net = self.net
        p.text('{"resourceType":"Patient","id":"')
        self._id(p, "Patient", rows).text(
            '","identifier":[{"system":"urn:datafactory:mrn","value":"'
        )
        self._id(p, "Patient", rows).text('"}],"name":[{"family":')
        p.pool(net.family[rows], self.family).text(',"given":[')
        p.pool(net.given[rows], self.given).text(']}],"gender":"')
        p.pool((net.sex[rows] == "M").astype(np.int64), _GENDER).text('","birthDate":"')
        p.time(self.start_us - net.birth_offset_days[rows] * DAY, DATE)
        p.text('","address":[{"state":').pool(net.state[rows], self.state)
        p.text(',"postalCode":"').pool(net.state[rows], self.zip_prefix)
        p.integer(net.zip[rows], 2).text('","country":"US"}]}')

    def _practitioner(self, p: Program, rows: I64, c: Claims, err: I64) -> None:
        net = self.net
        npi, npi_pool = rows, self.pr_npi
        bad = np.flatnonzero(err == CLAIM_ERRORS.index("invalid_npi"))
        if len(bad):  # the practitioner's NPI with a wrong check digit
            wrong = [net.pr_npi[r] for r in rows[bad].tolist()]
            npi_pool = npi_pool.extended([w[:9] + str((int(w[9]) + 1) % 10) for w in wrong])
            npi = rows.copy()
            npi[bad] = len(self.pr_npi) + np.arange(len(bad))
        p.text('{"resourceType":"Practitioner","id":"')
        self._id(p, "Practitioner", rows).text(f'","identifier":[{{"system":"{NPI}","value":"')
        p.pool(npi, npi_pool).text('"}],"name":[{"family":')
        p.pool(net.pr_family[rows], self.family).text(',"given":[')
        p.pool(net.pr_given[rows], self.given).text('],"prefix":["Dr."]}],')
        p.text('"qualification":[{"code":{"coding":[{"system":"http://nucc.org/provider-taxonomy"')
        p.text(',"code":').pool(net.pr_specialty[rows], self.specialty).text("}]}}]}")

    def _organization(self, p: Program, rows: I64) -> None:
        net = self.net
        p.text('{"resourceType":"Organization","id":"')
        self._id(p, "Organization", rows).text(f'","identifier":[{{"system":"{NPI}","value":"')
        p.pool(rows, self.org_npi).text('"}],"active":true,"name":')
        p.pool(rows, self.org_name).text(',"address":[{"state":')
        p.pool(net.org_state[rows], self.state).text(',"country":"US"}]}')

    def _coverage(self, p: Program, rows: I64) -> None:
        net = self.net
        payer = net.payer[rows]
        plan = self.plan_first[payer] + net.plan[rows]
        p.text('{"resourceType":"Coverage","id":"')
        self._id(p, "Coverage", rows).text('","status":"active","subscriberId":"M')
        p.integer(net.member[rows]).text('","beneficiary":{"reference":"')
        self.ref(p, "Patient", rows)
        p.text(f'"}},"relationship":{{"coding":[{{"system":"{SUBSCRIBER}","code":"self"}}]}},')
        p.text('"payor":[{"reference":"')
        self.ref(p, "Payer", payer)
        p.text(
            f'"}}],"class":[{{"type":{{"coding":[{{"system":"{COVERAGE_CLASS}","code":"plan"}}]}},'
        )
        p.text('"value":"').pool(plan, self.plan_value).text('","name":')
        p.pool(plan, self.plan_name).text("}]}")

    def _payer(self, p: Program, rows: I64) -> None:
        p.text('{"resourceType":"Organization","id":"')
        self._id(p, "Payer", rows)
        p.text('","identifier":[{"system":"urn:datafactory:payer","value":"P')
        p.integer(rows + 1, 3).text('"}],"active":true,"name":')
        p.pool(rows, self.payer_name).text("}")


_KIND = {
    "Patient": "Patient",
    "Coverage": "Coverage",
    "Practitioner": "Practitioner",
    "Organization": "Organization",
    "Payer": "Organization",
}
_GENDER = Pool(("female", "male"), as_json=False)


def _j(s: str) -> str:
    return orjson.dumps(s).decode()
