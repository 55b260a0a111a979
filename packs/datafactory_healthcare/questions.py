"""What a platform answers about a payer's claims (``datafactory expect`` computes the right
answers), per payer per day (by the documents' event time: a Claim's ``created``, a
ClaimResponse's): claims submitted; claims adjudicated by outcome (complete, partial, denied)
with the amount paid; lines denied by their reason (X12 CARC). Each dimension and amount is in
what a platform receives twice: in the FHIR document (the insurer's identifier,
``payment.amount``, each line's adjudication reason) and in the Avro envelope (``payer_id``,
``paid``, ``denials``)."""

from __future__ import annotations

from datafactory.expect.questions import Measure, Question

DAY = 86400

QUESTIONS = (
    Question(
        "claims_by_payer_day",
        "claim",
        DAY,
        by=("payer_id",),
        measures=(Measure("claims", "count"),),
        doc="Claims submitted (or resubmitted) per payer per day.",
    ),
    Question(
        "adjudications_by_payer_day",
        "claim_response",
        DAY,
        by=("payer_id", "status"),
        measures=(Measure("claims", "count"), Measure("paid", "sum", "paid")),
        doc="Claims adjudicated per payer per day by outcome (complete, partial, denied), "
        "and the amount paid (exact).",
    ),
    Question(
        "denials_by_carc_day",
        "claim_response",
        DAY,
        by=("payer_id", "denials.carc"),
        measures=(Measure("lines", "count"),),
        doc="Claim lines denied per payer per day by reason (X12 claim adjustment reason code).",
    ),
)
