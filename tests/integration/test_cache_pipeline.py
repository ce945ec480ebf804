"""The orders cache's pipelining, against a Redis server of its own (it is flushed and stopped here).

Commands issued in one turn of the event loop go out as one pipeline; each caller still gets its own
answer or its own error, a script Redis forgot is sent again in full, and a Redis that went away fails the
calls (the cache then falls back to PostgreSQL) without leaving anyone waiting.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from services.orders import cache as cache_module
from services.orders.cache import OrderCache, Pipeliner, keys
from tests.support.cached import cached_view
from tests.support.servers import PrivateRedis
from tests.support.waiting import eventually


def _order(order_id: str, seq: int, status: str) -> dict[str, object]:
    return {"orderId": order_id, "seq": seq, "status": status}


def _event(order_id: str, seq: int, status: str) -> dict[str, object]:
    return {"orderId": order_id, "seq": seq, "status": status, "data": {}}


async def test_one_turns_commands_go_out_together_and_each_gets_its_answer(private_redis: PrivateRedis) -> None:
    client = aioredis.from_url(private_redis.url)
    pipe = Pipeliner(client)
    try:
        before = int((await client.info("stats"))["total_commands_processed"])
        answers = await asyncio.gather(
            *(pipe.call("SET", f"k{i}", i) for i in range(50)),
            *(pipe.call("GET", f"k{i}") for i in range(50)),
            pipe.call("INCR", "k0"),
            pipe.call("LPUSH", "k1", "x"),  # the wrong type: this caller alone gets the error
            return_exceptions=True,
        )
        after = int((await client.info("stats"))["total_commands_processed"])
        assert answers[:50] == [True] * 50
        assert answers[50:100] == [str(i).encode() for i in range(50)], "issued in order, read in order"
        assert answers[100] == 1
        assert isinstance(answers[101], ResponseError) and "WRONGTYPE" in str(answers[101])
        assert after - before == 102 + 1, "the 102 commands and the first INFO, nothing else"
        clients = await client.client_list()
        # One batch, one connection (plus this test's own for INFO and CLIENT LIST).
        assert len(clients) <= 2
    finally:
        await pipe.close()
        await client.aclose()


async def test_the_cache_reads_and_writes_through_a_redis_that_lost_its_scripts(
    private_redis: PrivateRedis,
) -> None:
    cache = OrderCache(private_redis.url)
    try:
        order_id = str(uuid.uuid4())
        await cache.fill(_order(order_id, 1, "pending"), [_event(order_id, 1, "pending")], terminal=False)
        assert await cache.redis.script_flush() is True  # as after a Redis restart: EVALSHA answers NOSCRIPT
        token = await cache.begin(order_id)
        assert await cache.get(order_id) is None, "a transition is committing: reads go to PostgreSQL"
        await cache.append(
            _order(order_id, 3, "submitted"),
            [_event(order_id, 2, "routing"), _event(order_id, 3, "submitted")],
            terminal=False,
            token=token,
        )
        got = await cache.get(order_id)
        assert got is not None
        order, events = got
        assert order["status"] == "submitted"
        assert [e["seq"] for e in events] == [1, 2, 3]
        assert not cache._dirty, "no write failed"
        # Many orders at once, in one turn: each read answers for its own order.
        others = [str(uuid.uuid4()) for _ in range(20)]
        await asyncio.gather(
            *(cache.fill(_order(o, 1, "pending"), [_event(o, 1, "pending")], terminal=False) for o in others)
        )
        reads = await asyncio.gather(*(cache.get(o) for o in others))
        assert [r[0]["orderId"] if r else None for r in reads] == others
    finally:
        await cache.close()


async def test_a_redis_gone_fails_every_waiting_call(private_redis: PrivateRedis) -> None:
    cache = OrderCache(private_redis.url)
    order_id = str(uuid.uuid4())
    try:
        await cache.fill(_order(order_id, 1, "pending"), [_event(order_id, 1, "pending")], terminal=False)
        await private_redis.stop()
        with pytest.raises((RedisError, OSError)):
            await cache._pipe.call("GET", keys(order_id)[0])
        # The cache's own calls swallow the failure: a read misses, a write marks the entry dirty.
        results = await asyncio.wait_for(
            asyncio.gather(cache.get(order_id), cache.begin(order_id), cache.get(order_id)), timeout=5
        )
        assert results[0] is None and results[2] is None, "reads miss"
        assert order_id in cache._dirty, "the marker was not written: the entry is never read until dropped"
    finally:
        await cache.close()


async def test_a_late_append_lifts_its_own_marker_not_the_next_transitions(private_redis: PrivateRedis) -> None:
    """Appends are sent after their transitions' answers, so one may land after the next transition began: the
    entry must not be read until that next transition's own append."""
    cache = OrderCache(private_redis.url)
    try:
        order_id = str(uuid.uuid4())
        await cache.fill(_order(order_id, 1, "pending"), [_event(order_id, 1, "pending")], terminal=False)
        first = await cache.begin(order_id)  # route_submit commits seq 2-4 ...
        second = await cache.begin(order_id)  # ... and confirm begins before route_submit's append landed
        assert first != second
        await cache.append(
            _order(order_id, 4, "submitted"),
            [_event(order_id, 2, "routing"), _event(order_id, 3, "building"), _event(order_id, 4, "submitted")],
            terminal=False,
            token=first,
        )
        assert await cache.get(order_id) is None, "confirm may have committed: reads still go to PostgreSQL"
        await cache.append(
            _order(order_id, 5, "confirmed"), [_event(order_id, 5, "confirmed")], terminal=True, token=second
        )
        got = await cache.get(order_id)
        assert got is not None and got[0]["status"] == "confirmed"
        assert [e["seq"] for e in got[1]] == [1, 2, 3, 4, 5]
        assert await cache.redis.exists(keys(order_id)[2]) == 0, "no marker left behind"
    finally:
        await cache.close()


async def test_a_transition_that_lost_its_race_lifts_its_own_marker_only(private_redis: PrivateRedis) -> None:
    """Two transitions began; the one whose compare-and-set failed forgets the entry, and the winner's marker
    still sends reads to PostgreSQL until the winner's own append."""
    cache = OrderCache(private_redis.url)
    try:
        order_id = str(uuid.uuid4())
        await cache.fill(_order(order_id, 1, "pending"), [_event(order_id, 1, "pending")], terminal=False)
        winner = await cache.begin(order_id)
        loser = await cache.begin(order_id)
        await cache.drop(order_id, loser)
        writing = keys(order_id)[2]
        assert await cache.redis.smembers(writing) == {winner.encode()}
        assert await cache.redis.exists(*keys(order_id)[:2]) == 0
        assert await cache.get(order_id) is None
    finally:
        await cache.close()


async def test_appends_sent_after_the_answer_land_before_close(private_redis: PrivateRedis) -> None:
    cache = OrderCache(private_redis.url)
    order_id = str(uuid.uuid4())
    await cache.fill(_order(order_id, 1, "pending"), [_event(order_id, 1, "pending")], terminal=False)
    token = await cache.begin(order_id)
    cache.append_soon(_order(order_id, 2, "routing"), [_event(order_id, 2, "routing")], terminal=False, token=token)
    await cache.close()  # waits for the append on its way
    client = aioredis.from_url(private_redis.url)
    try:
        assert (await cached_view(client, keys(order_id)[0]))["seq"] == 2
        assert await client.llen(keys(order_id)[1]) == 2
        assert await client.exists(keys(order_id)[2]) == 0
    finally:
        await client.aclose()


async def test_a_writer_that_died_between_begin_and_append_leaves_no_stale_entry_once_its_marker_expires(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its commit may have gone through: once its marker expired, a read drops the entry instead of serving
    the state before that commit, and a fill from a read made after that starts the entry afresh."""
    monkeypatch.setattr(cache_module, "WRITING_TTL_S", 1)
    cache = OrderCache(private_redis.url)
    try:
        order_id = str(uuid.uuid4())
        await cache.fill(_order(order_id, 1, "pending"), [_event(order_id, 1, "pending")], terminal=False)
        await cache.begin(order_id)  # route_submit commits seq 2-4, and its process dies before the append
        assert await cache.get(order_id) is None
        await eventually(lambda: _gone(cache, keys(order_id)[2]), timeout=5)
        assert await cache.get(order_id) is None, "the entry before the dead writer's commit is not served"
        assert await cache.redis.exists(*keys(order_id)[:2]) == 0, "the read dropped it"
        history = [_event(order_id, 1, "pending"), _event(order_id, 2, "routing")]
        history += [_event(order_id, 3, "building"), _event(order_id, 4, "submitted")]
        await cache.fill(_order(order_id, 4, "submitted"), history, terminal=False)  # a read of PostgreSQL
        got = await cache.get(order_id)
        assert got is not None and got[0]["seq"] == 4 and [e["seq"] for e in got[1]] == [1, 2, 3, 4]

        await cache.begin(order_id)  # confirm commits, and this writer dies too
        history.append(_event(order_id, 5, "confirmed"))
        await cache.fill(_order(order_id, 5, "confirmed"), history, terminal=True)  # the last word
        got = await cache.get(order_id)
        assert got is not None and got[0]["status"] == "confirmed", "a terminal read lifts every marker"
        assert await cache.redis.exists(keys(order_id)[2], keys(order_id)[4]) == 0
    finally:
        await cache.close()


async def _gone(cache: OrderCache, key: str) -> bool:
    return await cache.redis.exists(key) == 0
