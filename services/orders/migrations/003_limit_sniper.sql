-- Limit and sniper orders: what a waiting order waits for, and the statuses waiting, expired, cancelled.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN (
    'pending', 'waiting', 'routing', 'building', 'submitted', 'confirmed', 'failed', 'expired', 'cancelled'));
ALTER TABLE orders ADD CONSTRAINT orders_type_check CHECK (type IN ('market', 'limit', 'sniper'));
ALTER TABLE orders ADD COLUMN limit_price numeric CHECK (limit_price > 0);
ALTER TABLE orders ADD COLUMN min_liquidity numeric CHECK (min_liquidity >= 0);
ALTER TABLE orders ADD COLUMN expires_at timestamptz;
ALTER TABLE orders ADD CONSTRAINT orders_limit_fields CHECK (
    (type = 'limit') = (limit_price IS NOT NULL) AND (type = 'sniper') = (min_liquidity IS NOT NULL)
    AND (type = 'market') = (expires_at IS NULL));
