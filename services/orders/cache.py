"""Redis cache of live orders: the latest state and its event history.

An entry is made by the first read of an order (a miss reads PostgreSQL and
fills it) and kept current by each transition's append from then on; a create
writes nothing (nothing on an order's path reads a new order).

Keys: ``order:{id}:status`` (the order view, JSON) and ``order:{id}:events``
(a list of event views, index = seq - 1): what :meth:`OrderCache.get` reads;
and ``order:{id}:writing``, a set of tokens: :meth:`OrderCache.begin` adds one
before a transition commits and that transition's append removes it after: while
any stands, reads miss (they go to PostgreSQL) and fills are refused, so no
reader can see the state before a commit whose event the relay may already have
published. The append is sent after the transition's answer; a token per writer
means an earlier transition's append that lands late lifts its own marker only,
never the next transition's. Each token also stands in ``order:{id}:pending``,
which has no short expiry: a marker that expired while its token is still
pending means a writer died between its begin and its append (its commit may
have gone through), so the next read drops the entry instead of serving the
state before that commit, and the next fill (from a read made after the
marker expired) starts afresh. Writes are Lua scripts that only ever move the
cache forward by seq, so racing writers cannot put an older state back; a
write that would leave a gap drops the entry instead (the next read refills
it from PostgreSQL). Redis being down never fails a request: reads fall back
to PostgreSQL, failed writes are remembered and the entry dropped once Redis
answers again.

Reads, markers and scripts issued in the same turn of the event loop (many
orders' transitions at once, under load) go to Redis as one pipeline: one write
and one read for all of them instead of one round trip each. Each command still
runs on its own (a script atomically), in the order it was issued.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Coroutine
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from services.common.turn_batches import TurnBatches

log = logging.getLogger(__name__)
LIVE_TTL_S = 24 * 3600
DONE_TTL_S = 3600
TIMEOUT_S = 0.25

WRITING_TTL_S = 5  # a writer that died between begin and append holds reads off PostgreSQL no longer
PENDING_TTL_S = LIVE_TTL_S  # outlives any entry the dead writer's commit could have made stale
FENCE_TTL_S = 60  # far longer than a read of PostgreSQL followed by its fill can take

# KEYS: status, events, writing, fence, pending. ARGV: order json, seq, ttl, fence ttl, writer's token,
# event json... (the events the commit appended, the last one at seq).
# The fence remembers the newest committed seq, so a fill from a read made before that commit
# (which can arrive after this append) is refused instead of putting the older state back.
_APPEND = """
redis.call('SREM', KEYS[3], ARGV[5])
redis.call('SREM', KEYS[5], ARGV[5])
local n = redis.call('LLEN', KEYS[2])
local seq = tonumber(ARGV[2])
local k = #ARGV - 5
local fence = tonumber(redis.call('GET', KEYS[4]) or '0')
if seq > fence then redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[4]) end
if n >= seq then return 0 end
if n ~= seq - k then
  redis.call('DEL', KEYS[1], KEYS[2])
  return -1
end
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: writing, pending. ARGV: the writer's token, writing ttl, pending ttl.
_BEGIN = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
"""

# KEYS: status, events, writing, fence, pending. ARGV: order json, seq, ttl, terminal ('1' or '0'), event json...
# A read that saw a terminal status is the last word: no commit can follow it, so a `writing` marker (left
# by a writer that died between its commit and its append, say) cannot make it stale, and neither marker
# matters any more. With no marker standing, a token still pending is a writer that died: this read came
# after its marker expired, so it starts the entry afresh.
_FILL = """
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[3], KEYS[5])
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
elseif redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
end
local n = redis.call('LLEN', KEYS[2])
local seq = tonumber(ARGV[2])
if n >= seq then return 0 end
if seq < tonumber(redis.call('GET', KEYS[4]) or '0') then return 0 end
redis.call('DEL', KEYS[2])
for i = 5, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


# KEYS: status, events, writing, fence, pending. One consistent read of the entry; an entry a dead writer
# left (a token pending with no marker standing: its commit may have gone through) is dropped, and missed.
_READ = """
local writing = redis.call('EXISTS', KEYS[3])
if writing == 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
  return {false, {}, 1}
end
return {redis.call('GET', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1), writing}
"""


class Pipeliner:
    """Sends the commands issued in one turn of the event loop as one pipeline."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._batches: TurnBatches[tuple[Any, ...], Any] = TurnBatches(self._send)

    async def call(self, *command: Any) -> Any:
        return await self._batches.submit(command)

    async def script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, or EVAL once when Redis lost its script cache (a restart, SCRIPT FLUSH)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.call("EVAL", script.script, len(keys), *keys, *args)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))  # a command's error is its result

    async def close(self) -> None:
        await self._batches.close()


def keys(order_id: str) -> list[str]:
    """status, events, writing (a transition is committing), fence (the newest seq an append saw), pending (the
    tokens of transitions begun and not yet appended: a writer's that died stays)."""
    return [
        f"order:{order_id}:status",
        f"order:{order_id}:events",
        f"order:{order_id}:writing",
        f"order:{order_id}:fence",
        f"order:{order_id}:pending",
    ]


def _entry_and_markers(order_id: str) -> list[str]:
    """Every key of an order but its fence (which guards commits still on their way)."""
    status, events, writing, _, pending = keys(order_id)
    return [status, events, writing, pending]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class OrderCache:
    def __init__(self, url: str) -> None:
        self.redis = aioredis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        self._append = self.redis.register_script(_APPEND)
        self._begin = self.redis.register_script(_BEGIN)
        self._fill = self.redis.register_script(_FILL)
        self._read = self.redis.register_script(_READ)
        self._pipe = Pipeliner(self.redis)
        self._dirty: set[str] = set()
        self._healer: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()  # sent after their callers' answers
        prefix = os.urandom(8).hex()  # replicas (each pid 1 in its container) never share a token
        self._tokens = (f"{prefix}.{n}" for n in itertools.count())

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def get(self, order_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        if order_id in self._dirty:
            return None
        try:
            raw_order, raw_events, writing = await self._pipe.script(self._read, keys(order_id), [])
        except (RedisError, OSError):
            return None
        if raw_order is None or writing:
            return None
        order = orjson.loads(raw_order)
        events = [orjson.loads(item) for item in raw_events]
        if len(events) != order["seq"]:
            return None
        return order, events

    async def begin(self, order_id: str) -> str:
        """A transition of this order is about to commit: reads go to PostgreSQL until its append, which
        takes the token this returns."""
        token = next(self._tokens)
        try:
            _, _, writing, _, pending = keys(order_id)
            await self._pipe.script(self._begin, [writing, pending], [token, WRITING_TTL_S, PENDING_TTL_S])
        except (RedisError, OSError) as exc:
            self._mark_dirty(order_id, exc)  # dirty entries are never read: the same guarantee
        return token

    async def append(self, order: dict[str, Any], events: list[dict[str, Any]], terminal: bool, token: str) -> None:
        """The order as a commit left it, and the events that commit appended (the last at the order's seq);
        lifts the marker of the :meth:`begin` that gave ``token``."""
        ttl = DONE_TTL_S if terminal else LIVE_TTL_S
        try:
            await self._pipe.script(
                self._append,
                keys(order["orderId"]),
                [_dumps(order), order["seq"], ttl, FENCE_TTL_S, token, *(_dumps(e) for e in events)],
            )
        except (RedisError, OSError) as exc:
            self._mark_dirty(order["orderId"], exc)

    def append_soon(self, order: dict[str, Any], events: list[dict[str, Any]], terminal: bool, token: str) -> None:
        """append() without waiting for it: the transition's caller need not wait for Redis, since reads
        go to PostgreSQL while its marker stands. :meth:`close` waits for the appends still on their way."""
        self._soon(self.append(order, events, terminal, token))

    async def fill(self, order: dict[str, Any], events: list[dict[str, Any]], terminal: bool) -> None:
        if order["orderId"] in self._dirty:
            return
        ttl = DONE_TTL_S if terminal else LIVE_TTL_S
        try:
            await self._pipe.script(
                self._fill,
                keys(order["orderId"]),
                [_dumps(order), order["seq"], ttl, "1" if terminal else "0", *(_dumps(e) for e in events)],
            )
        except (RedisError, OSError) as exc:
            self._mark_dirty(order["orderId"], exc)

    def _soon(self, write: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def drop(self, order_id: str, token: str) -> None:
        """Forget an entry (the next read refills it from PostgreSQL) and lift the marker of the :meth:`begin`
        that gave ``token``: a transition that did not commit. Other writers' markers and the fence stay: they
        guard commits still on their way and older fills."""
        status, events, writing, _, pending = keys(order_id)
        try:
            await asyncio.gather(
                self._pipe.call("DEL", status, events),
                self._pipe.call("SREM", writing, token),
                self._pipe.call("SREM", pending, token),
            )
        except (RedisError, OSError) as exc:
            self._mark_dirty(order_id, exc)

    def _mark_dirty(self, order_id: str, exc: Exception) -> None:
        log.warning(
            "cache write failed, entry will be dropped when redis answers: %s", exc, extra={"orderId": order_id}
        )
        self._dirty.add(order_id)
        if self._healer is None or self._healer.done():
            self._healer = asyncio.create_task(self._heal())

    async def _heal(self) -> None:
        """Drop entries whose writes failed, once Redis answers; reads bypass them until then."""
        while self._dirty:
            batch = list(self._dirty)
            try:
                await self.redis.delete(*(key for order_id in batch for key in _entry_and_markers(order_id)))
            except (RedisError, OSError):
                await asyncio.sleep(0.5)
                continue
            self._dirty.difference_update(batch)
            log.info("cache healed: dropped %d stale entries", len(batch))

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._healer is not None:
            self._healer.cancel()
        await self._pipe.close()
        await self.redis.aclose()
