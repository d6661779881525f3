"""Run one of CPython's own test suites and write each test's outcome, one JSON line each.

    python runner.py SUITE SIDE START_METHOD RESULTS.jsonl

run with the interpreter whose ``Lib/test`` holds the suite (a venv of it with
distproc installed).  SUITE is ``managers`` (see ``managers_suite.py``) or
``futures`` (``futures_suite.py``); SIDE is ``stdlib`` or ``distproc``;
START_METHOD is ``fork`` or ``spawn``.  With SIDE ``distproc`` the managers
suite runs with ``distproc.install()`` in effect, made before the suite's
modules are imported, as ``python -m distproc.run`` would.

Each line of RESULTS is ``{"test": ID, "event": "start"}`` when a test starts,
then ``{"test": ID, "outcome": ..., "seconds": ..., "detail": ...}`` when it
ends (outcome: pass, fail, error, skip, xfail, xpass).  A test that runs longer
than ``PER_TEST_TIMEOUT`` seconds ends the run: faulthandler prints every
thread's stack on stderr and exits, and the harness reports that test as hung.

The suite modules are imported by name, as CPython's own ``test_manager``
modules are: a spawned child unpickles the test classes' methods by that name.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
import traceback
import unittest
from typing import IO, Any

#: Seconds one test may take before the run is ended (CPython's own tests
#: allow SHORT_TIMEOUT = 30 s per wait; a test makes several).
PER_TEST_TIMEOUT = 240.0


def test_id(test: Any) -> str:
    """``Class.method`` of a test (module names differ between the two sides)."""
    return "{}.{}".format(type(test).__name__, getattr(test, "_testMethodName", str(test)))


class JsonLinesResult(unittest.TextTestResult):
    """A text result that also writes each outcome to a JSON-lines file as it happens."""

    def __init__(self, stream: Any, descriptions: bool, verbosity: int, *, out: IO[str]) -> None:
        super().__init__(stream, descriptions, verbosity)
        self._out = out
        self._started: dict[str, float] = {}

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()

    def startTest(self, test: unittest.TestCase) -> None:
        faulthandler.dump_traceback_later(PER_TEST_TIMEOUT, exit=True)
        self._started[test_id(test)] = time.monotonic()
        self._write({"test": test_id(test), "event": "start"})
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        faulthandler.cancel_dump_traceback_later()

    def _record(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        ident = test_id(test)
        started = self._started.pop(ident, None)
        seconds = 0.0 if started is None else time.monotonic() - started
        self._write({"test": ident, "outcome": outcome, "seconds": seconds, "detail": detail})

    def _text(self, err: Any) -> str:
        return "".join(traceback.format_exception(*err))

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "pass")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "fail", self._text(err))

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        # Class and module fixtures fail as a _ErrorHolder, not as a test.
        self._record(test, "error", self._text(err))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skip", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "xfail", self._text(err))

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "xpass")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._record(test, kind, f"subtest {subtest}:\n{self._text(err)}")


def main(argv: list[str]) -> None:
    suite_name, side, start_method, results_path = argv
    if side not in ("stdlib", "distproc"):
        raise SystemExit(f"SIDE must be stdlib or distproc, not {side!r}")
    if suite_name not in ("managers", "futures"):
        raise SystemExit(f"SUITE must be managers or futures, not {suite_name!r}")
    # Read by the suite modules when they are imported (here, and in spawned children).
    os.environ["CONFORMANCE_SIDE"] = side
    os.environ["CONFORMANCE_START_METHOD"] = start_method
    if side == "distproc" and suite_name == "managers":
        import distproc

        distproc.install()
    module = __import__(suite_name + "_suite")
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    with open(results_path, "w") as out:
        runner = unittest.TextTestRunner(
            stream=sys.stderr,
            verbosity=2,
            resultclass=lambda *a: JsonLinesResult(*a, out=out),
        )
        runner.run(suite)
    # What is left (a manager a failed test did not shut down) is stopped by
    # multiprocessing's exit handlers; the harness kills the process group after.
    faulthandler.dump_traceback_later(PER_TEST_TIMEOUT, exit=True)


if __name__ == "__main__":
    main(sys.argv[1:])
