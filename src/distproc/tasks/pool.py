"""``ProcessPoolExecutor``'s arguments, as :class:`~distproc.Executor` takes them.

Code written for ``concurrent.futures.ProcessPoolExecutor`` moves to
``distproc.Executor`` by changing the name, so the Executor takes that pool's
arguments with their checks and messages (here), and breaks as that pool
breaks when an initializer raises.  What ``mp_context`` means for distproc
is said in the Executor's docstring: nothing changes with it, as workers are
always fresh interpreters.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .payloads import rebuild_error

__all__ = ["check_pool_arguments", "default_workers", "initializer_failed"]


def default_workers() -> int:
    """What ``ProcessPoolExecutor()`` takes for ``max_workers``: the CPUs this process may use."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()  # process_cpu_count: 3.13+
    return int(count or 1)


def check_pool_arguments(
    max_workers: int | None, initializer: Any, max_tasks_per_child: int | None
) -> None:
    """``ProcessPoolExecutor``'s checks of these arguments, with its messages."""
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    if max_tasks_per_child is not None:
        if not isinstance(max_tasks_per_child, int):
            raise TypeError("max_tasks_per_child must be an integer")
        if max_tasks_per_child <= 0:
            raise ValueError("max_tasks_per_child must be >= 1")


def initializer_failed(worker: str, record: Any) -> BrokenProcessPool:
    """The error of a pool whose initializer raised in ``worker`` (``record``: its error).

    It is logged on the stdlib pool's logger, ``concurrent.futures``, at
    CRITICAL, with the worker's traceback, as that pool logs it in the worker.
    """
    text = record.get("traceback") if isinstance(record, dict) else None
    logging.getLogger("concurrent.futures").critical(
        "Exception in initializer of worker %s:\n%s", worker, text or record
    )
    error = rebuild_error(record)
    broken = BrokenProcessPool(
        f"an initializer failed in worker {worker} ({type(error).__name__}: {error}): "
        "the Executor is not usable anymore"
    )
    broken.__cause__ = error
    return broken
