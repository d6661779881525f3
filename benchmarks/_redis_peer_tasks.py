"""The peers' task definitions for ``redis_peers.py`` (Huey's consumer imports them by name).

The task body is ``_tasks.square``, the same no-op that distproc and RQ run.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from huey import RedisHuey  # type: ignore[import-untyped,import-not-found,unused-ignore]

huey = RedisHuey("bench", url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


_square = importlib.import_module("_tasks").square


@huey.task()  # type: ignore[untyped-decorator]
def huey_square(n: int) -> Any:
    return _square(n)
