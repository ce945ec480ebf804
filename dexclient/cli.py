"""``dexctl``: the engine from a shell.

Talks HTTP and WebSocket to the gateway (``--url`` / ``DEXENGINE_URL``) by
default, gRPC to the services with ``--grpc``; ``quote`` asks the router and
``keys`` the orders service over gRPC in either case. The API key comes from
``--api-key`` / ``DEXENGINE_API_KEY``, the internal token for ``keys`` from
``--admin-token`` / ``DEXENGINE_ADMIN_TOKEN``.

On a terminal the output is for people (a live line per stage, with its
time); otherwise, or with ``--json``, it is JSON (one line per event).

Exit codes: 0 done (an order watched to ``confirmed``), 1 an order watched to
``failed`` (or expired, cancelled), 2 an error (bad input, refused, the
engine unreachable, a broken stream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
import websockets
from websockets.asyncio.client import connect as ws_connect

from dexclient import tokens
from dexclient.aio import AsyncClient
from dexclient.errors import DexError, Unavailable, from_http
from dexclient.models import STATUSES, TERMINAL

OK, FAILED, ERROR = 0, 1, 2
DEFAULT_URL = "http://localhost:3000"
RECONNECTS = 5
HTTP_ATTEMPTS = 3
Event = dict[str, Any]


# ---------------------------------------------------------------- output


class Output:
    def __init__(self, human: bool) -> None:
        self.human = human
        self.origin: dict[str, datetime] = {}  # per order: when it was created (elapsed times count from it)

    @staticmethod
    def line(text: str = "") -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    @staticmethod
    def error(text: str) -> None:
        sys.stderr.write(f"dexctl: {text}\n")
        sys.stderr.flush()

    def json(self, value: Any) -> None:
        self.line(json.dumps(value, indent=2 if self.human else None, default=str))

    def event(self, event: Event, many: bool = False) -> None:
        if not self.human:
            self.line(json.dumps(event, separators=(",", ":")))
            return
        order_id = event["orderId"]
        data = event.get("data") or {}
        stamp = _parse_time(event.get("timestamp"))
        if order_id not in self.origin:  # the order's creation if this event tells it, else its first event
            snapshot_created = (data.get("order") or {}).get("createdAt") if data.get("snapshot") else None
            origin = _parse_time(snapshot_created) or stamp
            if origin is not None:
                self.origin[order_id] = origin
        origin = self.origin.get(order_id)
        clock = stamp.astimezone().strftime("%H:%M:%S.%f")[:-3] if stamp else "--:--:--.---"
        elapsed = f"+{(stamp - origin).total_seconds():.3f}s" if stamp and origin else ""
        prefix = f"{order_id[:8]}  " if many else ""
        self.line(f"{prefix}{clock}  {elapsed:>9}  {event['status']:<10} {describe(event)}".rstrip())


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _pair(amount: Any, token_in: Any, token_out: Any) -> str:
    return f"{amount or '?'} {tokens.symbol(str(token_in or ''))} → {tokens.symbol(str(token_out or ''))}"


def describe(event: Event) -> str:
    """What a stage says, in a few words."""
    data = event.get("data") or {}
    status = event["status"]
    if data.get("snapshot"):
        order = data.get("order") or {}
        return f"(current state) {_pair(order.get('amountIn'), order.get('tokenIn'), order.get('tokenOut'))}"
    if status == "pending":
        return _pair(data.get("amountIn"), data.get("tokenIn"), data.get("tokenOut"))
    if status == "routing":
        retry = f", retry after {data['code']}" if data.get("code") else ""
        return f"attempt {data.get('attempt', 1)}{retry}"
    if status == "building":
        quotes = ", ".join(f"{q.get('venue')} {q.get('amountOut')}" for q in data.get("quotes") or [])
        route = f"route {data.get('venue', '?')} → {data.get('amountOut', '?')} ({quotes})"
        return f"{route}; {data['reason']}" if data.get("reason") else route
    if status == "submitted":
        tx = str(data.get("txHash") or "")
        return f"tx {tx[:8]}…{tx[-8:]}" if tx else ""
    if status == "confirmed":
        return f"{data.get('amountOut', '?')} out at {data.get('executedPrice', '?')} on {data.get('venue', '?')}"
    if status in TERMINAL:
        return f"{data.get('code', '')}: {data.get('reason', '')}".strip(": ")
    return ""


def outcome(statuses: dict[str, str]) -> int:
    """Exit code of watched orders: 0 all confirmed, 1 any ended otherwise, 2 any unfinished."""
    if any(s not in TERMINAL for s in statuses.values()):
        return ERROR
    return OK if all(s == "confirmed" for s in statuses.values()) else FAILED


# ---------------------------------------------------------------- transports


class Transport(Protocol):
    async def submit(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]: ...
    async def get(self, order_id: str) -> dict[str, Any]: ...
    async def list_orders(self, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]: ...
    async def cancel(self, order_id: str) -> dict[str, Any]: ...
    def watch(self, order_ids: list[str], url: str | None = None) -> AsyncIterator[Event]: ...
    def watch_mine(self) -> AsyncIterator[Event]: ...
    async def close(self) -> None: ...


class HttpTransport:
    """The gateway: HTTP for calls, WebSockets (the ``websockets`` package) for status streams."""

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), headers=self.headers)
        self.timeout = timeout

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(1, HTTP_ATTEMPTS + 1):
            try:
                async with self.session.request(method, f"{self.url}{path}", **kwargs) as resp:
                    body = await resp.json(content_type=None) if resp.content_length != 0 else None
                    if resp.status >= 400:
                        raise from_http(resp.status, body, resp.headers.get("Retry-After"))
                    return body
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                # Every call here is safe to repeat: reads, cancel, and POSTs with an Idempotency-Key.
                if attempt == HTTP_ATTEMPTS:
                    raise Unavailable("UNAVAILABLE", f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    async def submit(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request(
            "POST", "/api/orders/execute", json=body, headers={"Idempotency-Key": idempotency_key}
        )
        return answer

    async def get(self, order_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", f"/api/orders/{order_id}")
        return answer

    async def list_orders(self, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        params: dict[str, str] = {"limit": str(limit)}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        answer: dict[str, Any] = await self._request("GET", "/api/orders", params=params)
        return answer

    async def cancel(self, order_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("POST", f"/api/orders/{order_id}/cancel")
        return answer

    def _ws_url(self, path: str) -> str:
        return self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + path

    async def _socket(self, url: str, hello: list[dict[str, Any]]) -> AsyncIterator[Event]:
        """Frames of a WebSocket, reopened after 1013 (each time ``hello`` is sent again)."""
        delay = 0.2
        for attempt in range(RECONNECTS + 1):
            try:
                async with ws_connect(
                    url, additional_headers=self.headers, open_timeout=self.timeout, max_size=2**24
                ) as ws:
                    for message in hello:
                        await ws.send(json.dumps(message))
                    async for raw in ws:
                        yield json.loads(raw)
                    return
            except websockets.InvalidStatus as exc:
                body = exc.response.body or b""
                with contextlib.suppress(ValueError):
                    raise from_http(exc.response.status_code, json.loads(body)) from None
                raise from_http(exc.response.status_code, None) from None
            except (websockets.ConnectionClosedError, OSError, TimeoutError) as exc:
                code = exc.rcvd.code if isinstance(exc, websockets.ConnectionClosedError) and exc.rcvd else None
                if attempt == RECONNECTS or (code is not None and code != 1013):
                    raise Unavailable("UNAVAILABLE", f"status stream broke off ({code or exc})") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3)

    async def watch(self, order_ids: list[str], url: str | None = None) -> AsyncIterator[Event]:
        """Events of these orders until each is terminal: one socket per order (``url``) or the multiplexed one."""
        last: dict[str, int] = {}
        if url is not None and len(order_ids) == 1:
            frames = self._socket(url, [])
        else:
            frames = self._socket(self._ws_url("/ws/orders"), [{"subscribe": order_ids}])
        open_ids = set(order_ids)
        async for frame in frames:
            if "error" in frame:
                raise from_http(404 if frame["error"].get("code") == "ORDER_NOT_FOUND" else 400, frame)
            if "orderId" not in frame or "seq" not in frame:
                continue  # an acknowledgement
            if frame["seq"] <= last.get(frame["orderId"], 0):
                continue
            last[frame["orderId"]] = frame["seq"]
            yield frame
            if frame["status"] in TERMINAL:
                open_ids.discard(frame["orderId"])
                if not open_ids:
                    return

    async def watch_mine(self) -> AsyncIterator[Event]:
        last: dict[str, int] = {}
        async for frame in self._socket(self._ws_url("/ws/orders"), [{"subscribe": "mine"}]):
            if "error" in frame:
                raise from_http(400, frame)
            if "seq" in frame and frame["seq"] > last.get(frame["orderId"], 0):
                last[frame["orderId"]] = frame["seq"]
                yield frame

    async def close(self) -> None:
        await self.session.close()


class GrpcTransport:
    """The services directly, through dexclient.AsyncClient."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def submit(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        extra = {_SNAKE[k]: v for k, v in body.items() if k in _SNAKE}
        placed = await self.client.create_order(
            body["tokenIn"],
            body["tokenOut"],
            body["amountIn"],
            body["slippage"],
            type=body.get("type", "market"),
            idempotency_key=idempotency_key,
            **extra,
        )
        return {"orderId": placed.order.id, "status": placed.order.status, "created": placed.created}

    async def get(self, order_id: str) -> dict[str, Any]:
        return (await self.client.get_order(order_id)).to_json()

    async def list_orders(self, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        page = await self.client.list_orders(status=status, limit=limit, cursor=cursor)
        return {"orders": [o.to_json() for o in page.orders], "nextCursor": page.next_cursor}

    async def cancel(self, order_id: str) -> dict[str, Any]:
        return (await self.client.cancel_order(order_id)).to_json()

    async def watch(self, order_ids: list[str], url: str | None = None) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        async def pump(order_id: str) -> None:
            try:
                async for event in self.client.watch(order_id):
                    await queue.put(event.to_json())
                await queue.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader
                await queue.put(exc)

        tasks = [asyncio.create_task(pump(order_id)) for order_id in order_ids]
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()

    async def watch_mine(self) -> AsyncIterator[Event]:
        async for event in self.client.watch_mine():
            yield event.to_json()

    async def close(self) -> None:
        await self.client.close()


_SNAKE = {"limitPrice": "limit_price", "minLiquidity": "min_liquidity", "expiresAt": "expires_at"}


# ---------------------------------------------------------------- commands


async def cmd_submit(args: argparse.Namespace, out: Output, api: Transport) -> int:
    body: dict[str, Any] = {
        "tokenIn": tokens.resolve(args.token_in),
        "tokenOut": tokens.resolve(args.token_out),
        "amountIn": _decimal(args.amount, "AMOUNT"),
        "slippage": _decimal(args.slippage, "--slippage"),
    }
    if args.type != "market":
        body["type"] = args.type
    for option, field in (
        ("limit_price", "limitPrice"),
        ("min_liquidity", "minLiquidity"),
        ("expires_at", "expiresAt"),
    ):
        value = getattr(args, option)
        if value is not None:
            body[field] = value
    answer = await api.submit(body, args.idempotency_key or str(uuid.uuid4()))
    if not args.watch:
        if out.human:
            out.line(f"order {answer['orderId']} {answer['status']}")
            out.line(f"watch it: dexctl watch {answer['orderId']}")
        else:
            out.json(answer)
        return OK
    if out.human:
        out.line(f"order {answer['orderId']} accepted; watching (Ctrl-C stops watching, not the order)")
    return await _follow(out, api, [answer["orderId"]], answer.get("websocketUrl"))


async def _follow(out: Output, api: Transport, order_ids: list[str], url: str | None = None) -> int:
    statuses = dict.fromkeys(order_ids, "")
    async for event in api.watch(order_ids, url):
        statuses[event["orderId"]] = event["status"]
        out.event(event, many=len(order_ids) > 1)
    return outcome(statuses)


async def cmd_watch(args: argparse.Namespace, out: Output, api: Transport) -> int:
    if args.mine:
        if args.order_ids:
            raise DexError("INVALID_ARGUMENT", "give order ids or --mine, not both")
        async for event in api.watch_mine():
            out.event(event, many=True)
        return OK
    if not args.order_ids:
        raise DexError("INVALID_ARGUMENT", "give one or more order ids, or --mine")
    return await _follow(out, api, list(dict.fromkeys(args.order_ids)))


async def cmd_get(args: argparse.Namespace, out: Output, api: Transport) -> int:
    out.json(await api.get(args.order_id))
    return OK


async def cmd_list(args: argparse.Namespace, out: Output, api: Transport) -> int:
    page = await api.list_orders(args.status, args.limit, args.cursor)
    if not out.human:
        out.json(page)
        return OK
    rows = [
        (
            o["orderId"],
            o["status"],
            f"{tokens.symbol(o['tokenIn'])}→{tokens.symbol(o['tokenOut'])}",
            o["amountIn"],
            o.get("amountOut") or "",
            o.get("dexProvider") or "",
            (o.get("createdAt") or "")[:23],
        )
        for o in page["orders"]
    ]
    table(out, ("ORDER", "STATUS", "PAIR", "IN", "OUT", "VENUE", "CREATED"), rows)
    if page.get("nextCursor"):
        out.line(f"more: dexctl list --cursor {page['nextCursor']}")
    return OK


async def cmd_cancel(args: argparse.Namespace, out: Output, api: Transport) -> int:
    order = await api.cancel(args.order_id)
    if out.human:
        out.line(f"order {order['orderId']} {order['status']}")
    else:
        out.json(order)
    return OK


async def cmd_quote(args: argparse.Namespace, out: Output, client: AsyncClient) -> int:
    quotes = await client.quote(args.token_in, args.token_out, _decimal(args.amount, "AMOUNT"), args.slippage)
    if not out.human:
        out.json(quotes.to_json())
        return OK
    rows = [
        (q.venue, _fmt(q.amount_out), _fmt(q.price), _fmt(q.fee), _fmt(q.price_impact), f"{q.latency_ms} ms")
        for q in quotes.quotes
    ]
    table(out, ("VENUE", "AMOUNT OUT", "PRICE", "FEE", "IMPACT", "LATENCY"), rows)
    for venue, why in quotes.excluded.items():
        out.line(f"excluded {venue}: {why}")
    legs = ", ".join(f"{leg.venue} {_fmt(leg.amount_in)} → {_fmt(leg.amount_out)}" for leg in quotes.legs)
    out.line(f"route: {quotes.venue} ({legs}) → {_fmt(quotes.amount_out)}, at least {_fmt(quotes.min_amount_out)}")
    out.line(f"why: {quotes.reason}")
    return OK


async def cmd_keys(args: argparse.Namespace, out: Output, client: AsyncClient) -> int:
    if args.keys_command == "create":
        new = await client.create_key(args.name, quota_per_min=args.quota)
        if out.human:
            quota = f"{new.key.quota_per_min}/min" if new.key.quota_per_min else "the default quota"
            out.line(f"created key {new.key.name!r}: id {new.key.id}, {quota}")
            out.line("store it now, it is not shown again:")
        else:
            out.json(new.key.to_json())
        out.line(new.secret)  # alone on the last line
        return OK
    if args.keys_command == "list":
        keys = await client.list_keys(include_revoked=args.all)
        if not out.human:
            out.json([k.to_json() for k in keys])
            return OK
        rows = [
            (
                k.id,
                k.name,
                k.prefix + "…",
                str(k.quota_per_min or "default"),
                _stamp(k.created_at),
                _stamp(k.revoked_at) if k.revoked_at else "active",
            )
            for k in keys
        ]
        table(out, ("ID", "NAME", "KEY", "QUOTA/MIN", "CREATED", "REVOKED"), rows)
        return OK
    key = await client.revoke_key(args.key)
    if out.human:
        out.line(f"revoked key {key.name!r} ({key.id}) at {_stamp(key.revoked_at)}")
    else:
        out.json(key.to_json())
    return OK


def table(out: Output, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        out.line("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def _stamp(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _fmt(value: Decimal | None) -> str:
    return "" if value is None else format(value.normalize(), "f")


def _decimal(text: str, name: str) -> str:
    try:
        Decimal(text)
    except ArithmeticError:
        raise DexError("INVALID_ARGUMENT", f"{name} must be a decimal number, got {text!r}") from None
    return text


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"gateway URL (DEXENGINE_URL, {DEFAULT_URL})")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (DEXENGINE_API_KEY)")
    common.add_argument("--grpc", action="store_true", default=argparse.SUPPRESS, help="talk gRPC to the services")
    common.add_argument("--orders", default=argparse.SUPPRESS, help="orders target (DEXENGINE_ORDERS, 127.0.0.1:50051)")
    common.add_argument(
        "--notifier", default=argparse.SUPPRESS, help="notifier target (DEXENGINE_NOTIFIER, 127.0.0.1:50054)"
    )
    common.add_argument("--router", default=argparse.SUPPRESS, help="router target (DEXENGINE_ROUTER, 127.0.0.1:50052)")
    common.add_argument(
        "--admin-token", default=argparse.SUPPRESS, help="internal token for `keys` (DEXENGINE_ADMIN_TOKEN)"
    )
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds per call (10)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output on a terminal too")

    parser = argparse.ArgumentParser(
        prog="dexctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", parents=[common], help="submit an order")
    submit.add_argument("token_in", metavar="TOKEN_IN", help="mint address or symbol (SOL, USDC, …)")
    submit.add_argument("token_out", metavar="TOKEN_OUT")
    submit.add_argument("amount", metavar="AMOUNT", help="whole tokens of TOKEN_IN, e.g. 1.5")
    submit.add_argument("--slippage", default="0.01", help="a fraction: 0.01 = 1 %% (default)")
    submit.add_argument("--type", default="market", help="market (default), limit or sniper")
    submit.add_argument("--limit-price", help="limit orders: least TOKEN_OUT per TOKEN_IN")
    submit.add_argument("--min-liquidity", help="sniper orders: the least pool liquidity, in TOKEN_IN")
    submit.add_argument("--expires-at", help="limit and sniper orders: RFC 3339 time")
    submit.add_argument("--idempotency-key", help="the same key and body give the same order (default: a new key)")
    submit.add_argument("--watch", action="store_true", help="follow the order to its end (exit 0 confirmed, 1 failed)")

    watch = commands.add_parser("watch", parents=[common], help="follow orders to their end, or every order of yours")
    watch.add_argument("order_ids", nargs="*", metavar="ORDER_ID")
    watch.add_argument("--mine", action="store_true", help="every order of your key, new ones included (Ctrl-C ends)")

    get = commands.add_parser("get", parents=[common], help="one order with its history")
    get.add_argument("order_id", metavar="ORDER_ID")

    listing = commands.add_parser("list", parents=[common], help="recent orders, most recent first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor")

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a pending or waiting order")
    cancel.add_argument("order_id", metavar="ORDER_ID")

    quote = commands.add_parser("quote", parents=[common], help="both venues' quotes and the route (Router/GetQuotes)")
    quote.add_argument("token_in", metavar="TOKEN_IN")
    quote.add_argument("token_out", metavar="TOKEN_OUT")
    quote.add_argument("amount", metavar="AMOUNT")
    quote.add_argument("--slippage", default="0.01")

    keys = commands.add_parser("keys", parents=[common], help="API keys (admin: the internal token)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="create|list|revoke")
    create = key_commands.add_parser("create", parents=[common], help="a new key, shown once (last line)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--quota", type=int, default=0, help="orders per minute (default: the engine's)")
    listed = key_commands.add_parser("list", parents=[common], help="keys, newest first")
    listed.add_argument("--all", action="store_true", help="revoked keys too")
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key by id or name")
    revoke.add_argument("key", metavar="KEY")
    return parser


def settings(args: argparse.Namespace) -> dict[str, Any]:
    env = os.environ
    return {
        "url": getattr(args, "url", None) or env.get("DEXENGINE_URL") or DEFAULT_URL,
        "api_key": getattr(args, "api_key", None) or env.get("DEXENGINE_API_KEY") or None,
        "grpc": getattr(args, "grpc", False),
        "orders": getattr(args, "orders", None) or env.get("DEXENGINE_ORDERS") or "127.0.0.1:50051",
        "notifier": getattr(args, "notifier", None) or env.get("DEXENGINE_NOTIFIER") or "127.0.0.1:50054",
        "router": getattr(args, "router", None) or env.get("DEXENGINE_ROUTER") or "127.0.0.1:50052",
        "admin_token": getattr(args, "admin_token", None) or env.get("DEXENGINE_ADMIN_TOKEN") or None,
        "timeout": getattr(args, "timeout", None) or 10.0,
        "json": getattr(args, "json", False),
    }


async def run(args: argparse.Namespace) -> int:
    conf = settings(args)
    out = Output(human=sys.stdout.isatty() and not conf["json"])
    client = AsyncClient.connect(
        conf["orders"],
        conf["notifier"],
        conf["router"],
        api_key=conf["api_key"],
        admin_token=conf["admin_token"],
        timeout=conf["timeout"],
    )
    api: Transport = (
        GrpcTransport(client) if conf["grpc"] else HttpTransport(conf["url"], conf["api_key"], conf["timeout"])
    )
    handlers: dict[str, Callable[..., Any]] = {
        "submit": lambda: cmd_submit(args, out, api),
        "watch": lambda: cmd_watch(args, out, api),
        "get": lambda: cmd_get(args, out, api),
        "list": lambda: cmd_list(args, out, api),
        "cancel": lambda: cmd_cancel(args, out, api),
        "quote": lambda: cmd_quote(args, out, client),
        "keys": lambda: cmd_keys(args, out, client),
    }
    try:
        code: int = await handlers[args.command]()
        return code
    except DexError as exc:
        out.error(str(exc))
        if exc.retry_after_s:
            out.error(f"retry after {exc.retry_after_s:g} s")
        return ERROR
    except ValueError as exc:  # an unknown token symbol
        out.error(str(exc))
        return ERROR
    finally:
        await api.close()
        if conf["grpc"] is False:
            await client.close()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()
