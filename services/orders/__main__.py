"""Orders service: ``python -m services.orders``."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc

from dexengine.v1 import orders_pb2, orders_pb2_grpc
from services.common import auth, db, grpc_server
from services.common.auth import AuthSettings
from services.common.config import Settings
from services.common.migrate import migrate
from services.orders.admission import Admission
from services.orders.cache import OrderCache
from services.orders.landing_sweep import LandingSweep
from services.orders.relay import OutboxRelay
from services.orders.servicer import OrdersServicer
from services.orders.store import OrderStore

MIGRATIONS = Path(__file__).parent / "migrations"


class OrdersComponent(grpc_server.Lifecycle):
    name = "orders"

    def __init__(self, settings: Settings, auth_settings: AuthSettings | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.auth = auth_settings or auth.load()
        self.pool: asyncpg.Pool | None = None
        self.cache: OrderCache | None = None
        self.relay: OutboxRelay | None = None
        self.admission: Admission | None = None
        self.servicer: OrdersServicer | None = None

    async def start(self, server: grpc.aio.Server) -> list[str]:
        self.cache = OrderCache(self.settings.redis_url)
        self.resources.push_async_callback(self.cache.close)
        self.pool = await db.create_pool(self.settings.database_url, self.settings.db_pool_size)
        self.resources.push_async_callback(self.pool.close)
        async with self.pool.acquire() as conn:
            await migrate(conn, MIGRATIONS)
        self.relay = OutboxRelay(self.settings, self.pool)
        self.relay.start()
        self.resources.push_async_callback(self.relay.stop)
        store = OrderStore(self.pool, committed=self.relay.hand)
        self.admission = Admission(store, self.settings.max_live_orders)
        self.admission.start()
        self.resources.push_async_callback(self.admission.stop)
        sweep = LandingSweep(store, self.cache.redis, self.settings.amqp_prefix, self.settings.executor_lease_ms)
        sweep.start()
        self.resources.push_async_callback(sweep.stop)
        self.servicer = servicer = OrdersServicer(
            store,
            self.cache,
            self.admission,
            self.auth,
            order_ttl_s=(self.settings.order_default_ttl_s, self.settings.order_max_ttl_s),
        )
        orders_pb2_grpc.add_OrdersServicer_to_server(servicer, server)
        return [orders_pb2.DESCRIPTOR.services_by_name["Orders"].full_name]

    async def healthy(self) -> bool:
        # Only PostgreSQL counts: without Redis reads come from PostgreSQL, and
        # without RabbitMQ the outbox keeps accepted orders until it returns.
        return self.pool is not None and await db.ping(self.pool)

    async def stop_intake(self) -> None:
        """Calls streams stop reading (their callers send new calls to another replica); requests in their grace
        period still commit."""
        if self.servicer is not None:
            self.servicer.draining.set()


if __name__ == "__main__":
    grpc_server.main(OrdersComponent, lambda s: s.orders_port)
