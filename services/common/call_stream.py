"""Unary calls as messages on one long-lived stream: the ``Calls`` method of Orders and Router.

A grpc.aio unary call costs about 0.45 ms of CPU over both sides on this
project's machines; a request and its answer on an open bidi stream about
0.15 ms. The services call Orders and Router several times per order, so the
hot methods also travel as messages of one ``Calls`` stream per client:

- a call is ``{id, header: {timeout_ms, metadata}, <method>: request}``; its
  answer ``{id, <method>: response}`` or ``{id, status}`` (a serialized
  google.rpc.Status: what the unary call would have ended with);
- the server (:func:`serve`) runs each call through the unary method's own
  handler, with a :class:`CallContext` that answers what a handler asks of
  its call (metadata, deadline, abort), so the checks and errors are the
  unary method's;
- the client (:class:`CallStream`) keeps one stream open, sends every call
  ready at once as one message, and raises a failed call's status as the
  ``grpc.aio.AioRpcError`` a unary call raises, so callers do not change.

What a unary call gives besides, the stream gives per call: a deadline (the
server cancels the handler when it passes, the client stops waiting), trace
context (a client and a server span per call, as the gRPC instrumentation
makes for a unary call), retries of the reads on UNAVAILABLE (the channel's
policy for unary calls), and a fresh connection now and then (a new stream
every ``ROTATE_AFTER_S``, so recycled connections spread calls over replicas).

A server that stops (SIGTERM) says so on each stream (``closing``) and goes on
answering during its grace period; the client sends new calls on a new stream
(a new connection once the server's GOAWAY came: another replica) and ends the
old one when its calls are answered. The client always ends a stream first: a
call written after the server ended it would fail with INTERNAL. A stream that
breaks leaves its unanswered calls with an unknown outcome, as a unary call
whose connection broke: they fail with the stream's status. A server without
``Calls`` (UNIMPLEMENTED) gets unary calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry import trace

from dexclient.errors import status_details
from dexengine.v1 import common_pb2
from services.common import telemetry
from services.common.errors import DETAILS_KEY, RpcErrorInfo, code_of, status_message
from services.common.grpc_client import RETRY_POLICY
from services.common.grpc_server import MAX_CONNECTION_AGE_MS

log = logging.getLogger(__name__)
# Half the servers' connection age: every connection the channel opens gets new calls for a while.
ROTATE_AFTER_S = MAX_CONNECTION_AGE_MS / 2 / 1000
# The channels' retry policy for unary reads, for calls on a stream.
MAX_ATTEMPTS: int = RETRY_POLICY["maxAttempts"]  # type: ignore[assignment]
INITIAL_BACKOFF_S = float(str(RETRY_POLICY["initialBackoff"]).removesuffix("s"))
MAX_BACKOFF_S = float(str(RETRY_POLICY["maxBackoff"]).removesuffix("s"))
BACKOFF_MULTIPLIER: float = RETRY_POLICY["backoffMultiplier"]  # type: ignore[assignment]
_tracer = telemetry.tracer(__name__)


# A call that no handler saw: its stream ended cleanly before answering it (the server answers every call it reads).
NOT_HANDLED = RpcErrorInfo(
    grpc.StatusCode.UNAVAILABLE, "the server is stopping; the call was not handled", "SERVER_STOPPING"
)
UNKNOWN_REQUEST = RpcErrorInfo(grpc.StatusCode.UNIMPLEMENTED, "unknown request")


def method_name(field: str) -> str:
    """A request field's method: ``get_quotes`` -> ``GetQuotes``."""
    return "".join(part.title() for part in field.split("_"))


def _status_bytes(info: RpcErrorInfo) -> bytes:
    return status_message(info).SerializeToString()


# -- server --------------------------------------------------------------------------------------------------------


class CallAborted(Exception):
    """A handler ended its call with a status (serialized google.rpc.Status)."""

    def __init__(self, status: bytes) -> None:
        self.status = status
        super().__init__("call aborted")


class CallContext(grpc.aio.ServicerContext):
    """What a handler sees of a call that came as a message of a Calls stream."""

    def __init__(self, stream: grpc.aio.ServicerContext, header: common_pb2.CallHeader) -> None:
        self._stream = stream
        self._header = header
        self._metadata: grpc.aio.Metadata | None = None  # built when the handler asks (AUTH=off never does)
        self._deadline = time.monotonic() + header.timeout_ms / 1000 if header.timeout_ms else None

    def invocation_metadata(self) -> grpc.aio.Metadata:
        if self._metadata is None:
            # The call's own metadata first: a forwarded `authorization` is this call's caller.
            own = self._header.metadata.items()
            self._metadata = grpc.aio.Metadata(*own, *(self._stream.invocation_metadata() or ()))
        return self._metadata

    def time_remaining(self) -> float | None:  # type: ignore[override] # grpc.aio answers None without a deadline
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: grpc.aio.Metadata | Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        for key, value in trailing_metadata or ():
            if key == DETAILS_KEY:
                raise CallAborted(value if isinstance(value, bytes) else value.encode())
        raise CallAborted(_status_bytes(RpcErrorInfo(code, details)))

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        """Unused: a handler ends its call by returning or aborting (the answer carries the status)."""

    def set_details(self, details: str) -> None:
        """Unused, as set_code."""

    def peer(self) -> str:
        return str(self._stream.peer())

    def peer_identities(self) -> Any:
        return self._stream.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._stream.peer_identity_key()

    def auth_context(self) -> Any:
        return self._stream.auth_context()

    # A unary call's handler returns its response: it never reads or writes messages, nor sets metadata.
    async def read(self) -> NoReturn:
        raise RuntimeError("a call on a Calls stream is unary: nothing to read")

    async def write(self, message: Any) -> NoReturn:
        raise RuntimeError("a call on a Calls stream is unary: its handler returns its response")

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        """Nothing to send: the answer is a message of the stream, whose metadata went when it opened."""

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        """Dropped: an answer has no trailer of its own (errors travel as the status)."""

    def set_compression(self, compression: Any) -> None:
        """The stream's compression applies."""

    def disable_next_message_compression(self) -> None:
        """The stream's compression applies."""


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]
B = TypeVar("B", bound=Message)
A = TypeVar("A", bound=Message)


async def serve(
    service: str,
    requests: AsyncIterator[Any],
    context: grpc.aio.ServicerContext,
    handlers: Mapping[str, Handler],
    answer_type: Callable[..., A],
    batch_type: Callable[..., B],
    draining: asyncio.Event,
) -> AsyncIterator[B]:
    """The answers of a Calls stream, in batches: each call read from ``requests`` is run by its handler.

    When ``draining`` is set (the server is stopping), the caller is told (``closing``) and every call it still
    sends is answered; the stream ends when the caller has ended its side and every call has its answer. (The
    server never ends a stream first: a client that writes after the end sees its call fail with INTERNAL.)"""
    stream = _Answering(service, context, handlers, answer_type)
    reader = asyncio.create_task(stream.read(requests))
    closing = asyncio.ensure_future(draining.wait())
    closing.add_done_callback(stream.closing)
    try:
        while (ready := await stream.ready()) is not None:
            answers, stopping = ready
            yield batch_type(answers=answers, closing=stopping)
    finally:
        closing.cancel()
        reader.cancel()
        stream.cancel()


_CLOSING = object()  # in an outbox: tell the caller the server is stopping


class _Answering(Generic[A]):
    """The calls of one Calls stream being answered, and the answers waiting to be sent."""

    def __init__(
        self,
        service: str,
        context: grpc.aio.ServicerContext,
        handlers: Mapping[str, Handler],
        answer_type: Callable[..., A],
    ) -> None:
        self.service = service
        self.context = context
        self.handlers = handlers
        self.answer_type = answer_type
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()  # answers, _CLOSING, and None once all are answered
        self.running: set[asyncio.Task[None]] = set()
        self.finished = False

    async def read(self, requests: AsyncIterator[Any]) -> None:
        try:
            async for message in requests:
                for call in message.calls:
                    task = asyncio.create_task(self._answer(call))
                    self.running.add(task)
                    task.add_done_callback(self.running.discard)
        finally:
            if self.running:
                await asyncio.wait(set(self.running))
            self.outbox.put_nowait(None)

    async def _answer(self, call: Any) -> None:
        self.outbox.put_nowait(await _answer(self.service, call, self.context, self.handlers, self.answer_type))

    def closing(self, draining: asyncio.Future[Any]) -> None:
        if not draining.cancelled():
            self.outbox.put_nowait(_CLOSING)

    async def ready(self) -> tuple[list[A], bool] | None:
        """Every answer ready now (waiting for the first) and whether to say the server is closing; None once
        the caller ended its side and the last answer was sent."""
        if self.finished:
            return None
        items = [await self.outbox.get()]
        while not self.outbox.empty():
            items.append(self.outbox.get_nowait())
        answers = [item for item in items if item is not None and item is not _CLOSING]
        closing = _CLOSING in items
        self.finished = None in items
        return (answers, closing) if answers or closing else None

    def cancel(self) -> None:
        for task in list(self.running):
            task.cancel()


async def _answer(
    service: str,
    call: Any,
    stream: grpc.aio.ServicerContext,
    handlers: Mapping[str, Handler],
    answer_type: Callable[..., A],
) -> A:
    field = call.WhichOneof("request")
    handler = handlers.get(field) if field else None
    if handler is None:
        return answer_type(id=call.id, status=_status_bytes(UNKNOWN_REQUEST))
    context = CallContext(stream, call.header)
    with _server_span(service, field, call.header) as span:
        try:
            async with asyncio.timeout(context.time_remaining()) as deadline:
                response = await handler(getattr(call, field), context)
            return answer_type(id=call.id, **{field: response})
        except CallAborted as exc:
            status = exc.status
        except TimeoutError:
            if not deadline.expired():
                raise
            status = _status_bytes(RpcErrorInfo(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
        except Exception:
            log.exception("%s/%s failed", service, method_name(field))
            status = _status_bytes(RpcErrorInfo(grpc.StatusCode.UNKNOWN, "Unexpected error in the handler"))
        if span.is_recording():
            code = status_pb2.Status.FromString(status).code
            span.set_attribute("rpc.grpc.status_code", code)
            if code != code_pb2.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
        return answer_type(id=call.id, status=status)


def _server_span(service: str, field: str, header: common_pb2.CallHeader) -> Any:
    if not telemetry.active():
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(
        f"/{service}/{method_name(field)}",
        context=telemetry.extract(header.metadata),
        kind=trace.SpanKind.SERVER,
        attributes=_rpc_attributes(service, field),
    )


def _rpc_attributes(service: str, field: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method_name(field), "rpc.transport": "Calls"}


# -- client --------------------------------------------------------------------------------------------------------


class _Stream:
    """One open Calls call: the calls sent on it by id, and their answers."""

    def __init__(self, open_call: Callable[[AsyncIterator[Any]], Any], batch_type: Callable[..., Any]) -> None:
        self.batch_type = batch_type
        self.outgoing: asyncio.Queue[Any | None] = asyncio.Queue()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.opened = time.monotonic()
        self.retired = False
        # A context of its own: the stream outlives the call that happened to open it (its trace, its log fields).
        self.task = asyncio.create_task(self._run(open_call), name="calls-stream", context=contextvars.Context())

    def fresh(self) -> bool:
        return not self.task.done() and not self.retired and time.monotonic() - self.opened < ROTATE_AFTER_S

    def send(self, call: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[call.id] = future
        self.outgoing.put_nowait(call)
        return future

    def forget(self, call_id: int) -> None:
        self.waiting.pop(call_id, None)
        self._close_if_idle()

    def retire(self) -> None:
        """No new calls: end the stream once the last one is answered."""
        self.retired = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.retired and not self.waiting:
            self.outgoing.put_nowait(None)

    async def _calls(self) -> AsyncIterator[Any]:
        while (first := await self.outgoing.get()) is not None:
            calls = [first]
            while not self.outgoing.empty():
                more = self.outgoing.get_nowait()
                if more is None:
                    yield self.batch_type(calls=calls)
                    return
                calls.append(more)
            yield self.batch_type(calls=calls)

    async def _run(self, open_call: Callable[[AsyncIterator[Any]], Any]) -> None:
        # A stream that ends cleanly has answered every call its server read: the rest were never handled.
        failure: BaseException = _error(NOT_HANDLED.code, NOT_HANDLED.message, _status_bytes(NOT_HANDLED))
        call = None
        try:
            call = open_call(self._calls())
            async for batch in call:
                if batch.closing:
                    self.retired = True  # the server is stopping: new calls go to a new stream
                for answer in batch.answers:
                    future = self.waiting.pop(answer.id, None)
                    if future is not None and not future.done():
                        future.set_result(answer)
                self._close_if_idle()
        except grpc.aio.AioRpcError as err:
            failure = err
        except asyncio.CancelledError:
            failure = _error(grpc.StatusCode.CANCELLED, "the client closed its Calls stream")
            raise
        except Exception as exc:  # noqa: BLE001 - the channel closed under the stream: its calls end with it
            failure = _error(grpc.StatusCode.CANCELLED, f"the Calls stream ended: {exc!r}")
        finally:
            self.retired = True
            # End the request iterator too: grpc cancels its reader only for a call still running, so a call that
            # ended on its own would leave that task waiting inside ``_calls`` for good.
            self.outgoing.put_nowait(None)
            if call is not None:
                call.cancel()
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(failure)
            self.waiting.clear()


class CallStream:
    """Calls of one service over one stream at a time (see the module's docstring).

    ``open_call`` is the stub's ``Calls``; ``unary`` the stub's unary methods by request field, used when the
    server has no ``Calls``; ``retryable`` the request fields that are safe to send again on UNAVAILABLE."""

    def __init__(
        self,
        service: str,
        open_call: Callable[[AsyncIterator[Any]], Any],
        call_type: Callable[..., Any],
        batch_type: Callable[..., Any],
        unary: Mapping[str, Callable[..., Any]],
        retryable: frozenset[str],
    ) -> None:
        self.service = service
        self.open_call = open_call
        self.call_type = call_type
        self.batch_type = batch_type
        self.unary = unary
        self.retryable = retryable
        self.ids = itertools.count(1)
        self._stream: _Stream | None = None
        self._unary_until = 0.0  # the server answered UNIMPLEMENTED to Calls: unary calls until then

    def _current(self) -> _Stream:
        if self._stream is None or not self._stream.fresh():
            if self._stream is not None:
                self._stream.retire()
            self._stream = _Stream(self.open_call, self.batch_type)
        return self._stream

    async def call(
        self, field: str, request: Message, timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
    ) -> Any:
        """``request``'s response, or the AioRpcError its unary call would have raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with _client_span(self.service, field) as span:
            carried = dict(metadata)
            if span.is_recording():
                carried.update(telemetry.inject_headers())
            backoff = INITIAL_BACKOFF_S
            for attempt in itertools.count(1):
                try:
                    return await self._attempt(field, request, deadline, carried)
                except grpc.aio.AioRpcError as err:
                    # A call no handler saw is sent again whatever it is, for as long as its deadline allows.
                    retry = _not_handled(err) and (deadline is not None or attempt < MAX_ATTEMPTS)
                    retry = retry or (
                        err.code() == grpc.StatusCode.UNAVAILABLE and field in self.retryable and attempt < MAX_ATTEMPTS
                    )
                    pause = random.uniform(0, backoff)
                    if not retry or (deadline is not None and time.monotonic() + pause >= deadline):
                        if span.is_recording():
                            span.set_attribute("rpc.grpc.status_code", err.code().value[0])
                            span.set_status(trace.Status(trace.StatusCode.ERROR, err.details()))
                        raise
                    await asyncio.sleep(pause)
                    backoff = min(backoff * BACKOFF_MULTIPLIER, MAX_BACKOFF_S)
            raise AssertionError("unreachable")

    async def _attempt(self, field: str, request: Message, deadline: float | None, metadata: dict[str, str]) -> Any:
        if time.monotonic() < self._unary_until:
            return await self._unary(field, request, deadline, metadata)
        remaining = _remaining(deadline)
        stream = self._current()
        call = self.call_type(id=next(self.ids), **{field: request})
        if metadata:
            call.header.metadata.update(metadata)
        if remaining is not None:
            call.header.timeout_ms = max(int(remaining * 1000), 1)
        future = stream.send(call)
        timer = None if remaining is None else asyncio.get_running_loop().call_later(remaining, _expire, future)
        try:
            answer = await future
        except TimeoutError:
            stream.forget(call.id)
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except asyncio.CancelledError:
            stream.forget(call.id)
            raise
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A server without Calls (an older version, mid-rollout): unary calls for a while.
            self._unary_until = time.monotonic() + ROTATE_AFTER_S
            return await self._unary(field, request, deadline, metadata)
        finally:
            if timer is not None:
                timer.cancel()
        return _response(answer, field)

    async def _unary(self, field: str, request: Message, deadline: float | None, metadata: dict[str, str]) -> Any:
        return await self.unary[field](request, timeout=_remaining(deadline), metadata=tuple(metadata.items()))

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)


def _response(answer: Any, field: str) -> Any:
    kind = answer.WhichOneof("answer")
    if kind == field:
        return getattr(answer, field)
    if kind == "status":
        status = status_pb2.Status.FromString(answer.status)
        raise _error(code_of(status.code), status.message, answer.status if status.details else None)
    raise _error(grpc.StatusCode.INTERNAL, f"the answer carries {kind!r}, not {field!r}")


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _error(code: grpc.StatusCode, message: str, details: bytes | None = None) -> grpc.aio.AioRpcError:
    """The error a unary call that ended with this status raises (the rich details in its trailer)."""
    trailer = grpc.aio.Metadata((DETAILS_KEY, details)) if details is not None else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailer, message)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _not_handled(err: grpc.aio.AioRpcError) -> bool:
    return err.code() == NOT_HANDLED.code and status_details(err).reason == NOT_HANDLED.reason


def _client_span(service: str, field: str) -> Any:
    if not telemetry.active():
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(
        f"/{service}/{method_name(field)}", kind=trace.SpanKind.CLIENT, attributes=_rpc_attributes(service, field)
    )
