"""TurnBatches: what one turn of the event loop submits is sent as one batch; each caller gets its own result."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.common.turn_batches import TurnBatches


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def send(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in items]


async def test_one_turns_submissions_are_one_batch_and_each_gets_its_own_result() -> None:
    sent = Recorder()
    batches: TurnBatches[int, int] = TurnBatches(sent.send)
    results = await asyncio.gather(*(batches.submit(n) for n in range(4)), return_exceptions=True)
    assert sent.batches == [[0, 1, 2, 3]]
    assert results[0] == 0 and results[2] == 20
    assert [str(r) for r in results[1::2]] == ["odd 1", "odd 3"]
    assert await batches.submit(4) == 40 and sent.batches[-1] == [4], "a later turn is a batch of its own"


async def test_a_failed_send_is_every_callers_failure() -> None:
    batches: TurnBatches[int, int] = TurnBatches(Recorder(fail=OSError("down")).send)
    results = await asyncio.gather(batches.submit(0), batches.submit(2), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]


async def test_a_caller_that_gave_up_leaves_its_item_sent_and_the_others_answered() -> None:
    sent = Recorder()
    batches: TurnBatches[int, int] = TurnBatches(sent.send)
    gone = asyncio.ensure_future(batches.submit(2))
    kept = asyncio.ensure_future(batches.submit(4))
    await asyncio.sleep(0)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    assert await kept == 40
    await batches.close()
    assert sent.batches == [[2, 4]]
    with pytest.raises(asyncio.CancelledError):
        gone.result()
