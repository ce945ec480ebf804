"""One execution attempt of one order, resumable from whatever status it is in.

pending -> routing (quote both venues) -> building (record the decision) ->
submitted (the transaction signature is recorded *before* it is sent) ->
confirmed. Because every step starts from the status stored in orders, a
redelivered job carries on where the last one stopped, and a step that
another delivery already did is skipped (its compare-and-set fails).

In ``submitted`` the chain is asked first: landed -> confirm without
sending again; unknown and still valid -> send the same transaction (the
chain dedups by signature); failed or expired -> a new attempt, which builds a
new transaction with a new signature.
"""

from __future__ import annotations

import logging
import random
import time
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import struct_pb2

from dexengine.v1 import common_pb2, orders_pb2, orders_pb2_grpc, router_pb2, router_pb2_grpc
from services.common import codec, faults, metrics, states, telemetry
from services.common.config import Settings
from services.common.decimals import fmt
from services.executor import chain as chainmod
from services.executor.chain import SimulatedChain, SwapRejected
from services.executor.errors import InfraError, RetryableError, Superseded, from_orders_error, from_router_error

log = logging.getLogger(__name__)
ORDERS_TIMEOUT_S = 5.0
MAX_RESYNCS = 10


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _quote_view(q: router_pb2.Quote) -> dict[str, Any]:
    return {
        "venue": q.venue,
        "amountOut": q.amount_out,
        "price": q.price,
        "fee": q.fee,
        "priceImpact": q.price_impact,
        "minAmountOut": q.min_amount_out,
        "spotPrice": q.spot_price,
        "quoteId": q.quote_id,
        "expiresAtMs": str(q.expires_at_ms),
    }


def routing_view(resp: router_pb2.GetQuotesResponse) -> dict[str, Any]:
    d = resp.decision
    return {
        "venue": d.venue,
        "reason": d.reason,
        "amountOut": d.amount_out,
        "minAmountOut": d.min_amount_out,
        "expectedPrice": d.expected_price,
        "legs": [
            {
                "venue": leg.venue,
                "amountIn": leg.amount_in,
                "amountOut": leg.amount_out,
                "minAmountOut": leg.min_amount_out,
            }
            for leg in d.legs
        ],
        "quotes": [_quote_view(q) for q in resp.quotes],
        "excluded": dict(resp.excluded),
        "simulatedMs": resp.simulated_ms,
    }


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        orders: orders_pb2_grpc.OrdersStub,
        router: router_pb2_grpc.RouterStub,
        chain: SimulatedChain,
    ) -> None:
        self.settings = settings
        self.orders = orders
        self.router = router
        self.chain = chain
        self.rng = random.Random(settings.market_seed)

    # -- orders -----------------------------------------------------------
    async def load(self, order_id: str) -> common_pb2.Order:
        try:
            resp = await self.orders.GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id, fresh=True), timeout=ORDERS_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            raise from_orders_error(err) from err
        return resp.order

    async def transition(
        self,
        order: common_pb2.Order,
        new: str,
        fields: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> common_pb2.Order:
        request = orders_pb2.TransitionRequest(
            order_id=order.id,
            expected_status=order.status,
            new_status=states.to_proto(new),
            fields=_struct(fields or {}),
            event_data=_struct(data or {}),
        )
        try:
            resp = await self.orders.Transition(request, timeout=ORDERS_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_orders_error(err) from err
        return resp.order

    # -- the attempt --------------------------------------------------------
    async def run(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        """Drive the order to a terminal status or raise a StepError.

        A lost compare-and-set means the order moved under us (another delivery
        of the job, or an earlier holder that died after its commit): reload it
        from PostgreSQL and carry on from where it is. Every step is a CAS and the
        chain dedups by signature, so two live holders can never both act.
        """
        for _ in range(MAX_RESYNCS):
            try:
                return await self._drive(order, attempt)
            except Superseded as exc:
                log.info("order moved under this job (%s); reloading", exc)
                order = await self.load(order.id)
                attempt = max(attempt, order.retry_count + 1)
        raise InfraError("ORDER_CONTENDED", f"order moved under this job {MAX_RESYNCS} times")

    async def _drive(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        while True:
            status = states.from_proto(order.status)
            if status in states.TERMINAL:
                return order
            if status == states.PENDING:
                order = await self.transition(order, states.ROUTING, data={"attempt": attempt})
            elif status == states.ROUTING:
                order = await self.route(order, attempt)
            elif status == states.BUILDING:
                order = await self.build(order, attempt)
            else:
                order = await self.settle(order)

    async def route(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        request = router_pb2.GetQuotesRequest(
            token_in=order.token_in, token_out=order.token_out, amount_in=order.amount_in, slippage=order.slippage
        )
        started = time.monotonic()
        try:
            resp = await self.router.GetQuotes(request, timeout=self.settings.quote_deadline_ms / 1000 + 2)
        except grpc.aio.AioRpcError as err:
            raise from_router_error(err) from err
        metrics.STAGE_SECONDS.labels("routing").observe(time.monotonic() - started)
        routing = routing_view(resp)
        return await self.transition(
            order,
            states.BUILDING,
            fields={
                "routing": routing,
                "dex_provider": resp.decision.venue,
                "expected_price": resp.decision.expected_price,
            },
            data={"attempt": attempt, **routing},
        )

    async def build(self, order: common_pb2.Order, attempt: int) -> common_pb2.Order:
        routing = codec.struct_to_dict(order.routing)
        signature = chainmod.derive_signature(self.settings.market_seed, order.id, attempt)
        height = chainmod.block_height()
        legs = [
            {
                "venue": leg["venue"],
                "tokenIn": order.token_in,
                "tokenOut": order.token_out,
                "amountIn": leg["amountIn"],
                "minAmountOut": leg["minAmountOut"],
            }
            for leg in routing["legs"]
        ]
        tx = {"orderId": order.id, "blockhash": chainmod.blockhash(height), "legs": legs}
        execution = {
            "signature": signature,
            "attempt": attempt,
            "lastValidBlockHeight": height + chainmod.BLOCKHASH_VALID_BLOCKS,
            "transaction": chainmod.encode_tx(tx),
            "tx": tx,
            "quotedOut": routing["amountOut"],
            "minAmountOut": routing["minAmountOut"],
        }
        return await self.transition(
            order,
            states.SUBMITTED,
            fields={"tx_hash": signature, "execution": execution},
            data={
                "attempt": attempt,
                "txHash": signature,
                "venue": routing["venue"],
                "minAmountOut": routing["minAmountOut"],
            },
        )

    async def settle(self, order: common_pb2.Order) -> common_pb2.Order:
        execution = codec.struct_to_dict(order.execution)
        signature = order.tx_hash
        lvh = int(execution["lastValidBlockHeight"])
        tracer = telemetry.tracer(__name__)
        attrs = {"order.id": order.id, "dex.venue": order.dex_provider, "solana.signature": signature}
        status = await self.chain.status(signature, lvh)
        if status.status == chainmod.UNKNOWN:
            lo, hi = self.settings.execution_latency_ms
            latency_s = self.rng.uniform(lo, hi) / 1000
            with tracer.start_as_current_span("chain submit", attributes=attrs):
                await self.chain.send(signature, order.id, int(execution["attempt"]), execution["tx"], lvh, latency_s)
            log.info("transaction sent", extra={"txHash": signature, "chainMs": int(latency_s * 1000)})
            faults.crash_point("after_send")
        if status.status in (chainmod.UNKNOWN, chainmod.PENDING):
            with tracer.start_as_current_span("chain confirm", attributes=attrs) as span:
                status = await self.chain.wait(signature, lvh)
                span.set_attribute("solana.status", status.status)
        if status.status == chainmod.LANDED:
            metrics.STAGE_SECONDS.labels("submitted").observe((status.result or {}).get("chainMs", 0) / 1000)
            return await self.confirm(order, execution, status.result or {})
        if status.status == chainmod.FAILED:
            result = status.result or {}
            raise RetryableError(result.get("error", "SWAP_FAILED"), result.get("message", "transaction failed"))
        raise RetryableError("TRANSACTION_EXPIRED", "blockhash expired before the transaction landed")

    async def confirm(
        self, order: common_pb2.Order, execution: dict[str, Any], result: dict[str, Any]
    ) -> common_pb2.Order:
        amount_out = Decimal(result["amountOut"])
        quoted = Decimal(execution["quotedOut"])
        executed_price = amount_out / Decimal(order.amount_in)
        improvement_bps = ((amount_out - quoted) / quoted * 10_000).quantize(Decimal("0.01")) if quoted else Decimal(0)
        details = {
            "chainMs": result.get("chainMs"),
            "executedOut": fmt(amount_out),
            "improvementBps": fmt(improvement_bps),
            "landedAtMs": str(int(time.time() * 1000)),
            "fills": result.get("fills", []),
        }
        price = fmt(executed_price.quantize(Decimal("1e-12")).normalize())
        routing = codec.struct_to_dict(order.routing)
        metrics.STAGE_SECONDS.labels("end_to_end").observe(
            time.time() - order.created_at.seconds - order.created_at.nanos / 1e9
        )
        return await self.transition(
            order,
            states.CONFIRMED,
            fields={"amount_out": fmt(amount_out), "executed_price": price, "execution": details},
            data={
                "txHash": order.tx_hash,
                "executedPrice": price,
                "amountOut": fmt(amount_out),
                "venue": routing.get("venue", order.dex_provider),
                "quotedOut": execution["quotedOut"],
                "improvementBps": fmt(improvement_bps),
            },
        )


async def swap_on_router(router: router_pb2_grpc.RouterStub, tx: dict[str, Any]) -> dict[str, Any]:
    """The chain's program: execute every leg against the venues at landing time, atomically."""
    legs = tx["legs"]
    try:
        resp = await router.ExecuteSwap(
            router_pb2.ExecuteSwapRequest(
                token_in=legs[0]["tokenIn"],
                token_out=legs[0]["tokenOut"],
                legs=[
                    router_pb2.SwapLeg(
                        venue=leg["venue"], amount_in=leg["amountIn"], min_amount_out=leg["minAmountOut"]
                    )
                    for leg in legs
                ],
            ),
            timeout=5,
        )
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
            error = from_router_error(err)
            raise SwapRejected(error.code, str(error)) from err
        raise
    fills = [
        {"venue": f.venue, "amountIn": f.amount_in, "amountOut": f.amount_out, "fee": f.fee, "poolId": f.pool_id}
        for f in resp.fills
    ]
    return {"amountOut": resp.amount_out, "fills": fills}
