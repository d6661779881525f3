"""The commands' Redis side: ``distproc worker|status|dead-letters redis://...``.

Each command sends a ``redis://``, ``rediss://`` or ``unix://`` URL here
(:func:`is_redis_url`) instead of parsing ``HOST:PORT``; the queue is
``--queue`` or ``?queue=NAME`` in the URL (default ``default``).  redis-py is
imported only here, so the core install needs nothing more.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from .errors import CliError

if TYPE_CHECKING:
    from ..tasks.allowlist import AllowList

__all__ = ["dead_letters_report", "is_redis_url", "redis_status", "run_worker"]

SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(target: str) -> bool:
    return target.startswith(SCHEMES)


def _backend(url: str, queue: str | None) -> Any:
    try:
        from ..tasks.backends.redis_backend import RedisBackend
    except ImportError as exc:
        raise CliError(str(exc)) from None
    from ..tasks.redis_channels import redis_down

    try:
        return RedisBackend(url, queue)
    except Exception as exc:
        if redis_down(exc):
            raise CliError(f"cannot reach Redis at {url}: {exc}") from None
        raise


def redis_status(url: str, queue: str | None, as_json: bool) -> int:
    """``distproc status redis://...``: the queue's counts, workers and settings."""
    backend = _backend(url, queue)
    try:
        report = backend.status()
    finally:
        backend.close()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return 0
    tasks = report["tasks"]
    click.echo(f"Redis queue {report['store']['queue']!r} at {report['store']['url']}")
    click.echo("  tasks: " + ", ".join(f"{k} {v}" for k, v in tasks.items()))
    click.echo(f"  masters: {report['masters']}, heartbeat_timeout "
               f"{report['heartbeat_timeout']:g} s, "
               f"max_attempts {report['max_attempts']}")  # fmt: skip
    for worker in report["workers"]:
        click.echo(f"  worker {worker['worker']}: {worker['leases']} lease(s), "
                   f"idle {worker['idle']:.1f} s")  # fmt: skip
    return 0


def dead_letters_report(
    url: str, queue: str | None, as_json: bool, requeue: tuple[int, ...]
) -> int:
    """``distproc dead-letters redis://...``: list them, or queue chosen ones again."""
    backend = _backend(url, queue)
    try:
        if requeue:
            found = backend.requeue_dead(requeue)
            missing = sorted(set(requeue) - set(found))
            click.echo(f"requeued {len(found)} task(s)" +
                       (f"; not dead letters: {missing}" if missing else ""))  # fmt: skip
            return 1 if missing else 0
        letters = [d.to_wire() for d in backend.dead_letters()]
    finally:
        backend.close()
    if as_json:
        click.echo(json.dumps(letters, indent=2))
    elif not letters:
        click.echo("no dead letters")
    for letter in [] if as_json else letters:
        click.echo(f"task {letter['task']} ({letter['function']}): {letter['reason']}")
    return 0


def run_worker(
    url: str, queue: str | None, count: int, *, threads: bool, allow_pickle: bool,
    child: bool, parent: int | None, main_path: str | None, exit_on_disconnect: bool,
    allowed: AllowList, policy: list[str],
) -> int:  # fmt: skip
    """``distproc worker redis://... -c N``: N child processes (or threads) on the queue.

    ``allowed``: what the worker may run; ``policy``: the options that tell
    its children the same.
    """
    from ..tasks.worker import TaskWorker

    if child or threads:
        if main_path:  # the master's script, for its functions (an Executor's own workers)
            from ..tasks import payloads

            payloads.MAIN_PATH = main_path
        backend = _backend(url, queue)  # the first contact: a wrong URL is said once
        backend.close()
        from ..tasks.redis_channels import RedisWorkerChannel

        runner = TaskWorker(
            ("", 0), b"", slots=1 if child else count, allow_pickle=allow_pickle,
            process_slot=child, parent_pid=parent, exit_on_disconnect=exit_on_disconnect,
            open_channel=RedisWorkerChannel.opener(url, queue), where=url, allowed=allowed,
        )  # fmt: skip
        runner.install_signal_handlers()
        if not child:
            click.echo(f"distproc: worker with {count} thread(s) for {url}", err=True)
        return runner.run()
    return _supervise(url, queue, count, allow_pickle, policy)


def _supervise(
    url: str, queue: str | None, count: int, allow_pickle: bool, policy: list[str]
) -> int:
    from ..tasks.fleet import Fleet, child_command

    _backend(url, queue).close()
    extra = (["--allow-pickle"] if allow_pickle else []) + policy
    if queue:
        extra += ["--queue", queue]
    fleet = Fleet(child_command(url, [*extra, "--parent", str(os.getpid())]), count)
    done = threading.Event()
    stopping = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop = fleet.kill if stopping.is_set() else fleet.stop
        stopping.set()

        def finish() -> None:
            stop()
            done.set()

        threading.Thread(target=finish, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    fleet.when_refused(lambda reason: done.set())
    fleet.start()
    click.echo(f"distproc: worker with {count} process(es) for {url}", err=True)
    sys.stderr.flush()
    while not done.wait(1.0):
        pass
    return 2 if fleet.refused else 0
