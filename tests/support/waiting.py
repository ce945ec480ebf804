"""Wait for state that another task or process changes and that offers no event to wait on."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


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
