"""The ``distproc`` command line: in-process with CliRunner, plus real servers in subprocesses."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import distproc
from distproc.addresses import is_loopback
from distproc.cli.main import cli, main
from distproc.cli.options import parse_address, read_authkey
from distproc.errors import AuthenticationError
from distproc.managers import BaseManager

WriteModule = Callable[[str, str], Path]

MANAGER_MODULE = """\
import queue
from distproc.managers import BaseManager

_queue = queue.Queue()


def get_queue():
    return _queue


class Echo:
    def ping(self, value):
        return ("pong", value)


class SomeManager(BaseManager):
    pass


SomeManager.register("get_queue", callable=get_queue)
SomeManager.register("Echo", callable=Echo)
"""


class Client(BaseManager):
    """The client side of MANAGER_MODULE's SomeManager."""


Client.register("get_queue")
Client.register("Echo")


@pytest.fixture
def runner() -> CliRunner:
    """A runner that keeps stderr apart (the default from click 8.2 on)."""
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]  # click < 8.2
    return CliRunner()


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteModule]:
    """Write modules into a fresh current directory; forget them (and sys.path changes) after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    written: list[str] = []

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        importlib.invalidate_caches()
        written.append(name)
        return path

    yield write
    for name in written:
        sys.modules.pop(name, None)


def invoke(runner: CliRunner, *args: str, env: dict[str, str | None] | None = None) -> Result:
    environ: dict[str, str | None] = {"DISTPROC_AUTHKEY": None}
    environ.update(env or {})
    return runner.invoke(cli, list(args), env=environ)


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> str:
    """Failed with ``exit_code`` and one ``distproc: error:`` line holding every fragment."""
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("distproc: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# ---------------------------------------------------------------- version, help
def test_version(runner: CliRunner) -> None:
    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert result.stdout == f"distproc {distproc.__version__}\n"


def test_main_returns_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"distproc {distproc.__version__}\n"
    assert main(["serve", "x:Y", "--address", "nonsense"]) == 2
    assert capsys.readouterr().err.startswith("distproc: error: bad address 'nonsense'")


@pytest.mark.parametrize("command", [[], *([name] for name in cli.commands)])
def test_every_help_shows_an_example(runner: CliRunner, command: list[str]) -> None:
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"distproc {command[0] if command else 'serve'} " in result.stdout


# -------------------------------------------------------------------- addresses
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50000", ("127.0.0.1", 50000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:5000", ("::1", 5000)),
        (":5000", ("", 5000)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:http",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "::1:5000",
        "[::1]5000",
        "[::1",
        "[localhost]:5000",
        "[::1]:",
    ],
)
def test_bad_address_is_one_line(runner: CliRunner, text: str) -> None:
    result = invoke(runner, "serve", "mod:Cls", "--address", text)
    assert_one_line_error(result, 2, f"bad address {text!r}")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client of a dual-stack server
        ("localhost", True),
        ("LocalHost", True),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("198.18.0.1", False),
        ("::ffff:198.18.0.1", False),
        ("fe80::1%lo", False),
        ("example.com", False),
        ("not an address", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:0", "example.com:0"])
def test_non_loopback_without_authkey_is_refused_before_import(
    runner: CliRunner, address: str
) -> None:
    result = invoke(runner, "serve", "no_such_module_anywhere:M", "--address", address)
    line = assert_one_line_error(result, 2, f"refusing to listen on {address} without an authkey")
    assert "DISTPROC_AUTHKEY" in line and "--authkey-file" in line
    assert "no_such_module_anywhere" not in sys.modules


def test_non_loopback_with_authkey_goes_on(runner: CliRunner, write_module: WriteModule) -> None:
    # Past the refusal the module is imported; its failure shows the bind was allowed.
    result = invoke(
        runner,
        "serve",
        "no_such_module_anywhere:M",
        "--address",
        "0.0.0.0:0",
        env={"DISTPROC_AUTHKEY": "k"},
    )
    assert_one_line_error(result, 2, "cannot import 'no_such_module_anywhere'")


def test_address_in_use(runner: CliRunner, write_module: WriteModule) -> None:
    write_module("served", MANAGER_MODULE)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke(
            runner,
            "serve",
            "served:SomeManager",
            "--address",
            f"127.0.0.1:{port}",
            env={"DISTPROC_AUTHKEY": "k"},
        )
    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}", "in use")


# -------------------------------------------------------------------- authkeys
@pytest.mark.parametrize("args", [["--authkey", "s3cret"], ["--authkey=s3cret"]])
def test_authkey_is_never_taken_from_argv(runner: CliRunner, args: list[str]) -> None:
    result = invoke(runner, "serve", "mod:Cls", *args)
    line = assert_one_line_error(result, 2, "--authkey is not accepted", "DISTPROC_AUTHKEY")
    assert "s3cret" not in line


def test_help_offers_no_authkey_option(runner: CliRunner) -> None:
    result = invoke(runner, "serve", "--help")
    options = re.findall(r"--[a-z-]+", result.stdout)
    assert "--authkey" not in options
    assert "--authkey-file" in options


def test_read_authkey(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert read_authkey(str(key_file), {"DISTPROC_AUTHKEY": "from-env"}) == "from-file"
    assert read_authkey(None, {"DISTPROC_AUTHKEY": "from-env"}) == "from-env"
    assert read_authkey(None, {}) is None


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "cannot read authkey file"), (b"\n", "is empty"), (b"\xff\xfe", "is not UTF-8 text")],
)
def test_bad_authkey_file(
    runner: CliRunner, tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_bytes(content)
    result = invoke(runner, "serve", "mod:Cls", "--authkey-file", str(key_file))
    assert_one_line_error(result, 2, fragment)


def test_empty_authkey_env(runner: CliRunner) -> None:
    result = invoke(runner, "serve", "mod:Cls", env={"DISTPROC_AUTHKEY": ""})
    assert_one_line_error(result, 2, "DISTPROC_AUTHKEY is empty")


# -------------------------------------------------------------- MODULE:CLASS
NOT_MANAGERS = """\
import multiprocessing.managers
from distproc.managers import BaseManager

class Good(BaseManager):
    pass

class Stdlib(multiprocessing.managers.BaseManager):
    pass

class Plain:
    pass

def function():
    pass
"""


@pytest.mark.parametrize(
    ("target", "exit_code", "fragments"),
    [
        ("just_a_module", 2, ["bad manager 'just_a_module': expected MODULE:CLASS"]),
        ("mod:", 2, ["expected MODULE:CLASS"]),
        ("shapes.py:Good", 2, ["give a module name, not a file: shapes:Good"]),
        ("no_such_module_anywhere:M", 2, ["cannot import 'no_such_module_anywhere'"]),
        ("shapes.nested:M", 2, ["cannot import 'shapes.nested'"]),
        ("shapes:Missing", 2, ["module 'shapes' has no attribute 'Missing'", "subclasses: Good"]),
        ("shapes:Stdlib", 2, ["import BaseManager from distproc.managers instead"]),
        ("shapes:Plain", 2, ["shapes:Plain is a class, not a subclass of"]),
        ("shapes:function", 2, ["shapes:function is a function object, not a subclass of"]),
        ("broken:M", 1, ["importing 'broken' failed: ZeroDivisionError", "broken.py:2)"]),
        (
            "broken_dep:M",
            1,
            ["importing 'broken_dep' failed: ModuleNotFoundError", "no_such_dependency"],
        ),
        ("bad_syntax:M", 1, ["importing 'bad_syntax' failed: SyntaxError", "bad_syntax.py:1)"]),
    ],
)
def test_bad_manager_is_one_line(
    runner: CliRunner,
    write_module: WriteModule,
    target: str,
    exit_code: int,
    fragments: list[str],
) -> None:
    write_module("shapes", NOT_MANAGERS)
    write_module("broken", "x = 1\ny = x / 0\n")
    write_module("broken_dep", "import no_such_dependency\n")
    write_module("bad_syntax", "def (:\n")
    result = invoke(runner, "serve", target)
    assert_one_line_error(result, exit_code, *fragments)


def test_click_usage_errors_still_exit_2(runner: CliRunner) -> None:
    result = invoke(runner, "worker")
    assert result.exit_code == 2
    assert "Missing argument 'HOST:PORT'" in result.stderr
    result = invoke(runner, "serve", "--max-attempts", "0")
    assert result.exit_code == 2
    assert "--max-attempts" in result.stderr


# ------------------------------------------------------- end to end, for real
SERVE = ["-m", "distproc", "serve", "tests_module:SomeManager", "--address", "127.0.0.1:0"]


@pytest.fixture
def served_dir(tmp_path: Path) -> Path:
    (tmp_path / "tests_module.py").write_text(MANAGER_MODULE)
    return tmp_path


@contextlib.contextmanager
def serving(
    cwd: Path, env: dict[str, str], *extra: str
) -> Iterator[tuple[subprocess.Popen[str], list[str], int]]:
    """Run ``python -m distproc serve``; yield it, its first stderr lines and its port.

    On leaving, the server must have been stopped by a signal, exited 0, printed nothing on
    stdout and no traceback.
    """
    with subprocess.Popen(
        [sys.executable, *SERVE, *extra],
        cwd=cwd,
        env=env,
        text=True,
        encoding="utf-8",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stderr is not None
            lines: list[str] = []
            for line in proc.stderr:
                lines.append(line.rstrip("\n"))
                if line.startswith("distproc: serving "):
                    break
            match = re.fullmatch(
                r"distproc: serving tests_module:SomeManager on 127\.0\.0\.1:(\d+)", lines[-1]
            )
            assert match, lines
            yield proc, lines, int(match[1])
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (proc.returncode, out) == (0, ""), err
    assert "Traceback" not in err, err


def environ(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISTPROC_AUTHKEY"}
    env.update(changes)
    return env


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("authkey_from", "stop_with"),
    [("env", signal.SIGTERM), ("file", signal.SIGINT), ("generated", signal.SIGTERM)],
)
def test_serve_end_to_end(served_dir: Path, authkey_from: str, stop_with: signal.Signals) -> None:
    key = "e2e-secret-κλειδί"
    env, extra = environ(), []
    if authkey_from == "env":
        env["DISTPROC_AUTHKEY"] = key
    elif authkey_from == "file":
        (served_dir / "authkey").write_text(key + "\n", encoding="utf-8")
        extra = ["--authkey-file", "authkey"]
    with serving(served_dir, env, *extra) as (proc, lines, port):
        if authkey_from == "generated":
            found = re.fullmatch(r"distproc: .*DISTPROC_AUTHKEY=([0-9a-f]{32})", lines[0])
            assert found, lines
            key = found[1]
        else:
            assert len(lines) == 1, lines

        client = Client(address=("127.0.0.1", port), authkey=key.encode())
        client.connect()
        q = client.get_queue()  # type: ignore[attr-defined]
        q.put("hello")
        assert q.get(timeout=5) == "hello"
        echo = client.Echo()  # type: ignore[attr-defined]
        assert echo.ping(3) == ("pong", 3)
        del q, echo

        wrong = Client(address=("127.0.0.1", port), authkey=b"not the key")
        with pytest.raises(AuthenticationError):
            wrong.connect()
        proc.send_signal(stop_with)


@pytest.mark.timeout(30)
def test_sigterm_right_after_the_serving_line_stops_cleanly(served_dir: Path) -> None:
    with serving(served_dir, environ(DISTPROC_AUTHKEY="k")) as (proc, _, _):
        proc.send_signal(signal.SIGTERM)


def test_python_dash_m_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distproc", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, f"distproc {distproc.__version__}\n")
