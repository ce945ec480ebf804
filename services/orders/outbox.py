"""Outbox rows as the relay publishes them, whichever way they reach it.

A row comes to the relay either from the statement that wrote it (each write of
``store.py`` returns its rows as the ``outbox`` column, a JSON array, and the
store hands them over once they are committed) or from the relay's own claim of
rows nobody published (``relay.CLAIM_SQL``) or from another statement's ``RETURNING``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

# The write statements' column of the rows they put in the outbox (their CTE ``ob`` returns every column below but
# ``order_id``, which is the record's own id), in id order: the commit order of one order's rows.
WRITTEN_COLUMN = """(SELECT jsonb_agg(jsonb_build_array(ob.id, ob.kind, ob.payload, ob.headers, ob.created_at)
    ORDER BY ob.id) FROM ob WHERE ob.order_id = {owner}.id) AS outbox"""
RETURNED = "id, order_id, kind, payload, headers, created_at"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    order_id: uuid.UUID
    kind: str  # job | event
    payload: bytes  # JSON
    headers: dict[str, Any]  # the writer's trace context (and an event's order type)
    created_at: datetime


def _json(value: Any) -> bytes:
    """A jsonb value as JSON text (asyncpg returns jsonb as text)."""
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def stored(record: asyncpg.Record) -> OutboxRow:
    """A row of the outbox table (``RETURNED`` columns)."""
    headers = record["headers"]
    return OutboxRow(
        record["id"],
        record["order_id"],
        record["kind"],
        _json(record["payload"]),
        orjson.loads(headers) if headers else {},
        record["created_at"],
    )


def written(record: asyncpg.Record) -> list[OutboxRow]:
    """The outbox rows the statement that returned ``record`` (an order's row) wrote for that order."""
    column = record["outbox"]
    if column is None:
        return []
    return [
        OutboxRow(row_id, record["id"], kind, orjson.dumps(payload), headers or {}, datetime.fromisoformat(created))
        for row_id, kind, payload, headers, created in orjson.loads(column)
    ]
