"""Encoders: whole blocks to JSON lines or Avro, one contiguous payload per block."""

from __future__ import annotations

from typing import Any

from datafactory.schema import EventSchema


def build_encoder(
    fmt: str, schema: EventSchema, run_seed: int, *, single_object: bool = False
) -> Any:
    """The encoder for a sink's format; message sinks ask for Avro single-object framing."""
    from datafactory.encoders.avro import AvroEncoder
    from datafactory.encoders.json import JsonEncoder
    from datafactory.encoders.payload import PayloadEncoder, payload_field

    if fmt == "json":
        if payload_field(schema) is not None:  # the record is its own document (FHIR, HL7)
            return PayloadEncoder(schema, run_seed)
        return JsonEncoder(schema, run_seed)
    if fmt == "avro":
        return AvroEncoder(schema, run_seed, single_object=single_object)
    raise ValueError(f"unknown format {fmt!r}; formats: json, avro")
