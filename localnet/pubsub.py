"""Solana's PubSub over WebSocket (the ``websockets`` package).

accountSubscribe, programSubscribe (with filters), signatureSubscribe (one
notification, then the subscription ends, as on a real node), slotSubscribe,
logsSubscribe (all / mentions) and their unsubscribes. Every commitment is
accepted: a landed transaction here is final. Each connection has its own
send queue; a client that stops reading is disconnected rather than allowed
to stall the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from solders.pubkey import Pubkey
from solders.signature import Signature
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from localnet.bank import View, mint_decimals
from localnet.encoding import account_encoding, encode_account, matches, parse_filters
from localnet.errors import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RpcError, invalid_params
from localnet.node import Landed, Node
from venues.onchain import Account

log = logging.getLogger("localnet.pubsub")

MAX_QUEUE = 20_000


@dataclass(eq=False)
class Conn:
    ws: ServerConnection
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    subs: set[int] = field(default_factory=set)
    closed: bool = False

    def send(self, payload: bytes) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= MAX_QUEUE:
            self.closed = True
            log.warning("subscriber too slow; disconnecting")
            asyncio.get_running_loop().create_task(self.ws.close(1008, "notification queue overflow"))
            return
        self.queue.put_nowait(payload)


@dataclass(eq=False)
class Sub:
    id: int
    conn: Conn
    kind: str
    key: Any = None
    encoding: str = "binary"
    data_slice: tuple[int, int] | None = None
    filters: list[Any] = field(default_factory=list)
    received: bool = False


class PubSub:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.ids = itertools.count(1)
        self.subs: dict[int, Sub] = {}
        self.by_account: dict[Pubkey, set[int]] = {}
        self.by_program: dict[Pubkey, set[int]] = {}
        self.by_signature: dict[str, set[int]] = {}
        self.slot_subs: set[int] = set()
        self.logs_subs: set[int] = set()
        node.listeners.append(self)

    # -- connections -----------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws)
        writer = asyncio.create_task(self._writer(conn))
        try:
            async for message in ws:
                for reply in self._handle(conn, message):
                    conn.send(reply)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            for sub_id in list(conn.subs):
                self._drop(sub_id)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _writer(self, conn: Conn) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                payload = await conn.queue.get()
                await conn.ws.send(payload.decode())

    def _handle(self, conn: Conn, message: str | bytes) -> list[bytes]:
        try:
            payload = orjson.loads(message)
        except orjson.JSONDecodeError:
            return [_error(None, RpcError(PARSE_ERROR, "Parse error"))]
        items = payload if isinstance(payload, list) else [payload]
        out = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("method"), str):
                out.append(_error(None, RpcError(INVALID_REQUEST, "Invalid request")))
                continue
            request_id = item.get("id")
            params = item.get("params") or []
            try:
                if not isinstance(params, list):
                    raise invalid_params("Invalid params: expected an array")
                result, after = self._call(conn, item["method"], params)
            except RpcError as exc:
                out.append(_error(request_id, exc))
                continue
            except (TypeError, ValueError, KeyError) as exc:
                out.append(_error(request_id, invalid_params(f"Invalid params: {exc}")))
                continue
            out.append(orjson.dumps({"jsonrpc": "2.0", "result": result, "id": request_id}))
            out.extend(after)
        return out

    def _call(self, conn: Conn, method: str, params: list[Any]) -> tuple[Any, list[bytes]]:
        if method.endswith("Unsubscribe"):
            sub_id = params[0] if params else None
            sub = self.subs.get(sub_id) if isinstance(sub_id, int) else None
            if sub is None or sub.conn is not conn or sub.kind != method[: -len("Unsubscribe")]:
                raise RpcError(INVALID_PARAMS, "Invalid subscription id.")
            self._drop(sub.id)
            return True, []
        config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        if method == "accountSubscribe":
            key = _pubkey(params[0] if params else None)
            encoding, data_slice = account_encoding(config)
            sub = self._add(conn, "account", key, encoding, data_slice)
            self.by_account.setdefault(key, set()).add(sub.id)
            return sub.id, []
        if method == "programSubscribe":
            key = _pubkey(params[0] if params else None)
            encoding, data_slice = account_encoding(config)
            sub = self._add(conn, "program", key, encoding, data_slice)
            sub.filters = parse_filters(config.get("filters"))
            self.by_program.setdefault(key, set()).add(sub.id)
            return sub.id, []
        if method == "signatureSubscribe":
            return self._signature_subscribe(conn, params[0] if params else None, config)
        if method == "slotSubscribe":
            sub = self._add(conn, "slot")
            self.slot_subs.add(sub.id)
            return sub.id, []
        if method == "logsSubscribe":
            sub = self._add(conn, "logs", _logs_mentions(params[0] if params else "all"))
            self.logs_subs.add(sub.id)
            return sub.id, []
        raise RpcError(METHOD_NOT_FOUND, "Method not found")

    def _signature_subscribe(self, conn: Conn, raw: Any, config: dict[str, Any]) -> tuple[Any, list[bytes]]:
        try:
            if not isinstance(raw, str):
                raise TypeError(raw)
            sig = str(Signature.from_string(raw))
        except (ValueError, TypeError):
            raise invalid_params("Invalid param: Invalid") from None
        sub = self._add(conn, "signature", sig)
        sub.received = bool(config.get("enableReceivedNotification"))
        status = self.node.status(sig)
        if status is not None:  # landed already: tell at once, as the subscription would have
            self._drop(sub.id)
            return sub.id, [_note("signatureNotification", sub.id, _ctx(status[0], _signature_value(status[1])))]
        self.by_signature.setdefault(sig, set()).add(sub.id)
        return sub.id, []

    def _add(
        self,
        conn: Conn,
        kind: str,
        key: Any = None,
        encoding: str = "binary",
        data_slice: tuple[int, int] | None = None,
    ) -> Sub:
        sub = Sub(next(self.ids), conn, kind, key, encoding, data_slice)
        self.subs[sub.id] = sub
        conn.subs.add(sub.id)
        return sub

    def _drop(self, sub_id: int) -> None:
        sub = self.subs.pop(sub_id, None)
        if sub is None:
            return
        sub.conn.subs.discard(sub_id)
        indexes: dict[str, dict[Any, set[int]]] = {
            "account": self.by_account,
            "program": self.by_program,
            "signature": self.by_signature,
        }
        index = indexes.get(sub.kind)
        if index is not None and sub.key in index:
            index[sub.key].discard(sub_id)
            if not index[sub.key]:
                del index[sub.key]
        self.slot_subs.discard(sub_id)
        self.logs_subs.discard(sub_id)

    # -- notifications (Node listener) --------------------------------------------------------

    def slot(self, slot: int) -> None:
        if not self.slot_subs:
            return
        value = {"parent": max(0, slot - 1), "root": max(0, slot - 32), "slot": slot}
        for sub_id in list(self.slot_subs):
            sub = self.subs[sub_id]
            sub.conn.send(_note("slotNotification", sub_id, value))

    def accounts(self, slot: int, changed: dict[Pubkey, Account | None]) -> None:
        if not (self.by_account or self.by_program):
            return
        rendered: dict[tuple[Pubkey, str, tuple[int, int] | None], Any] = {}
        view = View(self.node.store.get)

        def ui(key: Pubkey, account: Account, sub: Sub) -> Any:
            cache_key = (key, sub.encoding, sub.data_slice)
            if cache_key not in rendered:
                try:
                    rendered[cache_key] = encode_account(
                        account,
                        sub.encoding,
                        sub.data_slice,
                        key in self.node.store.executable,
                        lambda m: mint_decimals(view, m),
                    )
                except RpcError:
                    rendered[cache_key] = encode_account(account, "base64", sub.data_slice)
            return rendered[cache_key]

        for key, account in changed.items():
            for sub_id in list(self.by_account.get(key, ())):
                sub = self.subs[sub_id]
                value = ui(key, account, sub) if account is not None else _closed()
                sub.conn.send(_note("accountNotification", sub_id, _ctx(slot, value)))
            if account is None:
                continue
            for sub_id in list(self.by_program.get(account.owner, ())):
                sub = self.subs[sub_id]
                if sub.filters and not matches(account.data, sub.filters):
                    continue
                value = {"pubkey": str(key), "account": ui(key, account, sub)}
                sub.conn.send(_note("programNotification", sub_id, _ctx(slot, value)))

    def landed(self, slot: int, txs: list[Landed]) -> None:
        for tx in txs:
            for sub_id in list(self.by_signature.get(tx.signature, ())):
                sub = self.subs[sub_id]
                sub.conn.send(_note("signatureNotification", sub_id, _ctx(slot, _signature_value(tx.err))))
                self._drop(sub_id)
        if not self.logs_subs:
            return
        for tx in txs:
            value = None
            for sub_id in list(self.logs_subs):
                sub = self.subs[sub_id]
                if sub.key is not None and sub.key not in tx.keys:
                    continue
                if value is None:
                    value = _ctx(slot, {"signature": tx.signature, "err": tx.err, "logs": tx.logs})
                sub.conn.send(_note("logsNotification", sub_id, value))

    def received(self, signature: str) -> None:
        for sub_id in list(self.by_signature.get(signature, ())):
            sub = self.subs[sub_id]
            if sub.received:
                sub.conn.send(_note("signatureNotification", sub_id, _ctx(self.node.slot(), "receivedSignature")))


def _pubkey(value: Any) -> Pubkey:
    try:
        return Pubkey.from_string(value)
    except (ValueError, TypeError):
        raise invalid_params("Invalid param: Invalid") from None


def _logs_mentions(target: Any) -> Pubkey | None:
    """logsSubscribe's filter: None for "all" / "allWithVotes", else the one address of ``{"mentions": [address]}``."""
    if target in ("all", "allWithVotes"):
        return None
    if isinstance(target, dict) and isinstance(target.get("mentions"), list):
        if len(target["mentions"]) != 1:
            raise invalid_params("Invalid Request: Only 1 address supported")
        return _pubkey(target["mentions"][0])
    raise invalid_params('Invalid params: expected "all" or {"mentions": [address]}')


def _signature_value(err: Any) -> dict[str, Any]:
    """``{"err": ...}`` of a signatureNotification.

    A real node writes a custom program error as ``{"InstructionError": [i, {"Custom": n}]}``
    (as getSignatureStatuses does here too); solders 0.29 cannot parse that inside a
    signatureNotification (it drops the whole WebSocket), and reads ``[i, n]`` instead, which
    is what this sends.
    """
    if isinstance(err, dict) and "InstructionError" in err:
        index, inner = err["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            return {"err": {"InstructionError": [index, inner["Custom"]]}}
    return {"err": err}


def _ctx(slot: int, value: Any) -> dict[str, Any]:
    return {"context": {"slot": slot}, "value": value}


def _closed() -> dict[str, Any]:
    return {
        "data": ["", "base64"],
        "executable": False,
        "lamports": 0,
        "owner": "11111111111111111111111111111111",
        "rentEpoch": 0,
        "space": 0,
    }


def _note(method: str, sub_id: int, result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": {"result": result, "subscription": sub_id}})


def _error(request_id: Any, exc: RpcError) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "error": exc.body(), "id": request_id})
