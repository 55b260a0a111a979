"""HL7 v2.5 messages, pipe-delimited, segments separated by carriage returns: ADT^A01
(admission: inpatient and emergency), ADT^A04 (outpatient registration), ADT^A03 (discharge
or end of visit) and DFT^P03 (the encounter's charges: one FT1 per line, then its DG1s)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from datafactory_healthcare.care import STATES, Care

US = 1_000_000
PATIENT_CLASS = ("O", "E", "I")  # outpatient, emergency, inpatient (HL7 table 0004)
TRIGGER_STRUCTURE = {"A01": "ADT_A01", "A03": "ADT_A03", "A04": "ADT_A01", "P03": "DFT_P03"}


def _ts(us: int) -> str:
    return dt.datetime.fromtimestamp(us / US, dt.UTC).strftime("%Y%m%d%H%M%S")


def _text(s: str) -> str:
    """A value with HL7's delimiters escaped (\\F\\ | \\S\\ ^ \\R\\ ~ \\T\\ & \\E\\)."""
    return (
        s.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("~", "\\R\\")
        .replace("&", "\\T\\")
    )


class Hl7Renderer:
    def __init__(self, care: Care, start_us: int) -> None:
        self.care = care
        self.net = care.net
        self.start_us = start_us

    def _msh(self, enc: dict[str, Any], kind: str, trigger: str, at: int, control: str) -> str:
        org = self.net.org_npi[enc["org"]]  # the facility by its NPI (HD is 20 characters)
        return (
            f"MSH|^~\\&|DATAFACTORY|{org}|BILLING|CLEARINGHOUSE|{_ts(at)}||"
            f"{kind}^{trigger}^{TRIGGER_STRUCTURE[trigger]}|{control}|P|2.5"
        )

    def _pid(self, enc: dict[str, Any]) -> str:
        net = self.net
        p = enc["patient"]
        birth = self.start_us - int(net.birth_offset_days[p]) * 86_400 * US
        state = STATES[int(net.state[p])][0]
        return (
            f"PID|1||{net.patient_ids[p]}^^^DATAFACTORY^MR||"
            f"{_text(net.family[p])}^{_text(net.given[p])}||{_ts(birth)[:8]}|{net.sex[p]}|||"
            f"^^^{state}^{net.zip[p]}^USA"
        )

    def _pv1(self, enc: dict[str, Any], discharged: bool) -> str:
        net = self.net
        pr = enc["practitioner"]
        doctor = f"{net.pr_npi[pr]}^{_text(net.pr_family[pr])}^{_text(net.pr_given[pr])}^^^^^^NPI"
        fields = [""] * 46
        fields[1] = "1"
        fields[2] = PATIENT_CLASS[enc["class"]]
        fields[3] = f"{('CLINIC', 'ED', 'WARD')[enc['class']]}^^^{net.org_npi[enc['org']]}"
        fields[7] = doctor
        fields[19] = f"V{enc['encounter']}"
        fields[44] = _ts(enc["start"])
        fields[45] = _ts(enc["end"]) if discharged else ""
        return "PV1|" + "|".join(fields[1:]).rstrip("|")

    def _dg1(self, enc: dict[str, Any]) -> list[str]:
        dx = self.care.dx
        return [
            f"DG1|{k + 1}||{dx.code[d]}^{_text(dx.description[d])}^I10||{_ts(enc['start'])}|"
            + ("A" if k == 0 else "W")
            for k, d in enumerate(enc["dxs"])
        ]

    def adt(self, enc: dict[str, Any], trigger: str, at: int, control: str) -> str:
        segs = [
            self._msh(enc, "ADT", trigger, at, control),
            f"EVN|{trigger}|{_ts(at)}",
            self._pid(enc),
            self._pv1(enc, trigger == "A03"),
        ]
        if trigger != "A03":
            segs += self._dg1(enc)
        return "\r".join(segs)

    def dft(self, enc: dict[str, Any], at: int, control: str) -> str:
        px, dx = self.care.px, self.care.dx
        net = self.net
        pr = enc["practitioner"]
        segs = [
            self._msh(enc, "DFT", "P03", at, control),
            f"EVN|P03|{_ts(at)}",
            self._pid(enc),
            self._pv1(enc, True),
        ]
        primary = dx.code[enc["dxs"][0]]
        for i, (code, charge) in enumerate(zip(enc["items"], enc["charge"], strict=True)):
            desc = _text(px.description[px.index(code)])
            when = _ts(enc["start"])
            f = [""] * 26
            f[1] = str(i + 1)
            f[4] = when
            f[5] = _ts(at)
            f[6] = "CG"
            f[7] = f"{code}^{desc}^CPT"
            f[10] = "1"
            f[11] = f"{charge / 100:.2f}"
            f[19] = f"{primary}^^I10"
            f[20] = f"{net.pr_npi[pr]}^{_text(net.pr_family[pr])}^{_text(net.pr_given[pr])}"
            f[25] = f"{code}^{desc}^CPT"
            segs.append("FT1|" + "|".join(f[1:]).rstrip("|"))
        segs += self._dg1(enc)
        return "\r".join(segs)
