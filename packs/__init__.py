"""Behaviour packs shipped with Data Factory (import namespace ``datafactory.packs``)."""
