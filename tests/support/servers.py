"""Private PostgreSQL, Redis and RabbitMQ instances that a test may kill.

Chaos tests stop, freeze and kill servers; they must never touch the
machine's shared ones. Each :class:`PrivateServer` runs on its own port from
its own data directory under a temporary folder, and can be stopped,
restarted, killed (-9), frozen (SIGSTOP) and resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", f"/usr/lib/postgresql/{os.environ.get('PG_MAJOR', '15')}/bin"))


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def wait_port(port: int, up: bool = True, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _port_open(port) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} not {'open' if up else 'closed'} after {timeout}s")
        await asyncio.sleep(0.1)


def _chown(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for child in path.rglob("*"):
        shutil.chown(child, user, user)


def _as_user(user: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})


@dataclass
class PrivatePostgres:
    base: Path
    port: int

    @property
    def data(self) -> Path:
        return self.base / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    async def start(self) -> None:
        if not self.data.exists():
            self.base.mkdir(parents=True, exist_ok=True)
            _chown(self.base, "postgres")
            _as_user(
                "postgres",
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            )
        _as_user(
            "postgres",
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.base / "pg.log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                "start",
            ],
        )
        await wait_port(self.port)

    async def stop(self, mode: str = "fast") -> None:
        _as_user("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
        await wait_port(self.port, up=False)


@dataclass
class PrivateRedis:
    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; the server runs on its own
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_port(self.port)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        await wait_port(self.port, up=False)


@dataclass
class PrivateRabbit:
    base: Path
    port: int
    dist_port: int
    node: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.node = self.node or f"chaos{self.port}@localhost"
        self.env = {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str) -> str:
        result = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **self.env},
            timeout=120,
        )
        return result.stdout

    def pid(self) -> int:
        return int((self.base / "rabbit.pid").read_text().strip())

    async def start(self) -> None:
        if not (self.base / "rabbitmq.conf").exists():
            for sub in ("mnesia", "log"):
                (self.base / sub).mkdir(parents=True, exist_ok=True)
            (self.base / "enabled_plugins").write_text("[].\n")
            (self.base / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
            )
            _chown(self.base, "rabbitmq")
        await asyncio.to_thread(
            subprocess.run,
            ["rabbitmq-server", "-detached"],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            cwd="/tmp",
        )
        await wait_port(self.port, timeout=120)

    async def stop_app(self) -> None:
        await asyncio.to_thread(self.ctl, "stop_app")

    async def start_app(self) -> None:
        await asyncio.to_thread(self.ctl, "start_app")
        await wait_port(self.port)

    async def close_all_connections(self) -> None:
        await asyncio.to_thread(self.ctl, "close_all_connections", "chaos test")

    def signal(self, sig: int) -> None:
        os.kill(self.pid(), sig)

    async def kill9(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        await wait_port(self.port, up=False)
        with contextlib.suppress(FileNotFoundError):
            (self.base / "rabbit.pid").unlink()

    async def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError):
            await asyncio.to_thread(self.ctl, "stop")
        await wait_port(self.port, up=False, timeout=60)

    def queue_depths(self) -> dict[str, int]:
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages")
        depths = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths
