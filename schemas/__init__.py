"""Avro schemas, one ``.avsc`` per event type, grouped by pack."""
