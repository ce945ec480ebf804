"""Trace context passes through a process that does not trace, as through OpenTelemetry's no-op tracer.

These tests run without a tracer provider (telemetry.setup is never called here), as every service does when
OTEL_TRACES_EXPORTER is unset. The oracle is the W3C header the context came in with.
"""

from __future__ import annotations

from opentelemetry import trace

from services.common import telemetry

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
HEADERS = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"}


def test_this_process_does_not_trace() -> None:
    assert not telemetry.active()


def test_a_span_begun_from_a_message_makes_its_context_current_and_carried_on() -> None:
    parent = telemetry.extract(HEADERS)
    with telemetry.span(__name__, "consume", parent=parent, kind=trace.SpanKind.CONSUMER) as span:
        assert not span.is_recording()
        assert format(trace.get_current_span().get_span_context().trace_id, "032x") == TRACE_ID
        assert telemetry.inject_headers() == HEADERS
        with telemetry.span(__name__, "inner", attributes={"k": "v"}) as inner:
            inner.set_attribute("ignored", 1)  # a setter of no span: does nothing
            assert telemetry.inject_headers() == HEADERS, "a span without a parent keeps the current context"
    assert not trace.get_current_span().get_span_context().is_valid, "the context is restored after the block"


def test_a_span_the_caller_ends_carries_its_parents_context() -> None:
    span = telemetry.start_span(__name__, "publish", parent=telemetry.extract(HEADERS), kind=trace.SpanKind.PRODUCER)
    span.set_attribute("ignored", 1)
    span.end()
    assert telemetry.inject_headers(span) == HEADERS


def test_no_context_in_gives_none_out() -> None:
    with telemetry.span(__name__, "consume", parent=telemetry.extract({})):
        assert telemetry.inject_headers() == {}
    assert telemetry.inject_headers(telemetry.start_span(__name__, "publish", parent=telemetry.extract(None))) == {}
