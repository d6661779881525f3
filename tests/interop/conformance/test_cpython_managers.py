"""CPython's own manager tests pass on distproc wherever they pass on the stdlib.

For each CPython 3.10-3.13 found under ``$(pyenv root)`` and each of the fork
and spawn start methods, the suite of ``cpython/managers_suite.py`` runs twice
in that interpreter's venv: on the plain stdlib, then with
``distproc.install()`` in effect.  A test that passes on the first run and not
on the second fails here, unless :mod:`.known` lists it (then it is an
expected failure of its own, strict: it fails the run once it passes).
"""

from __future__ import annotations

from typing import Any

import pytest

from ..harness import PeerPython
from .conftest import RunKey, SuiteRunner
from .harness import TEST_TIMEOUT, SuiteRun, conformance_pythons
from .known import MANAGERS, Known

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(TEST_TIMEOUT)]

PYTHONS = conformance_pythons()
METHODS = ("fork", "spawn")


def minor(python: PeerPython) -> str:
    return "{}.{}".format(*python.version[:2])


def suite_runs(params: dict[str, Any]) -> list[RunKey]:
    """The suite runs that a test with these parameters needs (see ``conftest.py``)."""
    python, method = params.get("python"), params.get("method")
    if not isinstance(python, PeerPython) or not isinstance(method, str):
        return []  # an empty parameter set (known.py lists no manager test)
    return [(python, "managers", side, method) for side in ("stdlib", "distproc")]


def known_for(python: PeerPython, method: str) -> dict[str, Known]:
    return {k.test: k for k in MANAGERS if minor(python) in k.versions and method in k.methods}


def assert_ran(run: SuiteRun) -> None:
    hung = [test for test, o in run.outcomes.items() if o.outcome == "hung"]
    assert run.returncode == 0 and not hung and run.outcomes, (
        f"{run.label} ended with exit code {run.returncode}, hung in {hung}; log: {run.log}"
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("python", PYTHONS, ids=[p.id for p in PYTHONS])
def test_passes_on_distproc_where_it_passes_on_the_stdlib(
    suite_run: SuiteRunner, python: PeerPython, method: str
) -> None:
    stdlib = suite_run(python, "managers", "stdlib", method)
    ours = suite_run(python, "managers", "distproc", method)
    assert_ran(stdlib)
    assert_ran(ours)
    known = known_for(python, method)
    regressions = {
        test: ours.outcomes[test].summary() if test in ours.outcomes else "not run"
        for test in sorted(stdlib.passing() - ours.passing())
        if test not in known
    }
    assert regressions == {}, f"logs: {stdlib.log} {ours.log}"


def _known_params() -> list[Any]:
    params: list[Any] = []
    for python in PYTHONS:
        for method in METHODS:
            for test, entry in sorted(known_for(python, method).items()):
                params.append(
                    pytest.param(
                        python,
                        method,
                        test,
                        id=f"{python.id}-{method}-{test}",
                        marks=pytest.mark.xfail(strict=True, reason=entry.reason),
                    )
                )
    return params


@pytest.mark.parametrize(("python", "method", "test"), _known_params())
def test_known_failure(suite_run: SuiteRunner, python: PeerPython, method: str, test: str) -> None:
    stdlib = suite_run(python, "managers", "stdlib", method)
    if test not in stdlib.passing():
        outcome = stdlib.outcomes.get(test)
        seen = outcome.summary() if outcome else "not run"
        pytest.skip(f"did not pass on the stdlib either: {seen}")
    ours = suite_run(python, "managers", "distproc", method).outcomes.get(test)
    assert ours is not None and ours.conforms, ours.summary() if ours else "not run"
