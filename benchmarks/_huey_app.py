"""The Huey side of :mod:`durable`: a ``SqliteHuey`` and its no-op task.

Its consumer (``huey_consumer _huey_app.huey -w 1 -k process``) and the
enqueuing process both import this module; the file comes from
``DP_HUEY_DB``.  ``fsync=True`` is ``PRAGMA synchronous=FULL``, as the
distproc store's default: both sides keep an acknowledged task on disk.  ``timeout``: SQLite's busy
timeout (5 s by default), long enough that a loaded machine does not make a
call fail with "database is locked".
"""

from __future__ import annotations

import os

from huey import SqliteHuey  # type: ignore[import-untyped,import-not-found,unused-ignore]

huey = SqliteHuey(filename=os.environ.get("DP_HUEY_DB", "huey.db"), fsync=True, timeout=120)


@huey.task()  # type: ignore[untyped-decorator,misc,unused-ignore]
def square(n: int) -> int:
    """The same no-op as ``_tasks.square``."""
    return n * n
