"""Run the installed ``dexctl`` as a subprocess, the way a person or a script would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

DEXCTL = Path(sys.executable).parent / "dexctl"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def json_lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.lines if line.strip()]


def _env(env: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEXENGINE_")}
    return {**base, **env}


async def run(*args: str, env: Mapping[str, str], timeout: float = 60) -> Result:
    assert DEXCTL.exists(), f"{DEXCTL} missing: `make cli` installs it"
    proc = await asyncio.create_subprocess_exec(
        str(DEXCTL), *args, env=_env(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"dexctl {' '.join(args)} did not finish: {out.decode()} {err.decode()}") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def started(*args: str, env: Mapping[str, str], tty: bool = False) -> AsyncIterator[Running]:
    """dexctl running while the test acts (reads its lines as they come; a pseudo-terminal with ``tty``)."""
    master = slave = -1
    if tty:
        master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        str(DEXCTL),
        *args,
        env=_env(env),
        stdout=slave if tty else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(proc, master)
    if tty:
        os.close(slave)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if master >= 0:
            os.close(master)


class Running:
    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self._buffer = b""
        self.seen: list[str] = []

    async def _read(self) -> bytes:
        if self.master >= 0:
            try:
                return await asyncio.to_thread(os.read, self.master, 4096)
            except OSError:  # the terminal closed: the process ended
                return b""
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(4096)

    async def line(self, timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            while b"\n" not in self._buffer:
                chunk = await self._read()
                if not chunk:
                    raise EOFError(f"dexctl ended; output so far: {self.seen} {self._buffer!r}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        text = raw.decode().rstrip("\r")
        self.seen.append(text)
        return text

    async def finish(self, timeout: float = 30) -> Result:
        async with asyncio.timeout(timeout):
            rest = self._buffer
            while chunk := await self._read():
                rest += chunk
            code = await self.proc.wait()
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode()
        lines = [*self.seen, *rest.decode().replace("\r", "").splitlines()]
        return Result(code, "\n".join(lines) + "\n", err)
