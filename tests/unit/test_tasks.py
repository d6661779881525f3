"""distproc.Executor end to end: real task services and real worker processes."""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import dp_taskfns as fns
import pytest
from shared_fixtures import wait_until

import distproc
from distproc.errors import RemoteTraceback, TaskTimeoutError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ex() -> Iterator[distproc.Executor]:
    """One Executor with two local worker processes, shared by the tests of this module."""
    with distproc.Executor(workers=2, progress=False) as executor:
        yield executor


def test_map_returns_results_in_order(ex: distproc.Executor) -> None:
    assert list(ex.map(fns.square, range(200))) == [x * x for x in range(200)]


def test_map_one_task_per_call_and_several_iterables(ex: distproc.Executor) -> None:
    assert list(ex.map(fns.add, range(50), range(100), chunksize=1)) == [2 * x for x in range(50)]
    assert list(ex.map(fns.add, range(50), range(50), chunksize=7)) == [2 * x for x in range(50)]
    assert list(ex.starmap(fns.add, [(1, 2), (3, 4)])) == [3, 7]


def test_map_of_an_empty_input(ex: distproc.Executor) -> None:
    assert list(ex.map(fns.square, [])) == []


def test_submit_works_with_wait_and_as_completed(ex: distproc.Executor) -> None:
    futures = [ex.submit(fns.square, x) for x in range(20)]
    _, not_done = concurrent.futures.wait(futures, timeout=60)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == sorted(
        x * x for x in range(20)
    )
    assert ex.submit(fns.add, 2, b=3).result(60) == 5


def test_native_codec_types_round_trip(ex: distproc.Executor) -> None:
    import datetime

    value = {"t": (1, 2), "s": {3, 4}, "b": b"\x00", "d": datetime.date(2026, 11, 28), "n": None}
    assert ex.submit(fns.echo, value).result(60) == value


def test_an_exception_keeps_its_type_and_carries_the_remote_traceback(
    ex: distproc.Executor,
) -> None:
    future = ex.submit(fns.boom, 7)
    with pytest.raises(fns.CustomError, match="boom 7") as info:
        future.result(60)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "def boom" in cause.tb or "in boom" in cause.tb
    assert "CustomError: boom 7" in cause.tb


def test_map_raises_the_first_error_or_returns_exceptions_in_place(ex: distproc.Executor) -> None:
    with pytest.raises(fns.CustomError):
        list(ex.map(fns.boom, range(3)))
    out = list(ex.map(fns.boom, range(3), return_exceptions=True))
    assert [type(e) for e in out] == [fns.CustomError] * 3
    assert [str(e) for e in out] == ["boom 0", "boom 1", "boom 2"]


def test_lambdas_and_closures_are_refused_at_submit(ex: distproc.Executor) -> None:
    with pytest.raises(TypeError, match="lambda"):
        ex.submit(lambda: 1)

    def inner() -> int:
        return 1

    with pytest.raises(TypeError, match="inside another"):
        ex.submit(inner)
    with pytest.raises(TypeError, match="lambda"):
        ex.map(lambda x: x, [1])


def test_the_native_codec_refuses_objects_that_need_pickle(ex: distproc.Executor) -> None:
    with pytest.raises(TypeError, match="PosixPath"):
        ex.submit(fns.echo, Path("not/plain/data"))


@pytest.mark.slow
def test_pickle_is_an_opt_in_for_arbitrary_objects() -> None:
    with distproc.Executor(workers=1, serializer="pickle", progress=False) as ex:
        path = Path("carried/by/pickle")
        assert ex.submit(fns.echo, path).result(60) == path
        # A callable object pickle can carry (not importable by name) works too.
        assert ex.submit(functools.partial(fns.add, 40), 2).result(60) == 42


def test_per_task_timeout_stops_the_task(ex: distproc.Executor) -> None:
    future = ex.submit(fns.sleep_for, 60, timeout=0.5)
    with pytest.raises(TaskTimeoutError) as info:
        future.result(60)
    assert isinstance(info.value, TimeoutError)
    # The worker that ran it was replaced; the pool goes on.
    assert list(ex.map(fns.square, range(10))) == [x * x for x in range(10)]


@pytest.mark.slow
def test_retries_for_named_exception_types(tmp_path: Path) -> None:
    with distproc.Executor(
        workers=1, retry_on=(ConnectionError,), max_retries=3, retry_backoff=0.01, progress=False
    ) as ex:
        assert ex.submit(fns.flaky, str(tmp_path), 2).result(60) == "ok after 2"
        other = tmp_path / "other"
        other.mkdir()
        with pytest.raises(ConnectionError):
            ex.submit(fns.flaky, str(other), 10).result(60)
        assert len(list(other.glob("attempt-*"))) == 4  # the first try and three retries


@pytest.mark.slow
def test_errors_are_not_retried_unless_named(tmp_path: Path) -> None:
    with distproc.Executor(workers=1, progress=False) as ex, pytest.raises(ConnectionError):
        ex.submit(fns.flaky, str(tmp_path), 1).result(60)
    assert len(list(tmp_path.glob("attempt-*"))) == 1


@pytest.mark.slow
def test_submit_blocks_at_max_pending() -> None:
    from dp_taskfns import hold
    from hub import Hub

    with Hub() as hub, distproc.Executor(workers=1, max_pending=3, progress=False) as ex:
        submitted: list[concurrent.futures.Future[int]] = []
        blocked = threading.Event()

        def submit_all() -> None:
            for x in range(6):
                if len(submitted) == 3:
                    blocked.set()
                submitted.append(ex.submit(hold, hub.port, x))

        thread = threading.Thread(target=submit_all)
        thread.start()
        assert blocked.wait(30)
        hub.next_started()  # the first task runs and is held
        thread.join(0.5)
        assert thread.is_alive() and len(submitted) == 3  # the fourth submit() waits
        hub.release()
        thread.join(60)
        assert [f.result(60) for f in submitted] == [x * x for x in range(6)]


def test_status_lists_workers_and_counts(ex: distproc.Executor) -> None:
    list(ex.map(fns.square, range(10), chunksize=1))
    # The fleet's workers join in the background: the second may still be on its way.
    wait_until(lambda: len(ex.status()["workers"]) == 2, "the second worker never joined")
    status = ex.status()
    assert status["kind"] == "tasks"
    assert status["tasks"]["done"] >= 10
    assert len(status["workers"]) == 2
    assert {w["pid"] for w in status["workers"]} <= set(ex._fleet.pids() if ex._fleet else [])
    assert all(w["host"] and w["slots"] == 1 for w in status["workers"])


@pytest.mark.slow
def test_progress_bar_on_request(capfd: pytest.CaptureFixture[str]) -> None:
    with distproc.Executor(workers=1) as ex:
        assert list(ex.map(fns.square, range(30), progress=True)) == [x * x for x in range(30)]
    err = capfd.readouterr().err
    assert "30/30" in err and "worker" in err


def test_executor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="workers must be 0 or more"):
        distproc.Executor(workers=-1)
    with pytest.raises(TypeError, match="bytes or str"):
        distproc.Executor(workers=1, authkey=1234)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="serializer"):
        distproc.Executor(workers=1, serializer="json")


def test_a_str_authkey_is_utf8_as_for_base_manager() -> None:
    with distproc.Executor(workers=1, authkey="clé", progress=False) as ex:
        assert ex.authkey == "clé".encode()
        assert ex.submit(fns.square, 3).result(60) == 9


def test_a_binary_authkey_reaches_the_local_workers() -> None:
    # Random bytes that are not UTF-8 and hold a NUL, which no environment variable can.
    key = b"\xff\x00" + os.urandom(14)
    with distproc.Executor(workers=1, authkey=key, progress=False) as ex:
        assert ex.authkey == key
        assert ex.submit(fns.square, 7).result(60) == 49
        assert list(ex.map(fns.square, range(5), chunksize=1, timeout=60)) == [0, 1, 4, 9, 16]


@pytest.mark.slow
def test_functions_of_the_main_script_run_on_local_workers(tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "main_script.py"
    script.write_text(
        "import distproc\n"
        "def cube(x):\n"
        "    return x ** 3\n"
        "if __name__ == '__main__':\n"
        "    with distproc.Executor(workers=1, progress=False) as ex:\n"
        "        print(list(ex.map(cube, range(5))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DISTPROC_AUTHKEY"}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1, 8, 27, 64]"


@pytest.mark.parametrize("chunksize", [None, 1])
def test_map_keeps_no_reference_to_a_value_it_has_yielded(
    ex: distproc.Executor, chunksize: int | None
) -> None:
    # CPython's test_concurrent_futures test_free_reference, on distproc's map.
    for value in ex.map(fns.singleton, range(20), chunksize=chunksize):
        seen = weakref.ref(value)
        del value
        gc.collect()
        assert seen() is None
