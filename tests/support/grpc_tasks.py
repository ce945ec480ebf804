"""What grpc.aio leaves running behind a streaming call: the task that reads its request iterator."""

from __future__ import annotations

import asyncio
from typing import Any


def request_readers(owner: object) -> list[asyncio.Task[Any]]:
    """grpc's running tasks that read a request iterator which is an async generator method of ``owner``."""
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if task.done() or not getattr(coro, "__qualname__", "").endswith("_consume_request_iterator"):
            continue
        frame = getattr(coro, "cr_frame", None)
        iterator = frame.f_locals.get("request_iterator") if frame is not None else None
        generator_frame = getattr(iterator, "ag_frame", None)
        if generator_frame is not None and generator_frame.f_locals.get("self") is owner:
            found.append(task)
    return found
