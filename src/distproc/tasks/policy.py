"""The scheduling rules, as plain functions that every backend calls.

They decide and keep no state, so a rule is written once whatever holds the
tasks (memory, SQLite, Redis):

* **Fair share**: a worker leases at most its share of the queue when
  several compete, so no one hoards it (:func:`fair_share`).
* **A suspect runs alone**: a task held by a worker lost with other leases
  may be the one that took it down; it is leased to a worker that holds
  nothing else, and alone (:func:`may_lease`, :func:`ends_batch`).
* **Strike or suspect**: a worker reports each result before it leases
  again, so a worker lost with a single lease was running that task: a
  strike.  Lost with several, each becomes a suspect (:func:`strikes_for`).
* **Dead letters** after ``max_attempts`` strikes (:func:`is_dead`).
* **Retry delays** double from the task's backoff (:func:`retry_delay`).
* **Work stealing**: a worker that holds more than its slots gives half the
  extra back when another is idle (:func:`give_back_count`).
* **Import quarantine**: a worker that cannot import a function gets none of
  its tasks again; when every connected worker has quarantined it for
  ``UNAVAILABLE_GRACE`` s, with no worker joining, its tasks fail
  (:func:`nobody_can_import`, :func:`unavailable_payload`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "QUARANTINE_SCAN",
    "UNAVAILABLE_GRACE",
    "dead_letter_reason",
    "ends_batch",
    "fair_share",
    "give_back_count",
    "is_dead",
    "may_lease",
    "nobody_can_import",
    "retry_delay",
    "strikes_for",
    "unavailable_payload",
]

#: Seconds that every connected worker must have quarantined a function, with
#: no worker joining, before its tasks fail (a worker that can import it may be
#: starting).
UNAVAILABLE_GRACE = 5.0
#: A lease skips at most this many queued tasks that its worker has quarantined.
QUARANTINE_SCAN = 256


def fair_share(want: int, slots: int, queued: int, active_workers: int) -> int:
    """How many tasks a worker that asks for ``want`` may lease now."""
    active = max(1, active_workers)
    return min(want, max(slots, -(-queued // active)))


def may_lease(holds_leases: bool, holds_suspect: bool, head_is_suspect: bool) -> bool:
    """Whether a worker may lease more: a suspect runs on a worker that holds nothing else."""
    return not (holds_leases and (holds_suspect or head_is_suspect))


def ends_batch(suspect: bool, taken: int) -> bool:
    """Whether a lease stops before this task: a suspect joins no batch."""
    return suspect and taken > 0


def strikes_for(leases_lost: int) -> int:
    """Strikes each task of a lost worker gets: one if it held one lease, else none (suspects)."""
    return 1 if leases_lost == 1 else 0


def is_dead(strikes: int, task_max_attempts: int, service_max_attempts: int) -> bool:
    """Whether a task with ``strikes`` goes to the dead letters."""
    limit = min(service_max_attempts, task_max_attempts or service_max_attempts)
    return strikes >= limit


def retry_delay(backoff: float, retry: int) -> float:
    """Seconds before the ``retry``-th retry (1, 2, ...) of a task."""
    return float(backoff * 2 ** (retry - 1))


def give_back_count(held: int, slots: int) -> int:
    """How many unstarted tasks a hoarder returns for an idle worker (0: none)."""
    extra = held - slots
    return (extra + 1) // 2 if extra > 0 else 0


def nobody_can_import(fn: str, quarantines: Iterable[Mapping[str, str]]) -> bool:
    """Whether every one of the connected, active workers' quarantines holds ``fn``.

    No worker at all is not "nobody can": one that can may be starting.
    """
    found = False
    for quarantined in quarantines:
        if fn not in quarantined:
            return False
        found = True
    return found


def unavailable_payload(fn: str, said: list[list[str]]) -> dict[str, Any]:
    """What the masters of ``fn``'s tasks get: each worker (label) and what it said."""
    reason = f"no connected worker can import {fn}: " + "; ".join(
        f"{label}: {error}" for label, error in said
    )
    return {"reason": reason, "workers": said}


def dead_letter_reason(strikes: int, history: Iterable[tuple[str, str]]) -> str:
    return f"took down {strikes} worker(s): " + "; ".join(
        f"{label}: {how}" for label, how in history
    )
