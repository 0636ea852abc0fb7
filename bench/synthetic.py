"""Synthetic Inspections for view benchmarks: the tests' fixture, ``tests/synthetic.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.synthetic import wide_inspection  # noqa: F401 (re-exported)
