"""Structured JSON logs: one line per record, with orderId and trace ids.

Fields follow the project's log shape: level, time, pid, hostname, service,
msg, plus orderId (from context or ``extra``), trace_id and span_id from the
current OpenTelemetry span, and any ``extra={...}`` keys.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

order_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_HOST = socket.gethostname()


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname.lower(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "pid": os.getpid(),
            "hostname": _HOST,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        order_id = order_id_var.get()
        if order_id:
            entry["orderId"] = order_id
        span_ctx = trace.get_current_span().get_span_context()
        if span_ctx.is_valid:
            entry["trace_id"] = format(span_ctx.trace_id, "032x")
            entry["span_id"] = format(span_ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup(service: str, level: str = "INFO") -> None:
    """Route every logger to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO: the executor's RPC calls to the cluster were 8 records per order.
    for noisy in ("aiormq", "aio_pika", "asyncio", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
