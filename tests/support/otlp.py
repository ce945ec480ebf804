"""An in-process OTLP/gRPC trace receiver: what a collector would receive."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.support.mesh import free_port


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict[str, object]
    links: tuple[str, ...]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(value: object) -> object:
    field = value.WhichOneof("value")  # type: ignore[attr-defined]
    if field == "array_value":
        return [_value(item) for item in value.array_value.values]  # type: ignore[attr-defined]
    return getattr(value, field) if field else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(attrs.get("service.name", "?"))
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            status_code=s.status.code,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            links=tuple(link.span_id.hex() for link in s.links),
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    async def start(self) -> str:
        self.server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = free_port()
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)

    async def wait_for(self, predicate: object, timeout: float = 20) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.spans):  # type: ignore[operator]
                return list(self.spans)
            await asyncio.sleep(0.2)
        return list(self.spans)
