"""The slot clock: 400 ms slots from the genesis time, block height = slot.

Wall-clock based, so a localnet that was stopped resumes at the height the
cluster would have reached meanwhile (and blockhashes handed out before the
stop have expired if the stop was long enough). Each slot's blockhash is
``sha256(genesis hash | slot)``; a blockhash is valid while the block height is
at most its slot + 150, as ``lastValidBlockHeight`` says.
"""

from __future__ import annotations

import hashlib
import time

from solders.hash import Hash

SLOT_S = 0.4
MAX_PROCESSING_AGE = 150
_REMEMBERED = 2 * MAX_PROCESSING_AGE


class SlotClock:
    def __init__(self, genesis_time: float, genesis_hash: Hash, valid_slots: int = MAX_PROCESSING_AGE) -> None:
        self.valid_slots = valid_slots
        self.genesis_time = genesis_time
        self.genesis_hash = genesis_hash
        self._seed = bytes(genesis_hash)
        self._hashes: dict[Hash, int] = {}
        self._known_from = 0
        self._known_to = -1

    def now(self) -> float:
        return time.time()

    def slot(self, now: float | None = None) -> int:
        t = self.now() if now is None else now
        return max(0, int((t - self.genesis_time) / SLOT_S))

    def block_height(self, slot: int | None = None) -> int:
        return self.slot() if slot is None else slot

    def block_time(self, slot: int) -> int:
        """Unix seconds of a slot (what ``Clock::unix_timestamp`` reads during it)."""
        return int(self.genesis_time + slot * SLOT_S)

    def slot_start(self, slot: int) -> float:
        return self.genesis_time + slot * SLOT_S

    def blockhash(self, slot: int) -> Hash:
        return Hash(hashlib.sha256(self._seed + slot.to_bytes(8, "little")).digest())

    def last_valid_block_height(self, slot: int) -> int:
        return slot + self.valid_slots

    def slot_of(self, blockhash: Hash, slot: int | None = None) -> int | None:
        """The slot of a recent blockhash (within the last 300 slots), else None."""
        current = self.slot() if slot is None else slot
        low = max(0, current - max(_REMEMBERED, 2 * self.valid_slots))
        if low > self._known_to or current < self._known_from:
            self._hashes.clear()
            self._known_from, self._known_to = low, low - 1
        for s in range(max(self._known_to + 1, low), current + 1):
            self._hashes[self.blockhash(s)] = s
        self._known_to = max(self._known_to, current)
        if self._known_from < low - 64:
            for s in range(self._known_from, low):
                self._hashes.pop(self.blockhash(s), None)
            self._known_from = low
        found = self._hashes.get(blockhash)
        return found if found is not None and found <= current else None

    def is_valid(self, blockhash: Hash, slot: int | None = None) -> bool:
        current = self.slot() if slot is None else slot
        found = self.slot_of(blockhash, current)
        return found is not None and current <= found + self.valid_slots
