"""The population and the provider network: patients with coverage (a payer and plan),
practitioners and organisations with valid NPIs, payers with fee factors and coinsurance. The
same in every shard (a shard simulates the care of its part of the patients)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datafactory_healthcare.npi import make_npis

GIVEN_F = ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Maria", "Susan", "Aisha",
           "Mei", "Sofia", "Emma", "Olivia", "Fatima", "Priya", "Grace", "Chloe")  # fmt: skip
GIVEN_M = ("James", "Robert", "John", "Michael", "David", "William", "Carlos", "Wei",
           "Ahmed", "Raj", "Liam", "Noah", "Lucas", "Daniel", "Omar", "Ethan")  # fmt: skip
GIVEN = GIVEN_F + GIVEN_M
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


class Network:
    """Patients with coverage, practitioners and organisations (NPIs), payers and plans."""

    def __init__(self, p: Any, rng: np.random.Generator) -> None:
        n = p.patients
        self.sex = np.where(rng.random(n) < 0.51, "F", "M")
        band = rng.choice(10, n, p=[0.06, 0.12, 0.12, 0.13, 0.13, 0.13, 0.13, 0.1, 0.06, 0.02])
        self.age = np.minimum(band * 10 + rng.integers(0, 10, n), 99)
        self.birth_offset_days = self.age * 365 + rng.integers(0, 365, n)
        # names as codes into GIVEN / FAMILY, the ZIP code as its state's prefix + 2 digits
        self.given = rng.integers(0, 16, n) + np.where(self.sex == "M", len(GIVEN_F), 0)
        self.family = rng.integers(0, len(FAMILY), n)
        self.state = rng.integers(0, len(STATES), n)
        self.zip = rng.integers(0, 100, n)
        # coverage: Medicare from 65, otherwise by share
        share = np.array([x[2] for x in PAYERS])
        payer = rng.choice(len(PAYERS), n, p=share / share.sum())
        payer[self.age >= 65] = np.where(rng.random(int((self.age >= 65).sum())) < 0.85, 0, 2)
        payer[(self.age < 65) & (payer == 0)] = 2
        self.payer = payer
        self.plan = rng.integers(0, np.array([len(x[1]) for x in PAYERS])[payer])
        self.member = rng.integers(10**8, 10**9, n)  # member id: "M" and these digits
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
        self.pr_given = rng.integers(0, len(GIVEN), m)
        self.pr_family = rng.integers(0, len(FAMILY), m)
        hospitals = np.flatnonzero(self.org_kind == 2)
        self.hospital_pr = np.flatnonzero(np.isin(self.pr_org, hospitals))
        if not len(self.hospital_pr):  # every network has somewhere to admit patients
            self.pr_org[0] = hospitals[0] if len(hospitals) else 0
            self.org_kind[self.pr_org[0]] = 2
            self.hospital_pr = np.array([0])
