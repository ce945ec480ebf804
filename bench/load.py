"""Load generators: open-loop fixed rate, fixed concurrency, WebSocket fan-out.

Everything goes over loopback HTTP and WebSocket, like a real client: POST
``/api/orders/execute``, then (for watched orders) the ``websocketUrl`` it
returns until a terminal status arrives.

- *open loop*: order ``i`` is sent at ``t0 + i / rate`` whatever the answers
  are doing (no coordinated omission); each order is its own task. How late
  the generator itself was against that schedule is recorded, so a saturated
  generator shows instead of hiding in the figures.
- *fixed concurrency*: N clients, each submits, (watches to the end,) repeats.
- *fan-out*: a few live orders, many subscribers each, every message timed.

Wall-clock times (``time.time()``) are kept next to monotonic durations
because event timestamps come from PostgreSQL's clock on this same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
TERMINAL = frozenset({"confirmed", "failed"})
SUBMIT_TIMEOUT_S = 30.0


def order_body(index: int) -> bytes:
    """Alternate SOL→USDC and USDC→SOL of similar size, so the pools do not drift one way."""
    if index % 2 == 0:
        body = {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}
    else:
        body = {"tokenIn": USDC, "tokenOut": SOL, "amountIn": "150", "slippage": "0.01"}
    return orjson.dumps(body)


@dataclass
class Event:
    status: str
    seq: int
    timestamp: str | None
    received: float  # time.time() at receipt
    snapshot: bool


@dataclass
class OrderRecord:
    index: int
    watched: bool
    sent_wall: float = 0.0  # time.time() just before the POST
    sent_mono: float = 0.0
    submit_ms: float | None = None
    accepted_mono: float | None = None
    order_id: str | None = None
    ws_url: str | None = None
    terminal: str | None = None
    terminal_wall: float | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def e2e_ms(self) -> float | None:
        """Submit → terminal status received on the WebSocket."""
        if self.terminal != "confirmed" or self.terminal_wall is None:
            return None
        return (self.terminal_wall - self.sent_wall) * 1000


@dataclass
class LoadResult:
    started_mono: float
    ended_mono: float = 0.0
    records: list[OrderRecord] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lag_ms: list[float] = field(default_factory=list)
    retry_after: Counter[str] = field(default_factory=Counter)
    # Orders (or clients) still going when the window closed: their watches finish after it.
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def duration_s(self) -> float:
        return max(self.ended_mono - self.started_mono, 1e-9)

    async def finish(self) -> None:
        """Wait for what was still in flight at the end of the window."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        self.pending.clear()


class Client:
    """One aiohttp session for submits and watches against one gateway."""

    def __init__(self, base_url: str, *, terminal_timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.run_id = uuid.uuid4().hex[:8]
        self._keys = itertools.count()
        self.terminal_timeout_s = terminal_timeout_s
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None, "use Client as an async context manager"
        return self.session

    async def submit(self, record: OrderRecord, result: LoadResult) -> bool:
        """POST one order; True when accepted (201)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"bench-{self.run_id}-{next(self._keys)}"}
        record.sent_wall = time.time()
        record.sent_mono = time.perf_counter()
        try:
            async with self.http.post(
                f"{self.base_url}/api/orders/execute",
                data=order_body(record.index),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=SUBMIT_TIMEOUT_S),
            ) as resp:
                payload = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                replayed = resp.headers.get("Idempotent-Replayed") == "true"
        except TimeoutError:
            result.errors["submit: timeout"] += 1
            return False
        except aiohttp.ClientError as exc:
            result.errors[f"submit: {type(exc).__name__}"] += 1
            return False
        now = time.perf_counter()
        record.submit_ms = (now - record.sent_mono) * 1000
        if status != 201:
            code = ""
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = orjson.loads(payload)["error"]["code"]
            result.errors[f"HTTP {status} {code}".strip()] += 1
            if retry_after is not None:
                result.retry_after[f"HTTP {status}"] += 1
            return False
        if replayed:
            result.errors["submit: idempotent replay of an earlier order"] += 1
        body = orjson.loads(payload)
        record.order_id = body["orderId"]
        record.ws_url = body["websocketUrl"]
        record.accepted_mono = now
        return True

    async def watch(self, record: OrderRecord, result: LoadResult) -> None:
        """Follow the order's WebSocket to its terminal status, timing every message."""
        assert record.ws_url is not None
        try:
            async with asyncio.timeout(self.terminal_timeout_s):
                await self._follow(record.ws_url, record.events, result)
        except TimeoutError:
            result.errors["ws: no terminal status in time"] += 1
            return
        for event in record.events:
            if event.status in TERMINAL:
                record.terminal = event.status
                record.terminal_wall = event.received
        if record.terminal == "failed":
            result.errors["order failed"] += 1

    async def _follow(self, url: str, events: list[Event], result: LoadResult) -> None:
        try:
            async with self.http.ws_connect(url, autoping=True, max_msg_size=1 << 22) as ws:
                async for msg in ws:
                    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        break
                    received = time.time()
                    data = orjson.loads(msg.data)
                    events.append(
                        Event(
                            data["status"],
                            int(data["seq"]),
                            data.get("timestamp"),
                            received,
                            bool((data.get("data") or {}).get("snapshot")),
                        )
                    )
                    if data["status"] in TERMINAL:
                        break
                if not events or events[-1].status not in TERMINAL:
                    result.errors[f"ws: closed ({ws.close_code}) before a terminal status"] += 1
        except aiohttp.WSServerHandshakeError as exc:
            result.errors[f"ws: handshake HTTP {exc.status}"] += 1
        except aiohttp.ClientError as exc:
            result.errors[f"ws: {type(exc).__name__}"] += 1

    async def one_order(self, index: int, watched: bool, result: LoadResult) -> None:
        record = OrderRecord(index, watched)
        result.records.append(record)
        if await self.submit(record, result) and watched:
            await self.watch(record, result)

    async def order_details(self, order_id: str) -> dict[str, Any] | None:
        """GET the order with its history (done after a phase, outside its window)."""
        try:
            async with self.http.get(
                f"{self.base_url}/api/orders/{order_id}", timeout=aiohttp.ClientTimeout(total=30)
            ) as resp:
                if resp.status != 200:
                    return None
                return orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError):
            return None


def _watch_picker(fraction: float) -> Callable[[int], bool]:
    """Watch ``fraction`` of the orders, spread evenly (1.0 = all, 0 = none)."""
    if fraction >= 1:
        return lambda i: True
    if fraction <= 0:
        return lambda i: False
    return lambda i: int((i + 1) * fraction) > int(i * fraction)


async def open_loop(
    client: Client,
    *,
    rate: float,
    duration_s: float,
    count: int | None = None,
    watch_fraction: float = 1.0,
    max_inflight: int = 4000,
) -> LoadResult:
    """Send orders at a fixed rate for ``duration_s`` (or ``count`` orders).

    Returns when the window closes; orders still in flight are in ``pending``.
    """
    watch = _watch_picker(watch_fraction)
    result = LoadResult(started_mono=time.perf_counter())
    tasks = result.pending
    t0 = result.started_mono
    for i in itertools.count():
        due = t0 + i / rate
        if due - t0 >= duration_s or (count is not None and i >= count):
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result.lag_ms.append(max(time.perf_counter() - due, 0.0) * 1000)
        if len(tasks) >= max_inflight:
            result.errors["generator: too many orders in flight, not sent"] += 1
            continue
        task = asyncio.create_task(client.one_order(i, watch(i), result))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    result.ended_mono = max(time.perf_counter(), t0 + duration_s) if count is None else time.perf_counter()
    return result


async def fixed_concurrency(
    client: Client,
    *,
    concurrency: int,
    duration_s: float,
    count: int | None = None,
    watch_fraction: float = 1.0,
) -> LoadResult:
    """``concurrency`` clients, each submitting (and watching) one order after another."""
    watch = _watch_picker(watch_fraction)
    result = LoadResult(started_mono=time.perf_counter())
    deadline = result.started_mono + duration_s
    counter = itertools.count()

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            if count is not None and i >= count:
                return
            await client.one_order(i, watch(i), result)

    workers = {asyncio.create_task(worker()) for _ in range(concurrency)}
    _, result.pending = await asyncio.wait(workers, timeout=max(deadline - time.perf_counter(), 0))
    result.ended_mono = min(time.perf_counter(), deadline)
    return result


@dataclass
class FanoutResult:
    orders: list[OrderRecord]
    subscribers: int
    connected: int = 0
    peak_open: int = 0
    connect_ms: list[float] = field(default_factory=list)
    # (order id, seq, status, event timestamp, receipt time, snapshot receipt time) of every live message.
    deliveries: list[tuple[str, int, str, str | None, float, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started_mono: float = 0.0
    all_connected_mono: float = 0.0
    ended_mono: float = 0.0


async def fanout(
    client: Client,
    *,
    orders: int,
    subscribers: int,
    connect_concurrency: int = 64,
    until_s: float = 120.0,
    progress: Callable[[str], Awaitable[None]] | None = None,
) -> FanoutResult:
    """Create ``orders`` live orders, hold ``subscribers`` WebSockets on them, time every event."""
    load = LoadResult(started_mono=time.perf_counter())
    records = [OrderRecord(i, True) for i in range(orders)]
    await asyncio.gather(*(client.submit(r, load) for r in records))
    live = [r for r in records if r.order_id is not None]
    result = FanoutResult(records, subscribers, errors=load.errors, started_mono=time.perf_counter())
    if not live:
        return result
    gate = asyncio.Semaphore(connect_concurrency)
    open_now = 0
    settled = 0
    all_settled = asyncio.Event()

    def settle() -> None:
        """A subscriber got its snapshot, or failed before: once each."""
        nonlocal settled
        settled += 1
        if settled >= subscribers:
            all_settled.set()

    deadline = result.started_mono + until_s

    async def subscriber(n: int) -> None:
        nonlocal open_now
        record = live[n % len(live)]
        assert record.ws_url is not None
        opened = False
        first = True
        subscribed: float | None = None
        try:
            async with gate:
                started = time.perf_counter()
                ws = await client.http.ws_connect(record.ws_url, autoping=True, max_msg_size=1 << 22)
            opened = True
            open_now += 1
            result.peak_open = max(result.peak_open, open_now)
            async with ws:
                remaining = deadline - time.perf_counter()
                async with asyncio.timeout(max(remaining, 1.0)):
                    async for msg in ws:
                        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                            break
                        received = time.time()
                        data = orjson.loads(msg.data)
                        if first:
                            result.connect_ms.append((time.perf_counter() - started) * 1000)
                            result.connected += 1
                            first = False
                            settle()
                        if (data.get("data") or {}).get("snapshot"):
                            subscribed = received
                        elif subscribed is not None:
                            result.deliveries.append(
                                (
                                    data["orderId"],
                                    int(data["seq"]),
                                    data["status"],
                                    data.get("timestamp"),
                                    received,
                                    subscribed,
                                )
                            )
                        if data["status"] in TERMINAL:
                            return
                result.errors[f"ws: closed ({ws.close_code}) before a terminal status"] += 1
        except TimeoutError:
            result.errors["ws: no terminal status in time"] += 1
        except aiohttp.WSServerHandshakeError as exc:
            result.errors[f"ws: handshake HTTP {exc.status}"] += 1
        except (aiohttp.ClientError, OSError) as exc:
            result.errors[f"ws: {type(exc).__name__}"] += 1
        finally:
            if opened:
                open_now -= 1
            if first:
                settle()

    tasks = [asyncio.create_task(subscriber(n)) for n in range(subscribers)]

    async def report_progress() -> None:
        while progress is not None:
            await asyncio.sleep(5)
            await progress(f"fan-out: {result.connected}/{subscribers} subscribed, {open_now} open")

    reporter = asyncio.create_task(report_progress())
    await all_settled.wait()
    result.all_connected_mono = time.perf_counter()
    # The generator's own full collections (≈ 50 ms with 10,000 client sockets) must not
    # be measured as the engine's latency: the collector is off while the events arrive.
    gc.disable()
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        gc.enable()
    reporter.cancel()
    result.ended_mono = time.perf_counter()
    return result
