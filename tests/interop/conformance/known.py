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

NO_MAX_WORKERS = (
    "TypeError: Executor.__init__() got an unexpected keyword argument 'max_workers'. Fix in "
    "tasks/executor.py Executor.__init__: max_workers, an alias of workers, with the stdlib's "
    "check and message: ValueError('max_workers must be greater than 0')"
)
NO_INITIALIZER = (
    "TypeError: Executor.__init__() got an unexpected keyword argument 'initializer'. Fix in "
    "tasks/executor.py and the worker runtime: initializer and initargs run in each worker "
    "process; one that raises breaks the pool (BrokenExecutor, as the stdlib's), "
    "max_tasks_per_child and mp_context accepted"
)

#: CPython 3.13's executor tests, by ``Class.test`` with the executor's part of
#: the class name left out (``ExecutorTest.test_submit``).
FUTURES: list[Known] = [
    Known("ExecutorTest.test_max_workers_negative", NO_MAX_WORKERS),
    Known("ExecutorShutdownTest.test_hang_gh94440", NO_MAX_WORKERS),
    Known("InitializerTest.test_initializer", NO_INITIALIZER),
    Known("FailingInitializerTest.test_initializer", NO_INITIALIZER),
    Known(
        "ExecutorShutdownTest.test_cancel_futures",
        "AssertionError: 0 not greater than 0 (every one of the 50 futures was cancelled, none "
        "finished; the stdlib cancels only those not yet handed to a worker). The futures of "
        "distproc.Executor never leave PENDING (nothing calls set_running_or_notify_cancel when "
        "a worker takes the task), so shutdown(cancel_futures=True) -> cancel_futures() cancels "
        "running ones too, and then kills the fleet. Fix in tasks/executor.py: mark a future "
        "running when its task is leased, cancel only tasks the service still queues, and let "
        "running ones finish when wait=True",
    ),
    Known(
        "ExecutorTest.test_free_reference",
        "AssertionError: <MyObject ...> is not None: map() keeps each result alive after it is "
        "yielded. tasks/mapping.py MapRun.__iter__ and _chunk hold the value in a local while "
        "suspended at `yield value`, and the chunk's future (whose result is the whole list of "
        "outcomes) in `item`. Fix: yield outcomes.pop() from a reversed list and drop the "
        "future once its result is taken, as the stdlib's result_iterator does",
    ),
    Known(
        "ExecutorTest.test_no_stale_references",
        "AssertionError: Stale reference not collected within timeout (after 30 s). "
        "submit(my_object.my_method): tasks/payloads.py function_ref accepts a bound method "
        "(it compares __func__) and names the unbound function, so the worker calls "
        "MyObject.my_method() without self (TypeError: missing 1 required positional argument: "
        "'self'), and tasks/executor.py Executor._ref caches the bound method as a key of "
        "_refs, which keeps my_object alive for the Executor's life. Fix: function_ref refuses "
        "bound methods (they travel pickled with serializer='pickle'), and _refs holds only "
        "plain functions",
    ),
]

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
