"""gRPC Router: parallel venue quotes with a deadline, and a decision.

Pools are the cluster's accounts (``PoolFeed``), quoted off-chain with the
venues' exact integer math (``venues``). Each venue quote waits a seeded,
configurable latency (a venue API's); a venue that misses the deadline or fails
is left out of the decision and named in ``excluded``. When a venue has several
open pools for the pair, its quote is the best of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
from opentelemetry import trace
from solders.pubkey import Pubkey

from dexengine.v1 import common_pb2, router_pb2, router_pb2_grpc
from services.common import call_stream, metrics, telemetry
from services.common.config import Settings
from services.common.decimals import fmt, parse_decimal, ratio
from services.common.errors import DomainError, FieldViolation, ValidationFailed, guarded
from services.common.mesh_calls import ROUTER
from services.router.amm import (
    AmmError,
    Decision,
    InsufficientLiquidityError,
    NoPoolError,
    Token,
    VenueQuote,
    VenueUnavailableError,
    decide,
    from_base_units,
    min_amount_out,
    to_base_units,
    token_by_mint,
)
from services.router.pool_feed import PoolFeed
from venues.onchain import VENUE_PROGRAMS
from venues.quote import venue_quote

log = logging.getLogger(__name__)
QUOTE_TTL_MS = 8_000  # ~20 slots of 400 ms
FEED_WAIT_S = 3.0


class QuoteTimeout(Exception):
    pass


class FeedNotReady(DomainError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    reason = "NO_POOL_STATE"

    def __init__(self) -> None:
        super().__init__("pool accounts not loaded from the cluster yet")


class NoVenueAvailable(DomainError):
    """No venue answered in time (or each failed): a retry may find them back."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    reason = "NO_VENUE_AVAILABLE"

    def __init__(self, excluded: dict[str, str]) -> None:
        super().__init__("no venue answered: " + "; ".join(f"{v}: {why}" for v, why in excluded.items()))


class NothingFills(DomainError):
    """Every venue with a pool for the pair refused this size (ran dry, or no pool open yet): the venue's code."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, err: AmmError) -> None:
        self.reason = err.code
        super().__init__(str(err))


def _price(amount_in: int, amount_out: int, token_in: Token, token_out: Token) -> Decimal:
    if amount_in == 0:
        return Decimal(0)
    return from_base_units(amount_out, token_out.decimals) / from_base_units(amount_in, token_in.decimals)


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, settings: Settings, feed: PoolFeed) -> None:
        self.settings = settings
        self.feed = feed
        self.rng = random.Random(settings.market_seed)
        self.draining = asyncio.Event()  # set when the server stops: Calls streams end (call_stream.serve)

    def _latency_s(self, venue: str) -> float:
        lo, hi = self.settings.venue_latency_ms.get(venue, self.settings.quote_latency_ms)
        return self.rng.uniform(lo, hi) / 1000

    def _tokens(self, token_in: str, token_out: str, amount: str, field: str = "amount_in") -> tuple[Token, Token, int]:
        violations = []
        value = parse_decimal(amount)
        if value is None or value <= 0:
            violations.append(FieldViolation(field, "must be a positive decimal string"))
        if violations:
            raise ValidationFailed(violations)
        tin, tout = self._token(token_in), self._token(token_out)
        if tin is None or tout is None or not self.feed.has_pair(token_in, token_out):
            raise NoPoolError(f"no route: no open pool trades {token_in} -> {token_out}")
        assert value is not None
        raw = to_base_units(value, tin.decimals)
        if raw <= 0:
            raise ValidationFailed([FieldViolation(field, f"is below one base unit of {tin.symbol}")])
        return tin, tout, raw

    def _token(self, mint: str) -> Token | None:
        """The registry's token, or a mint known only from its pools (a new listing)."""
        known = token_by_mint(mint)
        if known is not None:
            return known
        decimals = self.feed.decimals(mint)
        return None if decimals is None else Token(mint[:4] + "…", mint, decimals)

    def _pool_quote(self, venue: str, tin: Token, tout: Token, raw: int) -> VenueQuote:
        """The best quote among ``venue``'s open pools for the pair (nothing changes)."""
        now = time.time()
        best: VenueQuote | None = None
        error: AmmError = NoPoolError(f"{venue} has no open pool for this pair")
        for snapshot in self.feed.pools_for(venue, tin.mint, tout.mint, now):
            try:
                fill = snapshot.pool.swap(tin.mint, raw, now)
            except AmmError as exc:
                error = exc
                continue
            quote = venue_quote(venue, fill, tin.decimals, tout.decimals)
            if best is None or quote.amount_out > best.amount_out:
                best = quote
        if best is None:
            raise error
        return best

    def _one_pool_each(self, venues: list[str], tin: Token, tout: Token) -> bool:
        """Each venue quotes the pair from one open pool at most: its output is concave in its input (a quote from
        the best of several pools is not), which lets the routing decision walk the split grid (amm.routing)."""
        now = time.time()
        return all(len(self.feed.pools_for(venue, tin.mint, tout.mint, now)) <= 1 for venue in venues)

    def executable(
        self, token_in: str, token_out: str, amount_in: Decimal, at_least: Decimal | None = None
    ) -> tuple[Decimal, str]:
        """What ``amount_in`` whole token_in gets now, with the math and decision of GetQuotes (no latency).

        Returns (price, venue or "split"): whole token_out per whole token_in, after fees and price impact;
        AmmError when no open pool can fill it. What the limit trigger checks a candidate with. With
        ``at_least``, a single venue reaching it answers at once (the decision can only do better).
        """
        tin, tout = self._token(token_in), self._token(token_out)
        if tin is None or tout is None:
            raise NoPoolError(f"no open pool trades {token_in} -> {token_out}")
        raw = to_base_units(amount_in, tin.decimals)
        venues = list(VENUE_PROGRAMS)
        if at_least is not None:
            for venue in venues:
                try:
                    quote = self._pool_quote(venue, tin, tout, raw)
                except AmmError:
                    continue
                price = _price(raw, quote.amount_out, tin, tout)
                if price >= at_least:
                    return price, venue
        decision = decide(
            lambda venue, amount: self._pool_quote(venue, tin, tout, amount),
            venues,
            raw,
            tin,
            tout,
            concave=self._one_pool_each(venues, tin, tout),
        )
        venue = decision.legs[0].venue if decision.kind == "single" else "split"
        return _price(raw, decision.amount_out, tin, tout), venue

    async def _quote_venue(self, venue: str, tin: Token, tout: Token, raw: int) -> tuple[VenueQuote, int]:
        with telemetry.span(
            __name__,
            f"quote {venue}",
            attributes={"dex.venue": venue, "dex.token_in": tin.symbol, "dex.token_out": tout.symbol},
        ) as span:
            try:
                quote, latency_ms = await self._simulated_quote(venue, tin, tout, raw)
            except (AmmError, QuoteTimeout) as exc:
                telemetry.record_error(span, exc)
                metrics.QUOTES.labels(venue, getattr(exc, "code", "QUOTE_TIMEOUT")).inc()
                raise
            except asyncio.CancelledError:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "deadline exceeded"))
                metrics.QUOTES.labels(venue, "DEADLINE_EXCEEDED").inc()
                raise
            metrics.QUOTES.labels(venue, "ok").inc()
            span.set_attribute("dex.amount_out", str(quote.amount_out))
            span.set_attribute("dex.latency_ms", latency_ms)
            return quote, latency_ms

    async def _simulated_quote(self, venue: str, tin: Token, tout: Token, raw: int) -> tuple[VenueQuote, int]:
        latency = self._latency_s(venue)
        roll = Decimal(str(self.rng.random()))
        started = time.monotonic()
        if roll < self.settings.quote_timeout_rate:
            await asyncio.sleep(self.settings.quote_deadline_ms / 1000 * 2)
            raise QuoteTimeout(venue)
        await asyncio.sleep(latency)
        if roll < self.settings.quote_timeout_rate + self.settings.venue_failure_rate:
            raise VenueUnavailableError(f"{venue} unavailable (simulated)")
        quote = self._pool_quote(venue, tin, tout, raw)
        return quote, int((time.monotonic() - started) * 1000)

    async def CheckRoute(
        self, request: router_pb2.CheckRouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.CheckRouteResponse:
        return await guarded(context, lambda: self._check_route(request))

    async def _check_route(self, request: router_pb2.CheckRouteRequest) -> router_pb2.CheckRouteResponse:
        await self._await_feed()
        tin, tout, _ = self._tokens(request.token_in, request.token_out, request.amount_in)
        pools = [str(p.address) for venue in VENUE_PROGRAMS for p in self.feed.pools_for(venue, tin.mint, tout.mint)]
        return router_pb2.CheckRouteResponse(pools=pools, decimals_in=tin.decimals, decimals_out=tout.decimals)

    async def _await_feed(self) -> None:
        if not self.feed.ready.is_set():
            with contextlib.suppress(TimeoutError):  # just started or reconnecting: wait a moment for the load
                async with asyncio.timeout(FEED_WAIT_S):
                    await self.feed.ready.wait()
        if not self.feed.ready.is_set():
            raise FeedNotReady

    async def Calls(
        self, request_iterator: AsyncIterator[router_pb2.RouterCalls], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.RouterAnswers]:
        """GetQuotes and CheckRoute as messages of one stream (services.common.call_stream)."""
        handlers: dict[str, call_stream.Handler] = {"get_quotes": self.GetQuotes, "check_route": self.CheckRoute}
        answers = call_stream.serve(
            ROUTER,
            request_iterator,
            context,
            handlers,
            router_pb2.RouterAnswer,
            router_pb2.RouterAnswers,
            self.draining,
        )
        async for batch in answers:
            yield batch

    async def GetQuotes(
        self, request: router_pb2.GetQuotesRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.GetQuotesResponse:
        return await guarded(context, lambda: self._get_quotes(request, context))

    async def _get_quotes(
        self, request: router_pb2.GetQuotesRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.GetQuotesResponse:
        await self._await_feed()
        tin, tout, raw = self._tokens(request.token_in, request.token_out, request.amount_in)
        slippage = parse_decimal(request.slippage) if request.slippage else Decimal(0)
        if slippage is None or not 0 <= slippage < 1:
            raise ValidationFailed([FieldViolation("slippage", "must be a fraction between 0 and 1")])
        deadline = self.settings.quote_deadline_ms / 1000
        remaining = context.time_remaining()
        if remaining is not None:
            deadline = min(deadline, max(remaining - 0.05, 0.0))
        venues = list(VENUE_PROGRAMS)
        started = time.monotonic()
        tasks = [asyncio.create_task(self._quote_venue(v, tin, tout, raw)) for v in venues]
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        simulated_ms = int((time.monotonic() - started) * 1000)
        quotes: dict[str, tuple[VenueQuote, int]] = {}
        excluded: dict[str, str] = {}
        final_errors: list[AmmError] = []
        for venue, task in zip(venues, tasks, strict=True):
            if task in pending:
                excluded[venue] = f"timed out after {int(deadline * 1000)} ms"
            elif isinstance(task.exception(), InsufficientLiquidityError | NoPoolError):
                err = task.exception()
                assert isinstance(err, AmmError)
                excluded[venue] = str(err)
                final_errors.append(err)
            elif task.exception() is not None:
                excluded[venue] = str(task.exception()) or type(task.exception()).__name__
            else:
                quotes[venue] = task.result()
        if not quotes:
            if final_errors and len(final_errors) == len(venues):
                # A venue without a pool for the pair is not the story when another ran dry.
                raise NothingFills(
                    next((e for e in final_errors if isinstance(e, InsufficientLiquidityError)), final_errors[0])
                )
            raise NoVenueAvailable(excluded)
        try:
            decision = decide(
                lambda venue, amount: self._pool_quote(venue, tin, tout, amount),
                list(quotes),
                raw,
                tin,
                tout,
                excluded,
                concave=self._one_pool_each(list(quotes), tin, tout),
            )
        except AmmError as err:
            raise NothingFills(err) from err
        metrics.DECISIONS.labels(decision.legs[0].venue if decision.kind == "single" else "split").inc()
        response = router_pb2.GetQuotesResponse(
            decision=self._decision(decision, tin, tout, raw, slippage), simulated_ms=simulated_ms
        )
        response.excluded.update(excluded)
        if request.include_pool_accounts:
            legs = [Pubkey.from_string(leg.pool_id) for leg in decision.legs]
            response.pool_accounts.extend(
                router_pb2.PoolAccount(address=bytes(a), owner=bytes(acc.owner), data=acc.data, lamports=acc.lamports)
                for a, acc in self.feed.swap_accounts_of(legs).items()
            )
        now_ms = int(time.time() * 1000)
        for quote, latency_ms in quotes.values():
            response.quotes.append(self._quote(quote, tin, tout, slippage, now_ms, latency_ms))
        return response

    def _quote(
        self, quote: VenueQuote, tin: Token, tout: Token, slippage: Decimal, now_ms: int, latency_ms: int
    ) -> common_pb2.Quote:
        quote_id = hashlib.sha256(f"{quote.venue}:{quote.pool_id}:{quote.amount_in}:{now_ms}".encode()).hexdigest()[:24]
        return common_pb2.Quote(
            venue=quote.venue,
            amount_in=fmt(from_base_units(quote.amount_in, tin.decimals)),
            amount_out=fmt(from_base_units(quote.amount_out, tout.decimals)),
            price=ratio(_price(quote.amount_in, quote.amount_out, tin, tout)),
            fee=fmt(from_base_units(quote.fee, tin.decimals)),
            price_impact=ratio(quote.price_impact),
            min_amount_out=fmt(from_base_units(min_amount_out(quote.amount_out, slippage), tout.decimals)),
            quote_id=quote_id,
            expires_at_ms=now_ms + QUOTE_TTL_MS,
            spot_price=ratio(quote.spot_price),
            latency_ms=latency_ms,
            pool=quote.pool_id,
        )

    def _decision(
        self, decision: Decision, tin: Token, tout: Token, raw: int, slippage: Decimal
    ) -> router_pb2.Decision:
        legs = [
            common_pb2.RouteLeg(
                venue=leg.venue,
                amount_in=fmt(from_base_units(leg.amount_in, tin.decimals)),
                amount_out=fmt(from_base_units(leg.amount_out, tout.decimals)),
                min_amount_out=fmt(from_base_units(min_amount_out(leg.amount_out, slippage), tout.decimals)),
                pool=leg.pool_id,
            )
            for leg in decision.legs
        ]
        return router_pb2.Decision(
            venue=decision.legs[0].venue if decision.kind == "single" else "split",
            legs=legs,
            amount_out=fmt(from_base_units(decision.amount_out, tout.decimals)),
            min_amount_out=fmt(
                from_base_units(sum(min_amount_out(leg.amount_out, slippage) for leg in decision.legs), tout.decimals)
            ),
            expected_price=ratio(_price(raw, decision.amount_out, tin, tout)),
            reason=decision.reason,
        )
