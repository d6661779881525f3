"""Fixtures of every test directory: see ``shared_fixtures.py``."""

pytest_plugins = ["shared_fixtures"]
