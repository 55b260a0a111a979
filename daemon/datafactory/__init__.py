"""Data Factory: simulated businesses streaming realistic, labelled events into data platforms."""

__version__ = "0.1.0"
