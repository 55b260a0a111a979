"""The embedded default config and example scenarios."""
