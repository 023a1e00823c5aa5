"""Offline evaluation protocols and metrics (pure functions of arrays)."""
