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
in their place, ``{"error":{"type","message","traceback","line"}}``, and
the run goes on; the exit status is then 1 and the last line on stderr says
how many failed.  With ``--records`` every line is ``{"result":VALUE}`` or an
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
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any, Protocol

import click

from ..addresses import format_address, is_loopback
from ..errors import DistprocError
from ..tasks.blockmap import InputReadError, LinesOut
from .errors import CliError, CliUsageError
from .group import handle_signals, raise_keyboard_interrupt
from .hosts import WILDCARDS, host_addresses
from .lines import BlockWriter, count_calls, lines_at_hand, open_input
from .options import AUTHKEY_ENV, authkey_options, parse_address, read_authkey
from .resume import Checkpoints, ResumePoint, prepare_resume
from .targets import load_attribute
from .web_options import http_options, http_settings

__all__ = ["ExecutorLike", "MapHooks", "load_function", "map_command"]

log = logging.getLogger("distproc.cli")


class ExecutorLike(Protocol):
    """The part of :class:`distproc.Executor` that ``distproc map`` uses."""

    @property
    def address(self) -> Any: ...

    def map_lines(
        self,
        fn: Callable[..., Any],
        stream: IO[bytes],
        *,
        star: bool = False,
        records: bool = False,
        read_ahead: int = ...,
        block_lines: int | None = None,
        progress: bool | None = None,
        total: int | None = None,
        offset: int = 0,
        first_line: int = 1,
        hasher: Any = None,
    ) -> Iterator[LinesOut]: ...

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


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _byte_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A size in bytes from ``65536``, ``512K``, ``8M``, ``1G`` (powers of 1024)."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
    try:
        size = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        size = 0
    if size < 1:
        raise click.BadParameter(f"{value!r} is not a size: give bytes, or a number with K, M or G")
    return size


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
def _start_executor(factory: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return factory(**kwargs)
    except OSError as exc:
        address = exc.filename or kwargs.get("address")  # the Executor names its http= address
        where = f" on {format_address(address)}" if address else ""
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (use another port, or port 0 for a free one)"
        raise CliError(f"cannot listen{where}: {reason}") from None
    except DistprocError as exc:
        raise CliError(f"cannot start the workers: {exc}") from None


@dataclass
class _Output:
    """Where the output goes: the writer, and the resume record beside OUT (with ``-o``)."""

    writer: BlockWriter
    checkpoints: Checkpoints | None
    size: int = 0  # OUT's size in bytes

    def write(self, out: LinesOut) -> None:
        self.writer.write(out.data, out.failed)
        self.size += len(out.data)
        if self.checkpoints is not None and out.checkpoint is not None:
            line, digest = out.checkpoint
            self.checkpoints.add(end=out.end, line=line, digest=digest, out=self.size,
                                 lines=self.writer.written, failed=self.writer.failed)  # fmt: skip


def _run(
    executor: ExecutorLike,
    fn: Callable[..., Any],
    stream: IO[bytes],
    output: _Output,
    point: ResumePoint,
    options: dict[str, Any],
    announce: Callable[[], None] = lambda: None,
) -> str | None:
    """Run every call; shut the executor down; return why the run stopped early, if it did."""
    stopped: str | None = None
    results: Iterator[LinesOut] | None = None
    try:
        with handle_signals(output.writer.stop, signal.SIGINT, signal.SIGTERM):
            announce()
            hasher = point.hasher if output.checkpoints is not None else None
            results = executor.map_lines(fn, stream, offset=point.offset,
                                         first_line=point.first_line, hasher=hasher,
                                         **options)  # fmt: skip
            for out in results:
                output.write(out)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except BrokenPipeError:
        stopped = "broken pipe"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            # Nothing more can reach the reader; keep Python's exit flush from failing too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    except InputReadError as exc:
        stopped = f"reading INPUT failed: {exc.strerror or exc}"
    except DistprocError as exc:
        stopped = f"the run failed: {exc}"
    except OSError as exc:  # writing OUTPUT (a full disk...): what was written stays
        stopped = f"writing OUTPUT failed: {exc.strerror or exc}"
    finally:
        stopped = _shut_down(executor, results, stopped)
    return stopped


def _shut_down(
    executor: ExecutorLike, results: Iterator[Any] | None, stopped: str | None
) -> str | None:
    """Stop the workers at once: after a run that ended nothing runs any more, and after a
    stop what runs is not wanted.

    Signals are never ignored here (SIG_IGN): worker processes started
    meanwhile would inherit that, and never see the SIGTERM that stops them.
    """
    try:
        with handle_signals(raise_keyboard_interrupt, signal.SIGINT, signal.SIGTERM):
            close = getattr(results, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            executor.shutdown(wait=False, cancel_futures=True)
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
@click.option(
    "--connect",
    metavar="redis://HOST:PORT/DB",
    help="Run the calls through this queue in Redis (`distproc worker redis://...` serve it).",
)
@authkey_options
@click.option(
    "--star", is_flag=True, help="Each line is a JSON array of arguments: FUNCTION(*array)."
)
@click.option(
    "--records",
    is_flag=True,
    help='Write {"result":VALUE} for a result, so it cannot look like an error record.',
)
@click.option(
    "--chunksize",
    type=click.IntRange(min=1),
    default=None,
    help="Input lines sent to a worker at a time.  [default: sized from measured call times]",
)
@click.option(
    "--read-ahead",
    callback=_byte_size,
    default="8M",
    metavar="SIZE",
    show_default=True,
    help="Input bytes in flight at most (read ahead, queued, running, or done and waiting "
    "for the lines before them to be written), as 512K, 8M, 1G.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Go on with a run that stopped: run only the lines with no result in -o OUT yet.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr.  [default: when stderr is a terminal]",
)
@http_options
@click.pass_context
def map_command(
    ctx: click.Context,
    target: str,
    input_path: str,
    output_path: str,
    workers: int | None,
    address: str | None,
    connect: str | None,
    authkey_file: str | None,
    star: bool,
    records: bool,
    chunksize: int | None,
    read_ahead: int,
    resume: bool,
    progress: bool | None,
    http: str | None,
    http_token_file: str | None,
) -> int:
    """Call FUNCTION on each line of INPUT, on worker processes; write the results in order.

    Each line of INPUT (a file; stdin when absent or -) is one JSON value and one
    call, FUNCTION(value); with --star, a JSON array spread as the arguments.
    Each result is written as one JSON line, in input order, as soon as the
    results before it are in. Blank lines are skipped.

    MODULE is imported with the current directory on sys.path, as `python -m`
    does, and so are the local workers (-w, default: one per CPU).

    A call that raises writes an error record in its place,
    {"error":{"type","message","traceback","line"}}, and the run goes on;
    the exit status is then 1 and the last line on stderr says how many
    failed. Ctrl-C stops the run (status 130) with the results so far written;
    with -o OUT, --resume then runs only the lines with no result in OUT.

    With --address, remote `distproc worker HOST:PORT` processes join the run;
    they need the authkey, from $DISTPROC_AUTHKEY or --authkey-file.

    --http HOST:PORT serves the run's live dashboard and /metrics there.
    """
    hooks = ctx.find_object(MapHooks) or MapHooks()
    dashboard = http_settings(http, http_token_file)
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
    if connect is not None and bind is not None:
        raise CliUsageError("--connect and --address are two ways to reach workers: pick one")
    if count == 0 and bind is None and connect is None:
        raise CliUsageError(
            "-w 0 starts no local workers, and without --address no remote worker can join; "
            "give -w N or --address HOST:PORT"
        )
    if resume and output_path == "-":
        raise CliUsageError(
            "--resume goes on with the results already in OUT: give -o OUT, the file of "
            "the run to resume"
        )
    fn = load_function(target)
    header = {"target": target, "star": star, "records": records}
    started = time.monotonic()
    with open_input(input_path) as stream:
        point, checkpoints = ResumePoint(), None
        if resume:
            point, checkpoints = prepare_resume(output_path, stream, header)
        writer = BlockWriter(output_path, append=resume)
        if output_path != "-" and checkpoints is None:
            checkpoints = Checkpoints(output_path, header)
        writer.written, writer.failed = point.written, point.failed
        output = _Output(writer, checkpoints, point.out_size)
        stopped: str | None = "interrupted"
        try:
            at_hand = lines_at_hand(stream)
            if bind is None and (at_hand == 0 or _at_end(stream)):
                stopped = None  # nothing to run: no worker is started for it
            else:
                if at_hand is not None and bind is None:
                    count = min(count, at_hand)  # an input all at hand: a worker per line at most
                stopped = _start_and_run(
                    hooks, fn, stream, output, point, key=key, generated=generated, bind=bind,
                    connect=connect, count=count, target=target, dashboard=dashboard,
                    token_file=http_token_file, options={
                        "star": star, "records": records, "block_lines": chunksize,
                        "read_ahead": read_ahead, "progress": progress,
                        "total": _total(stream, progress),
                    },
                )  # fmt: skip
        finally:
            writer.close()
            if checkpoints is not None:
                checkpoints.close(finished=stopped is None)
    return _conclude(writer, stopped, time.monotonic() - started)


def _start_and_run(
    hooks: MapHooks,
    fn: Callable[..., Any],
    stream: IO[bytes],
    output: _Output,
    point: ResumePoint,
    *,
    key: str | None,
    generated: bool,
    bind: tuple[str, int] | None,
    connect: str | None,
    count: int,
    target: str,
    dashboard: dict[str, Any],
    token_file: str | None,
    options: dict[str, Any],
) -> str | None:
    """Start the executor (its service, its dashboard and local workers), then :func:`_run`."""

    def announce() -> None:
        log.info("started %d local worker(s) for %s", count, target)
        if bind is not None:
            _announce(executor.address, key if generated else None)
        url = getattr(executor, "dashboard_url", None)
        if url is not None:
            shown = url.partition("?")[0] if token_file else url
            click.echo(f"distproc: dashboard at {shown}", err=True)

    # SIGTERM stops the run as Ctrl-C does, from here on (until _run takes over).
    fleet: Any = None
    try:
        with handle_signals(raise_keyboard_interrupt, signal.SIGINT, signal.SIGTERM):
            kwargs: dict[str, Any] = {
                "address": bind, "authkey": key.encode() if key is not None else None,
                "workers": count,
            }  # fmt: skip
            if connect is not None:  # a queue in Redis: the Executor starts the workers on it
                kwargs = {"connect": connect, "workers": count}
            elif hooks.executor is _distproc_executor and count:
                # The workers start first, and import while this process does.
                kwargs["authkey"] = kwargs["authkey"] or os.urandom(16).hex().encode()
                kwargs["sock"], fleet = _start_executor(_early_workers, **kwargs)
                name = kwargs["sock"].getsockname()
                kwargs.update(address=(name[0], name[1]), workers=0, fleet=fleet)
            # The local workers get the current directory on PYTHONPATH.
            executor = _start_executor(hooks.executor, **kwargs, **dashboard)
    except BaseException as exc:
        if fleet is not None:
            fleet.kill()
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted("stopped while the workers were starting") from None
        raise
    return _run(executor, fn, stream, output, point, options, announce)


def _early_workers(*, address: Any, authkey: bytes, workers: int) -> tuple[Any, Any]:
    """A listening socket for the service, and the local workers started for it at once."""
    from ..addresses import listen_on
    from ..tasks.fleet import local_workers

    sock = listen_on(address or ("127.0.0.1", 0), 128)
    name = sock.getsockname()
    try:
        return sock, local_workers((name[0], name[1]), authkey, workers)
    except BaseException:
        sock.close()
        raise


def _at_end(stream: IO[bytes]) -> bool:
    """Whether ``stream`` has ended already (an empty input), without waiting for it."""
    try:
        ready = bool(select.select([stream.fileno()], [], [], 0)[0])
    except (OSError, ValueError, AttributeError):
        ready = True  # a stand-in: always at hand
    peek = getattr(stream, "peek", None)
    return ready and peek is not None and not peek(1)


def _total(stream: IO[bytes], progress: bool | None) -> int | None:
    """The lines left in INPUT, when it is a file and a progress bar will show them."""
    show = sys.stderr.isatty() if progress is None else progress
    return count_calls(stream) if show else None


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


def _conclude(writer: BlockWriter, stopped: str | None, elapsed: float) -> int:
    done, failed = writer.written, writer.failed
    failures = f", {failed} failed" if failed else ""
    if stopped == "interrupted":
        raise Interrupted(f"wrote {done} result line(s){failures} before stopping")
    if stopped == "broken pipe":
        log.info("the output was closed after %d line(s)", done)
        return 0  # the reader chose to stop reading (`| head`): not a failure
    if stopped is not None:
        raise CliError(f"{stopped} (after {done} result line(s){failures})")
    log.info("%d call(s) in %.1fs%s", done, elapsed, failures)
    if failed:
        raise CliError(
            f"{failed} of {done} calls failed; their lines in the output are error records"
        )
    return 0
