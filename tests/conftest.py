"""Fixtures of every test directory: see ``shared_fixtures.py``."""

from __future__ import annotations

import gc

import pytest

pytest_plugins = ["shared_fixtures"]


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection made (modules, test items) lives until the end: move it out of
    the garbage collector's sight, so that the tests' own ``gc.collect()`` calls (the
    fault tests make one after each test) look only at what tests create."""
    gc.freeze()
