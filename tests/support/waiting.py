"""Wait for state that another task or process changes and that offers no event to wait on."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable


async def eventually(check: Callable[[], object | Awaitable[object]], timeout: float = 5, every: float = 0.02) -> None:
    """Poll ``check`` (sync or async) until it returns something true; TimeoutError after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def bounded(seconds: float, what: str) -> AsyncIterator[None]:
    """Fail within ``seconds`` naming ``what`` and where every task of the loop waits, instead of hanging."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        stacks = []
        for task in asyncio.all_tasks():
            frames = task.get_stack()
            where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames[:6]) or "(not started)"
            stacks.append(f"{task.get_name()}: {where}")
        raise AssertionError(f"{what} did not finish within {seconds} s; tasks:\n" + "\n".join(stacks)) from None
