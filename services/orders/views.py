"""Database rows to the public view (see services.common.codec).

An event's view is built in SQL (store._EVENT_JSON), once, from its committed row.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from dexengine.v1 import common_pb2
from services.common.codec import iso
from services.common.decimals import fmt


def _num(value: Decimal | None) -> str | None:
    return fmt(value) if value is not None else None


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    return orjson.loads(value)


def order_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "orderId": str(row["id"]),
        "type": row["type"],
        "status": row["status"],
        "tokenIn": row["token_in"],
        "tokenOut": row["token_out"],
        "amountIn": _num(row["amount_in"]),
        "slippage": _num(row["slippage"]),
        "amountOut": _num(row["amount_out"]),
        "expectedPrice": _num(row["expected_price"]),
        "executedPrice": _num(row["executed_price"]),
        "dexProvider": row["dex_provider"],
        "txHash": row["tx_hash"],
        "errorMessage": row["error_message"],
        "retryCount": row["retry_count"],
        "seq": row["seq"],
        "routing": _json(row["routing"]),
        "execution": _json(row["execution"]) or None,
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "completedAt": iso(row["completed_at"]) if row["completed_at"] else None,
        "limitPrice": _num(row["limit_price"]),
        "minLiquidity": _num(row["min_liquidity"]),
        "expiresAt": iso(row["expires_at"]) if row["expires_at"] else None,
    }


def attach_signed(message: common_pb2.Order, row: asyncpg.Record, view: dict[str, Any]) -> None:
    """Set the current attempt's signed transaction on ``message`` from a row read with SIGNED_COLUMNS (none is
    set before one is signed); its signature and attempt are the view's."""
    if row.get("signed_tx") is None:
        return
    message.signed.CopyFrom(
        common_pb2.SignedTransaction(
            signature=view["txHash"] or "",
            attempt=int((view["execution"] or {}).get("attempt") or 0),
            transaction=bytes(row["signed_tx"]),
            last_valid_block_height=row["last_valid_block_height"] or 0,
        )
    )
