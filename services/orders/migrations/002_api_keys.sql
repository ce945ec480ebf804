-- API keys (stored as SHA-256 hashes, never the key) and the owner of each order.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    quota_per_min integer CHECK (quota_per_min > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;

-- NULL: created while AUTH=off (the anonymous caller's).
ALTER TABLE orders ADD COLUMN api_key_id uuid REFERENCES api_keys (id);

-- An Idempotency-Key is scoped to the key that sent it: two clients may pick the same one.
DROP INDEX orders_idempotency_key;
CREATE UNIQUE INDEX orders_idempotency_key
    ON orders ((COALESCE(api_key_id, '00000000-0000-0000-0000-000000000000'::uuid)), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_key_recent ON orders (api_key_id, created_at DESC, id DESC) WHERE api_key_id IS NOT NULL;
CREATE INDEX orders_key_status_recent ON orders (api_key_id, status, created_at DESC, id DESC)
    WHERE api_key_id IS NOT NULL;
