"""Candidate retrieval indexes: ScaNN, with an exact brute-force fallback."""
