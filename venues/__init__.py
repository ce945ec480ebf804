"""The venues' programs as both sides of the wire need them.

Exact integer math of Raydium's constant-product pools and Meteora's DLMM,
the token registry, the seeded pools, and (``venues.onchain``) the account and
instruction layouts of the programs. The localnet executes swaps with this
code; the router quotes off-chain with the same code, the way a real router
links a venue's SDK. Nothing here holds state or does I/O.
"""
