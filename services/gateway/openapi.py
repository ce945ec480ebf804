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
_MINT = {
    "type": "string",
    "pattern": "^[1-9A-HJ-NP-Za-km-z]{32,44}$",
    "description": "mint address (base58 of 32 bytes)",
}
_STATUS = {
    "type": "string",
    "enum": ["pending", "waiting", "routing", "building", "submitted", "confirmed", "failed", "expired", "cancelled"],
}
_ORDER = {
    "type": "object",
    "properties": {
        "orderId": {"type": "string", "format": "uuid"},
        "type": {"type": "string", "enum": ["market", "limit", "sniper"]},
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
        "limitPrice": {**_DECIMAL, "nullable": True},
        "minLiquidity": {**_DECIMAL, "nullable": True},
        "expiresAt": {"type": "string", "format": "date-time", "nullable": True},
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


_UNAUTHORIZED = _err(
    "AUTH=apikey: no key (API_KEY_MISSING), not 'Bearer <key>' (API_KEY_MALFORMED), "
    "an unknown key (API_KEY_INVALID) or a revoked one (API_KEY_REVOKED)"
)
_ORDER_ID = {"name": "orderId", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_WS_RESPONSES = {
    "101": {"description": "Switching protocols"},
    "401": _UNAUTHORIZED,
    "426": _err("Not a WebSocket upgrade request"),
}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "DEX order execution engine",
        "version": "0.1.0",
        "description": (
            "With AUTH=apikey every /api and /ws call needs 'Authorization: Bearer <key>' (a WebSocket from a "
            "browser may offer the subprotocols 'dexengine.v1' and 'dexengine.bearer.<key>' instead); orders "
            "belong to the key that created them. AUTH=off (the default) asks for nothing."
        ),
    },
    "security": [{"apiKey": []}, {}],
    "paths": {
        "/api/orders/execute": {
            "post": {
                "summary": "Submit a market order",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "scoped to the API key; the same key and body give the same order",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
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
                                "example": {
                                    "tokenIn": "So11111111111111111111111111111111111111112",
                                    "tokenOut": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
                                    "amountIn": "1.5",
                                    "slippage": "0.01",
                                },
                                "properties": {
                                    "tokenIn": _MINT,
                                    "tokenOut": _MINT,
                                    "amountIn": {
                                        "oneOf": [{"type": "number"}, _DECIMAL],
                                        "description": "whole tokens of tokenIn",
                                    },
                                    "slippage": {
                                        "oneOf": [{"type": "number"}, _DECIMAL],
                                        "description": "fraction, 0.01 = 1 %, 0.0001-0.5",
                                    },
                                    "type": {
                                        "type": "string",
                                        "enum": ["market", "limit", "sniper"],
                                        "default": "market",
                                    },
                                    "limitPrice": {
                                        "oneOf": [{"type": "number"}, _DECIMAL],
                                        "description": "limit (required): least tokenOut per one tokenIn, > 0",
                                    },
                                    "minLiquidity": {
                                        "oneOf": [{"type": "number"}, _DECIMAL],
                                        "description": "sniper (required): least tokenIn reserve of the new pool",
                                    },
                                    "expiresAt": {
                                        "type": "string",
                                        "format": "date-time",
                                        "description": "limit/sniper: RFC 3339, future, at most 30 days; default +24 h",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": (
                            "Accepted: status is pending. A replay of an Idempotency-Key with the same body answers "
                            "the same order with its current status and Idempotent-Replayed: true"
                        ),
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["orderId", "status", "websocketUrl"],
                                    "properties": {
                                        "orderId": {"type": "string", "format": "uuid"},
                                        "status": _STATUS,
                                        "websocketUrl": {
                                            "type": "string",
                                            "description": "ws://, or wss:// behind TLS (X-Forwarded-Proto: https)",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "400": _err("Validation failed (a field, or an amount below one base unit of tokenIn)"),
                    "401": _UNAUTHORIZED,
                    "415": _err("The body is not JSON (Content-Type must be application/json)"),
                    "422": _err("Idempotency key reused with a different body"),
                    "429": _err(
                        "BACKLOG_FULL (MAX_LIVE_ORDERS orders are live), OVERLOADED (MAX_SUBMITS_IN_FLIGHT submits "
                        "are already waiting) or QUOTA_EXCEEDED (the key's submit quota); nothing was created: "
                        "retry after Retry-After seconds"
                    ),
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
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/orders/{orderId}": {
            "get": {
                "summary": "One order with its status history",
                "parameters": [_ORDER_ID],
                "responses": {
                    "200": {
                        "description": "The order",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
                    },
                    "400": _err("Not a UUID"),
                    "401": _UNAUTHORIZED,
                    "404": _err("Unknown order (or another key's)"),
                },
            }
        },
        "/api/orders/{orderId}/cancel": {
            "post": {
                "summary": "Cancel an order while it is pending or waiting",
                "parameters": [_ORDER_ID],
                "responses": {
                    "200": {
                        "description": "The cancelled order",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
                    },
                    "400": _err("Not a UUID"),
                    "401": _UNAUTHORIZED,
                    "404": _err("Unknown order (or another key's)"),
                    "409": _err("NOT_CANCELLABLE: the order is routing or later; error.status is its status"),
                },
            }
        },
        "/api/tokens": {
            "get": {
                "summary": "The tokens the venues trade: symbol, mint, decimals",
                "responses": {
                    "200": {
                        "description": "Known tokens",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["tokens"],
                                    "properties": {
                                        "tokens": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["symbol", "mint", "decimals"],
                                                "properties": {
                                                    "symbol": {"type": "string"},
                                                    "mint": {"type": "string"},
                                                    "decimals": {"type": "integer"},
                                                },
                                            },
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/ws/orders/{orderId}": {
            "get": {
                "summary": "WebSocket: the current state, then every status change (JSON messages, see OrderEvent)",
                "parameters": [_ORDER_ID],
                "responses": {
                    **_WS_RESPONSES,
                    "400": _err("Not a UUID"),
                    "404": _err("Unknown order (or another key's)"),
                },
            }
        },
        "/ws/orders": {
            "get": {
                "summary": (
                    'WebSocket, many orders: send {"subscribe": [ids] | "mine"} or {"unsubscribe": [ids] | "mine"}; '
                    "receives OrderEvent messages, acknowledgements and error frames (docs/api.md)"
                ),
                "responses": _WS_RESPONSES,
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
    "components": {
        "schemas": {"Error": _ERROR, "Order": _ORDER, "OrderEvent": _EVENT},
        "securitySchemes": {
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key from 'dexctl keys create NAME' (only with AUTH=apikey)",
            }
        },
    },
}
