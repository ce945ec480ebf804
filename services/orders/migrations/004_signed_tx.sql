-- The signed transaction of an order's current attempt leaves the public execution record: the executor
-- resends it after a restart, nobody else reads it. Records written before this move keep working.
ALTER TABLE orders ADD COLUMN signed_tx bytea;
ALTER TABLE orders ADD COLUMN last_valid_block_height bigint;
UPDATE orders SET signed_tx = decode(execution ->> 'transaction', 'base64'),
                  last_valid_block_height = (execution ->> 'lastValidBlockHeight')::bigint,
                  execution = execution - 'transaction' - 'lastValidBlockHeight' - 'tx'
    WHERE execution ? 'transaction';
