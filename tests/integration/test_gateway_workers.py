"""GATEWAY_WORKERS=2: two processes on one port (SO_REUSEPORT), stopped together, one fate."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.mesh import ROOT, free_port
from tests.support.waiting import eventually


def listeners(port: int) -> set[int]:
    """Pids holding a listening socket on ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    pids = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    pids.add(int(entry))
            except OSError:
                continue
    return pids


async def start_gateway(port: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "GATEWAY_WORKERS": "2", "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_two_workers_share_the_port_and_stop_together() -> None:
    port = free_port()
    proc = await start_gateway(port)
    try:
        await eventually(lambda: len(listeners(port)) == 2, timeout=20, every=0.2)
        pids = listeners(port)
        assert proc.pid in pids
        async with aiohttp.ClientSession() as session:
            for _ in range(4):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        await eventually(lambda: not listeners(port), timeout=10, every=0.2)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_worker_that_dies_takes_the_gateway_down() -> None:
    port = free_port()
    proc = await start_gateway(port)
    try:
        await eventually(lambda: len(listeners(port)) == 2, timeout=20, every=0.2)
        (worker,) = listeners(port) - {proc.pid}
        os.kill(worker, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 20) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
