"""API keys: stored hashed, checked on every public call, the owner of each order.

A key is ``dex_`` + 43 URL-safe characters (256 random bits), shown once when
it is created. PostgreSQL keeps its SHA-256 hash — a fast hash is enough for a
random 256-bit secret (nothing to brute-force, unlike a password) and lets a
lookup be one indexed equality — plus its first 12 characters, so a person
can tell keys apart in ``dexctl keys list``.

Who a call comes from (:class:`Principal`):
- AUTH=off: the anonymous caller, who sees every order;
- ``authorization: Bearer <key>``: that key, which sees its own orders only;
- the internal token (``x-dexengine-internal``): another service of the mesh,
  which sees every order and may call Transition and the admin methods.
A call that presents a key is that key's, whatever else it carries: the
gateway forwards its client's key over a channel that also has the token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg
import grpc

from services.common import auth
from services.common.auth import AuthSettings
from services.common.errors import DomainError, FieldViolation, ValidationFailed

SECRET_PREFIX = "dex_"
SHOWN_CHARS = 12  # "dex_" + 8: enough to tell keys apart, far too little to guess the rest
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_QUOTA_PER_MIN = 1_000_000
KEY_COLUMNS = "id, name, prefix, quota_per_min, created_at, revoked_at"


@dataclass(frozen=True)
class Principal:
    kind: str  # "key", "anonymous" or "service"
    key_id: uuid.UUID | None = None
    name: str = ""
    quota_per_min: int = 0

    @property
    def scoped(self) -> bool:
        """True when the caller sees only its own orders."""
        return self.kind == "key"

    def owns(self, owner: uuid.UUID | None) -> bool:
        return not self.scoped or owner == self.key_id


ANONYMOUS = Principal("anonymous")
SERVICE = Principal("service")


class Unauthenticated(DomainError):
    """No usable credentials: ``reason`` says which way (missing, invalid, revoked)."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, reason: str, message: str, issue: str) -> None:
        self.reason = reason
        self.violations = (FieldViolation("authorization", issue),)
        super().__init__(message)


class PermissionDenied(DomainError):
    """The caller is known but may not call this method."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class KeyNameTaken(DomainError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    reason = "API_KEY_NAME_TAKEN"
    violations = (FieldViolation("name", "is already the name of an active key"),)

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an active key is already named {name}")


class KeyNotFound(DomainError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    reason = "API_KEY_NOT_FOUND"
    violations = (FieldViolation("key", "is neither the id of a key nor the name of an active key"),)

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no key with id or active name {key}")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def validate_key_request(name: str, quota_per_min: int) -> None:
    violations = []
    if not NAME_RE.match(name):
        violations.append(FieldViolation("name", "must be 1-64 characters: letters, digits, '.', '_' or '-'"))
    if not 0 <= quota_per_min <= MAX_QUOTA_PER_MIN:
        violations.append(FieldViolation("quota_per_min", f"must be between 1 and {MAX_QUOTA_PER_MIN} (0: default)"))
    if violations:
        raise ValidationFailed(violations)


class KeyStore:
    def __init__(self, pool: asyncpg.Pool, default_quota: int) -> None:
        self.pool = pool
        self.default_quota = default_quota

    async def create(self, name: str, quota_per_min: int) -> tuple[asyncpg.Record, str]:
        validate_key_request(name, quota_per_min)
        secret = new_secret()
        try:
            row = await self.pool.fetchrow(
                f"""INSERT INTO api_keys (id, name, prefix, key_hash, quota_per_min)
                    VALUES ($1, $2, $3, $4, $5) RETURNING {KEY_COLUMNS}""",
                uuid.uuid4(),
                name,
                secret[:SHOWN_CHARS],
                secret_hash(secret),
                quota_per_min or None,
            )
        except asyncpg.UniqueViolationError:
            raise KeyNameTaken(name) from None
        assert row is not None
        return row, secret

    async def list(self, include_revoked: bool) -> list[asyncpg.Record]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        return list(await self.pool.fetch(f"SELECT {KEY_COLUMNS} FROM api_keys {where} ORDER BY created_at DESC, id"))

    async def revoke(self, key: str) -> asyncpg.Record:
        """Revoke by id, or by the name of an active key; a revoked key is answered as it is."""
        try:
            key_id: uuid.UUID | None = uuid.UUID(key)
        except ValueError:
            key_id = None
        if key_id is not None:
            row = await self.pool.fetchrow(
                f"""UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
                    RETURNING {KEY_COLUMNS}""",
                key_id,
            )
        else:
            row = await self.pool.fetchrow(
                f"""UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL
                    RETURNING {KEY_COLUMNS}""",
                key,
            )
        if row is None:
            raise KeyNotFound(key)
        return row

    async def authenticate(self, secret: str) -> Principal:
        row = await self.pool.fetchrow(
            "SELECT id, name, quota_per_min, revoked_at FROM api_keys WHERE key_hash = $1", secret_hash(secret)
        )
        if row is None:
            raise Unauthenticated("API_KEY_INVALID", "unknown API key", "is not a valid API key")
        if row["revoked_at"] is not None:
            raise Unauthenticated("API_KEY_REVOKED", "this API key was revoked", "was revoked")
        return Principal("key", row["id"], row["name"], row["quota_per_min"] or self.default_quota)


class Authenticator:
    """The caller of a gRPC call, from its metadata."""

    def __init__(self, settings: AuthSettings, keys: KeyStore) -> None:
        self.settings = settings
        self.keys = keys

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal:
        if not self.settings.enabled:
            return ANONYMOUS
        metadata = context.invocation_metadata()
        value = auth.metadata_value(metadata, auth.AUTHORIZATION)
        if value is not None:
            secret = auth.bearer(value)
            if secret is None:
                raise Unauthenticated(
                    "API_KEY_MALFORMED", "authorization must be 'Bearer <key>'", "must be 'Bearer <key>'"
                )
            return await self.keys.authenticate(secret)
        if self.settings.is_internal(auth.metadata_value(metadata, auth.INTERNAL)):
            return SERVICE
        raise Unauthenticated(
            "API_KEY_MISSING", "an API key is required: send 'authorization: Bearer <key>'", "is required"
        )

    async def service(self, context: grpc.aio.ServicerContext) -> Principal:
        """The caller, who must be a service of the mesh (or anyone, with AUTH=off)."""
        principal = await self.principal(context)
        if principal.scoped:
            raise PermissionDenied("this method is for the services of the mesh and operators, not API keys")
        return principal


class OwnerCache:
    """Order id -> owning key. An order never changes owner, so entries never go stale; the size is bounded."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self.entries: OrderedDict[uuid.UUID, uuid.UUID | None] = OrderedDict()

    def get(self, order_id: uuid.UUID) -> tuple[bool, uuid.UUID | None]:
        if order_id in self.entries:
            self.entries.move_to_end(order_id)
            return True, self.entries[order_id]
        return False, None

    def put(self, order_id: uuid.UUID, owner: uuid.UUID | None) -> None:
        self.entries[order_id] = owner
        self.entries.move_to_end(order_id)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
