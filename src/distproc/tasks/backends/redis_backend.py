"""Task state in Redis Streams, shared by masters and workers with no distproc server between.

A queue is a stream with the consumer group ``workers``; each worker slot is
a consumer that leases with ``XREADGROUP``.  Each transition is one Lua
script of :mod:`.redis_scripts` (the keys they use are listed there), so it
is atomic whoever runs it:

* a lease's token is its attempt number; a result is taken only from the
  lease's owner with the current token, recorded and ``XACK``-ed in one
  script, so every task completes once;
* an owner renews its leases with its heartbeat (``XCLAIM ... JUSTID`` of its
  own pending entries); leases silent for ``heartbeat_timeout`` are reclaimed
  by whichever live worker leases next (``XAUTOCLAIM``), with no lock that a
  dead process could leave held;
* the rules (strikes, dead letters, retry delays) are :mod:`..policy`'s,
  decided here and applied by a script fenced by the lease's token;
* a master's outcomes go to its own stream and stay there until it confirms them.

One :class:`RedisBackend` serves one process side (a master, or a worker
slot): it is what :mod:`..redis_channels` calls.  Every key of queue ``q``
starts with the hash tag ``{distproc:q}``, so a queue lives on one Redis
Cluster node.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type stubs

try:
    import redis
except ImportError as exc:  # pragma: no cover - the message is the test
    raise ImportError(
        "the Redis task backend needs redis-py: pip install 'distproc[redis]'"
    ) from exc

from ...errors import ServiceLostError
from .. import policy
from ..records import (
    ID_BITS,
    LOST,
    RETRY,
    UNAVAILABLE,
    DeadLetter,
    Lease,
    Outcome,
    Report,
    TaskOptions,
    TaskSpec,
    WorkerHello,
)
from . import redis_scripts as scripts
from .base import Capabilities, Joined, TaskBackend

__all__ = ["MIN_VERSION", "SCHEMES", "RedisBackend", "RedisTooOld", "parse_url"]

log = logging.getLogger("distproc.tasks")

#: XAUTOCLAIM is in Redis 6.2.
MIN_VERSION = (6, 2)
SCHEMES = ("redis", "rediss", "unix")
DEFAULT_QUEUE = "default"
#: Heartbeats per heartbeat_timeout.
BEATS = 4


class RedisTooOld(RuntimeError):
    """The server is older than :data:`MIN_VERSION`."""


def is_redis_url(value: object) -> bool:
    return isinstance(value, str) and urlsplit(value).scheme in SCHEMES


def parse_url(url: str, queue: str | None = None) -> tuple[str, str]:
    """``(url for redis-py, queue)``: ``?queue=NAME`` in the URL names the queue too."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a Redis URL: {url!r} (redis://HOST:PORT/DB or rediss://...)")
    query = parse_qs(parts.query)
    named = query.pop("queue", [None])[0]
    rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
    clean = parts._replace(query=rest).geturl()
    return clean, queue or named or DEFAULT_QUEUE


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Held:
    """What a worker side knows of a lease it took: for its report."""

    master: int
    fn: str
    options: TaskOptions
    retries: int


class RedisBackend(TaskBackend):
    """One process's view of a queue in Redis: see the module docstring."""

    name = "redis"
    capabilities = Capabilities(
        durable=True,  # as durable as the server's persistence (appendfsync always)
        instant_requeue=False,  # leases of a dead worker return after heartbeat_timeout
        via_service=False,
        multi_host=True,
        group_commit=False,
    )

    def __init__(
        self,
        url: str,
        queue: str | None = None,
        *,
        max_attempts: int | None = None,
        heartbeat_timeout: float | None = None,
        client: redis.Redis | None = None,
        held: dict[int, Any] | None = None,
    ) -> None:
        super().__init__(max_attempts=max_attempts or 3,
                         heartbeat_timeout=heartbeat_timeout or 10.0)  # fmt: skip
        #: A master sets the queue's settings (the latest one's hold); a worker reads them.
        self.sets = max_attempts is not None or heartbeat_timeout is not None
        self.url, self.queue = parse_url(url, queue)
        # Any: redis-py's stubs type replies by decode_responses, which this does not use.
        self.r: Any = client or redis.Redis.from_url(
            self.url, socket_keepalive=True, health_check_interval=30
        )
        tag = "{distproc:" + self.queue + "}"
        self.prefix = tag
        self.keys = [f"{tag}:{name}" for name in scripts.KEY_NAMES]
        self.key = dict(zip(scripts.KEY_NAMES, self.keys, strict=True))
        self._scripts = {
            name: self.r.register_script(getattr(scripts, name))
            for name in ("ENQUEUE", "LEASE", "STAMP", "REPORT", "SETTLE", "RELEASE",
                         "RENEW", "DUE", "CANCEL")
        }  # fmt: skip
        #: The leases this side took (kept across reconnects by whoever passes ``held``).
        self._held: dict[int, _Held] = {} if held is None else held
        self._leaving: set[str] = set()
        self.setup()
        self.store_id = f"redis:{self.queue}"

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Check the server, create the group, and read (or set) the queue's settings.

        Called again after a reconnect: a server that lost its data gets the
        group back, and the masters find out (:meth:`resume_master`).
        """
        info: dict[str, Any] = self.r.info()
        version = str(info.get("redis_version", "0"))
        have = tuple(int(x) for x in version.split(".")[:2])
        if have < MIN_VERSION:
            raise RedisTooOld(
                f"the Redis task backend needs Redis 6.2 or newer (XAUTOCLAIM); "
                f"{self.url} runs {version}"
            )
        policy_name = str(info.get("maxmemory_policy", "noeviction"))
        if policy_name != "noeviction":
            log.warning(
                "Redis at %s has maxmemory-policy %s: evicted keys lose tasks; set "
                "maxmemory-policy noeviction", self.url, policy_name,
            )  # fmt: skip
        try:
            self.r.xgroup_create(self.key["stream"], "workers", id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if self.sets:
            self.r.hset(self.key["config"], mapping={
                "heartbeat_timeout": repr(self.heartbeat_timeout),
                "max_attempts": str(self.max_attempts),
            })  # fmt: skip
        self.refresh()

    def refresh(self) -> None:
        """Read the queue's settings (set by its latest master)."""
        got = self.r.hmget(self.key["config"], ["heartbeat_timeout", "max_attempts"])
        self.heartbeat_timeout = float(got[0] or self.heartbeat_timeout)
        self.max_attempts = int(got[1] or self.max_attempts)

    def _run(self, name: str, args: list[Any], extra_keys: Iterable[str] = ()) -> Any:
        return self._scripts[name](keys=[*self.keys, *extra_keys], args=args)

    def out_key(self, mid: int) -> str:
        return f"{self.prefix}:out:{mid}"

    # ------------------------------------------------------------ masters
    def add_master(self, grace: float = 0.0) -> tuple[int, int]:
        mid = int(self.r.incr(f"{self.prefix}:next_master"))
        self.r.hset(self.key["masters"], str(mid), "0")
        return mid, mid << ID_BITS

    def resume_master(self, mid: int) -> str:
        if self.r.hexists(self.key["masters"], str(mid)):
            return ""
        return "the Redis server does not know this master (its data was lost)"

    def detach_master(self, mid: int) -> None:
        """Nothing to do: a master's state stays until it says goodbye."""

    def drop_master(self, mid: int) -> None:
        self.r.hdel(self.key["masters"], str(mid))
        self.r.delete(self.out_key(mid))

    def enqueue(self, mid: int, specs: list[TaskSpec]) -> None:
        args: list[Any] = [mid]
        base = mid << ID_BITS
        for spec in specs:
            blob = msgpack.packb([mid, spec.fn, spec.payload, spec.options.to_wire()])
            args += [spec.id, spec.id - base, blob]
        if self._run("ENQUEUE", args) < 0:
            raise ServiceLostError(
                f"Redis at {self.url} does not know master {mid}: its data was lost (a restart "
                "without persistence?); run Redis with appendonly yes"
            )
        self.notices.ready = True

    def cancel(self, mid: int, tids: list[int]) -> list[int]:
        if not tids:
            return []
        return [int(t) for t in self._run("CANCEL", tids)]

    def read_outcomes(
        self, mid: int, after: str, count: int, block_ms: int | None
    ) -> list[tuple[str, Outcome]]:
        """Outcomes after stream id ``after``, waiting up to ``block_ms`` for one."""
        got = self.r.xread({self.out_key(mid): after}, count=count, block=block_ms)
        out: list[tuple[str, Outcome]] = []
        for _, entries in got or ():
            for eid, fields in entries:
                status = _s(fields[b"s"])
                payload: Any = fields[b"p"]
                if status in (LOST, UNAVAILABLE):
                    payload = msgpack.unpackb(payload)
                out.append((_s(eid), Outcome(int(fields[b"t"]), status, payload)))
        return out

    def confirm(self, mid: int, ids: list[str]) -> None:
        """The master has these outcomes: they leave its stream."""
        if ids:
            self.r.xdel(self.out_key(mid), *ids)

    def outcomes(self, mid: int, after: int, max_items: int) -> list[Outcome]:
        """Every outcome in the master's stream (confirmed ones are deleted by :meth:`confirm`)."""
        return [o for _, o in self.read_outcomes(mid, "0-0", max_items, None)]

    # ------------------------------------------------------------ workers
    def add_worker(self, hello: WorkerHello) -> Joined:
        if hello.resume is not None and hello.resume[0] == self.store_id:
            wid = hello.resume[1]
            if self._pending_ids(wid):
                return Joined(wid, True)
            reason = "its leases were reclaimed by others (or the server lost them)"
        else:
            reason = ""
        n = int(self.r.incr(f"{self.prefix}:next_worker"))
        return Joined(f"{hello.host}/{hello.pid}/{n}", False, reason)

    def _pending_ids(self, wid: str) -> list[str]:
        pending = self.r.xpending_range(self.key["stream"], "workers", "-", "+", 100_000, wid)
        return [_s(p["message_id"]) for p in pending]

    def knows_worker(self, wid: str) -> bool:
        return True  # a consumer exists once it reads: there is nothing to join

    def touch_worker(self, wid: str) -> None:
        self.renew(wid)

    def renew(self, wid: str) -> int:
        """Renew ``wid``'s leases (its heartbeat): how many it still holds."""
        return int(self._run("RENEW", [wid]))

    def report(self, wid: str, reports: list[Report]) -> None:
        if not reports:
            return
        args: list[Any] = [wid]
        outs = []
        for report in reports:
            held = self._held.get(report.task)
            master = report.task >> ID_BITS
            delay = -1
            status = report.status
            if status == RETRY:
                if held is not None and held.retries < held.options.retries:
                    seconds = policy.retry_delay(held.options.backoff, held.retries + 1)
                    delay = int(seconds * 1000)
                else:
                    status = "error"
            payload = report.payload
            if status == UNAVAILABLE:  # no quarantine here: its master hears at once
                said = [[wid, report.payload.decode("utf-8", "replace")[:2000]]]
                fn = held.fn if held else "?"
                payload = msgpack.packb(policy.unavailable_payload(fn, said))
            args += [report.task, report.attempt, status, payload, delay, master]
            outs.append(self.out_key(master))
        _, discarded = self._run("REPORT", args, outs)
        for report in reports:  # only now: a report that fails is sent again
            self._held.pop(report.task, None)
        if discarded:
            log.info("discarded %d late result(s) of %s", discarded, wid)

    def lease(self, wid: str, want: int) -> list[Lease]:
        if wid in self._leaving or want <= 0:
            return []
        self._run("DUE", [])
        idle = int(self.heartbeat_timeout * 1000)
        reclaimed, fresh = self._run("LEASE", [wid, want, idle])
        leases = [self._lease(row) for row in fresh]
        if reclaimed:
            leases = self._settle(wid, reclaimed) + leases
        return leases

    def wait_lease(self, wid: str, want: int, wait: float) -> list[Lease]:
        """Block up to ``wait`` s for new tasks (``XREADGROUP BLOCK``), then lease them."""
        if wid in self._leaving or want <= 0:
            return []
        got = self.r.xreadgroup("workers", wid, {self.key["stream"]: ">"}, count=want,
                                block=max(1, int(wait * 1000)))  # fmt: skip
        ids = [_s(eid) for _, entries in got or () for eid, _ in entries]
        if not ids:
            return []
        return [self._lease(row) for row in self._run("STAMP", [wid, *ids])]

    def _lease(self, row: list[Any]) -> Lease:
        tid, attempt, retries, _strikes, blob = row[:5]
        master, fn, payload, options = msgpack.unpackb(blob)
        lease = Lease(int(tid), int(attempt), fn, payload, TaskOptions.from_wire(options))
        self._held[lease.task] = _Held(int(master), fn, lease.options, int(retries))
        return lease

    def _settle(self, wid: str, rows: list[list[Any]]) -> list[Lease]:
        """Reclaimed leases: a strike or a suspect for each (:mod:`..policy`), and the
        dead letters out of the queue; return those that run here."""
        args: list[Any] = [wid]
        outs: list[str] = []
        keep: list[Lease] = []
        for row in rows:
            lease = self._lease(row)
            strikes_blob, prev, lost_with = row[3], _s(row[5]), int(row[6])
            if strikes_blob:
                strikes, history = msgpack.unpackb(strikes_blob)
            else:
                strikes, history = lease.options.strikes, [list(h) for h in lease.options.history]
            how = f"silent past heartbeat_timeout ({self.heartbeat_timeout:g} s)"
            strikes += policy.strikes_for(lost_with)
            history.append([prev, how])
            dead = policy.is_dead(strikes, lease.options.max_attempts, self.max_attempts)
            verdict = 0
            reason = ""
            payload = b""
            if dead:
                verdict = 2 if lease.options.split else 1
                pairs = [(str(a), str(b)) for a, b in history]
                reason = policy.dead_letter_reason(strikes, pairs)
                payload = msgpack.packb({"reason": reason, "attempts": history})
                log.error("task %d (%s) dead-lettered: %s", lease.task, lease.fn, reason)
                self._held.pop(lease.task, None)
            else:
                keep.append(lease)
            master = lease.task >> ID_BITS
            args += [lease.task, lease.attempt, msgpack.packb([strikes, history]), verdict,
                     master, payload, reason]  # fmt: skip
            outs.append(self.out_key(master))
        self._run("SETTLE", args, outs)
        return keep

    def give_back(self, wid: str, tids: list[int]) -> None:
        for tid in tids:
            self._held.pop(tid, None)
        if tids:
            self._run("RELEASE", [wid, *tids])

    def leave(self, wid: str, tids: list[int]) -> None:
        self._leaving.add(wid)
        self.give_back(wid, tids)
        if not self._pending_ids(wid):
            self.r.xgroup_delconsumer(self.key["stream"], "workers", wid)

    def lose_worker(self, wid: str, how: str) -> None:
        """Nothing at once: a lost worker's leases are reclaimed after heartbeat_timeout
        (``instant_requeue`` is false), by the next worker that leases."""

    def ask_give_back(self, idle: str) -> None:
        """Not kept: a worker leases only what it runs soon (no hoarding to undo)."""

    def take_give_back(self, wid: str) -> int:
        return 0

    def holds_leases(self, wid: str) -> bool:
        return bool(self._pending_ids(wid))

    def is_leaving(self, wid: str) -> bool:
        return wid in self._leaving

    def worker_count(self) -> int:
        return len(self._live_consumers())

    def _live_consumers(self) -> list[dict[str, Any]]:
        limit = self.heartbeat_timeout * 1000
        consumers = self.r.xinfo_consumers(self.key["stream"], "workers")
        return [c for c in consumers if c["pending"] or c["idle"] <= limit]

    # -------------------------------------------------------------- time
    def expire(self) -> None:
        self._run("DUE", [])

    def next_due(self) -> float:
        return float("inf")

    # -------------------------------------------------------- inspection
    def status(self) -> dict[str, Any]:
        r = self.r
        stream = self.key["stream"]
        groups = r.xinfo_groups(stream)
        leased = sum(int(g["pending"]) for g in groups)
        counters = {_s(k): int(v) for k, v in r.hgetall(self.key["counters"]).items()}
        workers = [
            {"worker": _s(c["name"]), "leases": int(c["pending"]), "idle": c["idle"] / 1000}
            for c in self._live_consumers()
        ]
        return {
            "kind": "tasks",
            "store": self.describe() | {"url": self.url, "queue": self.queue},
            "tasks": {
                "queued": max(0, int(r.xlen(stream)) - leased),
                "leased": leased,
                "delayed": int(r.zcard(self.key["due"])),
                "done": counters.get("done", 0),
                "dead": counters.get("dead", 0),
                "discarded": counters.get("discarded", 0),
                "reclaimed": counters.get("reclaimed", 0),
                "retried": counters.get("retried", 0),
            },
            "workers": workers,
            "masters": int(r.hlen(self.key["masters"])),
            "dead_letters": [d.to_wire() for d in self.dead_letters()],
            "heartbeat_timeout": self.heartbeat_timeout,
            "max_attempts": self.max_attempts,
        }

    def dead_letters(self) -> list[DeadLetter]:
        out = []
        for _, fields in self.r.xrange(self.key["dead"]):
            master, fn, payload, options = msgpack.unpackb(fields[b"spec"])
            _, history = msgpack.unpackb(fields[b"strikes"])
            out.append(DeadLetter(
                int(fields[b"t"]), int(master), fn, payload, TaskOptions.from_wire(options),
                _s(fields[b"reason"]), tuple((str(a), str(b)) for a, b in history),
                int(fields[b"at"]) / 1000,
            ))  # fmt: skip
        return out

    def requeue_dead(self, tids: Iterable[int]) -> list[int]:
        wanted = {int(t) for t in tids}
        found = []
        for eid, fields in self.r.xrange(self.key["dead"]):
            tid = int(fields[b"t"])
            if tid not in wanted:
                continue
            with self.r.pipeline(transaction=True) as pipe:  # queued by the next DUE
                pipe.hset(self.key["spec"], str(tid), fields[b"spec"])
                pipe.zadd(self.key["due"], {str(tid): 0})
                pipe.xdel(self.key["dead"], eid)
                pipe.execute()
            found.append(tid)
        return found

    # -------------------------------------------------------- durability
    def commit(self) -> None:
        """Nothing to do: every script is durable as the server's persistence makes it."""

    def reload(self) -> None:
        """Nothing to do: no transition is held back."""

    def close(self) -> None:
        self.r.close()
