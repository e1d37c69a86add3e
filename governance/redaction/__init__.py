"""Redaction packs (YAML), shipped as package data."""
