"""Curated ICD-10-CM diagnoses and CPT/HCPCS procedures (package data: ``data/*.csv``).

Each diagnosis has a relative frequency, the sexes and ages it applies to, the encounter
classes it is seen in (o: outpatient, e: emergency, i: inpatient) and the procedures that
usually come with it; each procedure a base fee (what the payers' fee schedules scale)."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Diagnoses:
    code: tuple[str, ...]
    description: tuple[str, ...]
    weight: npt.NDArray[np.float64]
    sex: tuple[str, ...]  # A, F or M
    min_age: npt.NDArray[np.int64]
    max_age: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    procedures: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Procedures:
    code: tuple[str, ...]
    description: tuple[str, ...]
    fee_cents: npt.NDArray[np.int64]
    sex: tuple[str, ...]
    min_age: npt.NDArray[np.int64]
    max_age: npt.NDArray[np.int64]

    def index(self, code: str) -> int:
        return self.code.index(code)


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


@functools.cache
def diagnoses() -> Diagnoses:
    rows = _rows("icd10cm.csv")
    return Diagnoses(
        tuple(r["code"] for r in rows),
        tuple(r["description"] for r in rows),
        np.array([float(r["weight"]) for r in rows]),
        tuple(r["sex"] for r in rows),
        np.array([int(r["min_age"]) for r in rows]),
        np.array([int(r["max_age"]) for r in rows]),
        tuple(r["classes"] for r in rows),
        tuple(tuple(r["procedures"].split()) for r in rows),
    )


@functools.cache
def procedures() -> Procedures:
    rows = _rows("cpt.csv")
    return Procedures(
        tuple(r["code"] for r in rows),
        tuple(r["description"] for r in rows),
        np.array([round(float(r["fee"]) * 100) for r in rows], dtype=np.int64),
        tuple(r["sex"] for r in rows),
        np.array([int(r["min_age"]) for r in rows]),
        np.array([int(r["max_age"]) for r in rows]),
    )
