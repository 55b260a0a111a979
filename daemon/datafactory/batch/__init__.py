"""Batch mode: years of history as partitioned files, deterministic and resumable."""
