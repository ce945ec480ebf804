"""A simulated Solana cluster: JSON-RPC (:8899) and PubSub (:8900), state in PostgreSQL.

The outside world of the engine, never part of it: nothing here imports
``services``. Run it with ``python -m localnet``; see ``localnet/README.md``.
"""
