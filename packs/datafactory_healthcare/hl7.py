"""HL7 v2.5 messages, pipe-delimited, segments separated by carriage returns: ADT^A01
(admission: inpatient and emergency), ADT^A04 (outpatient registration), ADT^A03 (discharge
or end of visit) and DFT^P03 (the encounter's charges: one FT1 per line, then its DG1s).

A block's messages are rendered at once from its encounters' columns by a document program
(``datafactory.encoders.documents``), like the FHIR documents; a malformed message (an
injected error) is one without its PID segment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from datafactory.encoders.documents import HL7_DATE, HL7_SECONDS, Pool, Program, texts
from datafactory_healthcare.care import Care
from datafactory_healthcare.network import FAMILY, GIVEN, STATES
from datafactory_healthcare.records import Encounters, offsets

US = 1_000_000
DAY = 86_400 * US
PATIENT_CLASS = ("O", "E", "I")  # outpatient, emergency, inpatient (HL7 table 0004)
LOCATION = ("CLINIC", "ED", "WARD")
TRIGGERS = ("A01", "A04", "A03")
STRUCTURE = ("ADT_A01", "ADT_A01", "ADT_A03")
I64 = npt.NDArray[np.int64]


def _text(s: str) -> str:
    """A value with HL7's delimiters escaped (\\F\\ | \\S\\ ^ \\R\\ ~ \\T\\ & \\E\\)."""
    return (
        s.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("~", "\\R\\")
        .replace("&", "\\T\\")
    )


def _pool(values: Sequence[str]) -> Pool:
    return Pool((_text(v) for v in values), as_json=False)


def _fields(segment: str, values: dict[int, str], last: int) -> str:
    """A segment's text with ``values`` at their field numbers, as far as field ``last``;
    ``{n}`` where a value comes from a column."""
    fields = [""] * (last + 1)
    for k, v in values.items():
        fields[k] = v
    return segment + "|" + "|".join(fields[1:])


class Hl7Renderer:
    def __init__(self, care: Care, start_us: int) -> None:
        self.care = care
        self.net = net = care.net
        self.start_us = start_us
        self.org_npi = Pool(net.org_npi, as_json=False)
        self.pr_npi = Pool(net.pr_npi, as_json=False)
        self.given, self.family = _pool(GIVEN), _pool(FAMILY)
        self.state = _pool([s for s, _ in STATES])
        self.zip_prefix = _pool([z for _, z in STATES])
        self.sex = Pool(("F", "M"), as_json=False)
        self.klass = Pool(PATIENT_CLASS, as_json=False)
        self.location = Pool(LOCATION, as_json=False)
        self.trigger = Pool(TRIGGERS, as_json=False)
        self.structure = Pool(STRUCTURE, as_json=False)
        self.dx_code, self.dx_desc = _pool(care.dx.code), _pool(care.dx.description)
        self.px_code, self.px_desc = _pool(care.px.code), _pool(care.px.description)

    def adt(
        self, e: Encounters, trigger: I64, at: I64, seq: I64, bad: npt.NDArray[np.bool_]
    ) -> tuple[str, ...]:
        """ADT messages: ``trigger`` an index into TRIGGERS (A01, A04, A03)."""
        p = Program()
        self._msh(p, e, at, seq, "ADT")
        p.pool(trigger, self.trigger).text("^").pool(trigger, self.structure)
        p.text("|ADT").integer(seq).text("|P|2.5\rEVN|").pool(trigger, self.trigger).text("|")
        p.time(at, HL7_SECONDS)
        self._pid(p, e, bad)
        discharged = trigger == TRIGGERS.index("A03")
        self._pv1(p, e, discharged)
        counts = np.where(discharged, 0, np.diff(e.dx_off))  # a discharge names no diagnoses
        self._dg1(p, e, counts)
        return texts(len(at), p)

    def dft(self, e: Encounters, at: I64, seq: I64, bad: npt.NDArray[np.bool_]) -> tuple[str, ...]:
        p = Program()
        self._msh(p, e, at, seq, "DFT")
        p.text("P03^DFT_P03|DFT").integer(seq).text("|P|2.5\rEVN|P03|").time(at, HL7_SECONDS)
        self._pid(p, e, bad)
        self._pv1(p, e, np.ones(len(at), dtype=np.bool_))
        rows = e.item_row
        primary = e.dx[offsets(np.diff(e.dx_off))[:-1]][rows]
        pr = e.practitioner[rows]

        def ft1(q: Program) -> None:
            q.text("\r")
            template = _fields(
                "FT1", {1: "{seq}", 4: "{start}", 5: "{at}", 6: "CG", 7: "{code}^CPT",
                        10: "1", 11: "{charge}", 19: "{dx}^^I10", 20: "{doctor}",
                        25: "{code}^CPT"}, 25)  # fmt: skip
            parts = {
                "seq": lambda: q.integer(e.item_seq),
                "start": lambda: q.time(e.start[rows], HL7_SECONDS),
                "at": lambda: q.time(at[rows], HL7_SECONDS),
                "code": lambda: (
                    q.pool(e.item_px, self.px_code).text("^").pool(e.item_px, self.px_desc)
                ),
                "charge": lambda: q.decimal(e.item_charge, 2),
                "dx": lambda: q.pool(primary, self.dx_code),
                "doctor": lambda: self._doctor(q, pr),
            }
            _fill(q, template, parts)

        p.repeat(e.item_off, ft1, sep="")
        self._dg1(p, e, np.diff(e.dx_off))
        return texts(len(at), p)

    def _msh(self, p: Program, e: Encounters, at: I64, seq: I64, kind: str) -> None:
        # the facility by its NPI (HD is 20 characters)
        p.text("MSH|^~\\&|DATAFACTORY|").pool(e.org, self.org_npi)
        p.text("|BILLING|CLEARINGHOUSE|").time(at, HL7_SECONDS).text(f"||{kind}^")

    def _pid(self, p: Program, e: Encounters, bad: npt.NDArray[np.bool_]) -> None:
        """The PID segment (left out where ``bad``: a structure error any parser reports)."""
        net = self.net
        keep = ~bad
        pt = e.patient[keep]
        birth = self.start_us - net.birth_offset_days[pt] * DAY

        def pid(q: Program) -> None:
            q.text("\rPID|1||pat-").integer(pt + 1, 7).text("^^^DATAFACTORY^MR||")
            q.pool(net.family[pt], self.family).text("^").pool(net.given[pt], self.given)
            q.text("||").time(birth, HL7_DATE).text("|")
            q.pool((net.sex[pt] == "M").astype(np.int64), self.sex).text("|||^^^")
            q.pool(net.state[pt], self.state).text("^").pool(net.state[pt], self.zip_prefix)
            q.integer(net.zip[pt], 2).text("^USA")

        p.optional(keep, pid)

    def _doctor(self, q: Program, pr: I64) -> Program:
        net = self.net
        q.pool(pr, self.pr_npi).text("^").pool(net.pr_family[pr], self.family).text("^")
        return q.pool(net.pr_given[pr], self.given)

    def _pv1(self, p: Program, e: Encounters, discharged: npt.NDArray[np.bool_]) -> None:
        p.text("\r")
        template = _fields(
            "PV1", {1: "1", 2: "{class}", 3: "{location}", 7: "{doctor}^^^^^^NPI",
                    19: "V{encounter}", 44: "{start}"}, 44)  # fmt: skip
        _fill(
            p,
            template,
            {
                "class": lambda: p.pool(e.klass, self.klass),
                "location": lambda: (
                    p.pool(e.klass, self.location).text("^^^").pool(e.org, self.org_npi)
                ),
                "doctor": lambda: self._doctor(p, e.practitioner),
                "encounter": lambda: p.integer(e.encounter),
                "start": lambda: p.time(e.start, HL7_SECONDS),
            },
        )
        end = e.end[discharged]
        p.optional(discharged, lambda q: q.text("|").time(end, HL7_SECONDS))

    def _dg1(self, p: Program, e: Encounters, counts: npt.NDArray[np.int64]) -> None:
        """The diagnoses (the first admitting, then working), ``counts`` of each row's."""
        off = offsets(counts)
        starts = offsets(np.diff(e.dx_off))[:-1]
        k = np.arange(int(off[-1])) - np.repeat(off[:-1], counts)
        rows = np.repeat(np.arange(len(counts)), counts)
        dx = e.dx[starts[rows] + k]
        p.repeat(
            off,
            lambda q: q.text("\rDG1|").integer(k + 1).text("||").pool(dx, self.dx_code).text("^")
            .pool(dx, self.dx_desc).text("^I10||").time(e.start[rows], HL7_SECONDS).text("|")
            .pool((k > 0).astype(np.int64), _KIND),
            sep="",
        )  # fmt: skip


_KIND = Pool(("A", "W"), as_json=False)


def _fill(p: Program, template: str, parts: dict[str, Any]) -> None:
    """``template``'s text, with each ``{name}`` rendered by ``parts[name]()``."""
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        p.text(before)
        parts[name]()
    p.text(rest)
