"""The executor's wallet signs a message as solders' own signing would: the same bytes, a signature
that verifies against the payer, and a refusal for a message it is not the only signer of."""

from __future__ import annotations

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from services.executor.transactions import Wallet


def a_message(payer: Pubkey, *signers: Pubkey) -> MessageV0:
    instructions = [
        transfer(TransferParams(from_pubkey=key, to_pubkey=Pubkey.new_unique(), lamports=1))
        for key in (payer, *signers)
    ]
    return MessageV0.try_compile(payer, instructions, [], Hash.new_unique())


def test_the_wallet_signs_as_solders_does() -> None:
    keypair = Keypair()
    wallet = Wallet(keypair)
    assert wallet.pubkey == keypair.pubkey()
    message = a_message(wallet.pubkey)
    tx = wallet.sign(message)
    assert bytes(tx) == bytes(VersionedTransaction(message, [keypair]))
    assert tx.verify_with_results() == [True]


def test_the_wallet_refuses_a_message_it_does_not_pay_for_alone() -> None:
    wallet = Wallet(Keypair())
    with pytest.raises(ValueError, match="only signer"):
        wallet.sign(a_message(Keypair().pubkey()))
    with pytest.raises(ValueError, match="only signer"):
        wallet.sign(a_message(wallet.pubkey, Keypair().pubkey()))
