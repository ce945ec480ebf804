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


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _range_ms(name: str, default: str) -> tuple[int, int]:
    return _parse_range(name, _env(name, default))


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


def _venue_ranges(name: str, default: str) -> dict[str, tuple[int, int]]:
    """Parse ``"meteora=1800-2000,raydium=50"`` into per-venue ms ranges."""
    raw = _env(name, default)
    ranges: dict[str, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        venue, sep, span = part.partition("=")
        if not sep or not venue.strip():
            raise ConfigError(f"{name} must look like 'meteora=1800-2000,raydium=50', got {raw!r}")
        ranges[venue.strip().lower()] = _parse_range(name, span.strip())
    return ranges


def _ms_list(name: str, default: str) -> tuple[int, ...]:
    raw = _env(name, default)
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be comma-separated milliseconds, got {raw!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{name} needs at least one positive delay, got {raw!r}")
    return values


def _decimal(name: str, default: str) -> Decimal:
    raw = _env(name, default)
    try:
        return Decimal(raw)
    except ArithmeticError as exc:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """All settings. Read once per process with :func:`load`."""

    # Listening ports.
    gateway_host: str = "0.0.0.0"
    gateway_port: int = 3000
    # Gateway processes sharing the port (SO_REUSEPORT): each holds its share of the sockets in its own heap.
    gateway_workers: int = 1
    orders_port: int = 50051
    router_port: int = 50052
    executor_port: int = 50053
    notifier_port: int = 50054
    # Where clients find the other services (host:port).
    orders_target: str = "127.0.0.1:50051"
    router_target: str = "127.0.0.1:50052"
    executor_target: str = "127.0.0.1:50053"
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
    # Operations.
    shutdown_grace_s: int = 10
    log_level: str = "INFO"


def load() -> Settings:
    """Read every setting from the environment; raise ConfigError naming a bad one."""
    return Settings(
        gateway_host=_env("GATEWAY_HOST", "0.0.0.0"),
        gateway_port=_int("GATEWAY_PORT", 3000, minimum=1),
        gateway_workers=_int("GATEWAY_WORKERS", 1, minimum=1),
        orders_port=_int("ORDERS_GRPC_PORT", 50051, minimum=1),
        router_port=_int("ROUTER_GRPC_PORT", 50052, minimum=1),
        executor_port=_int("EXECUTOR_GRPC_PORT", 50053, minimum=1),
        notifier_port=_int("NOTIFIER_GRPC_PORT", 50054, minimum=1),
        orders_target=_env("ORDERS_TARGET", "127.0.0.1:50051"),
        router_target=_env("ROUTER_TARGET", "127.0.0.1:50052"),
        executor_target=_env("EXECUTOR_TARGET", "127.0.0.1:50053"),
        notifier_target=_env("NOTIFIER_TARGET", "127.0.0.1:50054"),
        public_base_url=_env("PUBLIC_BASE_URL", "").rstrip("/"),
        database_url=_env("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        redis_url=_env("REDIS_URL", "redis://127.0.0.1:6379/0"),
        amqp_url=_env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        amqp_prefix=_env("AMQP_PREFIX", ""),
        db_pool_size=_int("DB_POOL_SIZE", 10, minimum=1),
        quote_latency_ms=_range_ms("QUOTE_LATENCY_MS", "200-300"),
        venue_latency_ms=_venue_ranges("VENUE_LATENCY_MS", ""),
        quote_deadline_ms=_int("QUOTE_DEADLINE_MS", 1500, minimum=1),
        market_seed=_int("MARKET_SEED", 42),
        solana_rpc_url=_env("SOLANA_RPC_URL", "http://127.0.0.1:8899"),
        solana_ws_url=_env("SOLANA_WS_URL", "ws://127.0.0.1:8900"),
        solana_keypair=_env("SOLANA_KEYPAIR", ".localnet/engine-wallet.json"),
        priority_fee_micro_lamports=_int("PRIORITY_FEE_MICRO_LAMPORTS", 1_000),
        compute_unit_limit=_int("COMPUTE_UNIT_LIMIT", 400_000, minimum=1),
        venue_failure_rate=_decimal("VENUE_FAILURE_RATE", "0"),
        quote_timeout_rate=_decimal("QUOTE_TIMEOUT_RATE", "0"),
        executor_prefetch=_int("EXECUTOR_PREFETCH", 10, minimum=1),
        rate_limit_per_min=_int("RATE_LIMIT_PER_MIN", 100),
        rate_limit_burst=_int("RATE_LIMIT_BURST", 10, minimum=1),
        max_live_orders=_int("MAX_LIVE_ORDERS", 10_000),
        max_attempts=_int("MAX_ATTEMPTS", 3, minimum=1),
        retry_backoff_ms=_ms_list("RETRY_BACKOFF_MS", "1000,2000,4000"),
        retry_jitter=_decimal("RETRY_JITTER", "0.1"),
        order_default_ttl_s=_int("ORDER_DEFAULT_TTL_S", 86_400, minimum=1),
        order_max_ttl_s=_int("ORDER_MAX_TTL_S", 30 * 86_400, minimum=1),
        trigger_resync_s=_int("TRIGGER_RESYNC_S", 300, minimum=1),
        trigger_enabled=_env("TRIGGER", "on").lower() not in ("off", "0", "false"),
        outbox_poll_ms=_int("OUTBOX_POLL_MS", 500, minimum=10),
        outbox_batch=_int("OUTBOX_BATCH", 200, minimum=1),
        shutdown_grace_s=_int("SHUTDOWN_GRACE_S", 10),
        log_level=_env("LOG_LEVEL", "INFO").upper(),
    )
