"""Executor leases: which executor processes are alive to finish the orders they sent.

An executor acks an order's execution job once its transaction is recorded and
sent, and watches it land in the process (services/executor/lease.py). The
``submitted`` order records that executor (``execution.executor``), and the
executor renews a lease in Redis for as long as it runs. Orders re-enqueues
the job of a ``submitted`` order whose executor's lease has lapsed
(services/orders/landing_sweep.py).
"""

from __future__ import annotations


def lease_key(prefix: str, executor_id: str) -> str:
    return f"{prefix}executor-lease:{executor_id}"
