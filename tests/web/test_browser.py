"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium.

Against a real task service with real worker processes: the page shows the
workers, its counts change as tasks complete without a reload, a worker
killed with ``kill -9`` shows as lost, a poison task appears in the dead
letters, and the requeue button puts dead letters back on the queue.  Each
test saves screenshots under ``test-results/browser/``.

The browser is ``/usr/bin/chromium`` with its ``/usr/bin/chromedriver``: no
browser is downloaded.  Where they are absent the tests are skipped, saying
so, except in CI, where ``.ci/run`` installs them and their absence fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dp_taskfns as fns
import pytest
from hub import Hub
from shared_fixtures import AUTHKEY, serve_in_thread, wait_until
from webtools import RESULTS

import distproc
from distproc.errors import WorkerLostError
from distproc.managers import BaseManager
from distproc.web import attach, bind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
SHOTS = RESULTS / "browser"
#: Where the README's screenshots live: the first test copies two there when
#: DISTPROC_DOCS_SCREENSHOTS is set.
DOCS = Path(__file__).parents[2] / "docs"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, DRIVER) if not os.path.exists(p)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: .ci/run installs chromium and its driver")
        pytest.skip(f"{', '.join(missing)} not installed "
                    "(apt-get install chromium chromium-driver)")
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


def dead_letter(ex: distproc.Executor, function: str) -> int:
    [task] = [d["task"] for d in ex.status()["dead_letters"] if d["function"] == function]
    return int(task)


def requeue_button(driver: Any, task: int) -> Any:
    return driver.find_element("css selector", f'#dead-letters li[data-task="{task}"] button')


def test_workers_counts_a_killed_worker_and_a_poison_task_requeued(
    browser: Any, hub: Hub
) -> None:
    with distproc.Executor(workers=2, max_attempts=1, http=("127.0.0.1", 0),
                           progress=False) as ex:  # fmt: skip
        assert ex.dashboard_url is not None
        open_page(browser, ex.dashboard_url)
        wait_until(lambda: len(ex.status()["workers"]) == 2, "both workers to join", timeout=60)
        pids = [str(w["pid"]) for w in ex.status()["workers"]]
        until(browser, lambda d: all(p in text(d, "#workers") for p in pids), "both workers")
        assert text(browser, "#count-done") == "0"
        assert text(browser, "#count-delayed") == "0"  # retrying: in the report, and none

        # Counts change as tasks complete, with no reload.
        futures = [ex.submit(fns.hold, hub.port, x) for x in range(6)]
        hub.next_started()
        until(browser, lambda d: text(d, "#count-leased") not in ("", "0"), "a leased task")
        hub.release()
        assert [f.result(60) for f in futures] == [x * x for x in range(6)]
        until(browser, lambda d: text(d, "#count-done") == "6", "6 tasks done")
        assert not_reloaded(browser)
        shot(browser, "1-tasks-done")

        # kill -9 of a worker that runs a task: it shows as lost, with how it ended.
        blocker = Hub()
        try:
            held = ex.submit(fns.hold, blocker.port, 99)
            _, pid = blocker.next_started()
            os.kill(pid, signal.SIGKILL)

            def shown_lost(d: Any) -> bool:
                gone = text(d, "#workers tr.gone")
                return str(pid) in gone and "lost" in gone and "connection" in gone

            until(browser, shown_lost, "the killed worker as lost")
            with pytest.raises(WorkerLostError):
                held.result(60)  # max_attempts=1: the task that was running is dead-lettered
            killed = dead_letter(ex, "dp_taskfns:hold")
            assert not_reloaded(browser)
            shot(browser, "2-worker-lost")

            # A poison task: it takes its worker down and appears in the dead letters.
            with pytest.raises(WorkerLostError):
                ex.submit(fns.die, 1).result(90)
            poison = dead_letter(ex, "dp_taskfns:die")
            until(browser, lambda d: "dp_taskfns:die" in text(d, "#dead-letters"),
                  "the poison task")  # fmt: skip
            assert "took down 1 worker(s)" in text(browser, "#dead-letters")
            assert text(browser, "#count-dead") == "2"
            assert requeue_button(browser, poison).is_enabled()
            assert not_reloaded(browser)
            wait_until(lambda: len(ex.status()["workers"]) == 2, "the workers to be replaced",
                       timeout=60)  # fmt: skip
            # Opened as a person would: they stay open through the redraws that follow.
            browser.execute_script(
                "document.querySelectorAll('#dead-letters summary').forEach(s => s.click());")
            before = text(browser, "#updated")
            until(browser, lambda d: text(d, "#updated") != before, "a redraw")
            assert len(browser.find_elements("css selector", "#dead-letters details[open]")) == 4
            until(browser, lambda d: len(d.find_elements("css selector", "#workers tr.gone"))
                  == 2, "both lost workers")  # fmt: skip
            until(browser, lambda d: len(d.find_elements(
                "css selector", "#workers tr.worker:not(.gone)")) == 2, "their replacements")
            shot(browser, "3-dead-letters")
            browser.set_window_size(390, 1600)
            width = browser.execute_script("return document.documentElement.scrollWidth;")
            viewport = browser.execute_script("return window.innerWidth;")
            assert width <= viewport  # wide tables scroll inside their box, the page does not
            shot(browser, "4-phone")
            browser.set_window_size(1280, 1300)

            # Requeue the poison task: it runs again, takes one more worker down, is dead again.
            requeue_button(browser, poison).click()
            until(browser, lambda d: f"task {poison} is back on the queue" in text(d, "#notice"),
                  "the requeue's answer")  # fmt: skip
            until(browser, lambda d: text(d, "#count-dead") == "3", "the poison task run again")
            assert len(ex.status()["dead_letters"]) == 2  # the same two tasks, not a third

            # Requeue the killed task: a worker runs it again, and it is done.
            until(browser, lambda d: requeue_button(d, killed).is_enabled(), "its button")
            requeue_button(browser, killed).click()
            x, _ = blocker.next_started()
            assert x == 99
            until(browser, lambda d: f"task {killed} is back on the queue" in text(d, "#notice"),
                  "the requeue's answer")  # fmt: skip
            blocker.release()
            until(browser, lambda d: text(d, "#count-done") == "7", "the requeued task done")
            until(browser, lambda d: d.find_elements(
                "css selector", f'#dead-letters li[data-task="{killed}"]') == [],
                "the requeued task out of the dead letters")  # fmt: skip
        finally:
            blocker.close()
        assert not_reloaded(browser)
        shot(browser, "5-requeued")
        if os.environ.get("DISTPROC_DOCS_SCREENSHOTS"):  # the README's two pictures
            shutil.copy(SHOTS / "3-dead-letters.png", DOCS / "dashboard.png")
            shutil.copy(SHOTS / "4-phone.png", DOCS / "dashboard-phone.png")


def test_a_map_run_shows_its_progress_and_eta(browser: Any, hub: Hub) -> None:
    free = Hub()  # the first half of the calls finish at once, the second half wait for `hub`
    free.release()
    try:
        with distproc.Executor(workers=2, http=("127.0.0.1", 0), progress=False) as ex:
            assert ex.dashboard_url is not None
            open_page(browser, ex.dashboard_url)  # first: it sees the run from its start
            ports = [free.port] * 20 + [hub.port] * 20
            results = ex.map(fns.hold, ports, range(40), chunksize=1, total=40)
            got: list[int] = []
            reader = threading.Thread(target=lambda: got.extend(results), daemon=True)
            reader.start()  # the run is in the report while it is read
            until(browser, lambda d: "20 of 40 done (50.0 %)" in text(d, ".service.map"),
                  "half the run")  # fmt: skip
            assert "dp_taskfns:hold" in text(browser, ".service.map")
            # The ETA is the rate's (test_metrics.py checks it); here, that the page shows it.
            assert text(browser, "#map-eta") != ""
            shot(browser, "6-map")
            hub.release()
            reader.join(60)
            assert got == [x * x for x in range(40)]
            until(browser, lambda d: d.find_elements("css selector", ".service.map") == [],
                  "the finished run to leave the page")  # fmt: skip
    finally:
        free.close()


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
        shot(browser, "7-manager")
        del held
        client.close_connections()
    finally:
        running.stop()
