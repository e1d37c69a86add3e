"""Telemetry-tuned recognizers, one small class per kind, in Presidio's style.

``registry`` lists the built-in ones; packs select from it by class name. This file imports
nothing so that ``registry`` can be read without loading Presidio.
"""
