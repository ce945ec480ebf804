"""Router service: ``python -m services.router``."""

from __future__ import annotations

import grpc

from dexengine.v1 import router_pb2, router_pb2_grpc
from services.common import grpc_server
from services.common.config import Settings
from services.router.amm import Market
from services.router.servicer import RouterServicer


class RouterComponent:
    name = "router"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self, server: grpc.aio.Server) -> list[str]:
        market = Market(
            seed=self.settings.market_seed,
            drift=self.settings.market_drift,
            trend_bps_per_s=self.settings.market_trend_bps_per_s,
        )
        router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(self.settings, market), server)
        return [router_pb2.DESCRIPTOR.services_by_name["Router"].full_name]

    async def healthy(self) -> bool:
        return True  # no external dependency: the venues are in-process

    async def stop_intake(self) -> None:
        """Nothing consumes in the background."""

    async def close(self) -> None:
        """Nothing to close."""


if __name__ == "__main__":
    grpc_server.main(RouterComponent, lambda s: s.router_port)
