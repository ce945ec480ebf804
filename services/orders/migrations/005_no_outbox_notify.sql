-- The relay is woken in-process by the commit of its own replica (OrderStore tells it), so no trigger
-- notifies at each commit any more: a NOTIFY cost every commit a trigger call, a signal to each
-- listening backend and a message to each replica. A row committed by a replica that died before its
-- relay ran is published by any replica's next batch or poll (OUTBOX_POLL_MS).
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
