"""The events exchange's message shapes: what the relay writes, and every shape a consumer still reads."""

from __future__ import annotations

import orjson
import pytest

from services.common import amqp

PENDING = {"orderId": "a", "seq": 1, "status": "pending"}
WAITING = {"orderId": "a", "seq": 2, "status": "waiting"}
OTHER = {"orderId": "b", "seq": 4, "status": "submitted"}
TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_a_batch_is_read_back_commit_by_commit_with_each_trace() -> None:
    # The outbox holds a commit's events as JSON text (asyncpg returns jsonb as text): spliced as it is.
    body = amqp.commits_body([(TRACE, orjson.dumps([PENDING, WAITING]).decode()), ({}, orjson.dumps([OTHER]))])
    assert orjson.loads(body) == {
        "commits": [{"trace": TRACE, "events": [PENDING, WAITING]}, {"trace": {}, "events": [OTHER]}]
    }
    assert amqp.commits_of(body) == [amqp.Commit(TRACE, [PENDING, WAITING]), amqp.Commit({}, [OTHER])]
    assert amqp.events_of(body) == [PENDING, WAITING, OTHER]


def test_older_relays_messages_are_one_commit_traced_by_the_message_headers() -> None:
    headers = {**TRACE, amqp.ORDER_TYPE_HEADER: b"limit"}
    one_commit = orjson.dumps([PENDING, WAITING])
    assert amqp.commits_of(one_commit, headers) == [
        amqp.Commit({**TRACE, amqp.ORDER_TYPE_HEADER: "limit"}, [PENDING, WAITING])
    ]
    one_event = orjson.dumps(PENDING)
    assert amqp.commits_of(one_event) == [amqp.Commit({}, [PENDING])]
    assert amqp.events_of(one_event) == [PENDING]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"42",
        b'["not an event"]',
        b'{"commits": [{"trace": {}}]}',
        b'{"commits": [{"events": [1]}]}',
        b'{"commits": ["a commit"]}',
    ],
)
def test_anything_else_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        amqp.commits_of(body)
