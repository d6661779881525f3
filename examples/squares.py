"""Functions for ``distproc map``, the README's first example.

From the root of the repository::

    seq 1 100000 | distproc map examples.squares:square > squares.jsonl
    seq -3 3 | distproc map examples.squares:checked_sqrt     # some calls fail
    printf '[2, 10]\\n[3, 4]\\n' | distproc map --star examples.squares:power
"""

from __future__ import annotations

import math

__all__ = ["checked_sqrt", "power", "square"]


def square(x: float) -> float:
    """``x * x``."""
    return x * x


def checked_sqrt(x: float) -> float:
    """The square root of ``x``; raises ``ValueError`` for a negative ``x`` (for the demo)."""
    if x < 0:
        raise ValueError(f"no real square root of {x}")
    return math.sqrt(x)


def power(base: float, exponent: float) -> float:
    """``base ** exponent``: two arguments, for ``--star`` lines such as ``[2, 10]``."""
    return base**exponent  # type: ignore[no-any-return]  # float ** float is Any to mypy
