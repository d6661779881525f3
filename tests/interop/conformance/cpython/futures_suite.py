"""CPython 3.13's own executor tests, run against a process pool of one side.

The tests are ``executor.ExecutorTest``, ``test_wait.WaitTests``,
``test_as_completed.AsCompletedTests``, ``test_shutdown.ExecutorShutdownTest``
and ``test_init``'s ``InitializerMixin`` and ``FailingInitializerMixin``, each
combined as CPython's ``util.create_executor_tests`` combines them:

* side ``stdlib``: with ``ProcessPoolExecutor`` made by CPython's own mixin
  for the start method (``CONFORMANCE_START_METHOD``, fork or spawn);
* side ``distproc``: with :class:`DistprocMixin`, which makes a
  ``distproc.Executor`` with ``serializer="pickle"`` (the tests send objects
  of their own classes) where ``util.ExecutorMixin`` makes a pool.  Its
  workers are processes of their own, whatever the start method.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import distproc

_util: Any = importlib.import_module("test.test_concurrent_futures.util")
_executor = importlib.import_module("test.test_concurrent_futures.executor")
_wait = importlib.import_module("test.test_concurrent_futures.test_wait")
_as_completed = importlib.import_module("test.test_concurrent_futures.test_as_completed")
_shutdown = importlib.import_module("test.test_concurrent_futures.test_shutdown")
_init = importlib.import_module("test.test_concurrent_futures.test_init")

SIDE = os.environ.get("CONFORMANCE_SIDE", "stdlib")
START_METHOD = os.environ.get("CONFORMANCE_START_METHOD", "fork")

TESTS = (
    _executor.ExecutorTest,
    _wait.WaitTests,
    _as_completed.AsCompletedTests,
    _shutdown.ExecutorShutdownTest,
    _init.InitializerMixin,
    _init.FailingInitializerMixin,
)


class PickleExecutor(distproc.Executor):
    """``distproc.Executor`` with ``serializer="pickle"`` unless told otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", "pickle")
        super().__init__(*args, **kwargs)


class DistprocMixin(_util.ExecutorMixin):  # type: ignore[misc]  # a class of CPython's tests
    """Builds the executor as ``util.ExecutorMixin`` does (it is that mixin), with
    distproc's class: ``max_workers=worker_count`` and the tests' ``executor_kwargs``.

    It has no ``ctx`` (start method), as ``ThreadPoolMixin`` has none:
    distproc's workers are fresh interpreters whatever the start method, and
    a test given a ``ctx`` sends a ``multiprocessing.Queue`` to the workers in
    ``initargs``, which only a process that multiprocessing starts can receive.
    """

    executor_type = PickleExecutor


if SIDE == "distproc":
    _MIXINS: tuple[Any, ...] = (DistprocMixin,)
elif START_METHOD == "fork":
    _MIXINS = (_util.ProcessPoolForkMixin,)
else:
    _MIXINS = (_util.ProcessPoolSpawnMixin,)

for _tests in TESTS:
    _util.create_executor_tests(globals(), _tests, executor_mixins=_MIXINS)


def setUpModule() -> None:
    _util.setup_module()
