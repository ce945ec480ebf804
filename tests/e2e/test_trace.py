"""One order, one trace: five real processes exporting OTLP to a real receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from tests.support.client import SOL, USDC, follow, post_order
from tests.support.infra import TestInfra, isolated
from tests.support.mesh import Mesh, mesh_env
from tests.support.otlp import Receiver, Span
from tests.support.scenarios import slipping_order

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


@pytest.fixture(scope="module")
async def traced(
    base_env: dict[str, str], infra: TestInfra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Mesh, Receiver]]:
    async with isolated(infra.derive("traced")) as own:
        async for running in _traced_mesh({**base_env, **own.env()}, tmp_path_factory):
            yield running


async def _traced_mesh(
    base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Mesh, Receiver]]:
    receiver = Receiver()
    endpoint = await receiver.start()
    log_dir: Path = tmp_path_factory.mktemp("traced-logs")
    env = mesh_env(base_env, log_dir)
    env.update(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    mesh = Mesh(env, log_dir)
    try:
        await mesh.start()
        yield mesh, receiver
    finally:
        await mesh.stop()
        await receiver.stop()


def tree(spans: list[Span], root: Span, depth: int = 0) -> list[str]:
    lines = [f"{'  ' * depth}{root.service}: {root.name} ({root.duration_ms:.1f} ms)"]
    for child in sorted((s for s in spans if s.parent_id == root.span_id), key=lambda s: s.start_ns):
        lines.extend(tree(spans, child, depth + 1))
    return lines


def parent_of(spans: list[Span], span: Span) -> Span | None:
    return next((s for s in spans if s.span_id == span.parent_id), None)


def edge(spans: list[Span], parent_service: str, child_service: str, child_kind: int = SERVER) -> bool:
    """A span of child_service whose parent chain reaches parent_service through one client hop."""
    for span in spans:
        if span.service != child_service or span.kind != child_kind:
            continue
        parent = parent_of(spans, span)
        if parent is not None and parent.service == parent_service:
            return True
    return False


ALL_SERVICES = {"gateway", "orders", "router", "executor", "notifier"}


async def test_one_order_is_one_connected_trace(traced: tuple[Mesh, Receiver], tmp_path: Path) -> None:
    mesh, receiver = traced
    async with aiohttp.ClientSession() as session:
        status, body = await post_order(
            session, mesh.http, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.01"}
        )
        assert status == 201
        events = await follow(session, body["websocketUrl"])
    assert events[-1]["status"] == "confirmed"
    order_id = body["orderId"]

    def complete(spans: list[Span]) -> bool:
        services = {s.service for s in spans if s.attributes.get("order.id") == order_id}
        exporting = {s.service for s in spans}  # each process exports in its own batches
        return (
            {"orders", "executor", "notifier"} <= services
            and exporting >= ALL_SERVICES
            and any(s.name == "notifier fan-out" and s.attributes.get("order.status") == "confirmed" for s in spans)
            # The job's span ends after its ack, later than the notifier's last fan-out can be exported.
            and any(s.name == "executor job" and s.attributes.get("order.id") == order_id for s in spans)
        )

    spans = await receiver.wait_for(complete)
    create = next(s for s in spans if s.service == "orders" and s.name.endswith("/CreateOrder"))
    trace_spans = [s for s in spans if s.trace_id == create.trace_id]
    services = {s.service for s in trace_spans}
    assert services == ALL_SERVICES, services
    # Every span of this order's work is in this one trace.
    assert all(s.trace_id == create.trace_id for s in spans if s.attributes.get("order.id") == order_id)
    assert edge(trace_spans, "gateway", "orders"), "gateway -> orders.CreateOrder"
    assert edge(trace_spans, "executor", "router"), "executor -> router.GetQuotes"
    assert edge(trace_spans, "executor", "orders"), "executor -> orders.Transition"
    publish = [s for s in trace_spans if s.kind == PRODUCER and s.name.startswith("publish")]
    job = next(s for s in trace_spans if s.name == "executor job")
    assert job.kind == CONSUMER
    assert parent_of(trace_spans, job) in publish, "the AMQP hop: executor job is a child of the outbox publish"
    quotes = [s for s in trace_spans if s.name.startswith("quote ")]
    assert {s.attributes["dex.venue"] for s in quotes} == {"raydium", "meteora"}
    assert all(parent_of(trace_spans, q).name.endswith("/GetQuotes") for q in quotes)  # type: ignore[union-attr]
    assert {"solana sendTransaction", "solana confirm"} <= {s.name for s in trace_spans}
    fanouts = sorted((s for s in trace_spans if s.name == "notifier fan-out"), key=lambda s: s.start_ns)
    fanned = [status for s in fanouts for status in s.attributes["order.statuses"]]  # type: ignore[attr-defined]
    assert fanned == ["pending", "routing", "building", "submitted", "confirmed"], "in order, each once"
    assert [s.attributes["order.status"] for s in fanouts] == ["pending", "submitted", "confirmed"], "per commit"
    root = next(s for s in trace_spans if not s.parent_id)
    assert root.service == "gateway"
    rendered = "\n".join(tree(trace_spans, root))
    (tmp_path / "trace.txt").write_text(rendered)  # kept by pytest's tmp_path for a look after a run
    assert "executor: executor job" in rendered


async def test_a_retried_order_shows_each_attempt_in_its_trace(traced: tuple[Mesh, Receiver], tmp_path: Path) -> None:
    mesh, receiver = traced
    async with aiohttp.ClientSession() as session:
        events = await slipping_order(
            session, mesh, {"tokenIn": SOL, "tokenOut": USDC, "amountIn": "1", "slippage": "0.005"}
        )
    assert events[-1]["status"] == "failed"
    order_id = events[0]["orderId"]

    def of_order(spans: list[Span], *names: str) -> list[Span]:
        return [s for s in spans if s.name in names and s.attributes.get("order.id") == order_id]

    def failed(spans: list[Span]) -> list[Span]:
        # An attempt whose transaction was sent fails after its job's ack: in its landing's span.
        return [s for s in of_order(spans, "executor job", "executor landing") if s.status_code == 2]

    spans = await receiver.wait_for(lambda spans: len(of_order(spans, "executor job")) == 3 and len(failed(spans)) >= 3)
    attempts = of_order(spans, "executor job")
    assert sorted(cast(int, s.attributes["order.attempt"]) for s in attempts) == [1, 2, 3]
    assert len({s.trace_id for s in of_order(spans, "executor job", "executor landing")}) == 1, (
        "every attempt continues the order's trace"
    )
    assert sorted(cast(int, s.attributes["order.attempt"]) for s in failed(spans)) == [1, 2, 3], (
        "each failed attempt is an ERROR span"
    )
    root = next(s for s in spans if s.trace_id == attempts[0].trace_id and not s.parent_id)
    (tmp_path / "trace.txt").write_text("\n".join(tree([s for s in spans if s.trace_id == root.trace_id], root)))
