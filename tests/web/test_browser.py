"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium.

Against a real task service with real worker processes: the page shows the
workers, its counts change as tasks complete without a reload, a worker
killed with ``kill -9`` shows as lost, a poison task appears in the dead
letters.  The requeue button is driven against a stand-in service that can
requeue (the task service cannot yet).  Each test saves screenshots under
``test-results/browser/``.

The browser is ``/usr/bin/chromium`` with its ``/usr/bin/chromedriver``: no
browser is downloaded.  Where they are absent the tests are skipped, saying
so, except in CI, where ``.ci/run`` installs them and their absence fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dp_taskfns as fns
import pytest
from hub import Hub
from shared_fixtures import AUTHKEY, serve_in_thread, wait_until
from webtools import RESULTS, DashboardFn, StandIn

import distproc
from distproc.errors import WorkerLostError
from distproc.managers import BaseManager
from distproc.web import attach, bind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
SHOTS = RESULTS / "browser"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, DRIVER) if not os.path.exists(p)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: .ci/run installs chromium and its driver")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="distproc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,1300",
                f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 30.0) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        shot(driver, "failed-" + what.replace(" ", "-")[:60])
        raise AssertionError(f"the page did not show {what} within {timeout}s") from None


def shot(driver: Any, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    return path


def text(driver: Any, css: str) -> str:
    """The text of the first element ``css`` finds, read in one step (the page redraws)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, css))


def open_page(driver: Any, url: str) -> None:
    driver.set_window_size(1280, 1300)
    driver.get(url)
    until(driver, lambda d: text(d, "#state") == "live", "the stream open")
    # Set once: it survives every redraw, and would be gone after a reload.
    driver.execute_script("window.distprocNoReload = true;")


def not_reloaded(driver: Any) -> bool:
    return driver.execute_script("return window.distprocNoReload === true;") is True


def test_workers_counts_a_killed_worker_and_a_poison_task(browser: Any, hub: Hub) -> None:
    with distproc.Executor(workers=2, max_attempts=1, http=("127.0.0.1", 0),
                           progress=False) as ex:  # fmt: skip
        assert ex.dashboard_url is not None
        open_page(browser, ex.dashboard_url)
        wait_until(lambda: len(ex.status()["workers"]) == 2, "both workers to join", timeout=60)
        pids = [str(w["pid"]) for w in ex.status()["workers"]]
        until(browser, lambda d: all(p in text(d, "#workers") for p in pids), "both workers")
        assert text(browser, "#count-done") == "0"
        assert text(browser, "#count-retrying") == "n/a"  # absent from the report, not zero

        # Counts change as tasks complete, with no reload.
        futures = [ex.submit(fns.hold, hub.port, x) for x in range(6)]
        hub.next_started()
        until(browser, lambda d: text(d, "#count-leased") not in ("", "0"), "a leased task")
        hub.release()
        assert [f.result(60) for f in futures] == [x * x for x in range(6)]
        until(browser, lambda d: text(d, "#count-done") == "6", "6 tasks done")
        assert not_reloaded(browser)
        shot(browser, "1-tasks-done")

        # kill -9 of a worker that runs a task: it shows as lost.
        blocker = Hub()
        try:
            held = ex.submit(fns.hold, blocker.port, 99)
            _, pid = blocker.next_started()
            os.kill(pid, signal.SIGKILL)
            until(browser, lambda d: str(pid) in text(d, "#workers tr.gone")
                  and "lost" in text(d, "#workers tr.gone"), "the killed worker as lost")  # fmt: skip
            with pytest.raises(WorkerLostError):
                held.result(60)  # max_attempts=1: the task that was running is dead-lettered
        finally:
            blocker.close()
        assert not_reloaded(browser)
        shot(browser, "2-worker-lost")

        # A poison task: it takes its worker down and appears in the dead letters.
        with pytest.raises(WorkerLostError):
            ex.submit(fns.die, 1).result(90)
        until(browser, lambda d: "dp_taskfns:die" in text(d, "#dead-letters"), "the poison task")
        assert "took down 1 worker(s)" in text(browser, "#dead-letters")
        assert text(browser, "#count-dead") == "2"
        button = browser.find_element("css selector", "#dead-letters li.dead button.requeue")
        assert not button.is_enabled()  # the task service cannot requeue yet, and says so
        assert "cannot requeue" in str(button.get_attribute("title"))
        assert not_reloaded(browser)
        shot(browser, "3-dead-letters")


def test_a_map_run_shows_its_progress_and_eta(browser: Any, hub: Hub) -> None:
    with distproc.Executor(workers=2, http=("127.0.0.1", 0), progress=False) as ex:
        assert ex.dashboard_url is not None
        results = ex.map(fns.hold, [hub.port] * 40, range(40), chunksize=1)
        first = next(results)  # the run is under way: it is in the report
        open_page(browser, ex.dashboard_url)
        until(browser, lambda d: "dp_taskfns:hold" in text(d, ".service.map"), "the map run")
        assert "of 40 done" in text(browser, ".service.map")
        hub.release()
        assert [first, *results] == [x * x for x in range(40)]
        until(browser, lambda d: d.find_elements("css selector", ".service.map") == [],
              "the finished run to leave the page")  # fmt: skip


def test_the_requeue_button_puts_a_dead_letter_back(browser: Any, dashboard: DashboardFn) -> None:
    dead = {"task": 4242, "function": "jobs:crunch", "at": 1.7e9,
            "reason": "took down 3 worker(s): w1 (node-a pid 7): connection lost; ...",
            "attempts": [["w1 (node-a pid 7)", "connection lost"],
                         ["w2 (node-b pid 8)", "no heartbeat for 10 s"],
                         ["w3 (node-a pid 9)", "connection lost"]]}  # fmt: skip
    stand_in = StandIn(dead=[dead])
    side = dashboard(stand_in)
    open_page(browser, side.url)
    until(browser, lambda d: "task 4242" in text(d, "#dead-letters"), "the dead letter")
    shot(browser, "4-requeue-before")
    browser.find_element("css selector", '#dead-letters li[data-task="4242"] button').click()
    until(browser, lambda d: "task 4242 is back on the queue" in text(d, "#notice"),
          "the requeue's answer")  # fmt: skip
    assert stand_in.requeued == [[4242]]
    until(browser, lambda d: d.find_elements("css selector", "#dead-letters") == [],
          "the dead letter gone")  # fmt: skip
    assert "task 4242" not in text(browser, "#services")
    assert not_reloaded(browser)
    shot(browser, "5-requeue-after")


class Shared(BaseManager):
    pass


Shared.register("Dict", callable=dict)


def test_a_manager_shows_its_objects_and_clients(browser: Any) -> None:
    server = Shared(address=("127.0.0.1", 0), authkey=AUTHKEY).get_server()
    side = attach(server, bind(("127.0.0.1", 0)), AUTHKEY)
    running = serve_in_thread(server)
    try:
        client = Shared(address=server.address, authkey=AUTHKEY)
        client.connect()
        held = [client.Dict(), client.Dict()]  # type: ignore[attr-defined]  # register() made it
        open_page(browser, side.url)
        until(browser, lambda d: text(d, "#objects").count("Dict") == 2, "two Dict objects")
        assert "native" in text(browser, "#clients")
        assert text(browser, "#title") == "distproc manager"
        shot(browser, "6-manager")
        del held
        client.close_connections()
    finally:
        running.stop()


def test_the_page_reads_on_a_phone(browser: Any, dashboard: DashboardFn) -> None:
    side = dashboard(StandIn(dead=[{"task": 1, "function": "m:f", "reason": "took down 3"}]))
    open_page(browser, side.url)
    browser.set_window_size(390, 1600)
    until(browser, lambda d: "task 1" in text(d, "#dead-letters"), "the dead letter")
    width = browser.execute_script("return document.documentElement.scrollWidth;")
    viewport = browser.execute_script("return window.innerWidth;")
    assert width <= viewport  # wide tables scroll inside their box, the page does not
    shot(browser, "7-phone")
