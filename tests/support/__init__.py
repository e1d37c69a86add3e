"""Shared helpers for the test suite (real servers on loopback, traffic builders)."""
