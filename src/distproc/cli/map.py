"""``distproc map MODULE:FUNCTION [INPUT]``: call a function on every line of input.

Each non-blank line of INPUT (a file, or stdin) is one JSON value and one call:
``FUNCTION(value)``, or with ``--star`` a JSON array spread as the positional
arguments, ``FUNCTION(*array)``.  Each call's result is written to OUTPUT
(stdout by default) as one JSON line, in input order, as soon as the results
before it are in.  The calls run on an :class:`~distproc.Executor`: ``-w N``
local worker processes, plus any remote ``distproc worker HOST:PORT`` that
joins at ``--address``.

A line that cannot be a call (not JSON, not an array under ``--star``) and a
call that raises or returns something that is not JSON get an *error record*
in their place, ``{"error": {"type", "message", "traceback", "line"}}``, and
the run goes on; the exit status is then 1 and the last line on stderr says
how many failed.  With ``--records`` every line is ``{"result": VALUE}`` or an
error record, so that a result can never be mistaken for one.

Ctrl-C (or SIGTERM) stops the run: the results so far are written, the local
workers are stopped, and the exit status is 130.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any, Protocol

import click

from ..addresses import format_address, is_loopback
from ..errors import DistprocError
from ..tls import TLSConfig
from .errors import CliError, CliUsageError
from .group import handle_signals, raise_keyboard_interrupt
from .hosts import WILDCARDS, host_addresses
from .lines import CallReader, ResultWriter, count_calls, exception_record, open_input
from .options import AUTHKEY_ENV, authkey_options, parse_address, read_authkey, tls_options
from .targets import load_attribute

__all__ = ["ExecutorLike", "MapHooks", "load_function", "map_command"]

log = logging.getLogger("distproc.cli")


class ExecutorLike(Protocol):
    """The part of :class:`distproc.Executor` that ``distproc map`` uses."""

    @property
    def address(self) -> Any: ...

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool | None = None,
        total: int | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[Any]: ...

    def starmap(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        *,
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool | None = None,
        total: int | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[Any]: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


def _distproc_executor(**kwargs: Any) -> ExecutorLike:
    from ..tasks.executor import Executor

    return Executor(**kwargs)


@dataclass
class MapHooks:
    """What ``distproc map`` runs its calls on; tests pass a stand-in as the context ``obj``."""

    executor: Callable[..., ExecutorLike] = field(default=_distproc_executor)


class Interrupted(CliError):
    """Ctrl-C or SIGTERM stopped the run: ``distproc: interrupted: ...``, status 130."""

    exit_code = 130

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"distproc: interrupted: {self.format_message()}", file=file, err=file is None)


# ------------------------------------------------------------ MODULE:FUNCTION
def load_function(target: str) -> Callable[..., Any]:
    """The function named by ``MODULE:FUNCTION``, checked to be importable by workers."""
    obj = load_attribute(
        target,
        noun="function",
        form="MODULE:FUNCTION",
        example="examples.squares:square",
        missing="function",
        listed="its functions",
        wanted=lambda name, value: (
            inspect.isfunction(value)
            and value.__module__ == target.partition(":")[0]
            and not name.startswith("_")
            and _sendable(value)
        ),
        limit=12,
    )
    if not callable(obj):
        raise CliUsageError(f"{target} is a {type(obj).__name__} object, not a function")
    _check_sendable(obj, target)
    return obj  # type: ignore[no-any-return]  # callable(obj) holds


def _sendable(fn: Any) -> bool:
    """Whether workers could import ``fn`` by its name (not a lambda, not a closure)."""
    from ..tasks.payloads import function_ref

    try:
        function_ref(fn)
    except TypeError:
        return False
    return True


def _check_sendable(fn: Any, target: str) -> None:
    """Workers find a function by its module and qualified name: both must lead back to it."""
    from ..tasks.payloads import function_ref

    try:
        function_ref(fn)
    except TypeError as exc:
        raise CliUsageError(f"{target} cannot be sent to workers: {exc}") from None


# ------------------------------------------------------------------- running
def _start_executor(factory: Callable[..., ExecutorLike], **kwargs: Any) -> ExecutorLike:
    try:
        return factory(**kwargs)
    except OSError as exc:
        address = kwargs.get("address")
        where = f" on {format_address(address)}" if address else ""
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (use another port, or port 0 for a free one)"
        raise CliError(f"cannot listen{where}: {reason}") from None
    except DistprocError as exc:
        raise CliError(f"cannot start the workers: {exc}") from None


def _drain(results: Iterator[Any], source: CallReader, writer: ResultWriter) -> None:
    """Write every result and input error, in input order, as the results arrive."""
    order = source.order
    for result in results:
        while order and order[0][1] is not None:
            writer.error(order.popleft()[1])  # type: ignore[arg-type]  # not None: checked
        line, _ = order.popleft()
        if isinstance(result, BaseException):
            log.debug("line %d failed: %s: %s", line, type(result).__name__, result)
            writer.error(exception_record(result, line))
        else:
            writer.result(result, line)
    for _, record in order:  # input errors after the last call
        assert record is not None
        writer.error(record)
    order.clear()


def _run(
    executor: ExecutorLike,
    fn: Callable[..., Any],
    source: CallReader,
    writer: ResultWriter,
    *,
    star: bool,
    chunksize: int | None,
    progress: bool | None,
    total: int | None,
    announce: Callable[[], None] = lambda: None,
) -> str | None:
    """Run every call; shut the executor down; return why the run stopped early, if it did."""
    stopped: str | None = None
    results: Iterator[Any] | None = None
    try:
        with handle_signals(writer.stop, signal.SIGINT, signal.SIGTERM):
            announce()
            options: dict[str, Any] = {
                "chunksize": chunksize,
                "progress": progress,
                "total": total,
                "return_exceptions": True,
            }
            if star:
                results = executor.starmap(fn, source, **options)
            else:
                results = executor.map(fn, source, **options)
            _drain(results, source, writer)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except BrokenPipeError:
        stopped = "broken pipe"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # Nothing more can reach the reader; keep Python's exit flush from failing too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    except DistprocError as exc:
        stopped = f"the run failed: {exc}"
    finally:
        stopped = _shut_down(executor, results, stopped)
    return stopped


def _shut_down(
    executor: ExecutorLike, results: Iterator[Any] | None, stopped: str | None
) -> str | None:
    """Stop the workers: gently after a run that ended, at once after a stop or a signal.

    A signal during a gentle stop makes it one at once.  Signals are never
    ignored here (SIG_IGN): worker processes started meanwhile would inherit
    that, and never see the SIGTERM that stops them.
    """
    try:
        with handle_signals(raise_keyboard_interrupt, signal.SIGINT, signal.SIGTERM):
            close = getattr(results, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            executor.shutdown(wait=stopped is None, cancel_futures=stopped is not None)
    except KeyboardInterrupt:
        # More signals must not cut this short (and print a traceback).
        with handle_signals(_ignore, signal.SIGINT, signal.SIGTERM):
            executor.shutdown(wait=False, cancel_futures=True)
        return stopped or "interrupted"
    return stopped


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A signal handler that does nothing (unlike SIG_IGN, exec'd children do not inherit it)."""


_EPILOG = """\b
Examples, from the root of the distproc repository:
  $ seq 1 100000 | distproc map examples.squares:square > squares.jsonl
  $ seq -5 5 | distproc map examples.squares:checked_sqrt -o roots.jsonl
  distproc: error: 5 of 11 calls failed; their lines in the output are error records
  $ printf '[2, 10]\\n[3, 4]\\n' | distproc map --star examples.squares:power
  1024
  81

\b
With remote workers as well (on each other machine, the same key in
DISTPROC_AUTHKEY and the module importable there), listening on the
master's address on the network (0.0.0.0 listens on every interface):
  $ distproc map mymodule:work inputs.jsonl -o results.jsonl --address 192.168.0.9:50000
  other-host$ distproc worker 192.168.0.9:50000
"""


@click.command("map", epilog=_EPILOG)
@click.argument("target", metavar="MODULE:FUNCTION")
@click.argument("input_path", metavar="[INPUT]", default="-", required=False)
@click.option(
    "-o", "--output", "output_path", default="-", metavar="FILE", help="Write here, not to stdout."
)
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Local worker processes to start.  [default: the CPU count]",
)
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="Also let remote workers join here (`distproc worker HOST:PORT`).",
)
@authkey_options
@tls_options
@click.option(
    "--star", is_flag=True, help="Each line is a JSON array of arguments: FUNCTION(*array)."
)
@click.option(
    "--records",
    is_flag=True,
    help='Write {"result": VALUE} for a result, so it cannot look like an error record.',
)
@click.option(
    "--chunksize",
    type=click.IntRange(min=1),
    default=None,
    help="Calls sent to a worker at a time.  [default: sized from measured call times]",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr.  [default: when stderr is a terminal]",
)
@click.pass_context
def map_command(
    ctx: click.Context,
    target: str,
    input_path: str,
    output_path: str,
    workers: int | None,
    address: str | None,
    authkey_file: str | None,
    star: bool,
    records: bool,
    chunksize: int | None,
    progress: bool | None,
    tls: TLSConfig | None,
) -> int:
    """Call FUNCTION on each line of INPUT, on worker processes; write the results in order.

    Each line of INPUT (a file; stdin when absent or -) is one JSON value and one
    call, FUNCTION(value); with --star, a JSON array spread as the arguments.
    Each result is written as one JSON line, in input order, as soon as the
    results before it are in. Blank lines are skipped.

    MODULE is imported with the current directory on sys.path, as `python -m`
    does, and so are the local workers (-w, default: one per CPU).

    A call that raises writes an error record in its place,
    {"error": {"type", "message", "traceback", "line"}}, and the run goes on;
    the exit status is then 1 and the last line on stderr says how many
    failed. Ctrl-C stops the run (status 130) with the results so far written.

    With --address, remote `distproc worker HOST:PORT` processes join the run;
    they need the authkey, from $DISTPROC_AUTHKEY or --authkey-file; with
    --tls-cert, --tls-key and --tls-ca they need certificates of that CA too.
    """
    hooks = ctx.find_object(MapHooks) or MapHooks()
    bind = parse_address(address) if address is not None else None
    key = read_authkey(authkey_file, os.environ)
    generated = False
    if bind is not None and key is None:
        if not is_loopback(bind[0]):
            raise CliUsageError(
                f"refusing to listen on {address} without an authkey: anyone who can reach it "
                f"could run code here; set {AUTHKEY_ENV} or use --authkey-file FILE"
            )
        key, generated = os.urandom(16).hex(), True
    count = (os.cpu_count() or 1) if workers is None else workers
    if count == 0 and bind is None:
        raise CliUsageError(
            "-w 0 starts no local workers, and without --address no remote worker can join; "
            "give -w N or --address HOST:PORT"
        )
    fn = load_function(target)
    started = time.monotonic()
    with open_input(input_path) as stream:
        total = count_calls(stream)
        source = CallReader(stream, star)
        writer = ResultWriter(output_path, records)

        def announce() -> None:
            log.info("started %d local worker(s) for %s", count, target)
            if bind is not None:
                _announce(executor.address, key if generated else None)

        # SIGTERM stops the run as Ctrl-C does, from here on (until _run takes over).
        try:
            try:
                with handle_signals(raise_keyboard_interrupt, signal.SIGINT, signal.SIGTERM):
                    # The Executor starts local workers with the current directory on PYTHONPATH.
                    executor = _start_executor(
                        hooks.executor,
                        address=bind,
                        authkey=key.encode() if key is not None else None,
                        workers=count,
                        **({"tls": tls} if tls is not None else {}),
                    )
            except KeyboardInterrupt:
                raise Interrupted("stopped while the workers were starting") from None
            stopped = _run(
                executor,
                fn,
                source,
                writer,
                star=star,
                chunksize=chunksize,
                progress=progress,
                total=total,
                announce=announce,
            )
        finally:
            writer.close()
    return _conclude(writer, source, stopped, time.monotonic() - started)


def _announce(address: Any, generated_key: str | None) -> None:
    where = format_address(address) if address is not None else "?"
    if address is not None and address[0] in WILDCARDS:
        # Listening on every interface: tell the addresses that others can use.
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        hosts = [format_address((h, address[1])) for h in host_addresses(family)]
        if hosts:
            others = f" (or {', '.join(hosts[1:])})" if len(hosts) > 1 else ""
            where = hosts[0] + others
    if generated_key is not None:
        click.echo(
            f"distproc: no authkey given, using a random one; workers need "
            f"{AUTHKEY_ENV}={generated_key}",
            err=True,
        )
    click.echo(f"distproc: remote workers can join with: distproc worker {where}", err=True)


def _conclude(writer: ResultWriter, source: CallReader, stopped: str | None, elapsed: float) -> int:
    done, failed = writer.written, writer.failed
    failures = f", {failed} failed" if failed else ""
    if stopped == "interrupted":
        raise Interrupted(f"wrote {done} result line(s){failures} before stopping")
    if stopped == "broken pipe":
        log.info("the output was closed after %d line(s)", done)
        return 0  # the reader chose to stop reading (`| head`): not a failure
    if stopped is not None:
        raise CliError(f"{stopped} (after {done} result line(s){failures})")
    if source.read_error is not None:
        reason = source.read_error.strerror or str(source.read_error)
        raise CliError(f"reading INPUT failed after {done} line(s): {reason}")
    log.info("%d call(s) in %.1fs%s", done, elapsed, failures)
    if failed:
        raise CliError(
            f"{failed} of {done} calls failed; their lines in the output are error records"
        )
    return 0
