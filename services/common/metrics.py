"""Prometheus metrics: one registry per process, one place for every name.

gRPC services expose them on METRICS_PORT (the setting ``metrics_port``; each
service has its own default so the four can share a host, in Kubernetes every
pod sets it);
the gateway serves them on its own /metrics. Request rate, errors and
latency per RPC come from spans (the collector's span-metrics connector),
so only what spans cannot say is counted here.

The latency histograms carry exemplars: each bucket remembers the trace id
of the last sampled span it was observed in (label ``trace_id``, the name
Grafana's exemplar link looks for). Exemplars exist only in the OpenMetrics
exposition, which the endpoint serves when the scraper asks for it
(``Accept: application/openmetrics-text``, as Prometheus does); a classic
text scrape gets the same metrics without them.
"""

from __future__ import annotations

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.exposition import choose_encoder

EXEMPLAR_LABEL = "trace_id"

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60)

REGISTRY = CollectorRegistry(auto_describe=True)


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` of the active span when it is sampled (exported), else None.

    An unsampled span's trace never reaches the trace store, so linking to it
    would lead nowhere.
    """
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {EXEMPLAR_LABEL: format(context.trace_id, "032x")}


class TracedHistogram(Histogram):
    """A Histogram whose observations made inside a sampled span carry its trace id as exemplar."""

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar if exemplar is not None else current_exemplar())


ORDERS_CREATED = Counter("dexengine_orders_created", "Orders accepted", registry=REGISTRY)
ORDERS_FINISHED = Counter(
    "dexengine_orders_finished",
    "Orders that reached a terminal status",
    ["status", "venue", "reason"],
    registry=REGISTRY,
)
STAGE_SECONDS = TracedHistogram(
    "dexengine_stage_seconds",
    "Time spent in each stage of an order",
    ["stage"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
RETRIES = Counter("dexengine_retries", "Attempts that failed and were retried", ["code"], registry=REGISTRY)
TAKEN_BACK = Counter(
    "dexengine_orders_taken_back",
    "Sent orders whose executor's lease lapsed, their jobs queued again (services/orders/landing_sweep.py)",
    registry=REGISTRY,
)
LANDINGS = Gauge(
    "dexengine_executor_landings",
    "Sent orders this executor watches land after their jobs' ack (at most EXECUTOR_LANDINGS)",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("dexengine_queue_depth", "Messages waiting in a queue", ["queue"], registry=REGISTRY)
OUTBOX_LAG = TracedHistogram(
    "dexengine_outbox_lag_seconds",
    "Commit to broker-confirmed publish, per outbox row",
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter("dexengine_outbox_published", "Outbox rows published", ["kind"], registry=REGISTRY)
OUTBOX_ORPHANS = Counter(
    "dexengine_outbox_orphans_claimed",
    "Outbox rows claimed as orphans (OUTBOX_ORPHAN_MS old): their replica died before publishing them, or its "
    "publish failed",
    registry=REGISTRY,
)
OUTBOX_BATCH_ROWS = Histogram(
    "dexengine_outbox_batch_rows",
    "Rows per relay batch (a batch costs a confirm wait and a share of one delete, whatever its size)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
QUOTES = Counter("dexengine_venue_quotes", "Venue quotes by outcome", ["venue", "outcome"], registry=REGISTRY)
TRIGGERS = Counter(
    "dexengine_triggers",
    "Waiting orders the router's trigger moved on (limit, sniper, expired)",
    ["kind"],
    registry=REGISTRY,
)
ARMED = Gauge("dexengine_armed_orders", "Waiting limit/sniper orders the router's trigger holds", registry=REGISTRY)
DECISIONS = Counter("dexengine_route_decisions", "Routing decisions by chosen venue", ["venue"], registry=REGISTRY)
WEBSOCKETS = Gauge("dexengine_websocket_connections", "Open WebSocket connections", registry=REGISTRY)
ORDER_FEEDS = Gauge(
    "dexengine_order_feeds", "Orders a gateway follows over its notifier WatchMany stream", registry=REGISTRY
)
WATCHERS = Gauge(
    "dexengine_watch_streams", "Notifier Watch and WatchMine streams, and WatchMany subscriptions", registry=REGISTRY
)
EVENTS_FANNED_OUT = Counter("dexengine_events_delivered", "Events handed to watchers", registry=REGISTRY)
SNAPSHOTS = Counter(
    "dexengine_watch_snapshots",
    "Snapshots that began a notifier watch, by source: known (the order the caller held) or read (from orders)",
    ["source"],
    registry=REGISTRY,
)
for _source in ("known", "read"):
    SNAPSHOTS.labels(_source)  # both series from the start, at 0


def serve(port: int) -> None:
    """Start the /metrics HTTP endpoint of a gRPC service on ``port`` (0: none)."""
    if port:
        start_http_server(port, registry=REGISTRY)


def exposition() -> bytes:
    """Classic Prometheus text (no exemplars): what the gateway's /metrics has always served."""
    return generate_latest(REGISTRY)


def exposition_for(accept: str) -> tuple[bytes, str]:
    """The body and content type a scraper asked for: OpenMetrics (with exemplars) or classic text."""
    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type
