"""Flax's own test suite run against inspector (``make conformance``); see run.py."""
