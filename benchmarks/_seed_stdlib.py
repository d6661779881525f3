"""The seed's manager (examples/seed/manager.py), on the stdlib.

``_seed_stdlib.py`` and ``_seed_distproc.py`` differ only in the line that
imports BaseManager.  The registry uses module-level functions instead of the
seed's lambdas, so that it pickles under any start method.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from typing import Any

task_queue: queue.Queue[Any] = queue.Queue()
result_queue: queue.Queue[Any] = queue.Queue()


def get_task_queue() -> queue.Queue[Any]:
    return task_queue


def get_result_queue() -> queue.Queue[Any]:
    return result_queue


class QueueManager(BaseManager):
    # Added by register() below; declared for the type checker.
    get_task_queue: Callable[[], Any]
    get_result_queue: Callable[[], Any]


QueueManager.register("get_task_queue", callable=get_task_queue)
QueueManager.register("get_result_queue", callable=get_result_queue)
