"""Crash and failure points for the fault tests (off unless CHAOS_CRASH_AT / CHAOS_FAIL_AT name one).

``crash_point("after_send")`` kills the process on the spot (``os._exit``,
like ``kill -9``: no cleanup, no acks) the first time that point is reached,
when CHAOS_CRASH_AT=after_send. CHAOS_CRASH_MARKER names a file that records
the crash, so the restarted process carries on normally.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
_POINT = os.environ.get("CHAOS_CRASH_AT", "")
_MARKER = os.environ.get("CHAOS_CRASH_MARKER", "")
CRASH_EXIT_CODE = 70


def crash_point(name: str) -> None:
    if name != _POINT:
        return
    marker = Path(_MARKER) if _MARKER else None
    if marker is not None and marker.exists():
        return
    if marker is not None:
        marker.write_text(name)
    log.error("chaos: crashing at %s", name)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(CRASH_EXIT_CODE)


_FAIL_POINT = os.environ.get("CHAOS_FAIL_AT", "")


def fail_point(name: str) -> None:
    """Raise ConnectionResetError once at ``name`` when CHAOS_FAIL_AT names it: a connection dropped
    right there (e.g. after a COMMIT), the ambiguous failure a caller cannot tell from a lost write.
    CHAOS_CRASH_MARKER records it, so the next call goes through (delete the file to arm it again)."""
    if name != _FAIL_POINT:
        return
    marker = Path(_MARKER) if _MARKER else None
    if marker is not None and marker.exists():
        return
    if marker is not None:
        marker.write_text(name)
    log.error("chaos: failing at %s", name)
    raise ConnectionResetError(f"chaos: connection dropped at {name}")
