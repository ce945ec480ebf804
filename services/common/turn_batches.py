"""Requests made in one turn of the event loop, sent together.

Under load many tasks issue the same kind of request in the same turn of the
loop (many orders' cache writes, many JSON-RPC calls). Each ``submit`` queues
its item; the first of a turn schedules a flush at the end of the turn, which
hands every item queued to ``send`` as one batch. ``send`` answers with one
result per item, in order: a value, or the exception that item's caller gets.
If ``send`` itself fails, every caller of the batch gets its exception. A
caller that stopped waiting (a deadline) leaves its item in the batch, sent
all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class TurnBatches(Generic[T, R]):
    def __init__(self, send: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]) -> None:
        self._send = send
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, answer))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await answer

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results: Sequence[R | BaseException] = await self._send([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the batch's failure is each of its callers'
            results = [exc] * len(batch)
        for (_, answer), result in zip(batch, results, strict=True):
            if answer.done():  # its caller gave up (a deadline): the request was made all the same
                continue
            if isinstance(result, BaseException):
                answer.set_exception(result)
            else:
                answer.set_result(result)

    async def close(self) -> None:
        """Wait for the batches still on their way."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
