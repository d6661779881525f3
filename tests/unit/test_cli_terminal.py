"""``distproc map`` in a real terminal: what a person sees, read back with a terminal emulator.

The map runs in a pseudo-terminal (stdout and stderr both on it, as when one
types the README's first commands), and ``pyte`` draws what it writes.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dp_taskfns
import pyte
import pytest
from hub import Hub

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs pseudo-terminals"),
]

TASKFNS = Path(dp_taskfns.__file__).parent
COLUMNS, LINES = 120, 60


def environ(**changes: str) -> dict[str, str]:
    drop = ("DISTPROC_AUTHKEY", "PYTHONPATH", "NO_COLOR", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(TERM="xterm-256color", **changes)
    return env


class Terminal:
    """A command whose stdout and stderr are one pseudo-terminal, drawn by pyte."""

    def __init__(self, args: list[str], stdin: int | None = subprocess.PIPE, **env: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distproc", *args], cwd=TASKFNS, env=environ(**env),
            stdin=stdin, stdout=slave, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        self._master = master
        self.screen = pyte.Screen(COLUMNS, LINES)
        self._stream = pyte.ByteStream(self.screen)
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            with self._lock:
                self._stream.feed(data)

    def rows(self) -> list[str]:
        with self._lock:
            return [row.rstrip() for row in self.screen.display]

    def wait(self, predicate: Callable[[list[str]], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.rows()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(self.rows()))
            threading.Event().wait(0.02)

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._reader.join(10)
        os.close(self._master)


@pytest.fixture
def terminals() -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(*args: str, **options: object) -> Terminal:
        terminal = Terminal(list(args), **options)  # type: ignore[arg-type]
        opened.append(terminal)
        return terminal

    yield open_terminal
    for terminal in opened:
        terminal.close()


def shows(text: str, rows: list[str]) -> bool:
    return text in rows


def bar_rows(rows: list[str]) -> list[str]:
    return [row for row in rows if row.startswith("distproc ")]


def test_results_and_the_bar_share_the_terminal(terminals: Callable[..., Terminal]) -> None:
    term = terminals("map", "dp_taskfns:square", "-w", "2")
    assert term.proc.stdin is not None
    for x in range(1, 51):  # one at a time: results arrive while the bar is drawn
        term.proc.stdin.write(f"{x}\n".encode())
        term.proc.stdin.flush()
        term.wait(functools.partial(shows, str(x * x)), f"result {x}")
    term.proc.stdin.close()
    assert term.finish() == 0
    rows = term.rows()
    # Each result on a line of its own, in order, nothing glued to it; the bar below.
    assert rows[:50] == [str(x * x) for x in range(1, 51)]
    [bar] = bar_rows(rows)
    assert rows.index(bar) == 50 and not any(rows[51:])
    # The total is unknown (stdin): a count, and no ETA that is not one.
    assert re.search(r"\b50 done\b", bar), bar
    assert "ETA" not in bar and "/50" not in bar


def test_the_bar_shows_live_workers_and_an_eta_for_a_known_total(
    terminals: Callable[..., Terminal], tmp_path: Path
) -> None:
    with Hub() as hub:
        inputs = tmp_path / "inputs.jsonl"
        inputs.write_text("".join(f"[{hub.port}, {x}]\n" for x in range(20)))
        term = terminals(
            "map", "--star", "dp_taskfns:hold", str(inputs), "-o", str(tmp_path / "out.jsonl"),
            "-w", "0", "--address", "127.0.0.1:0", DISTPROC_AUTHKEY="bar-key",
        )  # fmt: skip
        term.wait(lambda rows: any("distproc worker 127.0.0.1:" in r for r in rows), "the hint")
        [address] = [
            m[1] for r in term.rows() if (m := re.search(r"distproc worker (127\.0\.0\.1:\d+)", r))
        ]
        env = environ(DISTPROC_AUTHKEY="bar-key")
        command = [sys.executable, "-m", "distproc", "worker", address, "--threads", "-c", "1"]
        workers = [
            subprocess.Popen(command, cwd=TASKFNS, env=env, stderr=subprocess.DEVNULL)
            for _ in range(2)
        ]
        try:
            hub.next_started()
            hub.next_started()  # both workers run a task, held: nothing completes
            term.wait(lambda rows: any("2 workers" in r for r in bar_rows(rows)), "2 workers")
            [bar] = bar_rows(term.rows())
            assert re.search(r"0/20\s+0%", bar) and "ETA -:--:--" in bar, bar
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(30)
            # Still nothing completes, and the bar says a worker left.
            term.wait(lambda rows: any(" 1 worker" in r for r in bar_rows(rows)), "1 worker")
            hub.release()
            assert term.finish() == 0
        finally:
            for worker in workers:
                worker.kill()
                worker.wait(30)
    [bar] = bar_rows(term.rows())
    assert "20/20" in bar and "100%" in bar and "ETA 0:00:00" in bar, bar
