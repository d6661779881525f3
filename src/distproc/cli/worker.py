"""``distproc worker HOST:PORT``: run tasks for a task service.

By default it supervises ``-c N`` child processes (one task at a time each)
and replaces any that dies; ``--threads`` runs N threads in this process
instead.  The first SIGTERM or Ctrl-C lets running tasks finish and hands
prefetched ones back; a second one stops at once (the service requeues what
was held).  When the service goes away, workers reconnect with backoff.

It runs only the tasks' own code: functions of modules under its directory
or a ``--path`` directory, and those that ``--allow`` names (see
:mod:`distproc.tasks.allowlist`).  The children that an Executor or
``distproc map`` starts for itself (``--trust-master``, hidden) run anything
their master sends.

Before it starts anything, the command connects once to HOST:PORT: a wrong
authkey, or a server that is not a task service, is one line on stderr and
exit status 2, since retrying would not fix it.  A service that is not up
yet is waited for.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import click

from ..addresses import format_address
from .errors import CliUsageError
from .options import AUTHKEY_ENV, authkey_options, parse_address, read_authkey, tls_options

if TYPE_CHECKING:
    from ..tls import TLSConfig

__all__ = ["worker"]

log = logging.getLogger("distproc.worker")


@click.command(
    epilog="""\b
Examples:
  $ DISTPROC_AUTHKEY=... distproc worker 192.168.0.9:5000 -c 4
  $ distproc worker 127.0.0.1:5000 --authkey-file ~/.config/distproc/authkey --threads -c 8
  $ distproc worker redis://10.0.0.5:6379/0 -c 8 --queue crawl
""",
)
@click.argument("address", metavar="HOST:PORT")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks run at once [default: the number of CPUs].",
)
@click.option("--threads", is_flag=True, help="Run tasks on threads of this process.")
@click.option("--queue", help="The queue to serve, for a redis:// URL [default: default].")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Accept tasks whose arguments are pickled (masters with serializer='pickle'); "
    "only for trusted networks.",
)
@click.option(
    "--allow",
    "allow",
    metavar="MODULE[:FUNCTION]",
    multiple=True,
    help="Also run this function, or the functions of this module and its submodules "
    "(by default only modules under this directory and --path run). Repeatable.",
)
@click.option(
    "--path",
    "paths",
    metavar="DIR",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Import task modules from DIR too (and allow them). Repeatable.",
)
@authkey_options
@click.option("--trust-master", is_flag=True, hidden=True)
@tls_options
@click.option("--child", is_flag=True, hidden=True)
@click.option("--parent", type=int, hidden=True)
@click.option("--main", "main_path", hidden=True)
@click.option("--exit-on-disconnect", is_flag=True, hidden=True)
def worker(
    address: str,
    concurrency: int | None,
    threads: bool,
    queue: str | None,
    allow_pickle: bool,
    allow: tuple[str, ...],
    paths: tuple[str, ...],
    authkey_file: str | None,
    trust_master: bool,
    child: bool,
    parent: int | None,
    main_path: str | None,
    exit_on_disconnect: bool,
    tls: TLSConfig | None,
) -> int:
    """Join the task service at HOST:PORT and run its tasks until stopped.

    Or serve a queue in Redis: give redis://HOST:PORT/DB (rediss:// for TLS)
    instead, with --queue NAME (default: default); no authkey is needed.

    Functions are imported by name ('module:function'): run the worker where
    the task modules import (the current directory is on sys.path). The
    authkey comes from $DISTPROC_AUTHKEY or --authkey-file.
    """
    from ..tasks.allowlist import AllowList
    from ..tasks.fleet import EXIT_REFUSED
    from ..tasks.worker import TaskWorker
    from .redis_cli import is_redis_url, run_worker

    cwd = os.getcwd()
    roots = [os.path.abspath(p) for p in paths]
    for root in [*reversed(roots), cwd]:
        if root not in sys.path:
            sys.path.insert(0, root)
    try:
        allowed = AllowList.trust_all() if trust_master else AllowList([cwd, *roots], allow)
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    # What a supervisor's children are told, so that they allow what it allows.
    policy = [f"--allow={entry}" for entry in allow] + [f"--path={root}" for root in roots]
    if trust_master:
        policy.append("--trust-master")
    count = concurrency or os.cpu_count() or 1
    if is_redis_url(address):
        return run_worker(address, queue, count, threads=threads, allow_pickle=allow_pickle,
                          child=child, parent=parent, main_path=main_path,
                          exit_on_disconnect=exit_on_disconnect, allowed=allowed,
                          policy=policy)  # fmt: skip
    try:
        host, port = parse_address(address)
        key = _authkey(authkey_file, child)
    except CliUsageError as exc:
        if not child:
            raise
        # Another child would fail the same way: the supervisor does not start one.
        click.echo(f"distproc: error: {exc.message}", err=True)
        return EXIT_REFUSED
    if child or threads:
        if main_path:
            from ..tasks import payloads

            payloads.MAIN_PATH = main_path
        runner = TaskWorker(
            (host, port), key, slots=1 if child else count, allow_pickle=allow_pickle,
            process_slot=child, parent_pid=parent, exit_on_disconnect=exit_on_disconnect,
            allowed=allowed, tls=tls,
        )  # fmt: skip
        runner.install_signal_handlers()
        if not child:
            if not _first_contact((host, port), key, tls, runner.stopping):
                return 0
            click.echo(f"distproc: worker with {count} thread(s) for {address}", err=True)
        status = runner.run()
        if runner.refused is None:
            return status
        if not child:
            raise CliUsageError(runner.refused)
        click.echo(f"distproc: error: {runner.refused}", err=True)
        return EXIT_REFUSED  # the supervisor stops the other children, and says nothing more
    extra = ["--allow-pickle"] if allow_pickle else []
    return _supervise(address, key, count, extra + policy, tls)


def _authkey(authkey_file: str | None, child: bool) -> bytes:
    """The key: from the supervisor for a child (any bytes), else as the user gave it."""
    from ..tasks.fleet import child_authkey

    if child:
        try:
            given = child_authkey(os.environ)
        except ValueError as exc:
            raise CliUsageError(str(exc)) from None
        if given is not None:
            return given
    key = read_authkey(authkey_file, os.environ)
    if key is None:
        raise CliUsageError(
            f"no authkey: set {AUTHKEY_ENV} or use --authkey-file FILE "
            "(the same one the task service uses)"
        )
    try:
        return key.encode()
    except UnicodeEncodeError:
        raise CliUsageError(f"{AUTHKEY_ENV} is not UTF-8 text") from None


def _first_contact(
    address: tuple[str, int], key: bytes, tls: TLSConfig | None, stopping: threading.Event
) -> bool:
    """Connect to the service once before starting: a refusal is a usage error (status 2).

    A service that cannot be reached yet is waited for (said once); returns
    False if ``stopping`` is set meanwhile.
    """
    from ..tasks.channels import backoff_delays
    from ..tasks.host import close_service, connect_service, describe_refusal
    from ..tasks.worker import is_fatal

    delay, said = backoff_delays(), False
    while not stopping.is_set():
        try:
            manager, _ = connect_service(address, key, tls)
        except Exception as exc:
            if is_fatal(exc):
                raise CliUsageError(describe_refusal(address, exc)) from None
            if not isinstance(exc, (OSError, EOFError)):
                raise
            if not said:
                log.warning("cannot reach the task service at %s (%s); waiting for it",
                            format_address(address), exc)  # fmt: skip
                said = True
            stopping.wait(delay())
            continue
        close_service(manager)
        return True
    return False


def _supervise(
    address: str, key: bytes, count: int, extra: list[str], tls: TLSConfig | None
) -> int:
    """Run ``count`` one-slot children (with the options ``extra``) and replace any that dies."""
    from ..tasks.fleet import Fleet, child_command, child_env

    env = child_env(os.environ, key)
    if tls is not None:
        env.update(tls.environ())
    fleet = Fleet(child_command(address, [*extra, "--parent", str(os.getpid())]), count, env)
    stopping = threading.Event()
    done = threading.Event()

    def finish(stop: Callable[[], None]) -> None:
        stop()
        done.set()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            log.info("stopping at once")
            threading.Thread(target=finish, args=(fleet.kill,), daemon=True).start()
            return
        stopping.set()
        log.info("stopping: running tasks finish first (signal again to stop at once)")
        threading.Thread(target=finish, args=(fleet.stop,), daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if not _first_contact(parse_address(address), key, tls, stopping):
        return 0
    fleet.when_refused(lambda reason: done.set())  # a child was refused: it said why
    fleet.start()
    click.echo(f"distproc: worker with {count} process(es) for {address}", err=True)
    while not done.wait(1.0):
        pass
    if fleet.refused:
        fleet.kill()
        return 2
    return 0
