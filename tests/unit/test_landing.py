"""How the executor learns a transaction's outcome, with fakes for the cluster: the stream hands a
subscription only its own notifications (also one that came before its handler), and without a
notification getSignatureStatuses answers, expiry decided only by the block height."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from solana.rpc.websocket_api import Subscription, SubscriptionKind
from solders.rpc.responses import parse_websocket_message
from solders.signature import Signature

from services.common.cluster import EARLY_NOTIFICATIONS, ClusterStream
from services.executor import landing
from services.executor.landing import Cluster


def signature_note(sub_id: int, err: Any = None, slot: int = 7) -> Any:
    message = {
        "jsonrpc": "2.0",
        "method": "signatureNotification",
        "params": {"subscription": sub_id, "result": {"context": {"slot": slot}, "value": {"err": err}}},
    }
    return parse_websocket_message(json.dumps(message))[0]


class FakeWs:
    """The part of SolanaWsClient the stream uses: subscribe answers with the next id."""

    def __init__(self, first_id: int = 1, during: Any = None) -> None:
        self.next_id = first_id
        self.during = during  # run while the subscribe is in flight
        self.unsubscribed: list[int] = []

    async def signature_subscribe(self, **_: Any) -> Subscription:
        sub = Subscription(self.next_id, SubscriptionKind.SIGNATURE)
        self.next_id += 1
        await asyncio.sleep(0)
        if self.during is not None:
            self.during(sub)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        self.unsubscribed.append(sub.subscription_id)


def connected(ws: FakeWs) -> ClusterStream:
    stream = ClusterStream("ws://unused")
    stream.client = ws  # type: ignore[assignment]
    return stream


async def test_a_notification_before_its_handler_is_handed_over_when_it_registers() -> None:
    stream: ClusterStream
    ws = FakeWs(during=lambda sub: stream._dispatch(signature_note(sub.subscription_id)))
    stream = connected(ws)
    told: list[Any] = []
    await stream.signature(Signature.default(), told.append)
    assert len(told) == 1 and told[0].value.err is None
    assert not stream.early


async def test_held_notifications_are_bounded_and_die_with_their_socket() -> None:
    stream = connected(FakeWs())
    for sub_id in range(EARLY_NOTIFICATIONS + 10):
        stream._dispatch(signature_note(10_000 + sub_id))
    assert len(stream.early) == EARLY_NOTIFICATIONS
    assert 10_000 not in stream.early  # the oldest went first
    await stream._drop()
    assert not stream.early


async def test_a_subscription_confirmed_by_a_socket_that_dropped_is_refused() -> None:
    stream: ClusterStream
    ws = FakeWs(during=lambda _: setattr(stream, "client", FakeWs()))  # reconnected meanwhile
    stream = connected(ws)
    with pytest.raises(ConnectionError):
        await stream.signature(Signature.default(), lambda _: None)
    assert not stream.handlers


async def test_unsubscribing_a_dead_sockets_subscription_leaves_the_new_ones_handler() -> None:
    old_ws = FakeWs(first_id=5)
    stream = connected(old_ws)
    old = await stream.signature(Signature.default(), lambda _: None)
    await stream._drop()
    new_ws = FakeWs(first_id=5)  # a restarted node counts its subscription ids from the start again
    stream.client = new_ws  # type: ignore[assignment]
    told: list[Any] = []
    new = await stream.signature(Signature.default(), told.append)
    assert new.subscription_id == old.subscription_id
    await stream.unsubscribe(old)
    assert new_ws.unsubscribed == []
    stream._dispatch(signature_note(5))
    assert len(told) == 1


# -- the outcome -----------------------------------------------------------------------------


@dataclass
class FakeRpc:
    """getSignatureStatuses and getBlockHeight, scripted; every call recorded."""

    statuses: list[Any] = field(default_factory=list)  # popped per call; the last one repeats
    heights: list[int] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    async def get_signature_statuses(self, signatures: list[Signature], **_: Any) -> Any:
        self.calls.append("getSignatureStatuses")
        found = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return SimpleNamespace(value=[found])

    async def get_block_height(self, *_: Any) -> Any:
        self.calls.append("getBlockHeight")
        height = self.heights.pop(0) if len(self.heights) > 1 else self.heights[0]
        return SimpleNamespace(value=height)


class SilentStream:
    """Subscribes, and never tells (a notification lost with its socket)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.unsubscribed = 0

    async def signature(self, *_: Any) -> Subscription:
        if self.fail:
            raise ConnectionError("cluster stream is not connected")
        return Subscription(1, SubscriptionKind.SIGNATURE)

    async def unsubscribe(self, _: Subscription) -> None:
        self.unsubscribed += 1


class TellingStream(SilentStream):
    def __init__(self, note: Any) -> None:
        super().__init__()
        self.note = note

    async def signature(self, _: Signature, handler: Any) -> Subscription:
        asyncio.get_running_loop().call_soon(handler, self.note.result)
        return Subscription(1, SubscriptionKind.SIGNATURE)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landing, "POLL_S", 0.01)


def landed(err: Any = None) -> Any:
    return SimpleNamespace(err=err, slot=9)


async def test_the_notification_is_the_outcome() -> None:
    rpc = FakeRpc()
    stream = TellingStream(signature_note(1, {"InstructionError": [3, 6005]}, slot=11))
    outcome = await Cluster(rpc, stream).wait(Signature.default(), 100)  # type: ignore[arg-type]
    assert outcome == landing.TxOutcome(landing.FAILED, {"InstructionError": [3, {"Custom": 6005}]}, 11)
    assert rpc.calls == [] and stream.unsubscribed == 1


async def test_without_a_notification_the_status_answers() -> None:
    rpc = FakeRpc(statuses=[None, None, landed()], heights=[50])
    outcome = await Cluster(rpc, SilentStream()).wait(Signature.default(), 100)  # type: ignore[arg-type]
    assert outcome == landing.TxOutcome(landing.LANDED, None, 9)
    assert rpc.calls.count("getSignatureStatuses") == 3


async def test_without_a_stream_the_status_is_asked_at_once() -> None:
    rpc = FakeRpc(statuses=[landed()], heights=[50])
    outcome = await Cluster(rpc, SilentStream(fail=True)).wait(Signature.default(), 100)  # type: ignore[arg-type]
    assert outcome.status == landing.LANDED and rpc.calls == ["getSignatureStatuses"]


async def test_expired_only_once_the_block_height_passed_its_last_valid_height() -> None:
    rpc = FakeRpc(statuses=[None], heights=[99, 100, 101])
    outcome = await Cluster(rpc, SilentStream()).wait(Signature.default(), 100)  # type: ignore[arg-type]
    assert outcome.status == landing.EXPIRED
    assert rpc.calls.count("getBlockHeight") == 3
    # Past its height, the status is read once more before calling it expired (it may have landed meanwhile).
    assert rpc.calls[-2:] == ["getBlockHeight", "getSignatureStatuses"]


async def test_a_signature_that_landed_just_before_its_expiry_is_landed() -> None:
    rpc = FakeRpc(statuses=[None, landed()], heights=[101])
    outcome = await Cluster(rpc, SilentStream()).wait(Signature.default(), 100)  # type: ignore[arg-type]
    assert outcome.status == landing.LANDED
