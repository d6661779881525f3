"""The task functions of workloads (h) and (i), run by both sides.

distproc's workers import a task's function by name (``module:qualname``), so
these live in a module of their own: ``_workload.py`` imports it as ``_tasks``
(``benchmarks/`` is ``sys.path[0]`` there, and the Executor hands that to its
worker processes on ``PYTHONPATH``).  The stdlib side's worker processes call
the same functions, so both sides run the same user code.
"""

from __future__ import annotations

import time

#: How long a task of workload (i) sleeps, in seconds.
SLEEP = 0.001


def square(n: int) -> int:
    """A no-op task: what the seed's worker does with each int."""
    return n * n


def sleep_1ms(n: int) -> int:
    """A task that sleeps ``SLEEP`` (1 ms) and returns its int."""
    time.sleep(SLEEP)
    return n


#: The functions a workload may name on its command line.
FUNCTIONS = {"square": square, "sleep_1ms": sleep_1ms}
