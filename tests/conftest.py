import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

# Compiled statistics programs are saved here, never in the user's cache directory.
os.environ["INSPECTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inspector-tests-cache-")

import pytest


@pytest.fixture(autouse=True)
def _unshared_runs():
    """Each test builds its own runs: an equal run a test before built is not reused
    (``inspector.api.shared_run``), so counts of traces and compiles are the test's own."""
    from inspector import api

    api.forget_shared_runs()
    yield
