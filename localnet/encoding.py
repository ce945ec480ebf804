"""Accounts as the RPC renders them (``UiAccount``), and getProgramAccounts filters."""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import base58
from solders.pubkey import Pubkey

from localnet.bank import ui_token_amount
from localnet.errors import invalid_params
from venues.onchain import TOKEN_PROGRAM_ID, Account
from venues.token_layout import MINT_LEN, TOKEN_ACCOUNT_LEN, mint_supply, token_amount

RENT_EPOCH_EXEMPT = 2**64 - 1
MAX_BASE58_BYTES = 128
ENCODINGS = {"base64", "base58", "binary", "jsonParsed", "base64+zstd"}


@lru_cache(maxsize=512)
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def account_encoding(config: dict[str, Any] | None, default: str = "binary") -> tuple[str, tuple[int, int] | None]:
    config = config or {}
    encoding = config.get("encoding") or default
    if encoding not in ENCODINGS:
        raise invalid_params(
            f"Invalid params: unknown variant `{encoding}`, expected one of `binary`, `base58`, "
            "`base64`, `jsonParsed`, `base64+zstd`"
        )
    if encoding == "base64+zstd":
        encoding = "base64"  # served uncompressed: clients that ask for zstd also read base64
    data_slice = config.get("dataSlice")
    if data_slice is not None:
        try:
            return encoding, (int(data_slice["offset"]), int(data_slice["length"]))
        except (KeyError, TypeError, ValueError):
            raise invalid_params("Invalid params: dataSlice needs offset and length") from None
    return encoding, None


def encode_account(
    account: Account,
    encoding: str,
    data_slice: tuple[int, int] | None = None,
    executable: bool = False,
    decimals_of: Callable[[Pubkey], int | None] | None = None,
) -> dict[str, Any]:
    data = account.data
    if data_slice is not None:
        data = data[data_slice[0] : data_slice[0] + data_slice[1]]
    rendered: Any
    parsed = parse_token(account, decimals_of) if encoding == "jsonParsed" and data_slice is None else None
    if parsed is not None:
        rendered = parsed
    elif encoding in ("base58", "binary"):
        if len(data) > MAX_BASE58_BYTES:
            raise invalid_params(
                "Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding."
            )
        text = base58.b58encode(data).decode()
        rendered = text if encoding == "binary" else [text, "base58"]
    else:
        rendered = [b64(data), "base64"]
    return {
        "data": rendered,
        "executable": executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": RENT_EPOCH_EXEMPT,
        "space": len(account.data),
    }


def parse_token(account: Account, decimals_of: Callable[[Pubkey], int | None] | None) -> dict[str, Any] | None:
    """``jsonParsed`` for SPL token accounts and mints (other accounts fall back to base64)."""
    if account.owner != TOKEN_PROGRAM_ID:
        return None
    data = account.data
    if len(data) == TOKEN_ACCOUNT_LEN and data[108] == 1:
        mint = Pubkey(data[0:32])
        decimals = decimals_of(mint) if decimals_of else None
        if decimals is None:
            return None
        info: dict[str, Any] = {
            "isNative": data[109] == 1,
            "mint": str(mint),
            "owner": str(Pubkey(data[32:64])),
            "state": "initialized",
            "tokenAmount": ui_token_amount(token_amount(data), decimals),
        }
        if data[109] == 1:
            info["rentExemptReserve"] = ui_token_amount(int.from_bytes(data[113:121], "little"), decimals)
        return {"program": "spl-token", "parsed": {"info": info, "type": "account"}, "space": len(data)}
    if len(data) == MINT_LEN:
        authority = str(Pubkey(data[4:36])) if data[0] == 1 else None
        info = {
            "decimals": data[44],
            "freezeAuthority": None,
            "isInitialized": data[45] == 1,
            "mintAuthority": authority,
            "supply": str(mint_supply(data)),
        }
        return {"program": "spl-token", "parsed": {"info": info, "type": "mint"}, "space": len(data)}
    return None


Filter = tuple[str, int, bytes]


def parse_filters(filters: Any) -> list[Filter]:
    if filters is None:
        return []
    if not isinstance(filters, list):
        raise invalid_params("Invalid params: filters must be an array")
    if len(filters) > 4:
        raise invalid_params("Too many filters provided; max 4")
    out: list[Filter] = []
    for item in filters:
        if isinstance(item, dict) and "dataSize" in item:
            out.append(("size", int(item["dataSize"]), b""))
        elif isinstance(item, dict) and isinstance(item.get("memcmp"), dict):
            memcmp = item["memcmp"]
            raw = memcmp.get("bytes")
            encoding = memcmp.get("encoding", "base58")
            try:
                value = base64.b64decode(raw) if encoding == "base64" else base58.b58decode(raw)
            except (ValueError, TypeError):
                raise invalid_params(f"Invalid param: memcmp bytes are not {encoding}") from None
            out.append(("memcmp", int(memcmp.get("offset", 0)), value))
        elif isinstance(item, dict) and "tokenAccountState" in item:
            out.append(("size", TOKEN_ACCOUNT_LEN, b""))
        else:
            raise invalid_params(f"Invalid params: unknown filter {item!r}")
    return out


def matches(data: bytes, filters: list[Filter]) -> bool:
    for kind, number, value in filters:
        if kind == "size":
            if len(data) != number:
                return False
        elif data[number : number + len(value)] != value:
            return False
    return True
