"""dexctl as a subprocess against in-process servers (AUTH=apikey): exit codes, outputs, both transports.

The test moves each order itself (as the executor would), so every ending —
confirmed, failed — is chosen, not hoped for.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from dexengine.v1 import orders_pb2
from tests.support import dexctl, transitions
from tests.support.client import SOL, USDC
from tests.support.secured import INTERNAL_TOKEN, Secured
from tests.support.transitions import advance


def env_for(secured: Secured, api_key: str | None = None) -> dict[str, str]:
    env = {
        "DEXENGINE_URL": secured.http,
        "DEXENGINE_ORDERS": secured.orders_target,
        "DEXENGINE_NOTIFIER": secured.notifier_target,
        "DEXENGINE_ADMIN_TOKEN": INTERNAL_TOKEN,
    }
    if api_key:
        env["DEXENGINE_API_KEY"] = api_key
    return env


async def fail_order(secured: Secured, order_id: str) -> None:
    await secured.service.Transition(transitions.request(order_id, "pending", "failed"), timeout=5)


async def test_keys_create_prints_the_key_alone_on_the_last_line_then_list_and_revoke(secured: Secured) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    created = await dexctl.run("keys", "create", name, "--quota", "50", env=env_for(secured))
    assert created.code == 0, created.stderr
    secret = created.lines[-1]
    assert re.fullmatch(r"dex_[A-Za-z0-9_-]{43}", secret), created.stdout
    info = orjson.loads(created.lines[0])
    assert (info["name"], info["quotaPerMin"]) == (name, 50)
    who = await secured.orders.WhoAmI(
        orders_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {secret}"),), timeout=5
    )
    assert who.key.name == name

    listed = await dexctl.run("keys", "list", env=env_for(secured))
    assert listed.code == 0 and name in {k["name"] for k in orjson.loads(listed.stdout)}
    assert secret not in listed.stdout, "a key is shown once"
    revoked = await dexctl.run("keys", "revoke", name, env=env_for(secured))
    assert revoked.code == 0 and orjson.loads(revoked.stdout)["revokedAt"]
    refused = await dexctl.run("list", env=env_for(secured, secret))
    assert refused.code == 2 and "API_KEY_REVOKED" in refused.stderr

    no_token = await dexctl.run("keys", "list", env={**env_for(secured), "DEXENGINE_ADMIN_TOKEN": ""})
    assert no_token.code == 2 and "API_KEY_MISSING" in no_token.stderr


async def test_submit_watch_exit_codes_confirmed_0_failed_1(secured: Secured) -> None:
    _, secret = await secured.new_key(f"cli-{uuid.uuid4().hex[:6]}")
    for grpc_mode in (False, True):
        for ending, expected in (("confirmed", 0), ("failed", 1)):
            args = ["submit", "SOL", "USDC", "1.5", "--slippage", "0.02", "--watch"]
            async with dexctl.started(*args, *(["--grpc"] if grpc_mode else []), env=env_for(secured, secret)) as cli:
                first = orjson.loads(await cli.line())
                order_id = first["orderId"]
                if ending == "confirmed":
                    await advance(secured.service, order_id, 0.02)
                else:
                    await fail_order(secured, order_id)
                result = await cli.finish()
            events = result.json_lines()
            assert result.code == expected, (grpc_mode, ending, result)
            assert events[-1]["status"] == ending
            seqs = [e["seq"] for e in events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
            assert {e["orderId"] for e in events} == {order_id}


async def test_watch_on_a_terminal_shows_each_stage_with_its_time(secured: Secured) -> None:
    _, secret = await secured.new_key(f"cli-{uuid.uuid4().hex[:6]}")
    async with dexctl.started("submit", "SOL", "USDC", "2", "--watch", env=env_for(secured, secret), tty=True) as cli:
        accepted = await cli.line()
        order_id = re.search(r"order ([0-9a-f-]{36}) accepted", accepted).group(1)  # type: ignore[union-attr]
        await cli.line()  # the current state (pending or a snapshot)
        await advance(secured.service, order_id, 0.05)
        result = await cli.finish()
    assert result.code == 0, result
    print("\n".join(result.lines))  # noqa: T201 - shown with -s: what a person sees
    stages = [line for line in result.lines[1:] if line.strip()]
    assert [line.split()[2] for line in stages][-4:] == ["routing", "building", "submitted", "confirmed"]
    for line in stages:
        assert re.match(r"\d\d:\d\d:\d\d\.\d{3}\s+\+\d+\.\d{3}s\s+\w+", line), line


async def test_watch_many_orders_over_one_socket(secured: Secured) -> None:
    _, secret = await secured.new_key(f"cli-{uuid.uuid4().hex[:6]}")
    ids = [
        (
            await secured.orders.CreateOrder(
                orders_pb2.CreateOrderRequest(token_in=SOL, token_out=USDC, amount_in="1", slippage="0.01"),
                metadata=(("authorization", f"Bearer {secret}"),),
                timeout=5,
            )
        ).order.id
        for _ in range(3)
    ]
    async with dexctl.started("watch", *ids, env=env_for(secured, secret)) as cli:
        await cli.line()
        await asyncio.gather(advance(secured.service, ids[0], 0.01), advance(secured.service, ids[1], 0.01))
        await fail_order(secured, ids[2])
        result = await cli.finish()
    assert result.code == 1, "one of them failed"
    last = {e["orderId"]: e["status"] for e in result.json_lines()}
    assert last == {ids[0]: "confirmed", ids[1]: "confirmed", ids[2]: "failed"}


async def test_errors_exit_2_with_the_reason(secured: Secured) -> None:
    _, secret = await secured.new_key(f"cli-{uuid.uuid4().hex[:6]}")
    env = env_for(secured, secret)
    cases = [
        (["submit", "SOL", "USDC", "1"], env_for(secured), "API_KEY_MISSING"),
        (["submit", "SOL", "USDC", "0.0000000001"], env, "amountIn"),
        (["submit", "SOL", "USDC", "0.0000000001", "--grpc"], env, "amount_in"),
        (["submit", "DOGE", "USDC", "1"], env, "unknown token"),
        (["submit", "SOL", "USDC", "1", "--type", "limit"], env, "type"),
        (["get", str(uuid.uuid4())], env, "ORDER_NOT_FOUND"),
        (["get", "not-a-uuid"], env, "orderId"),
        (["watch", str(uuid.uuid4())], env, "ORDER_NOT_FOUND"),
        (["list", "--url", "http://127.0.0.1:9"], env, "cannot reach"),
    ]
    for args, case_env, expected in cases:
        result = await dexctl.run(*args, env=case_env)
        assert result.code == 2, (args, result)
        assert expected in result.stderr, (args, result.stderr)


async def test_get_list_cancel_over_both_transports(secured: Secured) -> None:
    _, secret = await secured.new_key(f"cli-{uuid.uuid4().hex[:6]}")
    env = env_for(secured, secret)
    submitted = await dexctl.run("submit", "USDC", "SOL", "150", env=env)
    assert submitted.code == 0, submitted.stderr
    order_id = orjson.loads(submitted.stdout)["orderId"]
    for transport in ([], ["--grpc"]):
        got = await dexctl.run("get", order_id, *transport, env=env)
        assert got.code == 0 and orjson.loads(got.stdout)["orderId"] == order_id
        listed = await dexctl.run("list", "--limit", "5", *transport, env=env)
        assert order_id in {o["orderId"] for o in orjson.loads(listed.stdout)["orders"]}
    await advance(secured.service, order_id, 0)
    for transport in ([], ["--grpc"]):
        cancelled = await dexctl.run("cancel", order_id, *transport, env=env)
        assert cancelled.code == 2, "a confirmed order cannot be cancelled"
        assert "NOT_CANCELLABLE" in cancelled.stderr and "confirmed" in cancelled.stderr


async def test_submit_limit_and_sniper_orders_then_cancel(secured: Secured) -> None:
    _, secret = await secured.new_key(f"cli-{uuid.uuid4().hex[:6]}")
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    for grpc_mode in (False, True):
        transport = ["--grpc"] if grpc_mode else []
        for kind, flags in (
            ("limit", ["--limit-price", "999", "--expires-at", expires.isoformat()]),
            ("sniper", ["--min-liquidity", "500"]),
        ):
            submitted = await dexctl.run(
                "submit", "SOL", "USDC", "1", "--type", kind, *flags, *transport, env=env_for(secured, secret)
            )
            assert submitted.code == 0, (grpc_mode, kind, submitted)
            order = orjson.loads(submitted.lines[0])
            shown = await dexctl.run("get", order["orderId"], *transport, env=env_for(secured, secret))
            view = orjson.loads(shown.stdout)
            assert (view["type"], view["status"]) == (kind, "waiting"), view
            if kind == "limit":
                assert view["limitPrice"] == "999"
                assert datetime.fromisoformat(view["expiresAt"].replace("Z", "+00:00")) == expires
            else:
                assert view["minLiquidity"] == "500"
            cancelled = await dexctl.run("cancel", order["orderId"], *transport, env=env_for(secured, secret))
            assert cancelled.code == 0 and orjson.loads(cancelled.stdout)["status"] == "cancelled", cancelled
    refused = await dexctl.run(
        "submit", "SOL", "USDC", "1", "--type", "limit", "--limit-price", "-1", env=env_for(secured, secret)
    )
    assert refused.code == 2 and "limitPrice" in refused.stderr, refused
