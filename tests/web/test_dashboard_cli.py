"""``distproc dashboard HOST:PORT`` against a real task service elsewhere: its page shows the
service's dead letters, and its requeue is ``distproc dead-letters --requeue``'s call."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import dp_taskfns as fns
import pytest
from hub import Hub
from shared_fixtures import AUTHKEY, wait_until
from webtools import csrf_of, request

import distproc
from distproc.addresses import format_address
from distproc.errors import WorkerLostError


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_dashboard_of_a_service_elsewhere_requeues_a_dead_letter(hub: Hub) -> None:
    with distproc.Executor(workers=1, max_attempts=1, address=("127.0.0.1", 0),
                           authkey=AUTHKEY, progress=False) as ex:  # fmt: skip
        assert ex.address is not None
        held = ex.submit(fns.hold, hub.port, 5)
        _, pid = hub.next_started()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            held.result(60)
        [letter] = ex.status()["dead_letters"]
        env = {**os.environ, "DISTPROC_AUTHKEY": AUTHKEY.decode()}
        proc = subprocess.Popen(
            [sys.executable, "-m", "distproc", "dashboard", format_address(ex.address),
             "--http", "127.0.0.1:0"],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith("distproc: dashboard at http://127.0.0.1:"), line
            url = line.split(" at ", 1)[1].strip()
            report = request(url + "api/status").json()
            [shown] = report["services"][0]["dead_letters"]
            assert shown["task"] == letter["task"]
            answer = request(url + "api/requeue", method="POST",
                             body={"tasks": [letter["task"], 12345]},
                             headers={"X-CSRF-Token": csrf_of(url)})  # fmt: skip
            assert (answer.status, answer.json()) == (
                200, {"requeued": [letter["task"]], "missing": [12345]})  # fmt: skip
            x, _ = hub.next_started()  # the replacement worker runs it again
            assert x == 5
            hub.release()
            wait_until(lambda: ex.status()["tasks"]["done"] == 1, "the requeued task done",
                       timeout=60)  # fmt: skip
            assert ex.status()["dead_letters"] == []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            if proc.stderr is not None:
                proc.stderr.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_distproc_map_with_http_announces_its_dashboard_and_runs() -> None:
    taskfns = os.path.dirname(fns.__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([taskfns, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "distproc", "map", "dp_taskfns:square", "-w", "1",
         "--http", "127.0.0.1:0"],
        input="".join(f"{x}\n" for x in range(50)), env=env, capture_output=True, text=True,
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(x * x) for x in range(50)]
    assert "distproc: dashboard at http://127.0.0.1:" in done.stderr
