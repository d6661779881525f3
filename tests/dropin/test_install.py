"""``distproc.install()`` and ``uninstall()`` in this process: what resolves where."""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.spawn
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import distproc
import distproc.managers
from distproc import dropin

STDLIB = dropin.STDLIB_MANAGERS
STDLIB_PREPARATION_DATA = multiprocessing.spawn.get_preparation_data


@pytest.fixture
def installed() -> Iterator[None]:
    distproc.install()
    try:
        yield
    finally:
        distproc.uninstall()


def fresh_import(name: str) -> Any:
    """``from multiprocessing.managers import name``, run now."""
    namespace: dict[str, Any] = {}
    exec(f"from multiprocessing.managers import {name}", namespace)
    return namespace[name]


@pytest.mark.usefixtures("installed")
def test_install_makes_the_stdlib_names_distproc_s() -> None:
    assert sys.modules["multiprocessing.managers"] is distproc.managers
    assert multiprocessing.managers is distproc.managers
    assert importlib.import_module("multiprocessing.managers") is distproc.managers
    assert fresh_import("BaseManager") is distproc.managers.BaseManager
    assert fresh_import("SyncManager") is distproc.managers.SyncManager
    assert dropin.installed()


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("method", [None, "fork", "spawn"])
def test_manager_of_every_context_is_distproc_s(method: str | None) -> None:
    make: Any = multiprocessing.Manager
    if method is not None:
        make = multiprocessing.get_context(method).Manager
    with make() as manager:
        assert type(manager) is distproc.managers.SyncManager
        shared = manager.dict()
        shared["key"] = [1, 2]
        assert shared["key"] == [1, 2]
        assert manager._process.is_alive()


def test_uninstall_gives_everything_back() -> None:
    distproc.install()
    distproc.install()  # a second call changes nothing
    distproc.uninstall()
    assert sys.modules["multiprocessing.managers"] is STDLIB
    assert multiprocessing.managers is STDLIB
    assert multiprocessing.spawn.get_preparation_data is STDLIB_PREPARATION_DATA
    assert fresh_import("SyncManager") is STDLIB.SyncManager
    assert not dropin.installed()
    with multiprocessing.Manager() as manager:
        stdlib_class: Any = STDLIB.SyncManager
        assert type(manager) is stdlib_class
    distproc.uninstall()  # when not installed: nothing to do
    assert sys.modules["multiprocessing.managers"] is STDLIB


@pytest.mark.usefixtures("installed")
def test_spawned_children_are_told_to_install() -> None:
    data = multiprocessing.spawn.get_preparation_data("child")
    assert set(STDLIB_PREPARATION_DATA("child")) | {"distproc_install"} == set(data)
    distproc.uninstall()
    assert "distproc_install" not in multiprocessing.spawn.get_preparation_data("child")
