"""Executor service: ``python -m services.executor``.

Consumes execution jobs from RabbitMQ; serves gRPC health and GetStats.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from dexengine.v1 import executor_pb2, executor_pb2_grpc
from services.common import amqp, grpc_client, grpc_server, metrics
from services.common.cluster import ClusterStream, rpc_client
from services.common.config import Settings
from services.common.mesh_calls import OrdersCalls, RouterCalls
from services.executor.consumer import JobConsumer
from services.executor.landing import Cluster
from services.executor.lease import Lease
from services.executor.pipeline import Pipeline
from services.executor.ratelimit import RateLimiter, limiter_key
from services.executor.transactions import Wallet, load_keypair

DEPTH_INTERVAL_S = 5.0
log = logging.getLogger(__name__)


class ExecutorServicer(executor_pb2_grpc.ExecutorServicer):
    def __init__(self, consumer: JobConsumer, prefetch: int) -> None:
        self.consumer = consumer
        self.prefetch = prefetch

    async def GetStats(
        self, request: executor_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.GetStatsResponse:
        s = self.consumer.stats
        return executor_pb2.GetStatsResponse(
            jobs_done=s.done,
            jobs_in_flight=s.in_flight,
            jobs_retried=s.retried,
            jobs_failed=s.failed,
            prefetch=self.prefetch,
            landings_watched=s.landings,
        )


class ExecutorComponent(grpc_server.Lifecycle):
    name = "executor"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.cluster: Cluster | None = None
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.consumer: JobConsumer | None = None
        self.lease: Lease | None = None
        self.depths: asyncio.Task[None] | None = None
        self.redis: aioredis.Redis | None = None
        self.orders_channel: grpc.aio.Channel | None = None
        self.router_channel: grpc.aio.Channel | None = None

    async def start(self, server: grpc.aio.Server) -> list[str]:
        # Clients are made here, inside the running event loop (grpc.aio binds a channel to its loop).
        self.redis = aioredis.from_url(self.settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.resources.push_async_callback(self.redis.aclose)
        self.orders_channel = grpc_client.channel(self.settings.orders_target)
        self.resources.push_async_callback(self.orders_channel.close)
        self.router_channel = grpc_client.channel(self.settings.router_target)
        self.resources.push_async_callback(self.router_channel.close)
        wallet = Wallet(load_keypair(self.settings.solana_keypair))
        stream = ClusterStream(self.settings.solana_ws_url)
        self.cluster = Cluster(rpc_client(self.settings.solana_rpc_url, self.settings.solana_rpc_batch_max), stream)
        self.resources.push_async_callback(self.cluster.close)
        stream.start()
        # The calls of every order travel on one stream to each (services.common.call_stream).
        orders = OrdersCalls(self.orders_channel)
        self.resources.push_async_callback(orders.aclose)
        router = RouterCalls(self.router_channel)
        self.resources.push_async_callback(router.aclose)
        self.lease = Lease(self.redis, self.settings.amqp_prefix, self.settings.executor_lease_ms)
        await self.lease.start()
        self.resources.push_async_callback(self.lease.release)
        pipeline = Pipeline(self.settings, orders, router, self.cluster, wallet, self.lease)
        log.info("executor wallet", extra={"wallet": str(wallet.pubkey)})
        limiter = RateLimiter(
            self.redis,
            self.settings.rate_limit_per_min,
            self.settings.rate_limit_burst,
            key=limiter_key(self.settings.amqp_prefix),
        )
        self.consumer = JobConsumer(self.settings, pipeline, limiter)
        self.connection = await amqp.connect(self.settings.amqp_url)
        self.resources.push_async_callback(self.connection.close)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await self.consumer.start(self.channel)
        self.depths = asyncio.create_task(self._report_queue_depths())
        self.resources.push_async_callback(grpc_server.cancel, self.depths)
        executor_pb2_grpc.add_ExecutorServicer_to_server(
            ExecutorServicer(self.consumer, self.settings.executor_prefetch), server
        )
        return [executor_pb2.DESCRIPTOR.services_by_name["Executor"].full_name]

    async def _report_queue_depths(self) -> None:
        """Queue depth gauges, from passive declares on a channel of their own."""
        names = amqp.Names(self.settings.amqp_prefix)
        queues = names.queues(self.settings.retry_backoff_ms)
        while True:
            await asyncio.sleep(DEPTH_INTERVAL_S)
            try:
                assert self.connection is not None
                async with self.connection.channel() as channel:
                    for name in queues:
                        queue = await channel.declare_queue(name, passive=True)
                        metrics.QUEUE_DEPTH.labels(name).set(queue.declaration_result.message_count or 0)
            except Exception as exc:  # noqa: BLE001 - a gauge must never take the executor down
                log.debug("queue depth unavailable: %s", exc)

    async def healthy(self) -> bool:
        return (
            self.connection is not None
            and not self.connection.is_closed
            and self.channel is not None
            and not self.channel.is_closed
            and self.cluster is not None
            and await self.cluster.healthy()
        )

    async def stop_intake(self) -> None:
        if self.depths is not None:
            await grpc_server.cancel(self.depths)
        if self.consumer is not None:
            await self.consumer.stop(max(self.settings.shutdown_grace_s - grpc_server.CLOSE_RESERVE_S, 0.1))
        if self.lease is not None:
            await self.lease.release()  # what it still watched goes back to orders now, not when the lease lapses


if __name__ == "__main__":
    grpc_server.main(ExecutorComponent, lambda s: s.executor_port)
