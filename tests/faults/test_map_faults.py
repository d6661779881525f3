"""``distproc map`` under real faults and signals: kill -9, empty input, SIGTERM, Ctrl-C.

The map runs as a real ``python -m distproc map`` with its own worker
processes; tasks report where they run through a :class:`hub.Hub`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hub import Hub

from ._procs import TASKFNS, Proc, clean_environ

pytestmark = pytest.mark.timeout(120)


def test_a_lost_chunk_runs_again_before_the_rest_of_the_input(
    hub: Hub, procs: Callable[..., Proc]
) -> None:
    env = clean_environ()
    master = procs(
        "map", "--star", "dp_taskfns:hold", "-w", "2", "--chunksize", "5", "--no-progress",
        cwd=TASKFNS, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert master.popen.stdin is not None and master.popen.stdout is not None
    master.popen.stdin.write("".join(f"[{hub.port}, {x}]\n" for x in range(200)))
    master.popen.stdin.close()
    # Each worker takes one chunk (0-4 and 5-9) and blocks in its first call.
    first = dict([hub.next_started(), hub.next_started()])
    assert set(first) == {0, 5}
    os.kill(first[5], signal.SIGKILL)  # chunk 5-9 is lost while 0-4 still runs
    # The next call to start, on the replacement worker, is the lost chunk's first
    # call: ahead of chunks 10-199, although the caller still waits for chunk 0-4.
    again, pid = hub.next_started()
    assert again == 5 and pid not in first.values()
    hub.release()
    out = [json.loads(line) for line in master.popen.stdout]
    assert master.finish() == 0, master.text
    assert out == [x * x for x in range(200)]
    starts = []
    while not hub.started.empty():
        starts.append(hub.started.get()[0])
    assert {6, 7, 8, 9} <= set(starts[: starts.index(199)])


def _map(*args: str, input: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distproc", "map", *args],
        cwd=TASKFNS, env=clean_environ(), input=input, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_an_empty_input_ends_promptly_every_time() -> None:
    # The workers may still be starting when the input ends: each must stop at once.
    for _ in range(30):
        result = _map("dp_taskfns:echo", "-w", "2", input="", timeout=20)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_promptly_in_any_state(
    hub: Hub, procs: Callable[..., Proc], signum: signal.Signals
) -> None:
    # The workers starting; a worker joined and idle; a call running (held by the hub).
    for state in ["started 2 local worker", "joined with", "running"] * 3:
        master = procs(
            "-v", "map", "--star", "dp_taskfns:hold", "-w", "2", cwd=TASKFNS,
            env=clean_environ(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert master.popen.stdin is not None
        if state == "running":
            master.popen.stdin.write(f"[{hub.port}, 1]\n")
            master.popen.stdin.flush()
            hub.next_started()
        else:
            master.wait_line(state)
        master.popen.send_signal(signum)
        assert master.finish(timeout=20) == 130, master.text
        assert master.lines[-1].startswith("distproc: interrupted: wrote 0 result line(s)")
        assert "Traceback" not in master.text


def test_a_line_too_large_to_send_is_refused_on_the_master_and_blames_no_worker(
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "inputs.jsonl"
    with inputs.open("w") as f:
        f.write('"small"\n')
        f.write('"' + "x" * 70_000_000 + '"\n')  # a 70 MB line: over the 64 MiB frame limit
        f.write('"after"\n')
    result = subprocess.run(
        [sys.executable, "-m", "distproc", "-v", "map", "dp_taskfns:echo", str(inputs),
         "-w", "2"],
        cwd=TASKFNS, env=clean_environ(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    small, big, after = (json.loads(line) for line in result.stdout.splitlines())
    assert (small, after) == ("small", "after")
    error = big["error"]
    assert error["type"] == "distproc.errors.FrameTooLargeError"
    assert error["line"] == 2 and error["traceback"] is None
    assert "take 70,000," in error["message"] and "67,108,864 bytes" in error["message"]
    assert "path or URL" in error["message"]
    # No worker was lost, blamed or restarted for it.
    assert "lost" not in result.stderr and "ended" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "distproc: error: 1 of 3 calls failed; their lines in the output are error records"
    )


def test_a_line_that_kills_its_workers_gets_an_error_record_and_loses_no_other_line() -> None:
    # Its block is lost, run again at the front, split in halves until the line is alone,
    # and that line is dead-lettered after it has taken down 3 workers; every other line
    # of every block it was in is written, in order.
    lines = "".join(f"[{x}, 13]\n" for x in range(300))
    result = _map("--star", "dp_taskfns:die_on", "-w", "2", input=lines, timeout=90)
    assert result.returncode == 1, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 300
    assert [v for i, v in enumerate(out) if i != 13] == [x * x for x in range(300) if x != 13]
    error = out[13]["error"]
    assert (error["type"], error["line"]) == ("distproc.errors.WorkerLostError", 14)
    assert "1 of 300 calls failed" in result.stderr
