"""OpenTelemetry set-up from the standard OTEL_* variables (no custom flags).

Tracing is on when OTEL_TRACES_EXPORTER names an exporter (``otlp`` or
``console``) and OTEL_SDK_DISABLED is not true. Otherwise nothing is
instrumented and :func:`span` and :func:`start_span` start no span. Trace
context still passes through a process that does not trace, as through the
API's no-op tracer: a span begun from a parent read off a message is that
parent's context, which the process's messages carry on and its logs name.
(The no-op tracer itself is not free: a span through it costs 4-8 µs,
about ten per order.)
Everything else (endpoint, sampler, resource attributes, batch delays) is
read by the SDK itself from its standard variables.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.util import types

_state: dict[str, Any] = {}
_NO_SPAN: contextlib.AbstractContextManager[trace.Span] = contextlib.nullcontext(trace.INVALID_SPAN)


def enabled() -> bool:
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    disabled = os.environ.get("OTEL_SDK_DISABLED", "false").strip().lower() == "true"
    return exporter not in ("", "none") and not disabled


def active() -> bool:
    """Whether this process traces (setup installed a provider)."""
    return "provider" in _state


def setup(service_name: str) -> None:
    """Install the tracer provider and library instrumentation (once per process)."""
    if not enabled() or "provider" in _state:
        return
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    # Patches aiohttp.web.Application: apps built after this get the server-span middleware.
    AioHttpServerInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _state["provider"] = provider


def shutdown() -> None:
    """Flush and stop the exporter (on the way out of every service)."""
    provider = _state.pop("provider", None)
    if provider is not None:
        provider.shutdown()


def server_interceptors() -> list[Any]:
    if "provider" not in _state:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    if "provider" not in _state:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def span(
    tracer_name: str,
    name: str,
    *,
    parent: context.Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: types.Attributes = None,
) -> contextlib.AbstractContextManager[trace.Span]:
    """A span of ``tracer_name``'s tracer, current while the block runs. When this process does not trace, no
    span: ``parent``'s context is current while the block runs (the current one stays, without a parent), and
    its setters do nothing."""
    if parent is None and "provider" not in _state:
        return _NO_SPAN
    begun = start_span(tracer_name, name, parent=parent, kind=kind, attributes=attributes)
    return trace.use_span(begun, end_on_exit="provider" in _state)


def start_span(
    tracer_name: str,
    name: str,
    *,
    parent: context.Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: types.Attributes = None,
) -> trace.Span:
    """A span the caller ends. When this process does not trace, ``parent``'s context (or the current one), whose
    setters do nothing: what the caller's messages carry on."""
    if "provider" not in _state:
        return trace.get_current_span(parent)
    return trace.get_tracer(tracer_name).start_span(name, context=parent, kind=kind, attributes=attributes)


def inject_headers(span: trace.Span | None = None) -> dict[str, str]:
    """W3C trace context of ``span`` (the current span by default), for message headers and outbox rows."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=None if span is None else trace.set_span_in_context(span))
    return carrier


def extract(headers: Mapping[str, Any] | None) -> context.Context:
    """The context carried by message headers (empty when there is none)."""
    carrier = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (headers or {}).items()}
    return propagate.extract(carrier)


def record_error(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
