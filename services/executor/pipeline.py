"""One execution attempt of one order, resumable from whatever status it is in.

pending -> routing (quote both venues) -> building (record the decision) ->
submitted (the transaction signature is recorded *before* it is sent) ->
confirmed. The quote is taken first; routing, building and submitted are then
committed together (one ``route_submit``), so the decision and the signed
transaction are on record before anything is sent. A cancel that lands while
the quote is taken wins: the commit's compare-and-set fails and nothing is
sent. Because every step starts from the status stored in orders, a
redelivered job carries on where the last one stopped, and a step that
another delivery already did is skipped (its compare-and-set fails).

In ``submitted`` the cluster is asked first (getSignatureStatuses with
history): landed -> confirm without sending again; unknown and its blockhash
still valid -> send the same signed bytes again (a signature lands at most
once); landed with a program error, or expired -> a new attempt, which builds
a new transaction with a new blockhash and signature.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

import grpc
from solders.pubkey import Pubkey
from solders.signature import Signature

from dexengine.v1 import common_pb2, orders_pb2, router_pb2
from services.common import faults, metrics, states, telemetry
from services.common.config import Settings
from services.common.decimals import fmt
from services.common.mesh_calls import OrdersCalls, RouterCalls
from services.executor import landing
from services.executor.errors import (
    FinalError,
    InfraError,
    RetryableError,
    Superseded,
    from_orders_error,
    from_program_error,
    from_router_error,
)
from services.executor.landing import Cluster, ClusterUnavailable, Landed
from services.executor.lease import Lease
from services.executor.transactions import SwapLeg, Wallet, build_swap, memo_text
from venues.onchain import Account
from venues.tokens import from_base_units, to_base_units

log = logging.getLogger(__name__)
ORDERS_TIMEOUT_S = 5.0
MAX_RESYNCS = 10
# Takes the rest of an attempt whose transaction is sent (the wait, the outcome recorded) to run after the job's
# ack (the consumer's; services/executor/lease.py).
Detach = Callable[[common_pb2.Order, Coroutine[Any, Any, common_pb2.Order]], Awaitable[None]]


def routing_record(resp: router_pb2.GetQuotesResponse, attempt: int) -> common_pb2.Routing:
    """The router's answer as the order records it."""
    d = resp.decision
    return common_pb2.Routing(
        venue=d.venue,
        reason=d.reason,
        amount_out=d.amount_out,
        min_amount_out=d.min_amount_out,
        expected_price=d.expected_price,
        legs=d.legs,
        quotes=resp.quotes,
        excluded=dict(resp.excluded),
        simulated_ms=resp.simulated_ms,
        attempt=attempt,
    )


def limit_floor(amount_in: Decimal, limit_price: Decimal, decimals_out: int) -> int:
    """A limit order's least out for ``amount_in`` whole tokens: amount_in x limitPrice in base units, rounded up."""
    return int((amount_in * limit_price).scaleb(decimals_out).to_integral_value(ROUND_CEILING))


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        orders: OrdersCalls,
        router: RouterCalls,
        cluster: Cluster,
        wallet: Wallet,
        lease: Lease | None = None,
    ) -> None:
        self.settings = settings
        self.lease = lease
        self.orders = orders
        self.router = router
        self.cluster = cluster
        self.wallet = wallet

    # -- orders -----------------------------------------------------------
    async def load(self, order_id: str) -> common_pb2.Order:
        try:
            resp = await self.orders.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id, fresh=True, include_signed=True),
                timeout=ORDERS_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            raise from_orders_error(err) from err
        return resp.order

    async def transition(self, order: common_pb2.Order, **step: Any) -> common_pb2.Order:
        """Orders/Transition from the order's current status with one named step (begin=, route=, submit=, ...)."""
        request = orders_pb2.TransitionRequest(order_id=order.id, expected_status=order.status, **step)
        try:
            resp = await self.orders.Transition(request, timeout=ORDERS_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_orders_error(err) from err
        return resp.order

    # -- the attempt --------------------------------------------------------
    async def run(self, order: common_pb2.Order, attempt: int, detach: Detach | None = None) -> common_pb2.Order:
        """Drive the order to a terminal status, or (``detach``) until the transaction this run signed is sent, its
        landing handed to ``detach`` (the order is returned in ``submitted``); or raise a StepError.

        A lost compare-and-set means the order moved under us (another delivery
        of the job, or an earlier holder that died after its commit): reload it
        from PostgreSQL and carry on from where it is. Every step is a CAS and the
        chain dedups by signature, so two live holders can never both act.
        """
        for _ in range(MAX_RESYNCS):
            try:
                return await self._drive(order, attempt, detach)
            except Superseded as exc:
                log.info("order moved under this job (%s); reloading", exc)
                order = await self.load(order.id)
                attempt = max(attempt, order.retry_count + 1)
        raise InfraError("ORDER_CONTENDED", f"order moved under this job {MAX_RESYNCS} times")

    async def _drive(self, order: common_pb2.Order, attempt: int, detach: Detach | None) -> common_pb2.Order:
        built_here = False  # a transaction signed in this run was never sent: no need to ask the cluster first
        while True:
            status = states.from_proto(order.status)
            if status in states.TERMINAL or status == states.WAITING:
                return order  # a waiting order belongs to its trigger until it fires (its job comes then)
            if status in (states.PENDING, states.ROUTING):
                # From pending, the attempt's routing event is committed with the decision (one call fewer).
                order = await self.route(order, attempt)
                built_here = True
            elif status == states.BUILDING:
                order = await self.build(order, attempt)
                built_here = True
            else:
                settled = await self.settle(order, just_built=built_here, detach=detach)
                if settled is None:
                    return order  # sent; this process watches it land after the job's ack
                order = settled

    async def route(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        request = router_pb2.GetQuotesRequest(
            token_in=order.token_in,
            token_out=order.token_out,
            amount_in=order.amount_in,
            slippage=order.slippage,
            include_pool_accounts=True,
        )
        started = time.monotonic()
        try:
            resp = await self.router.GetQuotes(request, timeout=self.settings.quote_deadline_ms / 1000 + 2)
        except grpc.aio.AioRpcError as err:
            raise from_router_error(err) from err
        metrics.STAGE_SECONDS.labels("routing").observe(time.monotonic() - started)
        routing = routing_record(resp, attempt)
        # The decision and the transaction signed from it are recorded in one commit (building, then
        # submitted): still before anything is sent.
        accounts = {
            Pubkey(a.address): Account(owner=Pubkey(a.owner), data=a.data, lamports=a.lamports)
            for a in resp.pool_accounts
        }
        submit = await self.sign(order, routing, attempt, accounts)
        return await self.transition(order, route_submit=orders_pb2.RouteSubmit(routing=routing, submit=submit))

    async def build(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        """An order left in building (its decision recorded alone): sign and record the transaction."""
        return await self.transition(order, submit=await self.sign(order, order.routing, attempt))

    async def sign(
        self,
        order: common_pb2.Order,
        routing: common_pb2.Routing,
        attempt: int,
        accounts: Mapping[Pubkey, Account] | None = None,
    ) -> orders_pb2.Submit:
        """The attempt's signed transaction for ``routing``, as the submit step records it.

        What each leg's swap names is decoded from ``accounts`` (the router's answer: the pools' state accounts
        its quote was decoded from, and a DLMM pool's mints) when they hold every leg's; otherwise the pools are
        read from the cluster.
        """
        mint_in, mint_out = Pubkey.from_string(order.token_in), Pubkey.from_string(order.token_out)
        addresses = [Pubkey.from_string(leg.pool) for leg in routing.legs]
        pools = self.cluster.swap_keys(addresses, accounts) if accounts else None
        try:
            if pools is None:
                pools = {a: snapshot.swap_keys for a, snapshot in (await self.cluster.pools(addresses)).items()}
            blockhash, last_valid = await self.cluster.latest_blockhash()
        except ClusterUnavailable as exc:
            raise InfraError("CLUSTER_UNAVAILABLE", str(exc)) from exc
        legs = []
        for leg, address in zip(routing.legs, addresses, strict=True):
            pool = pools.get(address)
            if pool is None:
                raise RetryableError("POOL_GONE", f"pool {address} no longer exists")
            decimals_in = pool.decimals[pool.mints.index(mint_in)]
            decimals_out = pool.decimals[pool.mints.index(mint_out)]
            min_out = to_base_units(Decimal(leg.min_amount_out), decimals_out)
            if order.limit_price:
                min_out = max(min_out, limit_floor(Decimal(leg.amount_in), Decimal(order.limit_price), decimals_out))
            legs.append(SwapLeg(pool, to_base_units(Decimal(leg.amount_in), decimals_in), min_out))
        min_amount_out = routing.min_amount_out
        if order.limit_price:  # what the chain will enforce, recorded as such
            min_amount_out = fmt(from_base_units(sum(leg.min_amount_out for leg in legs), decimals_out))
        tx = build_swap(
            self.wallet,
            mint_in,
            mint_out,
            legs,
            memo_text(order.id, attempt),
            blockhash,
            compute_unit_limit=self.settings.compute_unit_limit,
            priority_fee_micro_lamports=self.settings.priority_fee_micro_lamports,
        )
        signature = str(tx.signatures[0])
        return orders_pb2.Submit(
            signed=common_pb2.SignedTransaction(
                signature=signature, attempt=attempt, transaction=bytes(tx), last_valid_block_height=last_valid
            ),
            execution=common_pb2.Execution(
                signature=signature,
                attempt=attempt,
                venue=routing.venue,
                quoted_out=routing.amount_out,
                min_amount_out=min_amount_out,
                # This process will watch it land after the ack, while its lease holds (lease.py).
                executor=self.lease.id if self.lease is not None and self.lease.held() else None,
            ),
        )

    async def settle(
        self, order: common_pb2.Order, *, just_built: bool = False, detach: Detach | None = None
    ) -> common_pb2.Order | None:
        """The order confirmed; or None once the transaction this run signed is sent and its landing handed to
        ``detach``, when the order names this executor as the one watching it (``execution.executor``)."""
        signed = order.signed
        if not order.HasField("signed") or signed.signature != order.tx_hash:
            # Migration 004 moved every recorded transaction, so this is a damaged record: nothing here can be
            # resent or judged expired safely. The order fails and its job is parked for a person to look at.
            raise FinalError("SIGNED_TRANSACTION_MISSING", "the submitted transaction's bytes are not recorded")
        signature = Signature.from_string(order.tx_hash)
        lvh = signed.last_valid_block_height
        attrs = {"order.id": order.id, "dex.venue": order.dex_provider, "solana.signature": order.tx_hash}
        sent_at = time.monotonic()
        try:
            # A redelivered job asks the cluster first (landed: confirm, never resend); a transaction this
            # run just signed cannot be known to it yet.
            outcome = landing.TxOutcome(landing.UNKNOWN) if just_built else await self.cluster.status(signature, lvh)
            if outcome.status == landing.UNKNOWN:
                if just_built and detach is not None and self._watched_here(order):
                    wait = await self._send_then_wait(order, attrs)
                    try:
                        await detach(order, self._land(order, wait, sent_at, attrs))
                    except BaseException:
                        wait.cancel()
                        raise
                    return None
                outcome = await self._watch(self.cluster.wait(signature, lvh, send=self._send(order, attrs)), attrs)
        except ClusterUnavailable as exc:
            raise InfraError("CLUSTER_UNAVAILABLE", str(exc)) from exc
        return await self._conclude(order, outcome, sent_at)

    def _watched_here(self, order: common_pb2.Order) -> bool:
        """The order names this executor as the one watching it land, and its lease holds."""
        return self.lease is not None and self.lease.held() and order.execution.executor == self.lease.id

    async def _land(
        self, order: common_pb2.Order, wait: asyncio.Task[landing.TxOutcome], sent_at: float, attrs: dict[str, str]
    ) -> common_pb2.Order:
        """The rest of an attempt after the job's ack: its transaction lands, and the outcome is recorded."""
        try:
            outcome = await self._watch(wait, attrs)
        except ClusterUnavailable as exc:
            raise InfraError("CLUSTER_UNAVAILABLE", str(exc)) from exc
        finally:
            wait.cancel()
        return await self._conclude(order, outcome, sent_at)

    async def _conclude(self, order: common_pb2.Order, outcome: landing.TxOutcome, sent_at: float) -> common_pb2.Order:
        if outcome.status == landing.LANDED:
            try:
                result = await self.cluster.landed(Signature.from_string(order.tx_hash), self.wallet.pubkey)
            except ClusterUnavailable as exc:
                raise InfraError("CLUSTER_UNAVAILABLE", str(exc)) from exc
            landed_ms = (time.monotonic() - sent_at) * 1000
            metrics.STAGE_SECONDS.labels("submitted").observe(landed_ms / 1000)
            return await self.confirm(order, result, landed_ms)
        if outcome.status == landing.FAILED:
            raise from_program_error(outcome.err, [leg.venue for leg in order.routing.legs])
        raise RetryableError("TRANSACTION_EXPIRED", "blockhash expired before the transaction landed")

    async def _send(
        self, order: common_pb2.Order, attrs: dict[str, str], sent: asyncio.Future[None] | None = None
    ) -> None:
        """sendTransaction of the order's recorded bytes; ``sent`` is told when it is done (or failed)."""
        try:
            with telemetry.span(__name__, "solana sendTransaction", attributes=attrs):
                await self.cluster.send(order.signed.transaction)
        except BaseException as exc:
            if sent is not None and not sent.done():
                sent.set_exception(exc)
            raise
        log.debug("transaction sent", extra={"txHash": order.tx_hash})
        faults.crash_point("after_send")
        if sent is not None:
            sent.set_result(None)

    async def _watch(self, wait: Awaitable[landing.TxOutcome], attrs: dict[str, str]) -> landing.TxOutcome:
        with telemetry.span(__name__, "solana confirm", attributes=attrs) as span:
            outcome = await wait
            span.set_attribute("solana.status", outcome.status)
        return outcome

    async def _send_then_wait(self, order: common_pb2.Order, attrs: dict[str, str]) -> asyncio.Task[landing.TxOutcome]:
        """Send while subscribing; once sent, the wait for the landing (still running)."""
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        signature = Signature.from_string(order.tx_hash)
        wait = asyncio.create_task(
            self.cluster.wait(signature, order.signed.last_valid_block_height, send=self._send(order, attrs, sent))
        )
        try:
            await asyncio.wait((sent, wait), return_when=asyncio.FIRST_COMPLETED)
            if not sent.done():
                raise ClusterUnavailable("the wait ended before the transaction was sent")
            sent.result()
        except BaseException:
            wait.cancel()
            raise
        return wait

    async def confirm(self, order: common_pb2.Order, result: Landed, landed_ms: float) -> common_pb2.Order:
        spent = -result.deltas.get(order.token_in, 0)
        got = result.deltas.get(order.token_out, 0)
        if spent <= 0 or got <= 0:
            raise FinalError("UNEXPECTED_BALANCES", f"landed transaction moved {spent} in / {got} out of the wallet")
        amount_in = from_base_units(spent, result.decimals[order.token_in])
        amount_out = from_base_units(got, result.decimals[order.token_out])
        execution = common_pb2.Execution()
        execution.CopyFrom(order.execution)
        quoted = Decimal(execution.quoted_out or 0)
        executed_price = amount_out / amount_in
        improvement_bps = ((amount_out - quoted) / quoted * 10_000).quantize(Decimal("0.01")) if quoted else Decimal(0)
        execution.slot = result.slot
        execution.fee_lamports = result.fee_lamports
        execution.landed_ms = round(landed_ms)
        execution.executed_in = fmt(amount_in)
        execution.executed_out = fmt(amount_out)
        execution.improvement_bps = fmt(improvement_bps)
        execution.landed_at_ms = int(time.time() * 1000)
        price = fmt(executed_price.quantize(Decimal("1e-12")).normalize())
        duration_ms = time.time() * 1000 - order.created_at.seconds * 1000 - order.created_at.nanos / 1e6
        metrics.STAGE_SECONDS.labels("end_to_end").observe(duration_ms / 1000)
        confirmed = await self.transition(
            order, confirm=orders_pb2.Confirm(amount_out=fmt(amount_out), executed_price=price, execution=execution)
        )
        log.info(
            "order executed",
            extra={
                "venue": execution.venue or order.dex_provider,
                "executedPrice": price,
                "amountOut": fmt(amount_out),
                "txHash": order.tx_hash,
                "durationMs": int(duration_ms),
            },
        )
        return confirmed
