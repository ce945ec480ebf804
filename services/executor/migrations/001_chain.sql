-- The simulated chain's ledger: one row per transaction signature.
CREATE SCHEMA IF NOT EXISTS chain;
CREATE TABLE chain.transactions (
    signature          text PRIMARY KEY,
    order_id           uuid NOT NULL,
    attempt            integer NOT NULL,
    payload            jsonb NOT NULL,
    last_valid_height  bigint NOT NULL,
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'landed', 'failed')),
    result             jsonb,
    submitted_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    land_after         timestamptz NOT NULL,
    sends              integer NOT NULL DEFAULT 1,
    settled_at         timestamptz
);
CREATE INDEX transactions_order ON chain.transactions (order_id);
