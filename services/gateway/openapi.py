"""The OpenAPI document of the public HTTP API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

_DECIMAL = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "decimal as a string"}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["field", "issue"],
                        "properties": {"field": {"type": "string"}, "issue": {"type": "string"}},
                    },
                },
            },
        }
    },
}
_STATUS = {"type": "string", "enum": ["pending", "routing", "building", "submitted", "confirmed", "failed"]}
_ORDER = {
    "type": "object",
    "properties": {
        "orderId": {"type": "string", "format": "uuid"},
        "type": {"type": "string", "enum": ["market"]},
        "status": _STATUS,
        "tokenIn": {"type": "string"},
        "tokenOut": {"type": "string"},
        "amountIn": _DECIMAL,
        "slippage": _DECIMAL,
        "amountOut": {**_DECIMAL, "nullable": True},
        "expectedPrice": {**_DECIMAL, "nullable": True},
        "executedPrice": {**_DECIMAL, "nullable": True},
        "dexProvider": {"type": "string", "nullable": True},
        "txHash": {"type": "string", "nullable": True},
        "errorMessage": {"type": "string", "nullable": True},
        "retryCount": {"type": "integer"},
        "seq": {"type": "integer"},
        "routing": {"type": "object", "nullable": True},
        "execution": {"type": "object", "nullable": True},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "completedAt": {"type": "string", "format": "date-time", "nullable": True},
    },
}
_EVENT = {
    "type": "object",
    "required": ["orderId", "status", "seq", "timestamp", "data"],
    "properties": {
        "orderId": {"type": "string", "format": "uuid"},
        "status": _STATUS,
        "seq": {"type": "integer"},
        "timestamp": {"type": "string", "format": "date-time"},
        "data": {"type": "object"},
    },
}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "DEX order execution engine", "version": "0.1.0"},
    "paths": {
        "/api/orders/execute": {
            "post": {
                "summary": "Submit a market order",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["tokenIn", "tokenOut", "amountIn", "slippage"],
                                "additionalProperties": False,
                                "properties": {
                                    "tokenIn": {"type": "string", "description": "mint address (base58, 32 bytes)"},
                                    "tokenOut": {"type": "string", "description": "mint address (base58, 32 bytes)"},
                                    "amountIn": {
                                        "oneOf": [{"type": "number"}, _DECIMAL],
                                        "description": "whole tokens of tokenIn",
                                    },
                                    "slippage": {
                                        "oneOf": [{"type": "number"}, _DECIMAL],
                                        "description": "fraction, 0.01 = 1 %, 0.0001-0.5",
                                    },
                                    "type": {"type": "string", "enum": ["market"], "default": "market"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "Accepted (a replay with the same key: same answer + Idempotent-Replayed)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "orderId": {"type": "string", "format": "uuid"},
                                        "status": {"type": "string", "enum": ["pending"]},
                                        "websocketUrl": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _err("Validation failed"),
                    "422": _err("Idempotency key reused with a different body"),
                    "429": _err("BACKLOG_FULL: MAX_LIVE_ORDERS orders are live; retry after Retry-After seconds"),
                    "503": _err("A dependency is unavailable, or OUTCOME_UNKNOWN: retry with the same Idempotency-Key"),
                },
            }
        },
        "/api/orders": {
            "get": {
                "summary": "Recent orders",
                "parameters": [
                    {"name": "status", "in": "query", "schema": _STATUS},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "A page of orders",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "orders": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}},
                                        "nextCursor": {"type": "string", "nullable": True},
                                    },
                                }
                            }
                        },
                    },
                    "400": _err("Bad filter"),
                },
            }
        },
        "/api/orders/{orderId}": {
            "get": {
                "summary": "One order with its status history",
                "parameters": [
                    {"name": "orderId", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
                ],
                "responses": {
                    "200": {
                        "description": "The order",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
                    },
                    "400": _err("Not a UUID"),
                    "404": _err("Unknown order"),
                },
            }
        },
        "/ws/orders/{orderId}": {
            "get": {
                "summary": "WebSocket: the current state, then every status change (JSON messages, see OrderEvent)",
                "parameters": [
                    {"name": "orderId", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
                ],
                "responses": {
                    "101": {"description": "Switching protocols"},
                    "400": _err("Not a UUID"),
                    "404": _err("Unknown order"),
                },
            }
        },
        "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {
            "get": {
                "summary": "Dependencies reachable",
                "responses": {"200": {"description": "ready"}, "503": _err("not ready")},
            }
        },
    },
    "components": {"schemas": {"Error": _ERROR, "Order": _ORDER, "OrderEvent": _EVENT}},
}
