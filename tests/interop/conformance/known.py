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


WIRE_NAMES = (
    "PicklingError: Can't pickle <function RebuildProxy> (or <class Token>): it's not the same "
    "object as multiprocessing.managers.RebuildProxy. While installed, that name is distproc's "
    "object, but the codec's reducers (wire/messages.py _reduce_token, proxies.py "
    "_reduce_proxy_for_wire with _STDLIB_EQUIVALENT, managers.py's Namespace and Value "
    "reducers) return the stdlib module's objects, and pickle checks that a name resolves to "
    "what it writes. Fix: the reducers pickle what multiprocessing.managers.<name> is now, "
    "and install() gives distproc's objects the module name multiprocessing.managers "
    "(uninstall() gives theirs back): the same bytes on the wire either way"
)
LISTENER = (
    "AttributeError: 'Server' object has no attribute 'listener' (the test closes "
    "get_server().listener before start()). Fix in server/core.py: Server.listener, an "
    "object whose close() closes the bound socket, with the stdlib's address attribute"
)
EXCEPTION_CYCLE = (
    "AssertionError: Empty() != None: the queue.Empty raised by a proxy call lives on in a "
    "cycle: exception -> traceback -> BaseProxy._callmethod's frame -> its local `result`, "
    "the exception itself (native path). Fix in proxies.py BaseProxy._callmethod: del result "
    "in a finally around the raise, as the stdlib does since gh-106558"
)

MANAGERS: list[Known] = [
    *(
        Known(test, WIRE_NAMES)
        for test in (
            "WithManagerTestBarrier.test_action",
            "WithManagerTestContainers.test_dict_iter",
            "WithManagerTestContainers.test_dict_proxy_nested",
            "WithManagerTestContainers.test_list",
            "WithManagerTestContainers.test_list_proxy_in_list",
            "WithManagerTestContainers.test_nested_queue",
            "WithManagerTestPool.test_async",
            "WithManagerTestPool.test_async_timeout",
            "WithManagerTestPool.test_empty_iterable",
            "WithManagerTestPool.test_imap",
            "WithManagerTestPool.test_imap_unordered",
            "WithManagerTestPool.test_map_async",
            "WithManagerTestPool.test_map_async_callbacks",
            "WithManagerTestPool.test_map_chunksize",
            "WithManagerTestPool.test_starmap_async",
            "WithManagerTestPool.test_terminate",
        )
    ),
    Known("WithManagerTestManagerRestart.test_rapid_restart", LISTENER),
    # TestManagerExceptions came in 3.12.x after 3.12.1, the 3.12 installed here.
    Known("TestManagerExceptions.test_queue_get", EXCEPTION_CYCLE, versions=("3.12", "3.13")),
]

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
