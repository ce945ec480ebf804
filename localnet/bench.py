"""The localnet's own capacity: ``python -m localnet.bench --rpc http://127.0.0.1:8899``.

Funds a few wallets (``localnet_fund``), then sends signed swap transactions
(compute budget + a Raydium CPMM or Meteora DLMM swap + memo, alternating,
each one unique) at ``--rate`` per second for ``--seconds`` with
``skipPreflight`` (as the engine sends), waits for the queue to drain and
reports the landed transactions per second the cluster itself counted
(``localnet_stats``), the accepted send rate and send latency. It prints one
JSON object. The localnet should run with ``LOCALNET_LANDING_MS=0`` and
``MARKET_DRIFT=false`` for a capacity number.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import time
from typing import Any

import aiohttp
import orjson
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from venues.onchain import Account, PoolSnapshot, decode_pool, dependencies, memo_instruction, swap_instruction
from venues.pools import METEORA, RAYDIUM, seed_pools
from venues.tokens import SOL, USDC


class Rpc:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        async with self.session.post(self.url, data=body, headers={"content-type": "application/json"}) as resp:
            answer = orjson.loads(await resp.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]


async def load(rpc: Rpc, address: Pubkey) -> PoolSnapshot:
    state = (await rpc.call("getAccountInfo", [str(address), {"encoding": "base64"}]))["value"]
    accounts = {address: Account(Pubkey.from_string(state["owner"]), base64.b64decode(state["data"][0]), 0)}
    deps = dependencies(address, accounts[address])
    found = (await rpc.call("getMultipleAccounts", [[str(k) for k in deps], {"encoding": "base64"}]))["value"]
    for key, item in zip(deps, found, strict=True):
        accounts[key] = Account(Pubkey.from_string(item["owner"]), base64.b64decode(item["data"][0]), 0)
    return decode_pool(address, accounts)


async def run(url: str, rate: float, seconds: float, wallets: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        rpc = Rpc(session, url)
        keys = [Keypair() for _ in range(wallets)]
        for key in keys:
            await rpc.call("localnet_fund", [{"pubkey": str(key.pubkey())}])
        pools = seed_pools()
        snapshots = [
            await load(rpc, Pubkey.from_string(pools[(venue, frozenset((SOL.mint, USDC.mint)))].pool_id))
            for venue in (RAYDIUM, METEORA)
        ]
        sol = Pubkey.from_string(SOL.mint)
        blockhash = Hash.from_string((await rpc.call("getLatestBlockhash"))["value"]["blockhash"])
        refreshed = time.monotonic()
        before = await rpc.call("localnet_stats")
        latencies: list[float] = []
        errors = 0
        total = int(rate * seconds)
        start = time.monotonic()

        async def send(i: int, raw: bytes) -> None:
            nonlocal errors
            sent = time.monotonic()
            try:
                await rpc.call(
                    "sendTransaction", [base64.b64encode(raw).decode(), {"encoding": "base64", "skipPreflight": True}]
                )
            except (RuntimeError, aiohttp.ClientError):
                errors += 1
                return
            latencies.append(time.monotonic() - sent)
            del i

        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() - refreshed > 20:
                blockhash = Hash.from_string((await rpc.call("getLatestBlockhash"))["value"]["blockhash"])
                refreshed = time.monotonic()
            wallet = keys[i % len(keys)]
            owner = wallet.pubkey()
            snapshot = snapshots[i % 2]
            instructions = [
                set_compute_unit_limit(400_000),
                set_compute_unit_price(1_000),
                swap_instruction(snapshot.swap_keys, owner, sol, 10_000_000 + i, 0),
                memo_instruction(f"bench {i}"),
            ]
            tx = VersionedTransaction(MessageV0.try_compile(owner, instructions, [], blockhash), [wallet])
            tasks.append(asyncio.create_task(send(i, bytes(tx))))
        await asyncio.gather(*tasks)
        sent_s = time.monotonic() - start
        for _ in range(600):  # the queue drains (at most 30 s)
            if (await rpc.call("localnet_stats"))["pending"] == 0:
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        after = await rpc.call("localnet_stats")
    landed = (after["landed"] + after["failed"]) - (before["landed"] + before["failed"])
    return {
        "target_rate": rate,
        "sent": total - errors,
        "send_errors": errors,
        "send_rate": round((total - errors) / sent_s, 1),
        "landed": landed,
        "landed_per_s": round(landed / elapsed, 1),
        "drain_s": round(elapsed - sent_s, 2),
        "send_latency_ms_p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "send_latency_ms_p99": round(sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000, 2)
        if latencies
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rpc", default="http://127.0.0.1:8899")
    parser.add_argument("--rate", type=float, default=300.0, help="transactions per second to send")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--wallets", type=int, default=8)
    args = parser.parse_args()
    result = asyncio.run(run(args.rpc, args.rate, args.seconds, args.wallets))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
