"""What one benchmark phase measured."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.procstat import ProcUsage
from bench.stats import Summary, summarize

EMPTY = summarize([])

# Stages between consecutive events, named by what happens in them.
STAGES = (
    ("accept", "client send → pending committed"),
    (
        "queue and route",
        "pending → submitted (outbox relay, broker, executor pick-up, rate limit, quotes, decision, signing; "
        "one commit writes routing, building and submitted)",
    ),
    ("queue and route, engine", "pending → submitted minus simulated quote time"),
    ("settle", "submitted → confirmed (chain, polling, commit)"),
    ("settle, engine", "submitted → confirmed minus the chain's part of the floor"),
    ("landed, executor", "the executor's send → landed (execution.landedMs: send, notification, read)"),
    ("deliver", "confirmed committed → received on the WebSocket"),
)


@dataclass
class PhaseResult:
    name: str
    load: str
    duration_s: float
    sent: int = 0
    accepted: int = 0
    accepted_per_s: float = 0.0
    confirmed_per_s: float | None = None
    confirmed_source: str = ""
    watched: int = 0
    confirmed_watched: int = 0
    submit: Summary = EMPTY
    e2e: Summary = EMPTY
    floor: Summary = EMPTY
    overhead: Summary = EMPTY
    stages: dict[str, Summary] = field(default_factory=dict)
    delivery: Summary = EMPTY
    details_sampled: int = 0
    retried: int = 0
    backlog_end: int | None = None
    backlog_max: int | None = None
    backlog_slope: float | None = None
    backlog_growing: bool = False
    outbox_max: int | None = None
    drain_s: float | None = None
    generator_lag_p99: float | None = None
    confirmed_total: int | None = None  # the phase's own orders confirmed once all were terminal
    chain_landed_per_s: float | None = None  # the localnet's landed + failed transactions per second in the window
    chain_calls: int | None = None  # JSON-RPC calls the localnet served in the window
    chain_posts: int | None = None  # the HTTP requests they came in (a batch is one)
    errors: Counter[str] = field(default_factory=Counter)
    retry_after: Counter[str] = field(default_factory=Counter)
    procs: list[ProcUsage] = field(default_factory=list)
    # fan-out only
    fanout_subscribers: int | None = None
    fanout_connected: int | None = None
    fanout_peak_open: int | None = None
    fanout_connect: Summary = EMPTY
    fanout_spread: Summary = EMPTY
    fanout_connect_s: float | None = None
    notes: list[str] = field(default_factory=list)
