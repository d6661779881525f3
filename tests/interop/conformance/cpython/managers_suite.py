"""CPython's own manager tests, from the ``Lib/test`` of the interpreter that imports this.

The classes are those that CPython's ``test_multiprocessing_*/test_manager.py``
make (``install_tests_in_module_dict(..., only_type='manager')``; on 3.10,
which has no ``only_type``, the ``WithManager*`` classes it makes), plus the
plain test cases about managers that its ``test_misc`` modules carry:
``TestSyncManagerTypes``, ``OtherTest`` and, where they exist (3.12+),
``TestManagerExceptions`` and ``ChallengeResponseTest``.

The start method comes from ``CONFORMANCE_START_METHOD`` (set by ``runner.py``).
This module is imported again, by name, in each spawned child: the pickled
methods of the test classes name it.  There the start method does not matter
(it is used only by ``setUpModule``, which children do not run).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

_tm: Any = importlib.import_module("test._test_multiprocessing")

START_METHOD = os.environ.get("CONFORMANCE_START_METHOD", "fork")
PLAIN_TESTS = (
    "TestSyncManagerTypes",
    "OtherTest",
    "TestManagerExceptions",
    "ChallengeResponseTest",
)

try:
    _tm.install_tests_in_module_dict(globals(), START_METHOD, only_type="manager")
except TypeError:  # 3.10 has no only_type: install all, keep what only_type keeps
    _all = {"__name__": __name__}
    _tm.install_tests_in_module_dict(_all, START_METHOD)
    for _name, _obj in _all.items():
        if _name.startswith("WithManager") or _name in ("setUpModule", "tearDownModule"):
            globals()[_name] = _obj

for _name in PLAIN_TESTS:
    _base = getattr(_tm, _name, None)
    if _base is not None:
        # A subclass of our own, as install_tests_in_module_dict makes for its
        # plain tests: it has this module's name, so children find it here.
        globals()[_name] = type(_name, (_base,), {"__module__": __name__})
