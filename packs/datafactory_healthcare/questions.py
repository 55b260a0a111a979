"""What a platform answers about a payer's claims (``datafactory expect`` computes the right
answers): claims and claim responses per day (by the documents' event time: a Claim's
``created``). Per payer, paid amounts and denial reasons live inside the FHIR documents,
which questions cannot read yet: not asked."""

from __future__ import annotations

from datafactory.expect.questions import Measure, Question

DAY = 86400

QUESTIONS = (
    Question(
        "claims_by_day",
        "claim",
        DAY,
        by=(),
        measures=(Measure("claims", "count"),),
        doc="Claims submitted (or resubmitted) per day.",
    ),
    Question(
        "responses_by_day",
        "claim_response",
        DAY,
        by=(),
        measures=(Measure("responses", "count"),),
        doc="Claim responses (adjudications) per day.",
    ),
)
