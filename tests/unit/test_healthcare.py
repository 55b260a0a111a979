"""Healthcare: FHIR R4 claims and responses that validate (fhir.resources, R4B models), valid
NPIs, references that resolve, adjudication after submission, totals that reconcile, codes that
fit the patient — checked on thousands of documents from a simulated run's files."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from datafactory.config import parse_config
from datafactory.encoders import fast
from datafactory.runtime.engine import Engine
from datafactory_healthcare import codes
from datafactory_healthcare.npi import check_digit, is_valid

NPI = "http://hl7.org/fhir/sid/us-npi"


def run(out: Path, packaging: str, days: int = 75, seed: int = 3) -> dict[str, list[Any]]:
    cfg = {
        "run": {"name": "hc", "seed": seed, "clock": "simulated",
                "start": "2026-01-05T00:00:00Z", "duration": f"{days}d"},
        "packs": {"healthcare": {"params": {"patients": 6000, "fhir_packaging": packaging}}},
        "sinks": {"out": {"type": "file", "path": str(out)}},
        "telemetry": {"enabled": False},
    }  # fmt: skip
    asyncio.run(Engine(parse_config(orjson.dumps(cfg).decode())).run())
    got: dict[str, list[Any]] = {
        name: [
            orjson.loads(x)
            for f in sorted((out / "healthcare" / name).glob("*.jsonl"))
            for x in f.read_bytes().splitlines()
        ]
        for name in ("claim", "claim_response", "explanation_of_benefit")
    }
    for name in ("adt", "dft"):  # HL7: one message per line, segments split by \r
        got[name] = [
            x.decode()
            for f in sorted((out / "healthcare" / name).glob("*.jsonl"))
            for x in f.read_bytes().split(b"\n")
            if x
        ]
    return got


@pytest.fixture(scope="module")
def contained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    return run(tmp_path_factory.mktemp("contained"), "contained")


def _t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_npi_check_digits() -> None:
    assert check_digit("123456789") == 3 and is_valid("1234567893")  # the CMS example
    assert not is_valid("1234567890") and not is_valid("123456789") and not is_valid("12345678x3")


def test_every_document_validates_as_fhir_r4(contained) -> None:  # type: ignore[no-untyped-def]
    from fhir.resources.R4B.claim import Claim
    from fhir.resources.R4B.claimresponse import ClaimResponse

    claims, responses = contained["claim"], contained["claim_response"]
    assert len(claims) > 3000 and len(responses) > 2000
    for c in claims:
        Claim.model_validate(c)
    for r in responses:
        ClaimResponse.model_validate(r)
    # the explanation of benefit: valid, and it tells what the response decided
    from fhir.resources.R4B.explanationofbenefit import ExplanationOfBenefit

    eobs = contained["explanation_of_benefit"]
    by_id = {r["id"].removeprefix("cr-"): r for r in responses}
    assert len(eobs) == len(responses)
    for e in eobs:
        ExplanationOfBenefit.model_validate(e)
        r = by_id[e["id"].removeprefix("eob-")]
        assert e["total"] == r["total"] and e["created"] == r["created"]
        assert [i["adjudication"] for i in e["item"]] == [i["adjudication"] for i in r["item"]]


def test_bundles_validate_and_their_references_resolve(tmp_path: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle

    got = run(tmp_path, "bundle", days=20)
    docs = got["claim"] + got["claim_response"]
    assert len(docs) > 500
    for b in docs:
        Bundle.model_validate(b)
        urls = {e["fullUrl"] for e in b["entry"]}
        main = b["entry"][0]["resource"]
        for ref in _references(main):
            assert ref in urls or ref.startswith(("Claim/", "Encounter/")), ref


def _references(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference":
                out.append(v)
            elif k != "contained":
                out += _references(v)
    elif isinstance(node, list):
        for v in node:
            out += _references(v)
    return out


def test_references_resolve_and_npis_are_valid(contained) -> None:  # type: ignore[no-untyped-def]
    for doc in contained["claim"] + contained["claim_response"]:
        ids = {"#" + r["id"]: r for r in doc["contained"]}
        for ref in _references(doc) + _references(doc["contained"]):
            assert ref in ids or ref.startswith(("Claim/", "Encounter/")), ref
        kinds = {r["resourceType"] for r in doc["contained"]}
        assert {"Patient", "Practitioner", "Organization", "Coverage"} <= kinds
        for r in doc["contained"]:
            for ident in r.get("identifier", []):
                if ident["system"] == NPI:
                    assert is_valid(ident["value"]), ident["value"]


def test_adjudication_follows_submission_and_totals_reconcile(contained) -> None:  # type: ignore[no-untyped-def]
    claims = {c["id"].removeprefix("claim-"): c for c in contained["claim"]}
    outcomes = set()
    for r in contained["claim_response"]:
        number = r["request"]["reference"].removeprefix("Claim/claim-")
        c = claims[number]  # every response answers a claim submitted earlier in the run
        assert _t(c["created"]) < _t(r["created"])
        assert len(r["item"]) == len(c["item"])
        totals = {t["category"]["coding"][0]["code"]: Decimal(str(t["amount"]["value"]))
                  for t in r["total"]}  # fmt: skip
        sums = dict.fromkeys(("submitted", "eligible", "benefit"), Decimal(0))
        for it, line in zip(r["item"], c["item"], strict=True):
            amounts = {a["category"]["coding"][0]["code"]: Decimal(str(a["amount"]["value"]))
                       for a in it["adjudication"]}  # fmt: skip
            assert amounts["submitted"] == Decimal(str(line["net"]["value"]))
            assert amounts["benefit"] <= amounts["eligible"] <= amounts["submitted"]
            for k in sums:
                sums[k] += amounts[k]
        assert totals == sums
        assert Decimal(str(r["payment"]["amount"]["value"])) == sums["benefit"]
        outcomes.add(r["outcome"])
        if r["outcome"] == "error":
            assert sums["benefit"] == 0 and r["error"]
    assert outcomes == {"complete", "partial", "error"}
    for c in contained["claim"]:
        total = sum(Decimal(str(i["net"]["value"])) for i in c["item"])
        assert Decimal(str(c["total"]["value"])) == total
        assert _t(c["billablePeriod"]["end"]) < _t(c["created"])
    # denied claims come back corrected, naming the first, and are paid
    resubmitted = [c for c in contained["claim"] if "related" in c]
    assert resubmitted
    for c in resubmitted:
        first = c["related"][0]["claim"]["reference"].removeprefix("Claim/claim-")
        assert _t(claims[first]["created"]) < _t(c["created"])


def test_codes_fit_the_patient(contained) -> None:  # type: ignore[no-untyped-def]
    dx, px = codes.diagnoses(), codes.procedures()
    for c in contained["claim"]:
        patient = next(r for r in c["contained"] if r["resourceType"] == "Patient")
        sex = "F" if patient["gender"] == "female" else "M"
        born = dt.date.fromisoformat(patient["birthDate"])
        age = (dt.date(2026, 1, 5) - born).days // 365
        for d in c["diagnosis"]:
            i = dx.code.index(d["diagnosisCodeableConcept"]["coding"][0]["code"])
            assert dx.sex[i] in ("A", sex) and dx.min_age[i] <= age <= dx.max_age[i]
        for it in c["item"]:
            j = px.index(it["productOrService"]["coding"][0]["code"])
            assert px.sex[j] in ("A", sex) and px.min_age[j] <= age <= px.max_age[j]


def test_same_seed_same_documents(tmp_path: Path) -> None:
    a = run(tmp_path / "a", "contained", days=10)
    b = run(tmp_path / "b", "contained", days=10)
    assert a == b and a["claim"]


@pytest.mark.skipif(not fast.available(), reason="the compiled renderer is not built")
@pytest.mark.parametrize("packaging", ["contained", "bundle"])
def test_the_compiled_documents_and_the_python_fallback_are_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packaging: str
) -> None:
    """Every stream, every injected error kind: the files are byte for byte the same."""

    def files(out: Path) -> dict[str, bytes]:
        cfg = {
            "run": {"name": "fp", "seed": 5, "clock": "simulated",
                    "start": "2026-01-05T00:00:00Z", "duration": "20d"},
            "packs": {"healthcare": {"params": {"patients": 2000, "fhir_packaging": packaging,
                                                "errors": RATES}}},
            "sinks": {"out": {"type": "file", "path": str(out)}},
            "telemetry": {"enabled": False},
        }  # fmt: skip
        asyncio.run(Engine(parse_config(orjson.dumps(cfg).decode())).run())
        return {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*.jsonl"))}

    compiled = files(tmp_path / "compiled")
    monkeypatch.setenv("DATAFACTORY_FAST_PATH", "0")
    fallback = files(tmp_path / "python")
    assert len(compiled) >= 5 and all(compiled.values())
    assert compiled == fallback


def _hl7_fields(msg: str, seg: str) -> list[list[str]]:
    return [s.split("|") for s in msg.split("\r") if s.startswith(seg + "|")]


def test_hl7_messages_parse_strictly_as_v2_5(contained) -> None:  # type: ignore[no-untyped-def]
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    adt, dft = contained["adt"], contained["dft"]
    assert len(adt) > 5000 and len(dft) > 2500
    kinds = set()
    for msg in adt[::8] + dft[::4]:  # ~2,000: strict structure and datatype validation
        m = parse_message(msg, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        assert m.validate()
        kinds.add(m.msh.msh_9.value)
    assert kinds == {"ADT^A01^ADT_A01", "ADT^A04^ADT_A01", "ADT^A03^ADT_A03", "DFT^P03^DFT_P03"}
    # the validator does fail a broken message: an ADT without its PID segment
    broken = "\r".join(s for s in adt[0].split("\r") if not s.startswith("PID|"))
    with pytest.raises(Exception):  # noqa: B017 - hl7apy raises several kinds
        parse_message(broken, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


def test_claims_reference_encounters_that_hl7_announced_and_charges_agree(contained) -> None:  # type: ignore[no-untyped-def]
    admitted: dict[str, str] = {}
    for msg in contained["adt"]:
        msh = _hl7_fields(msg, "MSH")[0]
        visit = _hl7_fields(msg, "PV1")[0][19]
        if msh[8].split("^")[1] in ("A01", "A04"):
            admitted[visit] = msh[6]
    charges: dict[str, Decimal] = {}
    for msg in contained["dft"]:
        visit = _hl7_fields(msg, "PV1")[0][19]
        assert visit in admitted  # charges only for announced encounters
        charges[visit] = sum((Decimal(f[11]) for f in _hl7_fields(msg, "FT1")), Decimal(0))
    for c in contained["claim"]:
        visit = "V" + c["item"][0]["encounter"][0]["reference"].removeprefix("Encounter/enc-")
        assert visit in admitted
        assert dt.datetime.strptime(admitted[visit], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC) < _t(
            c["created"]
        )
        if visit in charges:
            assert Decimal(str(c["total"]["value"])) == charges[visit]


RATES = {"invalid_icd10": 0.03, "sex_age_mismatch": 0.03, "invalid_npi": 0.03,
         "service_after_submission": 0.03, "amounts_mismatch": 0.03, "duplicate_claim": 0.03,
         "missing_fhir_element": 0.03, "malformed_hl7": 0.04}  # fmt: skip
ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")  # the shape of a code


def _flags(got: dict[str, list[Any]]) -> dict[str, set[str]]:
    """What validators and the documented business rules flag, kind by kind, by record id."""
    from fhir.resources.R4B.claim import Claim
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    dx = codes.diagnoses()
    flags: dict[str, set[str]] = {k: set() for k in RATES}
    seen: set[str] = set()
    for c in got["claim"]:
        rid = c["id"]
        if rid in seen:
            flags["duplicate_claim"].add(rid)
        seen.add(rid)
        try:
            Claim.model_validate(c)
        except Exception:
            flags["missing_fhir_element"].add(rid)
        patient = next(r for r in c["contained"] if r["resourceType"] == "Patient")
        sex = "F" if patient["gender"] == "female" else "M"
        age = (dt.date(2026, 1, 5) - dt.date.fromisoformat(patient["birthDate"])).days // 365
        for d in c["diagnosis"]:
            code = d["diagnosisCodeableConcept"]["coding"][0]["code"]
            if not ICD10.match(code) or code not in dx.code:
                flags["invalid_icd10"].add(rid)
                continue
            i = dx.code.index(code)
            if dx.sex[i] not in ("A", sex) or not dx.min_age[i] <= age <= dx.max_age[i]:
                flags["sex_age_mismatch"].add(rid)
        for r in c["contained"]:
            for ident in r.get("identifier", []):
                if ident["system"] == NPI and not is_valid(ident["value"]):
                    flags["invalid_npi"].add(rid)
        if any(it["servicedDate"] > c["created"][:10] for it in c["item"]):
            flags["service_after_submission"].add(rid)
        total = sum(Decimal(str(i["net"]["value"])) for i in c["item"])
        if Decimal(str(c["total"]["value"])) != total:
            flags["amounts_mismatch"].add(rid)
    for msg in got["adt"] + got["dft"]:
        try:
            parse_message(msg, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
            ok = "\rPID|" in msg
        except Exception:
            ok = False
        if not ok:
            msh = msg.split("\r")[0].split("|")
            pv1 = next(s for s in msg.split("\r") if s.startswith("PV1|")).split("|")
            kind = "^".join(msh[8].split("^")[:2])
            flags["malformed_hl7"].add(f"{kind}:{pv1[19]}")
    return flags


@pytest.mark.parametrize(
    "days", [pytest.param(30, marks=pytest.mark.soak), 12], ids=["month", "twelve-days"]
)
def test_labelled_errors_are_exactly_what_validators_flag(tmp_path: Path, days: int) -> None:
    """Every labelled error, kind by kind, is what an independent validator flags (precision
    and recall 1.0), at the configured rates (within 4 standard deviations). The default suite
    runs 12 days (~320 claims, ~1,900 HL7 messages: the validators take ~40 s); ``-m soak`` a
    month (~1,400 claims, ~110 s)."""
    cfg = {
        "run": {"name": "err", "seed": 9, "clock": "simulated",
                "start": "2026-01-05T00:00:00Z", "duration": f"{days}d"},
        "packs": {"healthcare": {"params": {"patients": 5000, "errors": RATES}}},
        "sinks": {"out": {"type": "file", "path": str(tmp_path)}},
        "manifest": {"sink": {"type": "file", "path": str(tmp_path / "truth")}},
        "telemetry": {"enabled": False},
    }  # fmt: skip
    asyncio.run(Engine(parse_config(orjson.dumps(cfg).decode())).run())
    got: dict[str, list[Any]] = {}
    for name in ("claim", "claim_response", "adt", "dft"):
        lines = [
            x for f in sorted((tmp_path / "healthcare" / name).glob("*.jsonl"))
            for x in f.read_bytes().split(b"\n") if x
        ]  # fmt: skip
        got[name] = (
            [orjson.loads(x) for x in lines]
            if name.startswith("claim")
            else [x.decode() for x in lines]
        )
    labels: dict[str, set[str]] = {k: set() for k in RATES}
    for f in (tmp_path / "truth").rglob("*.jsonl"):
        for x in f.read_bytes().splitlines():
            r = orjson.loads(x)
            if r.get("type") == "fault":
                assert r["detail"]["error"] == r["kind"] and r["detail"]["field"]
                labels[r["kind"]].add(r["detail"]["record_id"])
    flags = _flags(got)
    for kind in RATES:  # precision and recall 1.0, kind by kind
        assert labels[kind] == flags[kind], kind
    # observed rates: within 4 standard deviations of the configured ones
    claims = len({c["id"] for c in got["claim"]})
    messages = len(got["adt"]) + len(got["dft"])
    assert claims > (1000 if days >= 30 else 250)
    for kind, rate in RATES.items():
        n = messages if kind == "malformed_hl7" else claims
        sd = (n * rate * (1 - rate)) ** 0.5
        assert abs(len(labels[kind]) - n * rate) < 4 * sd, (kind, len(labels[kind]), n * rate)


def test_chaos_that_edits_fields_is_refused_on_document_streams() -> None:
    from datafactory.config import ConfigError

    base = (
        "run: {clock: simulated, duration: 1d}\npacks: {healthcare: {}}\n"
        "sinks: {o: {type: stdout}}\n"
    )
    with pytest.raises(ConfigError) as e:
        parse_config(base + "chaos: [{step: corrupt_value, rate: 0.1}]\n")
    msg = str(e.value)
    assert "healthcare.claim: each record is its own document" in msg and "chaos.0" in msg
    parse_config(base + "chaos: [{step: drop, rate: 0.1}, {step: corrupt_bytes, rate: 0.1}]\n")


def test_code_lists_are_well_formed_and_cover_the_population() -> None:
    """The shipped lists: unique codes of the right shape, every procedure a diagnosis names
    is listed, age ranges that make sense, and something that fits everyone: each sex at
    every age has outpatient diagnoses to draw from."""
    dx, px = codes.diagnoses(), codes.procedures()
    assert len(set(dx.code)) == len(dx.code) and len(set(px.code)) == len(px.code)
    assert all(ICD10.match(c) for c in dx.code)
    cpt_or_hcpcs = re.compile(r"^([0-9]{4}[0-9FTU]|[A-V][0-9]{4})$")
    assert all(cpt_or_hcpcs.match(c) for c in px.code), [
        c for c in px.code if not cpt_or_hcpcs.match(c)
    ]
    for procs in dx.procedures:
        for c in procs:
            px.index(c)  # raises if a diagnosis names a procedure that is not listed
    assert (dx.min_age <= dx.max_age).all() and (px.min_age <= px.max_age).all()
    assert (dx.weight > 0).all() and (px.fee_cents > 0).all()
    # descriptions go into HL7 CE text components (DG1-3, FT1-7): at most 199 characters
    assert max(map(len, dx.description + px.description)) <= 199
    for sex in ("F", "M"):
        for age in range(0, 101):
            fits = [
                i for i, s in enumerate(dx.sex)
                if s in ("A", sex) and dx.min_age[i] <= age <= dx.max_age[i] and "o" in dx.classes[i]
            ]  # fmt: skip
            assert len(fits) >= 20, (sex, age, len(fits))
