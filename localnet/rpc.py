"""Solana's JSON-RPC over HTTP (aiohttp), answering as a real node does.

Single requests and batches; results and errors in the shapes solana-py's
``AsyncClient`` parses with solders. ``localnet_*`` methods (scenario control)
come from ``localnet.scenario``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import base58
import orjson
from aiohttp import web
from solders.hash import Hash
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from localnet.bank import View, mint_decimals, ui_token_amount
from localnet.encoding import account_encoding, encode_account, matches, parse_filters
from localnet.errors import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_TRANSACTION_VERSION,
    RpcError,
    invalid_params,
)
from localnet.node import Node, transaction_json, version_of
from venues.onchain import TOKEN_PROGRAM_ID
from venues.token_layout import TOKEN_ACCOUNT_LEN, token_amount

log = logging.getLogger("localnet.rpc")

SOLANA_CORE = "2.2.7"
FEATURE_SET = 3_294_202_862
SLOTS_PER_EPOCH = 432_000
MAX_MULTIPLE_ACCOUNTS = 100
MAX_SIGNATURE_STATUSES = 256
Handler = Callable[[list[Any]], Awaitable[Any]]


def param(params: list[Any], index: int, default: Any = None) -> Any:
    return params[index] if len(params) > index and params[index] is not None else default


def config_of(params: list[Any], index: int) -> dict[str, Any]:
    value = param(params, index, {})
    if not isinstance(value, dict):
        raise invalid_params(f"Invalid params: expected a config object at position {index}")
    return value


def pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise invalid_params("Invalid params: expected a base58 public key string")
    try:
        return Pubkey.from_string(value)
    except ValueError:
        raise invalid_params("Invalid param: Invalid") from None


def signature(value: Any) -> Signature:
    if not isinstance(value, str):
        raise invalid_params("Invalid params: expected a base58 signature string")
    try:
        return Signature.from_string(value)
    except ValueError:
        raise invalid_params("Invalid param: Invalid") from None


def decode_wire(data: Any, encoding: str) -> bytes:
    if not isinstance(data, str):
        raise invalid_params("Invalid params: expected an encoded transaction string")
    if encoding == "base64":
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid_params(f"invalid base64 encoding: {exc}") from None
    if encoding == "base58":
        try:
            return base58.b58decode(data)
        except ValueError as exc:
            raise invalid_params(f"invalid base58 encoding: {exc}") from None
    raise invalid_params(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")


class Rpc:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.methods: dict[str, Handler] = {
            "getLatestBlockhash": self.get_latest_blockhash,
            "getBlockHeight": self.get_block_height,
            "getSlot": self.get_slot,
            "getEpochInfo": self.get_epoch_info,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getProgramAccounts": self.get_program_accounts,
            "getBalance": self.get_balance,
            "getTokenAccountBalance": self.get_token_account_balance,
            "getTokenAccountsByOwner": self.get_token_accounts_by_owner,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getSignaturesForAddress": self.get_signatures_for_address,
            "getTransaction": self.get_transaction,
            "requestAirdrop": self.request_airdrop,
            "getHealth": self.get_health,
            "getVersion": self.get_version,
            "getGenesisHash": self.get_genesis_hash,
            "getIdentity": self.get_identity,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance_for_rent_exemption,
            "getFeeForMessage": self.get_fee_for_message,
            "isBlockhashValid": self.is_blockhash_valid,
        }

    # -- transport ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/", self.handle)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        del request
        return web.Response(text="ok" if self.node.healthy else "behind", status=200 if self.node.healthy else 503)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.node.posts += 1
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._json({"jsonrpc": "2.0", "error": {"code": PARSE_ERROR, "message": "Parse error"}, "id": None})
        if isinstance(payload, list):
            if not payload:
                return self._json(self._error(None, RpcError(INVALID_REQUEST, "Invalid request")))
            limit = self.node.settings.batch_max
            if limit and len(payload) > limit:  # refused whole, as a provider that caps batches does
                message = f"batch of {len(payload)} requests exceeds the limit of {limit}"
                return self._json(self._error(None, RpcError(INVALID_REQUEST, message)))
            # The items of a batch are independent requests: served concurrently, answered in their order.
            return self._json(list(await asyncio.gather(*(self.dispatch(item) for item in payload))))
        return self._json(await self.dispatch(payload))

    @staticmethod
    def _json(value: Any) -> web.Response:
        return web.Response(body=orjson.dumps(value), content_type="application/json")

    @staticmethod
    def _error(request_id: Any, exc: RpcError) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "error": exc.body(), "id": request_id}

    async def dispatch(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return self._error(
                item.get("id") if isinstance(item, dict) else None, RpcError(INVALID_REQUEST, "Invalid request")
            )
        request_id = item.get("id")
        handler = self.methods.get(item["method"])
        if handler is None:
            return self._error(request_id, RpcError(METHOD_NOT_FOUND, "Method not found"))
        self.node.requests[item["method"]] += 1
        params = item.get("params", [])
        if isinstance(params, dict):
            params = [params]
        if not isinstance(params, list):
            return self._error(request_id, invalid_params("Invalid params: expected an array"))
        try:
            result = await handler(params)
        except RpcError as exc:
            return self._error(request_id, exc)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            return self._error(request_id, invalid_params(f"Invalid params: {exc}"))
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    def context(self, value: Any) -> dict[str, Any]:
        return {"context": {"apiVersion": SOLANA_CORE, "slot": self.node.slot()}, "value": value}

    # -- cluster -------------------------------------------------------------------------

    async def get_latest_blockhash(self, params: list[Any]) -> Any:
        del params
        slot = self.node.slot()
        return self.context(
            {
                "blockhash": str(self.node.clock.blockhash(slot)),
                "lastValidBlockHeight": self.node.clock.last_valid_block_height(slot),
            }
        )

    async def get_block_height(self, params: list[Any]) -> Any:
        del params
        return self.node.clock.block_height()

    async def get_slot(self, params: list[Any]) -> Any:
        del params
        return self.node.slot()

    async def get_epoch_info(self, params: list[Any]) -> Any:
        del params
        slot = self.node.slot()
        return {
            "absoluteSlot": slot,
            "blockHeight": slot,
            "epoch": slot // SLOTS_PER_EPOCH,
            "slotIndex": slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": None,
        }

    async def get_health(self, params: list[Any]) -> Any:
        del params
        if not self.node.healthy:
            raise RpcError(-32005, "Node is unhealthy", {"numSlotsBehind": None})
        return "ok"

    async def get_version(self, params: list[Any]) -> Any:
        del params
        return {"solana-core": SOLANA_CORE, "feature-set": FEATURE_SET}

    async def get_genesis_hash(self, params: list[Any]) -> Any:
        del params
        return str(self.node.clock.genesis_hash)

    async def get_identity(self, params: list[Any]) -> Any:
        del params
        return {"identity": str(self.node.faucet.pubkey())}

    async def get_minimum_balance_for_rent_exemption(self, params: list[Any]) -> Any:
        size = param(params, 0)
        if not isinstance(size, int) or size < 0:
            raise invalid_params("Invalid params: expected a data length")
        return (128 + size) * 3_480 * 2

    async def get_fee_for_message(self, params: list[Any]) -> Any:
        raw = decode_wire(param(params, 0), "base64")
        try:
            message: Message | MessageV0 = (
                MessageV0.from_bytes(raw[1:]) if raw[:1] and raw[0] & 0x80 else Message.from_bytes(raw)
            )
        except ValueError as exc:
            raise invalid_params(f"invalid message: {exc}") from None
        return self.context(self.node.fee_for_message(message))

    async def is_blockhash_valid(self, params: list[Any]) -> Any:
        try:
            blockhash = Hash.from_string(param(params, 0, ""))
        except ValueError:
            raise invalid_params("Invalid param: Invalid") from None
        return self.context(self.node.clock.is_valid(blockhash))

    # -- accounts ------------------------------------------------------------------------

    def _decimals(self, mint: Pubkey) -> int | None:
        return mint_decimals(View(self.node.store.get), mint)

    def _ui_account(self, key: Pubkey, encoding: str, data_slice: tuple[int, int] | None) -> dict[str, Any] | None:
        account = self.node.store.get(key)
        if account is None:
            return None
        return encode_account(account, encoding, data_slice, key in self.node.store.executable, self._decimals)

    async def get_account_info(self, params: list[Any]) -> Any:
        key = pubkey(param(params, 0))
        encoding, data_slice = account_encoding(config_of(params, 1))
        return self.context(self._ui_account(key, encoding, data_slice))

    async def get_multiple_accounts(self, params: list[Any]) -> Any:
        keys = param(params, 0)
        if not isinstance(keys, list):
            raise invalid_params("Invalid params: expected an array of public keys")
        if len(keys) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        encoding, data_slice = account_encoding(config_of(params, 1))
        return self.context([self._ui_account(pubkey(k), encoding, data_slice) for k in keys])

    async def get_program_accounts(self, params: list[Any]) -> Any:
        program = pubkey(param(params, 0))
        config = config_of(params, 1)
        encoding, data_slice = account_encoding(config)
        filters = parse_filters(config.get("filters"))
        store = self.node.store
        out = []
        for key in sorted(store.program_accounts(program), key=bytes):
            account = store.get(key)
            if account is None or not matches(account.data, filters):
                continue
            ui = encode_account(account, encoding, data_slice, key in store.executable, self._decimals)
            out.append({"pubkey": str(key), "account": ui})
        return self.context(out) if config.get("withContext") else out

    async def get_balance(self, params: list[Any]) -> Any:
        account = self.node.store.get(pubkey(param(params, 0)))
        return self.context(account.lamports if account else 0)

    async def get_token_account_balance(self, params: list[Any]) -> Any:
        account = self.node.store.get(pubkey(param(params, 0)))
        if account is None:
            raise invalid_params("Invalid param: could not find account")
        if account.owner != TOKEN_PROGRAM_ID or len(account.data) != TOKEN_ACCOUNT_LEN:
            raise invalid_params("Invalid param: not a Token account")
        decimals = self._decimals(Pubkey(account.data[0:32]))
        if decimals is None:
            raise invalid_params("Invalid param: could not find mint")
        return self.context(ui_token_amount(token_amount(account.data), decimals))

    async def get_token_accounts_by_owner(self, params: list[Any]) -> Any:
        owner = pubkey(param(params, 0))
        selector = param(params, 1)
        if not isinstance(selector, dict) or not ({"mint", "programId"} & selector.keys()):
            raise invalid_params("Invalid params: expected {mint} or {programId}")
        mint = pubkey(selector["mint"]) if "mint" in selector else None
        if mint is None and pubkey(selector["programId"]) != TOKEN_PROGRAM_ID:
            raise invalid_params("Invalid param: unrecognized Token program id")
        encoding, data_slice = account_encoding(config_of(params, 2))
        store = self.node.store
        out = []
        for key in sorted(store.token_accounts_of(owner), key=bytes):
            account = store.get(key)
            if account is None or (mint is not None and account.data[0:32] != bytes(mint)):
                continue
            ui = encode_account(account, encoding, data_slice, False, self._decimals)
            out.append({"pubkey": str(key), "account": ui})
        return self.context(out)

    # -- transactions ----------------------------------------------------------------------

    async def send_transaction(self, params: list[Any]) -> Any:
        config = config_of(params, 1)
        data = param(params, 0)
        raw = decode_wire(data, config.get("encoding", "base58"))
        tx = self.node.parse(raw, len(data))
        return await self.node.submit(bytes(tx), tx, bool(config.get("skipPreflight", False)))

    async def simulate_transaction(self, params: list[Any]) -> Any:
        config = config_of(params, 1)
        data = param(params, 0)
        raw = decode_wire(data, config.get("encoding", "base58"))
        tx = self.node.parse(raw, len(data))
        sig_verify = bool(config.get("sigVerify", False))
        replace = bool(config.get("replaceRecentBlockhash", False))
        if sig_verify and replace:
            raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
        if sig_verify and not self.node.verified(tx):
            raise RpcError(-32003, "Transaction signature verification failure")
        outcome = self.node.simulate(tx, replace_blockhash=replace)
        replacement = None
        if replace:
            slot = self.node.slot()
            replacement = {
                "blockhash": str(self.node.clock.blockhash(slot)),
                "lastValidBlockHeight": self.node.clock.last_valid_block_height(slot),
            }
        return self.context(self.node.simulation_value(outcome, replacement))

    async def get_signature_statuses(self, params: list[Any]) -> Any:
        raw = param(params, 0)
        if not isinstance(raw, list):
            raise invalid_params("Invalid params: expected an array of signatures")
        if len(raw) > MAX_SIGNATURE_STATUSES:
            raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        sigs = [str(signature(s)) for s in raw]
        history = bool(config_of(params, 1).get("searchTransactionHistory", False))
        found = {s: self.node.status(s) for s in sigs}
        missing = [s for s, v in found.items() if v is None]
        if history and missing:
            found.update(await self.node.store.statuses(missing))
        out: list[dict[str, Any] | None] = []
        for s in sigs:
            status = found.get(s)
            if status is None:
                out.append(None)
                continue
            slot, err = status
            out.append(
                {
                    "slot": slot,
                    "confirmations": None,
                    "err": err,
                    "status": {"Ok": None} if err is None else {"Err": err},
                    "confirmationStatus": "finalized",
                }
            )
        return self.context(out)

    async def get_signatures_for_address(self, params: list[Any]) -> Any:
        address = pubkey(param(params, 0))
        config = config_of(params, 1)
        limit = int(config.get("limit") or 1000)
        if not 1 <= limit <= 1000:
            raise invalid_params("Invalid limit; max 1000")
        before = str(signature(config["before"])) if config.get("before") else None
        until = str(signature(config["until"])) if config.get("until") else None
        rows = await self.node.store.signatures_for(str(address), limit, before, until)
        if rows is None:
            return []
        return [
            {
                "signature": r["signature"],
                "slot": r["slot"],
                "err": None if r["err"] is None else orjson.loads(r["err"]),
                "memo": r["memo"],
                "blockTime": r["block_time"],
                "confirmationStatus": "finalized",
            }
            for r in rows
        ]

    async def get_transaction(self, params: list[Any]) -> Any:
        sig = str(signature(param(params, 0)))
        config = param(params, 1, {})
        if isinstance(config, str):  # the legacy form: the encoding alone
            config = {"encoding": config}
        encoding = config.get("encoding") or "json"
        max_version = config.get("maxSupportedTransactionVersion")
        row = await self.node.store.transaction(sig)
        if row is None:
            return None
        raw = row.raw
        tx = VersionedTransaction.from_bytes(raw)
        version = version_of(tx)
        if version != "legacy" and (max_version is None or max_version < version):
            raise RpcError(
                UNSUPPORTED_TRANSACTION_VERSION,
                f"Transaction version ({version}) is not supported by the requesting client. Please try the "
                'request again with the following configuration parameter: "maxSupportedTransactionVersion": '
                f"{version}",
            )
        if encoding == "base64":
            transaction: Any = [base64.b64encode(raw).decode(), "base64"]
        elif encoding == "base58":
            transaction = [base58.b58encode(raw).decode(), "base58"]
        else:
            transaction = transaction_json(tx)
        out: dict[str, Any] = {
            "slot": row.slot,
            "transaction": transaction,
            "meta": orjson.Fragment(row.meta),
            "blockTime": row.block_time,
        }
        if max_version is not None:
            out["version"] = version
        return out

    async def request_airdrop(self, params: list[Any]) -> Any:
        to = pubkey(param(params, 0))
        lamports = param(params, 1)
        if not isinstance(lamports, int) or lamports <= 0:
            raise invalid_params("Invalid params: expected lamports")
        tx = self.node.airdrop_transaction(to, lamports)
        raw = bytes(tx)
        return await self.node.submit(raw, tx, skip_preflight=False)
