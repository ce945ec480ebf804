"""Configuration from environment variables, one place for every service.

Every knob has a default that works on a developer machine with PostgreSQL,
Redis and RabbitMQ on their standard local ports (see README "Configuration").
Tracing is configured by the standard ``OTEL_*`` variables, not here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal


class ConfigError(ValueError):
    """A setting is present but malformed; the message names the variable."""


def _raw(name: str) -> str | None:
    """The variable's value (stripped), or None when it is not set: the setting keeps its default."""
    value = os.environ.get(name)
    return None if value is None else value.strip()


def _env(name: str, default: str) -> str:
    raw = _raw(name)
    return default if raw is None else raw


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _optional_int(name: str, default: int | None) -> int | None:
    return default if _raw(name) is None else _int(name, 0)


def _flag(name: str, default: bool) -> bool:
    raw = _raw(name)
    return default if raw is None else raw.lower() not in ("off", "0", "false")


def _range_ms(name: str, default: tuple[int, int]) -> tuple[int, int]:
    raw = _raw(name)
    return default if raw is None else _parse_range(name, raw)


def _parse_range(name: str, raw: str) -> tuple[int, int]:
    """Parse ``"200-300"`` (or a single ``"250"``) into an inclusive ms range."""
    lo_raw, _, hi_raw = raw.partition("-")
    try:
        lo = int(lo_raw)
        hi = int(hi_raw) if hi_raw else lo
    except ValueError as exc:
        raise ConfigError(f"{name} must look like '200-300' (milliseconds), got {raw!r}") from exc
    if lo < 0 or hi < lo:
        raise ConfigError(f"{name} must be a non-negative range low-high, got {raw!r}")
    return lo, hi


def _venue_ranges(name: str, default: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Parse ``"meteora=1800-2000,raydium=50"`` into per-venue ms ranges."""
    raw = _raw(name)
    if raw is None:
        return dict(default)
    ranges: dict[str, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        venue, sep, span = part.partition("=")
        if not sep or not venue.strip():
            raise ConfigError(f"{name} must look like 'meteora=1800-2000,raydium=50', got {raw!r}")
        ranges[venue.strip().lower()] = _parse_range(name, span.strip())
    return ranges


def _ms_list(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be comma-separated milliseconds, got {raw!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{name} needs at least one positive delay, got {raw!r}")
    return values


def _decimal(name: str, default: Decimal) -> Decimal:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        return Decimal(raw)
    except ArithmeticError as exc:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from exc


# The /metrics port of each gRPC service when METRICS_PORT is not set (so the four can share a host;
# in Kubernetes every pod sets it). The gateway serves its metrics on its own HTTP port.
DEFAULT_METRICS_PORTS = {"orders": 9461, "router": 9462, "executor": 9463, "notifier": 9464}


@dataclass(frozen=True)
class Settings:
    """All settings. Read once per process with :func:`load`."""

    # Listening ports.
    gateway_host: str = "0.0.0.0"
    gateway_port: int = 3000
    # Gateway processes sharing the port (SO_REUSEPORT): each holds its share of the sockets in its own heap.
    gateway_workers: int = 1
    # Submits a gateway process has waiting on orders at once; beyond it a submit is refused at once (429
    # OVERLOADED) instead of queueing until its deadline (503, outcome unknown). 0 = no limit.
    max_submits_in_flight: int = 256
    orders_port: int = 50051
    router_port: int = 50052
    executor_port: int = 50053
    notifier_port: int = 50054
    # The /metrics port of a gRPC service (METRICS_PORT): None for its default in DEFAULT_METRICS_PORTS, 0 for none.
    metrics_port: int | None = None
    # Where clients find the other services (host:port).
    orders_target: str = "127.0.0.1:50051"
    router_target: str = "127.0.0.1:50052"
    notifier_target: str = "127.0.0.1:50054"
    # Public base URL for websocketUrl behind a proxy (e.g. wss://api.example.com).
    public_base_url: str = ""
    # Infrastructure.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Prefix for every exchange and queue name (isolates test runs).
    amqp_prefix: str = ""
    db_pool_size: int = 10
    # The Solana cluster (the localnet in development) and the engine's wallet.
    solana_rpc_url: str = "http://127.0.0.1:8899"
    solana_ws_url: str = "ws://127.0.0.1:8900"
    solana_rpc_batch_max: int = 20  # JSON-RPC calls per batch request; 1: every call alone
    solana_keypair: str = ".localnet/engine-wallet.json"
    priority_fee_micro_lamports: int = 1_000
    compute_unit_limit: int = 400_000
    # Venue quotes (simulated API latency and failures).
    quote_latency_ms: tuple[int, int] = (200, 300)
    venue_latency_ms: dict[str, tuple[int, int]] = field(default_factory=dict)
    quote_deadline_ms: int = 1500
    market_seed: int = 42
    venue_failure_rate: Decimal = Decimal(0)
    quote_timeout_rate: Decimal = Decimal(0)
    # Execution.
    executor_prefetch: int = 10
    # Orders whose transaction is sent, watched by one executor after their jobs' acks (services/executor/lease.py).
    executor_landings: int = 100
    # The executor's lease in Redis; orders takes back the sent orders of an executor whose lease lapsed.
    executor_lease_ms: int = 10_000
    rate_limit_per_min: int = 100
    rate_limit_burst: int = 10
    max_attempts: int = 3
    max_live_orders: int = 10_000
    retry_backoff_ms: tuple[int, ...] = (1000, 2000, 4000)
    retry_jitter: Decimal = Decimal("0.1")
    # Limit and sniper orders: default and longest life of a waiting order (expiresAt).
    order_default_ttl_s: int = 86_400
    order_max_ttl_s: int = 30 * 86_400
    # The router's trigger: re-list the waiting orders this often (a safety net besides each reconnect).
    trigger_resync_s: int = 300
    trigger_enabled: bool = True
    # Relay.
    outbox_poll_ms: int = 500
    outbox_batch: int = 200
    # A row still in the outbox this long after its write is an orphan: any replica's poll claims it.
    outbox_orphan_ms: int = 5000
    # Operations.
    shutdown_grace_s: int = 10
    log_level: str = "INFO"

    def metrics_port_of(self, service: str) -> int:
        """Where ``service`` serves /metrics (0: nowhere)."""
        return DEFAULT_METRICS_PORTS[service] if self.metrics_port is None else self.metrics_port


def load() -> Settings:
    """Read every setting from the environment; raise ConfigError naming a bad one.

    A variable that is not set keeps the default declared on :class:`Settings` (declared there only).
    """
    d = Settings()
    return Settings(
        gateway_host=_env("GATEWAY_HOST", d.gateway_host),
        gateway_port=_int("GATEWAY_PORT", d.gateway_port, minimum=1),
        gateway_workers=_int("GATEWAY_WORKERS", d.gateway_workers, minimum=1),
        max_submits_in_flight=_int("MAX_SUBMITS_IN_FLIGHT", d.max_submits_in_flight),
        orders_port=_int("ORDERS_GRPC_PORT", d.orders_port, minimum=1),
        router_port=_int("ROUTER_GRPC_PORT", d.router_port, minimum=1),
        executor_port=_int("EXECUTOR_GRPC_PORT", d.executor_port, minimum=1),
        notifier_port=_int("NOTIFIER_GRPC_PORT", d.notifier_port, minimum=1),
        metrics_port=_optional_int("METRICS_PORT", d.metrics_port),
        orders_target=_env("ORDERS_TARGET", d.orders_target),
        router_target=_env("ROUTER_TARGET", d.router_target),
        notifier_target=_env("NOTIFIER_TARGET", d.notifier_target),
        public_base_url=_env("PUBLIC_BASE_URL", d.public_base_url).rstrip("/"),
        database_url=_env("DATABASE_URL", d.database_url),
        redis_url=_env("REDIS_URL", d.redis_url),
        amqp_url=_env("AMQP_URL", d.amqp_url),
        amqp_prefix=_env("AMQP_PREFIX", d.amqp_prefix),
        db_pool_size=_int("DB_POOL_SIZE", d.db_pool_size, minimum=1),
        quote_latency_ms=_range_ms("QUOTE_LATENCY_MS", d.quote_latency_ms),
        venue_latency_ms=_venue_ranges("VENUE_LATENCY_MS", d.venue_latency_ms),
        quote_deadline_ms=_int("QUOTE_DEADLINE_MS", d.quote_deadline_ms, minimum=1),
        market_seed=_int("MARKET_SEED", d.market_seed),
        solana_rpc_url=_env("SOLANA_RPC_URL", d.solana_rpc_url),
        solana_ws_url=_env("SOLANA_WS_URL", d.solana_ws_url),
        solana_rpc_batch_max=_int("SOLANA_RPC_BATCH_MAX", d.solana_rpc_batch_max, minimum=1),
        solana_keypair=_env("SOLANA_KEYPAIR", d.solana_keypair),
        priority_fee_micro_lamports=_int("PRIORITY_FEE_MICRO_LAMPORTS", d.priority_fee_micro_lamports),
        compute_unit_limit=_int("COMPUTE_UNIT_LIMIT", d.compute_unit_limit, minimum=1),
        venue_failure_rate=_decimal("VENUE_FAILURE_RATE", d.venue_failure_rate),
        quote_timeout_rate=_decimal("QUOTE_TIMEOUT_RATE", d.quote_timeout_rate),
        executor_prefetch=_int("EXECUTOR_PREFETCH", d.executor_prefetch, minimum=1),
        executor_landings=_int("EXECUTOR_LANDINGS", d.executor_landings, minimum=1),
        executor_lease_ms=_int("EXECUTOR_LEASE_MS", d.executor_lease_ms, minimum=100),
        rate_limit_per_min=_int("RATE_LIMIT_PER_MIN", d.rate_limit_per_min),
        rate_limit_burst=_int("RATE_LIMIT_BURST", d.rate_limit_burst, minimum=1),
        max_live_orders=_int("MAX_LIVE_ORDERS", d.max_live_orders),
        max_attempts=_int("MAX_ATTEMPTS", d.max_attempts, minimum=1),
        retry_backoff_ms=_ms_list("RETRY_BACKOFF_MS", d.retry_backoff_ms),
        retry_jitter=_decimal("RETRY_JITTER", d.retry_jitter),
        order_default_ttl_s=_int("ORDER_DEFAULT_TTL_S", d.order_default_ttl_s, minimum=1),
        order_max_ttl_s=_int("ORDER_MAX_TTL_S", d.order_max_ttl_s, minimum=1),
        trigger_resync_s=_int("TRIGGER_RESYNC_S", d.trigger_resync_s, minimum=1),
        trigger_enabled=_flag("TRIGGER", d.trigger_enabled),
        outbox_poll_ms=_int("OUTBOX_POLL_MS", d.outbox_poll_ms, minimum=10),
        outbox_batch=_int("OUTBOX_BATCH", d.outbox_batch, minimum=1),
        outbox_orphan_ms=_int("OUTBOX_ORPHAN_MS", d.outbox_orphan_ms),
        shutdown_grace_s=_int("SHUTDOWN_GRACE_S", d.shutdown_grace_s),
        log_level=_env("LOG_LEVEL", d.log_level).upper(),
    )
