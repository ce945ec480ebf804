"""Settings of the localnet, from environment variables (documented in README.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from solders.pubkey import Pubkey


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    rpc_port: int = 8899
    ws_port: int = 8900
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    landing_ms: tuple[int, int] = (2000, 3000)
    blockhash_valid_slots: int = 150
    batch_max: int = 0  # JSON-RPC requests per batch; 0: no limit (a node's default), as some providers cap it
    market_seed: int = 42
    market_drift: bool = True
    trend_bps_per_s: Decimal = Decimal(0)
    fund: tuple[Pubkey, ...] = ()
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            host=env.get("LOCALNET_HOST", d.host),
            rpc_port=_port(env, "LOCALNET_RPC_PORT", d.rpc_port),
            ws_port=_port(env, "LOCALNET_WS_PORT", d.ws_port),
            database_url=env.get("LOCALNET_DATABASE_URL") or d.database_url,
            landing_ms=_range(env, "LOCALNET_LANDING_MS", d.landing_ms),
            blockhash_valid_slots=_int(env, "LOCALNET_BLOCKHASH_VALID_SLOTS", d.blockhash_valid_slots),
            batch_max=_int(env, "LOCALNET_RPC_BATCH_MAX", d.batch_max),
            market_seed=_int(env, "MARKET_SEED", d.market_seed),
            market_drift=_bool(env, "MARKET_DRIFT", d.market_drift),
            trend_bps_per_s=_decimal(env, "MARKET_TREND_BPS_PER_S", d.trend_bps_per_s),
            fund=_pubkeys(env, "LOCALNET_FUND"),
            log_level=env.get("LOG_LEVEL", d.log_level).upper(),
        )
        if settings.blockhash_valid_slots < 1:
            raise ConfigError("LOCALNET_BLOCKHASH_VALID_SLOTS: at least 1")
        if settings.batch_max < 0:
            raise ConfigError("LOCALNET_RPC_BATCH_MAX: 0 (no limit) or more")
        return settings


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not an integer") from None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _int(env, name, default)
    if not 0 <= port < 65536:
        raise ConfigError(f"{name}={port}: not a TCP port")
    return port


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _decimal(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name}={raw!r}: not a number") from None


def _range(env: Mapping[str, str], name: str, default: tuple[int, int]) -> tuple[int, int]:
    """``"2000-3000"`` (uniform in the range) or ``"0"`` (exactly)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    low, _, high = raw.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected milliseconds as N or LOW-HIGH") from None
    if lo < 0 or hi < lo:
        raise ConfigError(f"{name}={raw!r}: need 0 <= LOW <= HIGH")
    return lo, hi


def _pubkeys(env: Mapping[str, str], name: str) -> tuple[Pubkey, ...]:
    out = []
    for part in env.get(name, "").split(","):
        if part.strip():
            try:
                out.append(Pubkey.from_string(part.strip()))
            except ValueError:
                raise ConfigError(f"{name}: {part.strip()!r} is not a base58 public key") from None
    return tuple(dict.fromkeys(out))
