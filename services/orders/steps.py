"""Each step of an order's life, as Orders/Transition names it, and what it writes.

A step (see ``TransitionRequest``) fixes the new status, the columns the
transition sets and the typed data of the event it appends. This module is the
one place that knows it: the executor and the trigger send steps, never
columns, so the orders table is not part of any RPC contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dexengine.v1 import common_pb2, orders_pb2
from services.common import codec, states
from services.common.decimals import MAX_CANONICAL_EXPONENT, fmt, parse_decimal
from services.common.errors import FieldViolation, ValidationFailed
from services.common.validation import OrderInput


@dataclass(frozen=True)
class Columns:
    """What a transition writes besides status and seq (None: left as it is)."""

    amount_out: str | None = None
    expected_price: str | None = None
    executed_price: str | None = None
    dex_provider: str | None = None
    tx_hash: str | None = None
    error_message: str | None = None
    routing: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    signed_tx: bytes | None = None
    last_valid_block_height: int | None = None


@dataclass(frozen=True)
class Effect:
    # (status, data) of each event the step appends, in order (one, or building + submitted): the data is
    # the JSON of the status's message.
    events: tuple[tuple[str, dict[str, Any]], ...]
    columns: Columns = field(default_factory=Columns)
    new_attempt: bool = False  # a retry: the order's retry_count goes up by one

    @property
    def new(self) -> str:
        return self.events[-1][0]


def single(new: str, event: dict[str, Any], columns: Columns | None = None) -> Effect:
    return Effect(((new, event),), columns or Columns())


def _then(first: Effect, second: Effect) -> Effect:
    """Two steps committed as one: both events, and the columns of either (the second's win)."""
    merged = {
        name: getattr(second.columns, name) if getattr(second.columns, name) is not None else value
        for name, value in vars(first.columns).items()
    }
    return Effect(first.events + second.events, Columns(**merged), first.new_attempt or second.new_attempt)


def _required(violations: list[FieldViolation], path: str, value: object) -> None:
    if not value:
        violations.append(FieldViolation(path, "is required"))


def _decimal(violations: list[FieldViolation], path: str, raw: str) -> str:
    value = parse_decimal(raw)
    if value is None or value < 0 or value.adjusted() > MAX_CANONICAL_EXPONENT:
        violations.append(FieldViolation(path, "must be a non-negative decimal string"))
        return ""
    return fmt(value)


def _error(code: str, reason: str) -> str:
    return f"{code}: {reason}"


def effect(request: orders_pb2.TransitionRequest, expected: str) -> Effect:
    """The new status, columns and event of ``request``'s step (ValidationFailed naming the field if malformed)."""
    step = request.WhichOneof("step")
    if step is None:
        raise ValidationFailed([FieldViolation("step", "is required (begin, fire, expire, route, submit, ...)")])
    violations: list[FieldViolation] = []
    sources, build = _STEPS[step]
    result = build(request, expected, violations)
    path = [expected, *(status for status, _ in result.events)]
    if expected not in sources or not all(states.is_legal(a, b) for a, b in itertools.pairwise(path)):
        violations.append(FieldViolation(step, f"cannot follow {expected} ({' -> '.join(path)} is not legal)"))
    if violations:
        raise ValidationFailed(violations)
    return result


def _attempt_begins(attempt: int, path: str, violations: list[FieldViolation]) -> Effect:
    """pending -> routing: the ``routing`` event of a first attempt."""
    if attempt < 1:
        violations.append(FieldViolation(path, "must be at least 1"))
    return single(states.ROUTING, codec.to_json(common_pb2.RoutingEvent(attempt=attempt)))


def _begin(request: orders_pb2.TransitionRequest, expected: str, violations: list[FieldViolation]) -> Effect:
    return _attempt_begins(request.begin.attempt, "begin.attempt", violations)


def _route_submit(request: orders_pb2.TransitionRequest, expected: str, violations: list[FieldViolation]) -> Effect:
    """The decision and the transaction signed from it in one commit (building, then submitted); from pending,
    the attempt's ``routing`` event comes first in the same commit (the quote was taken while it was pending)."""
    routing = request.route_submit.routing
    decided = _then(
        _route(routing, violations, "route_submit.routing"),
        _submit(request.route_submit.submit, violations, "route_submit.submit"),
    )
    if expected != states.PENDING:
        return decided
    return _then(_attempt_begins(routing.attempt, "route_submit.routing.attempt", violations), decided)


def _fire(request: orders_pb2.TransitionRequest, expected: str, violations: list[FieldViolation]) -> Effect:
    trigger = request.fire.triggered
    _required(violations, "fire.triggered.kind", trigger.kind)
    return single(states.ROUTING, codec.to_json(common_pb2.RoutingEvent(attempt=1, triggered=trigger)))


def _expire(request: orders_pb2.TransitionRequest, expected: str, violations: list[FieldViolation]) -> Effect:
    _required(violations, "expire.expires_at", request.expire.expires_at)
    return single(states.EXPIRED, codec.to_json(common_pb2.ExpiredEvent(expires_at=request.expire.expires_at)))


def _retry(request: orders_pb2.TransitionRequest, expected: str, violations: list[FieldViolation]) -> Effect:
    retry = request.retry
    _required(violations, "retry.code", retry.code)
    if retry.attempt < 2:
        violations.append(FieldViolation("retry.attempt", "must be at least 2 (the attempt that begins)"))
    event = common_pb2.RoutingEvent(
        attempt=retry.attempt,
        retry_in=f"{retry.retry_in_ms / 1000:g}s",
        code=retry.code,
        reason=retry.reason,
        previous_status=expected,
    )
    columns = Columns(error_message=_error(retry.code, retry.reason))
    return Effect(((states.ROUTING, codec.to_json(event)),), columns, new_attempt=True)


def _fail(request: orders_pb2.TransitionRequest, expected: str, violations: list[FieldViolation]) -> Effect:
    fail = request.fail
    _required(violations, "fail.code", fail.code)
    event = common_pb2.FailedEvent(attempt=fail.attempt, code=fail.code, reason=fail.reason)
    return single(states.FAILED, codec.to_json(event), Columns(error_message=_error(fail.code, fail.reason)))


def _route(routing: common_pb2.Routing, violations: list[FieldViolation], path: str = "route.routing") -> Effect:
    _required(violations, f"{path}.venue", routing.venue)
    if not routing.legs:
        violations.append(FieldViolation(f"{path}.legs", "must name at least one leg"))
    expected_price = _decimal(violations, f"{path}.expected_price", routing.expected_price)
    record = codec.to_json(routing)
    columns = Columns(routing=record, dex_provider=routing.venue, expected_price=expected_price or None)
    return single(states.BUILDING, record, columns)


def _submit(submit: orders_pb2.Submit, violations: list[FieldViolation], path: str = "submit") -> Effect:
    signed, execution = submit.signed, submit.execution
    _required(violations, f"{path}.signed.signature", signed.signature)
    _required(violations, f"{path}.signed.transaction", signed.transaction)
    _required(violations, f"{path}.signed.last_valid_block_height", signed.last_valid_block_height)
    if execution.signature != signed.signature:
        violations.append(FieldViolation(f"{path}.execution.signature", "must be the signed transaction's signature"))
    event = common_pb2.SubmittedEvent(
        attempt=execution.attempt,
        tx_hash=signed.signature,
        venue=execution.venue,
        min_amount_out=execution.min_amount_out,
    )
    columns = Columns(
        tx_hash=signed.signature,
        execution=codec.to_json(execution),
        signed_tx=signed.transaction,
        last_valid_block_height=signed.last_valid_block_height,
    )
    return single(states.SUBMITTED, codec.to_json(event), columns)


def _confirm(confirm: orders_pb2.Confirm, violations: list[FieldViolation]) -> Effect:
    execution = confirm.execution
    amount_out = _decimal(violations, "confirm.amount_out", confirm.amount_out)
    executed_price = _decimal(violations, "confirm.executed_price", confirm.executed_price)
    _required(violations, "confirm.execution.signature", execution.signature)
    event = common_pb2.ConfirmedEvent(
        tx_hash=execution.signature,
        executed_price=executed_price,
        amount_out=amount_out,
        venue=execution.venue,
        quoted_out=execution.quoted_out,
        improvement_bps=execution.improvement_bps,
    )
    columns = Columns(
        amount_out=amount_out or None,
        executed_price=executed_price or None,
        execution=codec.to_json(execution),
    )
    return single(states.CONFIRMED, codec.to_json(event), columns)


Builder = Callable[[orders_pb2.TransitionRequest, str, list[FieldViolation]], Effect]
_LIVE = frozenset(s for s in states.ORDERED if s not in states.TERMINAL)

# Each step: the statuses it may start from (with states.is_legal, every other pairing is INVALID_ARGUMENT)
# and what it writes.
_STEPS: dict[str, tuple[frozenset[str], Builder]] = {
    "begin": (frozenset({states.PENDING}), _begin),
    "fire": (frozenset({states.WAITING}), _fire),
    "expire": (frozenset({states.WAITING}), _expire),
    "route": (frozenset({states.ROUTING}), lambda request, _, violations: _route(request.route.routing, violations)),
    "submit": (frozenset({states.BUILDING}), lambda request, _, violations: _submit(request.submit, violations)),
    # (pending ->) routing -> building -> submitted in one commit: the decision and the transaction signed from it.
    "route_submit": (frozenset({states.PENDING, states.ROUTING}), _route_submit),
    "confirm": (
        frozenset({states.SUBMITTED}),
        lambda request, _, violations: _confirm(request.confirm, violations),
    ),
    # From pending too: a first attempt that failed before its route_submit committed (no route, say).
    "retry": (frozenset({states.PENDING, *states.RETRY}), _retry),
    "fail": (_LIVE, _fail),
}


def cancelled() -> dict[str, Any]:
    """The data of the event of a cancel (Orders/CancelOrder)."""
    return codec.to_json(common_pb2.CancelledEvent(by="client"))


def pending(order: OrderInput) -> dict[str, Any]:
    """The data of an order's first event."""
    return codec.to_json(
        common_pb2.PendingEvent(token_in=order.token_in, token_out=order.token_out, amount_in=fmt(order.amount_in))
    )


def waiting(order: OrderInput) -> dict[str, Any]:
    """What an armed order waits for: the data of its ``waiting`` event."""
    event = common_pb2.WaitingEvent(
        type=order.type, token_in=order.token_in, token_out=order.token_out, amount_in=fmt(order.amount_in)
    )
    if order.limit_price is not None:
        event.limit_price = fmt(order.limit_price)
    if order.min_liquidity is not None:
        event.min_liquidity = fmt(order.min_liquidity)
    if order.expires_at is not None:
        event.expires_at = codec.iso(order.expires_at)
    return codec.to_json(event)
