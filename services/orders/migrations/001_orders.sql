-- Orders, their event history and the transactional outbox.
CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    type            text NOT NULL DEFAULT 'market',
    status          text NOT NULL CHECK (status IN ('pending', 'routing', 'building', 'submitted', 'confirmed', 'failed')),
    token_in        text NOT NULL,
    token_out       text NOT NULL,
    amount_in       numeric NOT NULL CHECK (amount_in > 0),
    amount_out      numeric,
    expected_price  numeric,
    executed_price  numeric,
    slippage        numeric NOT NULL,
    dex_provider    text,
    tx_hash         text,
    error_message   text,
    retry_count     integer NOT NULL DEFAULT 0,
    seq             bigint NOT NULL DEFAULT 1,
    routing         jsonb,
    execution       jsonb,
    idempotency_key text,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_recent ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_recent ON orders (status, created_at DESC, id DESC);

CREATE TABLE order_events (
    order_id   uuid NOT NULL REFERENCES orders (id),
    seq        bigint NOT NULL,
    status     text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, seq)
);

-- Rows wait here until the relay has published them with a broker confirm,
-- then they are deleted. kind 'job' goes to the execution exchange, 'event'
-- to the events exchange. headers carry the trace context of the writer.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    order_id   uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('job', 'event')),
    payload    jsonb NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Wake the relay at commit (a hint only: it also polls).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
