"""Tests of CPython's suites that pass on the stdlib and not (yet) on distproc.

Each entry names the test, the interpreters and start methods where it fails,
and why: the error, the root cause in distproc's code and the fix.  The
conformance tests turn each entry into an ``xfail(strict=True)`` test, so an
entry that starts to pass fails the run until it is taken out of this list.

``NOT_APPLICABLE`` are tests that cannot pass on distproc as CPython wrote
them, with the reason; the README lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_VERSIONS = ("3.10", "3.11", "3.12", "3.13")
BOTH_METHODS = ("fork", "spawn")


@dataclass(frozen=True)
class Known:
    test: str
    reason: str
    versions: tuple[str, ...] = ALL_VERSIONS
    methods: tuple[str, ...] = BOTH_METHODS


#: CPython's manager tests, by ``Class.test``: none fails on distproc where it
#: passes on the stdlib (3.10-3.13, fork and spawn).
MANAGERS: list[Known] = []

#: CPython 3.13's executor tests, by ``Class.test`` with the executor's part of
#: the class name left out (``ExecutorTest.test_submit``): none fails on
#: distproc.Executor where it passes on ProcessPoolExecutor.
FUTURES: list[Known] = []

NOT_APPLICABLE: dict[str, str] = {
    "ExecutorShutdownTest.test_interpreter_shutdown": (
        "runs a child interpreter that imports the executor class from concurrent.futures by "
        "its name (from concurrent.futures import {executor_type.__name__})"
    ),
    "ExecutorShutdownTest.test_submit_after_interpreter_shutdown": (
        "runs a child interpreter that imports the executor class from concurrent.futures by "
        "its name (from concurrent.futures import {executor_type.__name__})"
    ),
}
