"""The Lua scripts of the Redis backend: each state transition is one script, so it is atomic.

Every key a script touches is passed to it in ``KEYS`` (never built inside),
and every key of a queue carries the queue's hash tag, so a script runs on
one Redis Cluster node.  The keys, in the order of :data:`KEY_NAMES`:

==========  ======================================================================
key         what it holds
==========  ======================================================================
stream      the queue: a stream of ``t=<task id>`` entries, consumer group ``workers``
spec        task id -> the task (msgpack ``[master, fn, payload, options]``)
entry       task id -> its stream entry id, while it is queued or leased
attempt     task id -> the attempt of its current lease: the lease's token
owner       task id -> the worker (consumer) that holds its lease
strikes     task id -> msgpack ``[strikes, [[worker, how], ...]]``
retries     task id -> the retries it has had
held        worker -> the leases it holds
due         sorted set: task id by the time (ms, Redis's clock) its retry is due
dead        the dead-letter stream
counters    ``done``, ``discarded``, ``dead``, ``retried``, ``reclaimed``
masters     master id -> the last task number it queued (a batch sent twice is skipped)
config      the queue's settings (``heartbeat_timeout``, ``max_attempts``)
==========  ======================================================================

A master's outcomes go to its own stream (``out:<master>``), passed after these.
The rules (strikes, dead letters, retry delays) are decided in Python by
:mod:`..policy` and handed to the scripts as arguments: a script only applies them.
"""

from __future__ import annotations

__all__ = [
    "CANCEL",
    "DUE",
    "ENQUEUE",
    "KEY_NAMES",
    "LEASE",
    "RELEASE",
    "RENEW",
    "REPORT",
    "SETTLE",
    "STAMP",
]

KEY_NAMES = (
    "stream", "spec", "entry", "attempt", "owner", "strikes", "retries", "held",
    "due", "dead", "counters", "masters", "config",
)  # fmt: skip

# KEYS[n] by name, for the scripts' text.
_K = {name: f"KEYS[{i + 1}]" for i, name in enumerate(KEY_NAMES)}


def _lua(text: str) -> str:
    for name, key in _K.items():
        text = text.replace("@" + name, key)
    return text


_FORGET = """
local function forget(tid)
  redis.call('HDEL', @spec, tid)
  redis.call('HDEL', @entry, tid)
  redis.call('HDEL', @attempt, tid)
  redis.call('HDEL', @owner, tid)
  redis.call('HDEL', @strikes, tid)
  redis.call('HDEL', @retries, tid)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Stamp a stream entry just delivered to ARGV[2]: a new attempt (the lease's
# token), the owner, and the lease as returned to the worker.
_STAMP = """
local function stamp(id, fields, consumer, out)
  local tid = fields[2]
  local spec = redis.call('HGET', @spec, tid)
  if not spec or redis.call('HGET', @entry, tid) ~= id then
    redis.call('XACK', @stream, 'workers', id)
    redis.call('XDEL', @stream, id)
    return
  end
  local attempt = redis.call('HINCRBY', @attempt, tid, 1)
  redis.call('HSET', @owner, tid, consumer)
  redis.call('HINCRBY', @held, consumer, 1)
  out[#out + 1] = {tid, attempt, redis.call('HGET', @retries, tid) or '0',
                   redis.call('HGET', @strikes, tid) or '', spec}
end
"""

#: ARGV: master, then (task id, task number, spec) triples.  Skips numbers at
#: or below the master's mark.  Returns how many were queued.
ENQUEUE = _lua("""
local mark = tonumber(redis.call('HGET', @masters, ARGV[1]) or '-1')
if mark < 0 then return -1 end
local top, n = mark, 0
for i = 2, #ARGV, 3 do
  local num = tonumber(ARGV[i + 1])
  if num > mark then
    redis.call('HSET', @spec, ARGV[i], ARGV[i + 2])
    local id = redis.call('XADD', @stream, '*', 't', ARGV[i])
    redis.call('HSET', @entry, ARGV[i], id)
    if num > top then top = num end
    n = n + 1
  end
end
redis.call('HSET', @masters, ARGV[1], top)
return n
""")

#: ARGV: consumer, want, idle ms.  Reclaims up to ``want`` leases silent for
#: the queue's heartbeat_timeout (else ``idle`` ms) with XAUTOCLAIM, then
#: reads new entries.  Returns
#: ``{reclaimed, fresh}``; a reclaimed lease carries its previous owner and
#: how many leases that owner held when it was lost.
LEASE = _lua(_FORGET + _STAMP + """
local consumer, want = ARGV[1], tonumber(ARGV[2])
local reclaimed, fresh = {}, {}
local timeout = redis.call('HGET', @config, 'heartbeat_timeout')
local idle = timeout and math.floor(tonumber(timeout) * 1000) or tonumber(ARGV[3])
local claimed = redis.call('XAUTOCLAIM', @stream, 'workers', consumer, idle, '0-0',
                           'COUNT', want)
local lost = {}
for _, e in ipairs(claimed[2]) do
  local id, fields = e[1], e[2]
  if fields then
    local tid = fields[2]
    local prev = redis.call('HGET', @owner, tid) or '?'
    if lost[prev] == nil then
      lost[prev] = tonumber(redis.call('HGET', @held, prev) or '0')
      redis.call('HDEL', @held, prev)
    end
    local out = {}
    stamp(id, fields, consumer, out)
    if #out == 1 then
      local lease = out[1]
      lease[#lease + 1] = prev
      lease[#lease + 1] = lost[prev]
      reclaimed[#reclaimed + 1] = lease
      redis.call('HINCRBY', @counters, 'reclaimed', 1)
    end
  end
end
want = want - #reclaimed
if want > 0 then
  local got = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', want,
                         'STREAMS', @stream, '>')
  if got then
    for _, e in ipairs(got[1][2]) do stamp(e[1], e[2], consumer, fresh) end
  end
end
return {reclaimed, fresh}
""")

#: ARGV: consumer, then entry ids it read with a blocking XREADGROUP.  Returns
#: the leases (as LEASE's fresh ones).
STAMP = _lua(_STAMP + """
local fresh = {}
for i = 2, #ARGV do
  local e = redis.call('XRANGE', @stream, ARGV[i], ARGV[i])
  if e[1] then stamp(e[1][1], e[1][2], ARGV[1], fresh)
  else redis.call('XACK', @stream, 'workers', ARGV[i]) end
end
return fresh
""")

#: KEYS after the queue's: one outcome stream per report.  ARGV: consumer,
#: then (task, attempt, status, payload, retry delay ms or -1, master) sextuples.  A report is
#: taken only from the lease's owner with its current attempt (the token);
#: a result and its XACK happen together.  Returns ``{taken, discarded}``.
REPORT = _lua(_FORGET + """
local function holds(consumer, tid, attempt)
  return redis.call('HGET', @owner, tid) == consumer
     and redis.call('HGET', @attempt, tid) == attempt
end
local consumer = ARGV[1]
local taken, discarded, k = 0, 0, #KEYS - (#ARGV - 1) / 6
for i = 2, #ARGV, 6 do
  k = k + 1
  local tid, attempt, status, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local delay, master = tonumber(ARGV[i + 4]), ARGV[i + 5]
  if holds(consumer, tid, attempt) then
    local id = redis.call('HGET', @entry, tid)
    redis.call('XACK', @stream, 'workers', id)
    redis.call('XDEL', @stream, id)
    redis.call('HDEL', @entry, tid)
    redis.call('HDEL', @owner, tid)
    if redis.call('HINCRBY', @held, consumer, -1) <= 0 then redis.call('HDEL', @held, consumer) end
    if delay >= 0 then
      redis.call('HINCRBY', @retries, tid, 1)
      redis.call('ZADD', @due, now_ms() + delay, tid)
      redis.call('HINCRBY', @counters, 'retried', 1)
    else
      if redis.call('HEXISTS', @masters, master) == 1 then
        redis.call('XADD', KEYS[k], '*', 't', tid, 's', status, 'p', payload)
      end
      forget(tid)
      redis.call('HINCRBY', @counters, 'done', 1)
    end
    taken = taken + 1
  else
    discarded = discarded + 1
  end
end
if discarded > 0 then redis.call('HINCRBY', @counters, 'discarded', discarded) end
return {taken, discarded}
""")

#: After LEASE reclaimed leases: the rules' verdict on each.  KEYS after the
#: queue's: the outcome stream of each dead task's master.  ARGV: consumer,
#: then (task, attempt, strikes blob, verdict, master, outcome payload,
#: dead-letter reason) septuples; verdict 0: it runs again, 1: dead letter,
#: 2: back to its master only (a ``map`` chunk, which it splits).  A dead
#: task leaves the queue for the dead-letter stream; its master gets ``lost``.
SETTLE = _lua(_FORGET + """
local consumer = ARGV[1]
local k = #KEYS - (#ARGV - 1) / 7
for i = 2, #ARGV, 7 do
  k = k + 1
  local tid, attempt = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', @owner, tid) == consumer and redis.call('HGET', @attempt, tid) == attempt
  then
    redis.call('HSET', @strikes, tid, ARGV[i + 2])
    if ARGV[i + 3] ~= '0' then
      local id = redis.call('HGET', @entry, tid)
      redis.call('XACK', @stream, 'workers', id)
      redis.call('XDEL', @stream, id)
      if redis.call('HINCRBY', @held, consumer, -1) <= 0 then
        redis.call('HDEL', @held, consumer)
      end
      if ARGV[i + 3] == '1' then
        redis.call('XADD', @dead, '*', 't', tid, 'm', ARGV[i + 4], 'spec',
                   redis.call('HGET', @spec, tid), 'strikes', ARGV[i + 2],
                   'reason', ARGV[i + 6], 'at', now_ms())
        redis.call('HINCRBY', @counters, 'dead', 1)
      end
      if redis.call('HEXISTS', @masters, ARGV[i + 4]) == 1 then
        redis.call('XADD', KEYS[k], '*', 't', tid, 's', 'lost', 'p', ARGV[i + 5])
      end
      forget(tid)
    end
  end
end
return 1
""")

#: ARGV: consumer, then task ids it returns unstarted: queued again (at the back).
RELEASE = _lua("""
local consumer, n = ARGV[1], 0
for i = 2, #ARGV do
  local tid = ARGV[i]
  if redis.call('HGET', @owner, tid) == consumer then
    local id = redis.call('HGET', @entry, tid)
    redis.call('XACK', @stream, 'workers', id)
    redis.call('XDEL', @stream, id)
    redis.call('HDEL', @owner, tid)
    if redis.call('HINCRBY', @held, consumer, -1) <= 0 then redis.call('HDEL', @held, consumer) end
    redis.call('HSET', @entry, tid, redis.call('XADD', @stream, '*', 't', tid))
    n = n + 1
  end
end
return n
""")

#: ARGV: consumer.  The owner renews its own leases (XCLAIM JUSTID resets their
#: idle time); only entries still in its own pending list, so a lease another
#: worker reclaimed stays reclaimed.  Returns how many were renewed.
RENEW = _lua("""
local pending = redis.call('XPENDING', @stream, 'workers', '-', '+', 100000, ARGV[1])
if #pending == 0 then return 0 end
local ids = {}
for i, p in ipairs(pending) do ids[i] = p[1] end
for i = 1, #ids, 1000 do
  redis.call('XCLAIM', @stream, 'workers', ARGV[1], 0,
             unpack(ids, i, math.min(i + 999, #ids)), 'JUSTID')
end
return #ids
""")

#: Retries that are due go back on the queue.  Returns how many.
DUE = _lua(_FORGET + """
local due = redis.call('ZRANGEBYSCORE', @due, '-inf', now_ms(), 'LIMIT', 0, 1000)
for _, tid in ipairs(due) do
  redis.call('ZREM', @due, tid)
  if redis.call('HEXISTS', @spec, tid) == 1 then
    redis.call('HSET', @entry, tid, redis.call('XADD', @stream, '*', 't', tid))
  end
end
return #due
""")

#: ARGV: task ids.  Those not leased (queued or waiting for a retry) are
#: cancelled; returns them.
CANCEL = _lua(_FORGET + """
local done = {}
for _, tid in ipairs(ARGV) do
  if redis.call('HEXISTS', @spec, tid) == 1 and redis.call('HEXISTS', @owner, tid) == 0 then
    local id = redis.call('HGET', @entry, tid)
    if id then redis.call('XDEL', @stream, id) end
    redis.call('ZREM', @due, tid)
    forget(tid)
    done[#done + 1] = tid
  end
end
return done
""")
