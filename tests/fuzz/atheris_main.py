"""Coverage-guided fuzzing of the parsers in :mod:`targets`, with atheris (libFuzzer).

For developers (the ``fuzz`` extra: ``pip install -e ".[test,fuzz]"``)::

    python tests/fuzz/atheris_main.py TARGET -max_total_time=300 [CORPUS_DIR]

``TARGET`` is ``framing``, ``handshake``, ``records`` or ``codec``; any other
arguments are libFuzzer's (``-runs=N``, ``-max_total_time=S``, ``-timeout=S``
per input, ``-rss_limit_mb=MB``, a corpus directory to keep what it finds).
An input that makes a parser raise anything but a ``ProtocolError`` (or an
``AuthenticationError`` in the handshake), or take the handshake through
without the key, stops the run with the input saved as ``crash-*``: add it to
``test_properties.py`` as an ``@example``.  ``test_atheris.py`` runs every
target briefly, so that they keep working.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where fuzz is

with atheris.instrument_imports(include=["distproc", "fuzz"]):
    from fuzz import targets  # the parsers, instrumented for coverage


def _framing(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    targets.framing(fdp.ConsumeBytes(fdp.remaining_bytes()), cuts)


def _handshake(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    server, native = fdp.ConsumeBool(), fdp.ConsumeBool()
    frames: list[bytes] = []
    while fdp.remaining_bytes() and len(frames) < 8:
        frames.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
    if targets.handshake(frames, server=server, native=native).done:
        raise AssertionError("a peer without the key got through the handshake")


TARGETS: dict[str, Callable[[bytes], Any]] = {
    "framing": _framing,
    "handshake": _handshake,
    "records": targets.records,
    "codec": targets.codec,
}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[argv[1]]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(*targets.EXPECTED):
            target(data)

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
