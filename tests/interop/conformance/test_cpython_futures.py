"""CPython 3.13's executor tests pass on ``distproc.Executor`` where they pass on
``ProcessPoolExecutor``.

The suite of ``cpython/futures_suite.py`` runs three times in the 3.13 venv:
with ``ProcessPoolExecutor`` under fork, then under spawn, then with
``distproc.Executor(serializer="pickle")``.  Tests are compared by their
name without the executor's part (``ExecutorTest.test_submit``): one that
passes with the stdlib's pool under either start method must pass on
distproc, unless :mod:`.known` lists it.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..harness import PeerPython
from .conftest import RunKey, SuiteRunner
from .harness import TEST_TIMEOUT, SuiteRun, conformance_pythons
from .known import FUTURES, NOT_APPLICABLE
from .test_cpython_managers import assert_ran

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(TEST_TIMEOUT)]

PYTHON = next((p for p in conformance_pythons() if p.version[:2] == (3, 13)), None)
needs_313 = pytest.mark.skipif(PYTHON is None, reason="CPython 3.13 is not installed")
#: What create_executor_tests puts before the tests' own class name.
PREFIXES = ("ProcessPoolFork", "ProcessPoolSpawn", "Distproc")


def suite_runs(params: dict[str, Any]) -> list[RunKey]:
    """The suite runs that each test here needs (see ``conftest.py``)."""
    if PYTHON is None:
        return []
    return [
        (PYTHON, "futures", "stdlib", "fork"),
        (PYTHON, "futures", "stdlib", "spawn"),
        (PYTHON, "futures", "distproc", "spawn"),
    ]


def by_test(run: SuiteRun) -> dict[str, str]:
    """Each test's outcome under its name without the executor's part."""
    named = {}
    for test, outcome in run.outcomes.items():
        for prefix in PREFIXES:
            if test.startswith(prefix):
                test = test[len(prefix) :]
                break
        named[test] = outcome.outcome if outcome.conforms else outcome.summary()
    return named


def runs(suite_run: SuiteRunner) -> tuple[dict[str, str], dict[str, str]]:
    """(tests that pass on the stdlib under fork or spawn, every outcome on distproc)."""
    python: PeerPython | None = PYTHON
    assert python is not None
    stdlib: dict[str, str] = {}
    for method in ("fork", "spawn"):
        run = suite_run(python, "futures", "stdlib", method)
        assert_ran(run)
        stdlib.update({t: o for t, o in by_test(run).items() if o in ("pass", "xfail")})
    ours = suite_run(python, "futures", "distproc", "spawn")
    assert_ran(ours)
    return stdlib, by_test(ours)


@needs_313
def test_passes_on_distproc_where_it_passes_on_the_stdlib(suite_run: SuiteRunner) -> None:
    stdlib, ours = runs(suite_run)
    known = {k.test for k in FUTURES}
    regressions = {
        test: ours.get(test, "not run")
        for test in sorted(stdlib)
        if ours.get(test) not in ("pass", "xfail")
        and test not in known
        and test not in NOT_APPLICABLE
    }
    assert regressions == {}


@needs_313
@pytest.mark.parametrize(
    "test",
    [pytest.param(k.test, marks=pytest.mark.xfail(strict=True, reason=k.reason)) for k in FUTURES],
)
def test_known_failure(suite_run: SuiteRunner, test: str) -> None:
    stdlib, ours = runs(suite_run)
    if test not in stdlib:
        pytest.skip("did not pass on the stdlib either")
    assert ours.get(test) in ("pass", "xfail"), ours.get(test, "not run")
