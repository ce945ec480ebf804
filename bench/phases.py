"""Run one phase of load and turn what was recorded into a :class:`PhaseResult`.

Measurement window: from the first order sent to the end of the phase's
duration. Outside it (not timed, not counted against the figures): waiting
for the backlog to drain, and reading each sampled order back
(``GET /api/orders/{id}``: its history timestamps and the simulated durations
it recorded) to split end-to-end time into stages and into engine overhead.

The floor of an order is what the outside world made it wait: the quote wait
plus the cluster's landing latency. The router's ``simulatedMs`` is its whole
quoting time (the simulated wait and its own work), so the quote part is
``min(simulatedMs, QUOTE_LATENCY_MS's upper bound)``. The
executor's ``execution.landedMs`` is its own send → landed time: a status
check, ``sendTransaction``, the ``signatureSubscribe`` notification and the
``getTransaction`` read, each an engine round trip, plus the landing delay.
It is an upper bound of the chain's part, never below it, so the floor takes
``min(landedMs, the localnet's longest landing delay)``: with
``LOCALNET_LANDING_MS=0`` the chain's part of the floor is 0 and the round
trips count as the engine's (they are); with 2000–3000 it is at most 3 s.
The localnet's own landed transactions per second in the window come from
``localnet_stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench import load as loadmod
from bench.procstat import ProcSampler
from bench.profiles import Phase
from bench.results import PhaseResult
from bench.stats import fmt_ms, percentile, slope_per_s, summarize

log = logging.getLogger("bench")
DETAILS_SAMPLE = 1000
DETAILS_CONCURRENCY = 16
MONITOR_INTERVAL_S = 1.0

COUNTS_SQL = """
SELECT count(*) FILTER (WHERE status NOT IN ('confirmed', 'failed')) AS live,
       (SELECT count(*) FROM outbox) AS outbox
FROM orders
"""
CONFIRMED_SINCE_SQL = """
SELECT count(*) FROM orders WHERE status = 'confirmed' AND created_at >= to_timestamp($1)
"""
CONFIRMED_SQL = """
SELECT count(*) FROM orders
WHERE status = 'confirmed' AND completed_at >= to_timestamp($1) AND completed_at < to_timestamp($2)
"""


def epoch(ts: str | None) -> float | None:
    """An API timestamp (ISO 8601, UTC, 'Z') as Unix seconds."""
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class ChainMonitor:
    """The localnet's own counters (``localnet_stats``), its longest landing delay and the longest simulated
    quote wait (the router's ``simulatedMs`` is its whole quoting time, the engine's work included)."""

    def __init__(self, rpc_url: str, landing_max_ms: float | None, quote_max_ms: float | None = None) -> None:
        self.rpc_url = rpc_url
        self.landing_max_ms = landing_max_ms
        self.quote_max_ms = quote_max_ms

    async def stats(self) -> dict[str, Any] | None:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "localnet_stats", "params": []})
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    self.rpc_url,
                    data=body,
                    headers={"content-type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp,
            ):
                answer: dict[str, Any] = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        result = answer.get("result")
        return result if isinstance(result, dict) else None


def rpc_calls(stats: dict[str, Any]) -> int:
    """JSON-RPC calls the localnet served since it started, every method."""
    return sum(int(n) for n in stats.get("requests", {}).values())


def landed_total(stats: dict[str, Any] | None) -> int | None:
    return None if stats is None else int(stats.get("landed", 0)) + int(stats.get("failed", 0))


class DbMonitor:
    """Backlog (orders not yet terminal) and outbox depth, read from the orders database."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def counts(self) -> tuple[int, int]:
        assert self.pool is not None
        row = await self.pool.fetchrow(COUNTS_SQL)
        assert row is not None
        return int(row["live"]), int(row["outbox"])

    async def confirmed_since(self, start: float) -> int:
        """Orders created since ``start`` (Unix seconds) and confirmed: a phase's own."""
        assert self.pool is not None
        return int(await self.pool.fetchval(CONFIRMED_SINCE_SQL, start))

    async def confirmed_between(self, start: float, end: float) -> int:
        assert self.pool is not None
        return int(await self.pool.fetchval(CONFIRMED_SQL, start, end))

    async def sample(self, into: list[tuple[float, int, int]], started: float) -> None:
        while True:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                live, outbox = await self.counts()
                into.append((time.perf_counter() - started, live, outbox))
            await asyncio.sleep(MONITOR_INTERVAL_S)

    async def drain(self, timeout_s: float) -> tuple[float, int]:
        """Wait until no order is live; (seconds waited, orders still live)."""
        started = time.perf_counter()
        live, _ = await self.counts()
        while live and time.perf_counter() - started < timeout_s:
            await asyncio.sleep(0.25)
            live, _ = await self.counts()
        return time.perf_counter() - started, live


async def run_phase(
    phase: Phase,
    client: loadmod.Client,
    sampler: ProcSampler | None,
    db: DbMonitor | None,
    *,
    count: int | None = None,
    chain: ChainMonitor | None = None,
) -> PhaseResult:
    log.info("phase %r: %s", phase.name, phase.describe())
    cpu_before = sampler.snapshot() if sampler is not None else None
    stats_before = await chain.stats() if chain is not None else None
    chain_before = landed_total(stats_before)
    monitor_samples: list[tuple[float, int, int]] = []
    if sampler is not None:
        sampler.begin()
    wall0 = time.time()
    mono0 = time.perf_counter()
    monitor = asyncio.create_task(db.sample(monitor_samples, mono0)) if db is not None else None
    fan: loadmod.FanoutResult | None = None
    load: loadmod.LoadResult | None = None
    try:
        if phase.mode == "rate":
            load = await loadmod.open_loop(
                client, rate=phase.rate, duration_s=phase.duration_s, count=count, watch_fraction=phase.watch
            )
        elif phase.mode == "concurrency":
            load = await loadmod.fixed_concurrency(
                client,
                concurrency=phase.concurrency,
                duration_s=phase.duration_s,
                count=count,
                watch_fraction=phase.watch,
            )
        else:

            async def progress(text: str) -> None:
                log.info("%s", text)

            fan = await loadmod.fanout(
                client,
                orders=phase.orders,
                subscribers=phase.subscribers,
                until_s=phase.duration_s,
                progress=progress,
            )
    finally:
        procs = sampler.end() if sampler is not None else []
        stats_after = await chain.stats() if chain is not None else None
        chain_after = landed_total(stats_after)
        window_s = time.perf_counter() - mono0
        if monitor is not None:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
    if load is not None:
        await load.finish()
    if fan is not None:
        result = analyze_fanout(phase, fan)
    else:
        assert load is not None
        landing_max = chain.landing_max_ms if chain is not None else None
        quote_max = chain.quote_max_ms if chain is not None else None
        drained: dict[str, dict[int, float]] = {}

        def after_drain() -> None:
            if sampler is not None:
                drained.update(sampler.snapshot())

        result = await analyze_load(
            phase, client, load, db, wall0, monitor_samples, landing_max, after_drain, quote_max
        )
        if cpu_before is not None and drained and db is not None and result.backlog_end == 0:
            # Every order of the phase is terminal: all the CPU they cost is in [start, drained].
            done = await db.confirmed_since(wall0)
            used = ProcSampler.used_between(cpu_before, drained)
            if done:
                result.confirmed_total = done
                for usage in procs:
                    if usage.name in used:
                        usage.cpu_ms_per_order = used[usage.name] * 1000 / done
    result.procs = procs
    if chain_before is not None and chain_after is not None:
        result.chain_landed_per_s = (chain_after - chain_before) / window_s
    if stats_before is not None and stats_after is not None and "posts" in stats_after:
        result.chain_calls = rpc_calls(stats_after) - rpc_calls(stats_before)
        result.chain_posts = int(stats_after["posts"]) - int(stats_before.get("posts", 0))
    return result


async def analyze_load(
    phase: Phase,
    client: loadmod.Client,
    load: loadmod.LoadResult,
    db: DbMonitor | None,
    wall0: float,
    monitor: list[tuple[float, int, int]],
    landing_max_ms: float | None = None,
    after_drain: Callable[[], None] | None = None,
    quote_max_ms: float | None = None,
) -> PhaseResult:
    duration = load.duration_s
    records = load.records
    result = PhaseResult(phase.name, phase.describe(), duration, errors=load.errors, retry_after=load.retry_after)
    result.sent = len(records)
    accepted = [r for r in records if r.accepted_mono is not None]
    result.accepted = len(accepted)
    in_window = [r for r in accepted if r.accepted_mono is not None and r.accepted_mono <= load.ended_mono]
    result.accepted_per_s = len(in_window) / duration
    result.submit = summarize([r.submit_ms for r in records if r.submit_ms is not None])
    watched = [r for r in accepted if r.watched]
    confirmed = [r for r in watched if r.terminal == "confirmed"]
    result.watched, result.confirmed_watched = len(watched), len(confirmed)
    result.e2e = summarize([e for r in confirmed if (e := r.e2e_ms) is not None])
    result.generator_lag_p99 = percentile(load.lag_ms, 99)
    # Count completions once the pipeline is full: from the median end-to-end time into the window.
    lead = min(result.e2e.p50 / 1000, duration / 2) if result.e2e.p50 is not None else 0.0
    if db is not None:
        done = await db.confirmed_between(wall0 + lead, wall0 + duration)
        result.confirmed_per_s = done / (duration - lead)
        result.confirmed_source = f"database: orders completed from {lead:.1f} s into the window to its end"
    elif phase.watch > 0:
        done = sum(
            1 for r in confirmed if r.terminal_wall is not None and wall0 + lead <= r.terminal_wall <= wall0 + duration
        )
        result.confirmed_per_s = done / (duration - lead) / min(phase.watch, 1.0)
        result.confirmed_source = "watched orders" + ("" if phase.watch >= 1 else " ÷ watched fraction (estimate)")
    if monitor:
        result.backlog_max = max(live for _, live, _ in monitor)
        result.outbox_max = max(outbox for _, _, outbox in monitor)
        late = [(t, float(live)) for t, live, _ in monitor if t >= duration / 2]
        result.backlog_slope = slope_per_s(late)
        threshold = max(1.0, 0.02 * phase.rate) if phase.mode == "rate" else 1.0
        result.backlog_growing = result.backlog_slope is not None and result.backlog_slope > threshold
    if db is not None:
        result.drain_s, result.backlog_end = await db.drain(phase.drain_s) if phase.drain_s else (0.0, None)
        if result.backlog_end is None:
            result.backlog_end = (await db.counts())[0]
    if after_drain is not None:
        after_drain()
    await add_details(result, client, confirmed, landing_max_ms, quote_max_ms)
    return result


async def add_details(
    result: PhaseResult,
    client: loadmod.Client,
    confirmed: list[loadmod.OrderRecord],
    landing_max_ms: float | None = None,
    quote_max_ms: float | None = None,
) -> None:
    """Stages and engine overhead, from a sample of confirmed orders read back."""
    if not confirmed:
        return
    step = max(1, len(confirmed) // DETAILS_SAMPLE)
    sample = confirmed[::step][:DETAILS_SAMPLE]
    gate = asyncio.Semaphore(DETAILS_CONCURRENCY)

    async def fetch(record: loadmod.OrderRecord) -> tuple[loadmod.OrderRecord, dict[str, Any] | None]:
        async with gate:
            assert record.order_id is not None
            return record, await client.order_details(record.order_id)

    fetched = await asyncio.gather(*(fetch(r) for r in sample))
    stages: dict[str, list[float]] = defaultdict(list)
    floors: list[float] = []
    overheads: list[float] = []
    deliveries: list[float] = []
    for record, order in fetched:
        if order is None or record.terminal_wall is None:
            continue
        result.details_sampled += 1
        history = order.get("history") or []
        # Each quote round's wait, at most the router's configured simulated latency (it reports its whole time).
        simulated_quotes = sum(
            _capped(float((e.get("data") or {}).get("simulatedMs") or 0), quote_max_ms)
            for e in history
            if e["status"] == "building"
        )
        # send -> landed as the executor saw it: the landing delay plus the engine's own round trips (module doc).
        seen_ms = float(((order.get("execution") or {}).get("landedMs")) or 0)
        stages["landed, executor"].append(seen_ms)
        chain_ms = seen_ms if landing_max_ms is None else min(seen_ms, landing_max_ms)
        floor = simulated_quotes + chain_ms
        e2e = record.e2e_ms
        if e2e is not None:
            floors.append(floor)
            overheads.append(e2e - floor)
        times: dict[str, float] = {}
        attempts = 0
        for event in history:
            status = event["status"]
            if status == "routing":
                attempts += 1
            ts = epoch(event.get("timestamp"))
            if ts is not None and status not in times:
                times[status] = ts
        if attempts > 1:
            result.retried += 1
            continue
        building = next((e for e in history if e["status"] == "building"), None)
        sim_q = _capped(float(((building or {}).get("data") or {}).get("simulatedMs") or 0), quote_max_ms)

        def span(a: str, b: str, times: dict[str, float] = times) -> float | None:
            if a in times and b in times:
                return (times[b] - times[a]) * 1000
            return None

        if "pending" in times:
            stages["accept"].append((times["pending"] - record.sent_wall) * 1000)
        for name, a, b in (
            ("queue and route", "pending", "submitted"),
            ("settle", "submitted", "confirmed"),
        ):
            value = span(a, b)
            if value is not None:
                stages[name].append(value)
                if name == "queue and route":
                    stages["queue and route, engine"].append(value - sim_q)
                if name == "settle":
                    stages["settle, engine"].append(value - chain_ms)
        if "confirmed" in times:
            stages["deliver"].append((record.terminal_wall - times["confirmed"]) * 1000)
        subscribed = next((e.received for e in record.events if e.snapshot), None)
        for event in record.events:
            ts = epoch(event.timestamp)
            # Only events committed after the subscription was in place: earlier ones were catching up.
            if not event.snapshot and ts is not None and subscribed is not None and ts >= subscribed:
                deliveries.append((event.received - ts) * 1000)
    result.floor = summarize(floors)
    result.overhead = summarize(overheads)
    result.stages = {name: summarize(values) for name, values in stages.items()}
    result.delivery = summarize(deliveries)


def _capped(value: float, limit: float | None) -> float:
    return value if limit is None else min(value, limit)


def analyze_fanout(phase: Phase, fan: loadmod.FanoutResult) -> PhaseResult:
    duration = max(fan.ended_mono - fan.started_mono, 1e-9)
    result = PhaseResult(phase.name, phase.describe(), duration, errors=fan.errors)
    result.sent = len(fan.orders)
    result.accepted = sum(1 for r in fan.orders if r.order_id is not None)
    result.submit = summarize([r.submit_ms for r in fan.orders if r.submit_ms is not None])
    result.fanout_subscribers = fan.subscribers
    result.fanout_connected = fan.connected
    result.fanout_peak_open = fan.peak_open
    result.fanout_connect = summarize(fan.connect_ms)
    result.fanout_connect_s = fan.all_connected_mono - fan.started_mono
    per_event: dict[tuple[str, int], list[float]] = defaultdict(list)
    by_status: dict[str, list[float]] = defaultdict(list)  # delivery ms of each live event, by its status
    for order_id, seq, status, ts, received, subscribed in fan.deliveries:
        t = epoch(ts)
        # Events committed before this subscriber had its snapshot were catch-up, not fan-out.
        if t is None or t < subscribed:
            continue
        by_status[status].append((received - t) * 1000)
        per_event[(order_id, seq)].append(received)
    result.delivery = summarize([ms for values in by_status.values() for ms in values])
    result.fanout_spread = summarize([(max(v) - min(v)) * 1000 for v in per_event.values() if len(v) > 1])
    if not by_status:
        result.notes.append("no live event was delivered while subscribers were connected")
    else:
        summaries = {status: summarize(values) for status, values in sorted(by_status.items())}
        result.notes.append("live events delivered: " + ", ".join(f"{s.count:,} {k}" for k, s in summaries.items()))
        result.notes.append(
            "delivery ms p50 / p99 by status: "
            + ", ".join(f"{k} {fmt_ms(s.p50)} / {fmt_ms(s.p99)}" for k, s in summaries.items())
        )
    return result
