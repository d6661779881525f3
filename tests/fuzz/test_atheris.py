"""The coverage-guided targets (``atheris_main.py``) run, briefly, and find nothing.

A developer runs them for longer (see that module); here each runs a bounded
number of inputs so that the targets keep working.  Skipped where the
``fuzz`` extra (atheris) is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("atheris") is None,
        reason='atheris is not installed (pip install -e ".[fuzz]")',
    ),
]

MAIN = Path(__file__).with_name("atheris_main.py")
RUNS = 5000


@pytest.mark.parametrize("target", ["framing", "handshake", "records", "codec"])
def test_a_target_runs_its_inputs_and_finds_nothing(target: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(MAIN), target, f"-runs={RUNS}", "-seed=1", "-timeout=10",
         "-rss_limit_mb=2048"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {RUNS} runs" in done.stderr
    assert not list(tmp_path.glob("crash-*"))


def test_an_unknown_target_is_a_usage_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(MAIN), "nonesuch"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "usage:" in done.stderr and "framing,handshake,records,codec" in done.stderr
