"""``distproc map --resume`` after a real ``kill -9`` of ``distproc map``, byte for byte.

Each test runs ``python -m distproc map`` for real, with its own worker
processes; a run is killed with SIGKILL while it writes OUT, then resumed,
and OUT is compared with what one uninterrupted run wrote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._procs import TASKFNS, clean_environ, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SUFFIX = ".distproc-resume"
FN = "dp_taskfns:square_or_fail"


def _input(path: Path, lines: int = 3000) -> Path:
    """Numbers, with blank lines, lines that are not JSON and calls that fail among them."""
    rows = []
    for i in range(1, lines + 1):
        rows.append(f"{i}\n")
        if i % 250 == 0:
            rows.append("\n")
        if i % 333 == 0:
            rows.append("not json\n")
    path.write_text("".join(rows))
    return path


def _map(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "distproc", "map", FN, *args, "-w", "2"],
        cwd=TASKFNS, env=clean_environ(), input=stdin, capture_output=True, timeout=120,
        check=False,
    )  # fmt: skip



def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[tuple[Path, bytes, str]]:
    """The input, and what one uninterrupted run writes for it (and says last)."""
    inputs = _input(tmp_path / "in.jsonl")
    result = _map(str(inputs), "-o", str(tmp_path / "full.jsonl"))
    assert result.returncode == 1, result.stderr
    assert not (tmp_path / f"full.jsonl{SUFFIX}").exists()  # a finished run leaves no record
    yield inputs, (tmp_path / "full.jsonl").read_bytes(), result.stderr.decode().splitlines()[-1]


def _kill_while_writing(args: list[str], out: Path, at: int, stdin: bytes | None = None) -> None:
    """Start a run, SIGKILL it once OUT holds ``at`` bytes; wait for its workers to go."""
    with subprocess.Popen(
        [sys.executable, "-m", "distproc", "-v", "map", FN, *args, "-o", str(out), "-w", "2"],
        cwd=TASKFNS, env=clean_environ(), stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        assert proc.stdin is not None and proc.stderr is not None
        try:
            if stdin is not None:
                proc.stdin.write(stdin)
            proc.stdin.close()
            wait_for(lambda: proc.poll() is not None or (out.exists() and out.stat().st_size >= at),
                     60, "OUT to grow")  # fmt: skip
            assert proc.poll() is None, proc.stderr.read().decode()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = proc.stderr.read().decode()
    assert proc.returncode == -signal.SIGKILL
    workers = {int(pid) for pid in re.findall(r"\(\S+ pid (\d+)\) joined", stderr)}
    assert workers, stderr
    try:  # the workers see their master's connection drop, and exit
        wait_for(lambda: not any(_alive(pid) for pid in workers), 30, "the workers to exit")
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_run_resumed_writes_what_one_run_writes(
    tmp_path: Path, reference: tuple[Path, bytes, str]
) -> None:
    inputs, full, last = reference
    out = tmp_path / "out.jsonl"
    # Killed three times, at different points, resumed each time (the last resume finishes).
    _kill_while_writing([str(inputs)], out, len(full) // 5)
    assert 0 < out.stat().st_size < len(full)
    assert (tmp_path / f"out.jsonl{SUFFIX}").exists()
    for share in (2, 1.3):
        _kill_while_writing([str(inputs), "--resume"], out, int(len(full) // share))
    result = _map(str(inputs), "-o", str(out), "--resume")
    assert result.returncode == 1, result.stderr
    assert out.read_bytes() == full
    assert result.stderr.decode().splitlines()[-1] == last  # the failures of every part
    assert not (tmp_path / f"out.jsonl{SUFFIX}").exists()


def test_a_torn_last_line_is_dropped_and_run_again(
    tmp_path: Path, reference: tuple[Path, bytes, str]
) -> None:
    inputs, full, _ = reference
    out = tmp_path / "out.jsonl"
    _kill_while_writing([str(inputs)], out, len(full) // 3)
    with out.open("ab") as f:
        f.write(b'{"error":{"ty')  # as if the kill had come in the middle of a write
    assert _map(str(inputs), "-o", str(out), "--resume").returncode == 1
    assert out.read_bytes() == full


def test_lines_written_after_the_last_checkpoint_are_kept(
    tmp_path: Path, reference: tuple[Path, bytes, str]
) -> None:
    inputs, full, _ = reference
    out = tmp_path / "out.jsonl"
    record = tmp_path / f"out.jsonl{SUFFIX}"
    _kill_while_writing([str(inputs)], out, len(full) // 2)
    # Forget the last checkpoints, as if the kill had come before they were written:
    # the lines in OUT after the one left are results all the same, not run again.
    marks = record.read_bytes().splitlines(keepends=True)
    assert len(marks) > 3
    record.write_bytes(b"".join(marks[:-2]))
    before = out.read_bytes()
    assert _map(str(inputs), "-o", str(out), "--resume").returncode == 1
    assert out.read_bytes() == full
    assert full.startswith(before)


def test_resume_of_stdin(tmp_path: Path, reference: tuple[Path, bytes, str]) -> None:
    inputs, full, _ = reference
    out = tmp_path / "out.jsonl"
    data = inputs.read_bytes()
    _kill_while_writing([], out, len(full) // 2, stdin=data)
    result = _map("-o", str(out), "--resume", stdin=data)
    assert result.returncode == 1, result.stderr
    assert out.read_bytes() == full


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no -o", "--resume goes on with the results already in OUT: give -o OUT"),
        ("no record", "nothing to resume in"),
        ("another input", "was written for a different input"),
        ("another function", "was written by another run"),
        ("--star", "was written by another run"),
    ],
)
def test_a_resume_that_cannot_be_right_is_refused(
    tmp_path: Path, reference: tuple[Path, bytes, str], change: str, message: str
) -> None:
    inputs, full, _ = reference
    out = tmp_path / "out.jsonl"
    _kill_while_writing([str(inputs)], out, len(full) // 3)
    args = [sys.executable, "-m", "distproc", "map", FN, str(inputs), "-o", str(out), "--resume"]
    if change == "no -o":
        args = [*args[:-3], "--resume"]
    elif change == "no record":
        (tmp_path / f"out.jsonl{SUFFIX}").unlink()
    elif change == "another input":
        other = tmp_path / "other.jsonl"
        other.write_text("".join(f"{i + 1}\n" for i in range(3000)))
        args[5] = str(other)
    elif change == "another function":
        args[4] = "dp_taskfns:square"
    else:
        args.append("--star")
    before = out.read_bytes()
    result = subprocess.run(args, cwd=TASKFNS, env=clean_environ(), capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("distproc: error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert out.read_bytes() == before  # nothing of OUT is lost for it
    json.loads(before.splitlines()[0])
