"""Router service: ``python -m services.router``."""

from __future__ import annotations

import grpc

from dexengine.v1 import orders_pb2_grpc, router_pb2, router_pb2_grpc
from services.common import grpc_client, grpc_server
from services.common.cluster import ClusterStream, rpc_client
from services.common.config import Settings
from services.router.pool_feed import PoolFeed
from services.router.servicer import RouterServicer
from services.router.trigger import Trigger


class RouterComponent(grpc_server.Lifecycle):
    name = "router"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.stream: ClusterStream | None = None
        self.feed: PoolFeed | None = None
        self.trigger: Trigger | None = None
        self.orders_channel: grpc.aio.Channel | None = None
        self.servicer: RouterServicer | None = None

    async def start(self, server: grpc.aio.Server) -> list[str]:
        rpc = rpc_client(self.settings.solana_rpc_url, self.settings.solana_rpc_batch_max)
        self.resources.push_async_callback(rpc.close)
        self.stream = ClusterStream(self.settings.solana_ws_url)
        self.resources.push_async_callback(self.stream.close)
        self.feed = PoolFeed(rpc, self.stream)
        self.servicer = servicer = RouterServicer(self.settings, self.feed)
        if self.settings.trigger_enabled:
            # Limit and sniper orders: armed ones evaluated on every pool update (see trigger.py).
            self.orders_channel = grpc_client.channel(self.settings.orders_target)
            self.resources.push_async_callback(self.orders_channel.close)
            self.trigger = Trigger(self.settings, self.feed, servicer, orders_pb2_grpc.OrdersStub(self.orders_channel))
            self.trigger.start()
            self.resources.push_async_callback(self.trigger.close)
        self.stream.start()
        router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
        return [router_pb2.DESCRIPTOR.services_by_name["Router"].full_name]

    async def healthy(self) -> bool:
        """SERVING while the cluster stream is up and the pools are loaded."""
        return (
            self.stream is not None
            and self.stream.connected.is_set()
            and self.feed is not None
            and self.feed.ready.is_set()
        )

    async def stop_intake(self) -> None:
        """Calls streams stop reading (their callers send new calls to another replica)."""
        if self.servicer is not None:
            self.servicer.draining.set()


if __name__ == "__main__":
    grpc_server.main(RouterComponent, lambda s: s.router_port)
