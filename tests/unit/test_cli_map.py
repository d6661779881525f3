"""``distproc map``: in-process on a stand-in executor, and for real in subprocesses."""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner, Result

from distproc.cli.group import configure_logging
from distproc.cli.main import cli
from distproc.cli.map import MapHooks
from distproc.errors import ConnectionLostError
from distproc.tasks.blockmap import BlockReader, LinesOut
from distproc.tasks.blocks import run_block

REPO = Path(__file__).resolve().parents[2]
WriteModule = Callable[[str, str], Path]

FUNCTIONS = """\
import time

def double(x):
    return 2 * x

def add(a, b):
    return a + b

def fail_on_odd(x):
    if x % 2:
        raise ValueError(f"odd: {x}")
    return x

def as_set(x):
    return {x}

def nap(x):
    time.sleep(0.02 if x < 10 else 60)
    return x

not_a_function = 42
lambda_function = lambda x: x

def make_nested():
    def nested(x):
        return x
    return nested

nested = make_nested()
"""


class FakeExecutor:
    """Runs each call in this process, in order: the Executor as ``distproc map`` uses it."""

    def __init__(
        self, address: Any = None, authkey: bytes | None = None, *, workers: int = 0
    ) -> None:
        self.kwargs = {"address": address, "authkey": authkey, "workers": workers}
        self.address = ("127.0.0.1", 4321) if address is not None else None
        self.map_options: dict[str, Any] = {}
        self.shutdowns: list[tuple[bool, bool]] = []

    def map_lines(
        self,
        fn: Callable[..., Any],
        stream: IO[bytes],
        *,
        star: bool = False,
        records: bool = False,
        read_ahead: int = 0,
        block_lines: int | None = None,
        progress: bool | None = None,
        total: int | None = None,
        offset: int = 0,
        first_line: int = 1,
        hasher: Any = None,
    ) -> Iterator[LinesOut]:
        self.map_options = {
            "block_lines": block_lines, "progress": progress, "total": total,
            "read_ahead": read_ahead,
        }  # fmt: skip
        reader = BlockReader(stream, max_line=1 << 20, offset=offset, first_line=first_line,
                             hasher=hasher)  # fmt: skip

        def results() -> Iterator[LinesOut]:
            # A block of one line at a time (or of --chunksize lines), run here.
            while (block := reader.next(1, block_lines)) is not None:
                _, data, failed, _ = run_block(fn, block.data, block.first, star, records, 1 << 20)
                mark = (block.first + block.data.count(b"\n"), block.digest)
                yield LinesOut(data, failed, block.end, mark)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shutdowns.append((wait, cancel_futures))


class Started:
    """An executor factory that keeps what it made."""

    def __init__(self, cls: Callable[..., Any] = FakeExecutor) -> None:
        self.cls = cls
        self.executors: list[Any] = []

    def __call__(self, **kwargs: Any) -> Any:
        executor = self.cls(**kwargs)
        self.executors.append(executor)
        return executor

    @property
    def one(self) -> Any:
        assert len(self.executors) == 1
        return self.executors[0]


@pytest.fixture
def runner() -> CliRunner:
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]  # click < 8.2
    return CliRunner()


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh current directory holding ``funcs.py``; forgotten (with sys.path) after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("funcs", None)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("distproc")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def run_map(
    runner: CliRunner,
    *args: str,
    input: str = "",
    started: Started | None = None,
    env: dict[str, str | None] | None = None,
) -> Result:
    environ: dict[str, str | None] = {"DISTPROC_AUTHKEY": None}
    environ.update(env or {})
    hooks = MapHooks(executor=started if started is not None else Started())
    return runner.invoke(cli, ["map", *args], input=input, env=environ, obj=hooks)


def lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def one_line_error(result: Result, exit_code: int, *fragments: str) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last
    return last


# ------------------------------------------------------------------ in-process
def test_results_in_input_order(runner: CliRunner, module_dir: Path) -> None:
    started = Started()
    result = run_map(runner, "funcs:double", input="1\n2\n\n3.5\n[1]\n", started=started)
    assert result.exit_code == 0, result.stderr
    assert lines(result.stdout) == [2, 4, 7.0, [1, 1]]
    assert result.stderr == ""
    executor = started.one
    assert executor.kwargs == {"address": None, "authkey": None, "workers": os.cpu_count() or 1}
    assert executor.map_options == {
        "block_lines": None, "progress": None, "total": None, "read_ahead": 8 << 20,
    }  # fmt: skip
    assert executor.shutdowns == [(False, True)]


def test_failed_calls_write_error_records_and_the_run_goes_on(
    runner: CliRunner, module_dir: Path
) -> None:
    result = run_map(runner, "funcs:fail_on_odd", input="".join(f"{i}\n" for i in range(5)))
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert [out[0], out[2], out[4]] == [0, 2, 4]
    for line, record in ((2, out[1]), (4, out[3])):
        error = record["error"]
        assert error["type"] == "ValueError"
        assert error["message"] == f"odd: {line - 1}"
        assert error["traceback"].startswith("Traceback (most recent call last):\n")
        assert "in fail_on_odd" in error["traceback"]
        assert "run_block" not in error["traceback"]  # from the function on
        assert error["line"] == line
    assert result.stderr.splitlines()[-1] == (
        "distproc: error: 2 of 5 calls failed; their lines in the output are error records"
    )


def test_lines_that_are_not_calls_keep_their_place(runner: CliRunner, module_dir: Path) -> None:
    result = run_map(runner, "funcs:double", input="not json\n1\n\n{\n2\n\xff\n")
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert [record["error"]["line"] for record in (out[0], out[2], out[4])] == [1, 4, 6]
    assert all(out[i]["error"]["type"] == "InputError" for i in (0, 2, 4))
    assert "input line 1 is not JSON" in out[0]["error"]["message"]
    assert [out[1], out[3]] == [2, 4]
    assert "3 of 5 calls failed" in result.stderr.splitlines()[-1]


def test_star_spreads_arrays(runner: CliRunner, module_dir: Path) -> None:
    result = run_map(runner, "--star", "funcs:add", input='[1, 2]\n["a", "b"]\n3\n[1]\n')
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert out[:2] == [3, "ab"]
    assert out[2]["error"]["type"] == "InputError"
    assert "is a JSON number; --star takes a JSON array" in out[2]["error"]["message"]
    assert out[3]["error"]["type"] == "TypeError"  # add() missing an argument: the call failed


def test_records_wrap_every_result(runner: CliRunner, module_dir: Path) -> None:
    result = run_map(runner, "--records", "funcs:fail_on_odd", input="2\n3\n")
    assert lines(result.stdout)[0] == {"result": 2}
    assert set(lines(result.stdout)[1]) == {"error"}


def test_a_result_that_is_not_json_is_an_error(runner: CliRunner, module_dir: Path) -> None:
    result = run_map(runner, "funcs:as_set", input="1\n")
    assert result.exit_code == 1
    error = lines(result.stdout)[0]["error"]
    assert error["type"] == "TypeError"
    assert error["message"].startswith("the result is not JSON")


def test_input_and_output_files(runner: CliRunner, module_dir: Path) -> None:
    (module_dir / "in.jsonl").write_text("1\n\n2\n3\n")
    started = Started()
    result = run_map(
        runner,
        "funcs:double",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "-w",
        "3",
        "--chunksize",
        "7",
        "--no-progress",
        started=started,
    )
    assert (result.exit_code, result.stdout) == (0, "")
    assert (module_dir / "out.jsonl").read_text() == "2\n4\n6\n"
    assert started.one.kwargs["workers"] == 3
    assert started.one.map_options == {
        "block_lines": 7, "progress": False, "total": None, "read_ahead": 8 << 20,
    }  # fmt: skip


def test_dash_is_stdin(runner: CliRunner, module_dir: Path) -> None:
    result = run_map(runner, "funcs:double", "-", "--progress", input="5\n")
    assert lines(result.stdout) == [10]


def test_ctrl_c_keeps_the_results_so_far_and_stops_the_workers(
    runner: CliRunner, module_dir: Path
) -> None:
    class Interrupted(FakeExecutor):
        def map_lines(self, fn: Any, stream: Any, **options: Any) -> Iterator[LinesOut]:
            results = super().map_lines(fn, stream, **options)
            yield next(results)
            yield next(results)
            raise KeyboardInterrupt

    started = Started(Interrupted)
    result = run_map(runner, "funcs:double", input="1\n2\n3\n4\n", started=started)
    assert result.exit_code == 130
    assert lines(result.stdout) == [2, 4]
    assert result.stderr.splitlines()[-1] == (
        "distproc: interrupted: wrote 2 result line(s) before stopping"
    )
    assert started.one.shutdowns == [(False, True)]


def test_a_broken_executor_is_one_line(runner: CliRunner, module_dir: Path) -> None:
    class Broken(FakeExecutor):
        def map_lines(self, fn: Any, stream: Any, **options: Any) -> Iterator[LinesOut]:
            yield next(super().map_lines(fn, stream, **options))
            raise ConnectionLostError("the service went away")

    started = Started(Broken)
    result = run_map(runner, "funcs:double", input="1\n2\n", started=started)
    one_line_error(result, 1, "the run failed: the service went away", "after 1 result line")
    assert started.one.shutdowns == [(False, True)]


def test_address_in_use_is_one_line(runner: CliRunner, module_dir: Path) -> None:
    def busy(**kwargs: Any) -> Any:
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))

    result = runner.invoke(
        cli,
        ["map", "funcs:double", "--address", "127.0.0.1:5000"],
        env={"DISTPROC_AUTHKEY": "k"},
        obj=MapHooks(executor=busy),
    )
    one_line_error(result, 1, "cannot listen on 127.0.0.1:5000", "use another port")


def test_remote_workers_get_the_address_and_key(runner: CliRunner, module_dir: Path) -> None:
    started = Started()
    result = run_map(
        runner,
        "funcs:double",
        "--address",
        "127.0.0.1:0",
        "-w",
        "0",
        input="1\n",
        env={"DISTPROC_AUTHKEY": "sesame"},
        started=started,
    )
    assert result.exit_code == 0, result.stderr
    assert started.one.kwargs == {
        "address": ("127.0.0.1", 0),
        "authkey": b"sesame",
        "workers": 0,
    }
    assert (
        result.stderr == "distproc: remote workers can join with: distproc worker 127.0.0.1:4321\n"
    )
    assert "sesame" not in result.stderr


def test_a_loopback_address_without_a_key_gets_a_random_one(
    runner: CliRunner, module_dir: Path
) -> None:
    started = Started()
    result = run_map(
        runner, "funcs:double", "--address", "127.0.0.1:0", input="1\n", started=started
    )
    key = started.one.kwargs["authkey"]
    assert re.fullmatch(rb"[0-9a-f]{32}", key)
    assert f"workers need DISTPROC_AUTHKEY={key.decode()}" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "exit_code", "fragments"),
    [
        (["funcs:double", "-w", "0"], {}, 2, ["-w 0 starts no local workers"]),
        (["funcs:double", "--address", "0.0.0.0:0"], {}, 2, ["refusing to listen on 0.0.0.0:0"]),
        (["funcs:double", "--address", "nowhere"], {}, 2, ["bad address 'nowhere'"]),
        (["funcs:double", "--authkey", "x"], {}, 2, ["--authkey is not accepted"]),
        (["funcs:double", "missing.jsonl"], {}, 2, ["cannot read INPUT 'missing.jsonl'"]),
        (["funcs:double", "-o", "no/such/dir"], {}, 2, ["cannot write OUTPUT 'no/such/dir'"]),
        (["funcs"], {}, 2, ["expected MODULE:FUNCTION, e.g. examples.squares:square"]),
        (["funcs.py:double"], {}, 2, ["give a module name, not a file: funcs:double"]),
        (["no_such_module_here:f"], {}, 2, ["cannot import 'no_such_module_here'"]),
        (["funcs:triple"], {}, 2, ["no function 'triple'; its functions: add, as_set"]),
        (["funcs:not_a_function"], {}, 2, ["funcs:not_a_function is a int object"]),
        (["funcs:lambda_function"], {}, 2, ["cannot be sent to workers", "lambda"]),
        (["funcs:nested"], {}, 2, ["cannot be sent to workers", "inside another"]),
    ],
)
def test_errors_a_person_can_act_on_are_one_line(
    runner: CliRunner,
    module_dir: Path,
    args: list[str],
    env: dict[str, str | None],
    exit_code: int,
    fragments: list[str],
) -> None:
    started = Started()
    result = run_map(runner, *args, env=env, started=started)
    line = one_line_error(result, exit_code, *fragments)
    assert line.startswith("distproc: error: ")
    assert len(result.stderr.splitlines()) == 1
    assert started.executors == []


def test_debug_shows_the_traceback_behind_an_error(runner: CliRunner, module_dir: Path) -> None:
    (module_dir / "broken.py").write_text("1 / 0\n")
    plain = runner.invoke(cli, ["map", "broken:f"], obj=MapHooks(executor=Started()))
    assert "Traceback" not in plain.stderr
    debug = runner.invoke(cli, ["--debug", "map", "broken:f"], obj=MapHooks(executor=Started()))
    assert debug.exit_code == plain.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ZeroDivisionError" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.splitlines()[-1]
    assert plain.stderr.splitlines()[-1].startswith("distproc: error: importing 'broken' failed")
    sys.modules.pop("broken", None)


def test_verbose_logs_one_timestamped_line_per_event(runner: CliRunner, module_dir: Path) -> None:
    result = run_map(runner, "-w", "2", "funcs:double", input="1\n")
    assert result.stderr == ""
    result = runner.invoke(
        cli, ["-v", "map", "-w", "2", "funcs:double"], input="1\n", obj=MapHooks(Started())
    )
    events = result.stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO distproc\.cli: "
    assert re.fullmatch(stamp + "started 2 local worker\\(s\\) for funcs:double", events[0])
    assert re.fullmatch(stamp + r"1 call\(s\) in \d+\.\ds", events[1])
    quiet = runner.invoke(cli, ["-q", "map", "funcs:double"], input="1\n", obj=MapHooks(Started()))
    assert quiet.stderr == ""


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_in_process_on_real_workers(runner: CliRunner, module_dir: Path) -> None:
    result = runner.invoke(
        cli,
        ["map", "funcs:fail_on_odd", "-w", "1", "--no-progress"],
        input="2\n3\n4\n",
        env={"DISTPROC_AUTHKEY": None, "PYTHONPATH": None},  # workers find funcs.py by the cwd
    )
    assert result.exit_code == 1, result.stderr
    out = lines(result.stdout)
    assert (out[0], out[2]) == (2, 4)
    assert out[1]["error"]["type"] == "ValueError"
    assert "in fail_on_odd" in out[1]["error"]["traceback"]


@pytest.mark.parametrize("debug", [False, True])
def test_a_logged_exception_is_one_line_unless_debug(
    capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    configure_logging(0, debug)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        logging.getLogger("distproc.test").exception("it broke\nbadly")
    err = capsys.readouterr().err
    if debug:
        assert "Traceback (most recent call last)" in err
    else:
        assert err.endswith(
            " ERROR distproc.test: it broke | badly (ZeroDivisionError: division by zero)\n"
        )
        assert err.count("\n") == 1


# -------------------------------------------------------- for real, end to end
def environ(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISTPROC_AUTHKEY", "PYTHONPATH")}
    env.update(changes)
    return env


def distproc(*args: str, cwd: Path, input: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distproc", *args],
        cwd=cwd,
        env=environ(**env),
        input=input,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_readme_example_from_the_repository_root() -> None:
    result = distproc(
        "map",
        "examples.squares:square",
        "-w",
        "2",
        cwd=REPO,
        input="".join(f"{i}\n" for i in range(1, 201)),
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert lines(result.stdout) == [i * i for i in range(1, 201)]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_failures_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    result = distproc("map", "funcs:fail_on_odd", "-w", "2", cwd=tmp_path, input="1\n2\n3\n")
    assert result.returncode == 1
    out = lines(result.stdout)
    assert out[1] == 2
    assert out[0]["error"]["type"] == "ValueError"
    assert out[0]["error"]["message"] == "odd: 1"
    assert 'in fail_on_odd\n    raise ValueError(f"odd: {x}")' in out[0]["error"]["traceback"]
    assert result.stderr.splitlines()[-1] == (
        "distproc: error: 2 of 3 calls failed; their lines in the output are error records"
    )
    assert "Traceback" not in result.stderr


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_ctrl_c_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    with subprocess.Popen(
        [sys.executable, "-m", "distproc", "map", "funcs:nap", "-w", "2"],
        cwd=tmp_path,
        env=environ(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    ) as proc:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stderr is not None
            proc.stdin.write("".join(f"{i}\n" for i in range(20)))
            proc.stdin.close()
            first = proc.stdout.readline()  # task 0 is the first any worker runs
            workers = _children(proc.pid)
            assert len(workers) == 2
            os.killpg(proc.pid, signal.SIGINT)
            rest, err = proc.stdout.read(), proc.stderr.read()
            assert proc.wait(30) == 130
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    written = lines(first + rest)
    assert written == list(range(len(written)))  # what was done, in order, nothing after
    assert 1 <= len(written) <= 10
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"distproc: interrupted: wrote {len(written)} result line(s) before stopping"
    )
    assert all(_gone(pid) for pid in workers)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_remote_worker_joins_at_the_address(tmp_path: Path) -> None:
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    env = environ(DISTPROC_AUTHKEY="remote-key", PYTHONPATH=str(tmp_path))
    with subprocess.Popen(
        [sys.executable, "-m", "distproc", "map", "funcs:double", "-w", "0",
         "--address", "127.0.0.1:0", "--no-progress"],
        cwd=tmp_path, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as master:  # fmt: skip
        assert master.stdin is not None and master.stderr is not None
        announced = master.stderr.readline()
        found = re.fullmatch(
            r"distproc: remote workers can join with: distproc worker (127\.0\.0\.1:\d+)\n",
            announced,
        )
        assert found, announced
        with subprocess.Popen(
            [sys.executable, "-m", "distproc", "worker", found[1]],
            cwd=tmp_path.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ) as worker:  # fmt: skip
            try:
                out, err = master.communicate("1\n2\n3\n", timeout=40)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.communicate(timeout=20)
    assert (master.returncode, lines(out)) == (0, [2, 4, 6]), err


# ------------------------------------------------- what a new user ran into
def test_a_line_that_is_not_utf8_says_so(runner: CliRunner, module_dir: Path) -> None:
    hooks = MapHooks(executor=Started())
    result = runner.invoke(
        cli, ["map", "funcs:double"], input=b"1\n\xff\xfe\n2\n", env={"DISTPROC_AUTHKEY": None},
        obj=hooks,
    )  # fmt: skip
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert [out[0], out[2]] == [2, 4]
    message = out[1]["error"]["message"]
    assert message.startswith("input line 2 is not UTF-8 (byte 0xff at position 0)")
    assert "UTF-16" not in message and "utf-16" not in message


def test_results_with_non_ascii_text_are_written_as_utf8(
    runner: CliRunner, module_dir: Path
) -> None:
    result = run_map(runner, "funcs:double", input='"é"\n"日本"\n')
    assert result.exit_code == 0, result.stderr
    assert result.stdout == '"éé"\n"日本日本"\n'


def test_the_functions_offered_are_ones_that_workers_could_import(
    runner: CliRunner, module_dir: Path
) -> None:
    result = run_map(runner, "funcs:triple")
    line = one_line_error(result, 2)
    assert line.endswith(
        "no function 'triple'; its functions: add, as_set, double, fail_on_odd, make_nested, nap"
    )


@pytest.mark.parametrize("target", ["funcs:lambda_function", "funcs:nested"])
def test_a_function_workers_cannot_import_is_not_offered_pickle(
    runner: CliRunner, module_dir: Path, target: str
) -> None:
    line = one_line_error(run_map(runner, target), 2, "cannot be sent to workers")
    assert "pickle" not in line  # distproc map has no such option


def test_the_join_hint_for_every_interface_names_this_host(
    runner: CliRunner, module_dir: Path
) -> None:
    class Bound(FakeExecutor):
        def __init__(self, address: Any = None, **kwargs: Any) -> None:
            super().__init__(address, **kwargs)
            self.address = (address[0], 4321)

    result = run_map(
        runner, "funcs:double", "--address", "0.0.0.0:0", input="1\n",
        env={"DISTPROC_AUTHKEY": "k"}, started=Started(Bound),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [hint] = result.stderr.splitlines()
    assert hint.startswith("distproc: remote workers can join with: distproc worker ")
    assert "0.0.0.0" not in hint
    assert f"{socket.gethostname()}:4321" in hint
    helped = runner.invoke(cli, ["map", "--help"])
    assert "0.0.0.0:" not in helped.stdout.replace("(0.0.0.0 listens", "")


@pytest.mark.timeout(60)
def test_a_reader_that_stops_early_is_not_a_failure() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "distproc", "map", "examples.squares:square", "-w", "1"],
        cwd=REPO, env=environ(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write("".join(f"{i}\n" for i in range(1, 100_001)))
        proc.stdin.close()
        head = [proc.stdout.readline() for _ in range(3)]  # as `| head -3` does
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(50) == 0, err
    assert head == ["1\n", "4\n", "9\n"]
    assert "Traceback" not in err and "error" not in err
