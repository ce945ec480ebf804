"""RSS and CPU of processes, read from /proc (Linux only).

Services are sampled by pid every ``interval`` seconds: resident set size
(VmRSS) and CPU time (utime + stime). A *window* (one benchmark phase) reports
per process the peak RSS seen in it, the RSS at its start and end, the least
squares RSS slope (a leak shows as a steady positive slope) and the CPU used,
as a percentage of one core. The servers (PostgreSQL, Redis, RabbitMQ) are
grouped by process name and only their CPU is reported: their RSS counts
shared memory and says nothing useful here.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import slope_per_s

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, in seconds; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return None


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM: the process's lifetime peak RSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine (all cores, every process, ours or not)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address is ADDR:PORT in hex; state 0A is LISTEN.
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def pid_listening_on(port: int) -> int | None:
    """The process holding the listening socket of ``port`` (the server, not another one of its kind)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    return int(entry)
            except OSError:
                continue
    return None


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (PostgreSQL's backends, RabbitMQ's helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class ProcUsage:
    name: str
    peak_rss_mb: float | None
    start_rss_mb: float | None
    end_rss_mb: float | None
    rss_slope_mb_per_min: float | None
    late_rss_slope_mb_per_min: float | None
    cpu_percent: float | None
    cpu_seconds: float | None


@dataclass
class _Window:
    started: float
    cpu_start: dict[str, float]
    infra_cpu_start: dict[str, dict[int, float]]
    machine_start: float
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


class ProcSampler:
    """Samples named processes in the background; measures windows (phases)."""

    def __init__(
        self, pids: Mapping[str, int], interval: float = 0.5, servers: Mapping[str, int] | None = None
    ) -> None:
        """``pids``: processes by name; ``servers``: server name -> the port it listens on."""
        self.pids = dict(pids)
        self.interval = interval
        self.servers = {name: pid for name, port in (servers or {}).items() if (pid := pid_listening_on(port))}
        self._window: _Window | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="procstat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _infra_cpu(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, root in self.servers.items():
            out[name] = {pid: cpu for pid in process_tree(root) if (cpu := cpu_seconds(pid)) is not None}
        return out

    def begin(self) -> None:
        now = time.monotonic()
        cpu = {name: c for name, pid in self.pids.items() if (c := cpu_seconds(pid)) is not None}
        self._window = _Window(now, cpu, self._infra_cpu(), machine_busy_seconds())
        self._sample()

    def _sample(self) -> None:
        if self._window is None:
            return
        now = time.monotonic() - self._window.started
        for name, pid in self.pids.items():
            rss = rss_bytes(pid)
            if rss is not None:
                self._window.rss.setdefault(name, []).append((now, rss))

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.interval)

    def end(self) -> list[ProcUsage]:
        """Close the window; usage per process (services first, then the servers' CPU)."""
        window = self._window
        if window is None:
            return []
        self._sample()
        elapsed = max(time.monotonic() - window.started, 1e-9)
        usages: list[ProcUsage] = []
        mb = 1024 * 1024
        for name, pid in self.pids.items():
            samples = window.rss.get(name, [])
            end_cpu = cpu_seconds(pid)
            start_cpu = window.cpu_start.get(name)
            used = end_cpu - start_cpu if end_cpu is not None and start_cpu is not None else None
            slope = slope_per_s([(t, r / mb) for t, r in samples])
            late = slope_per_s([(t, r / mb) for t, r in samples if t >= elapsed / 2])
            usages.append(
                ProcUsage(
                    name=name,
                    peak_rss_mb=max(r for _, r in samples) / mb if samples else None,
                    start_rss_mb=samples[0][1] / mb if samples else None,
                    end_rss_mb=samples[-1][1] / mb if samples else None,
                    rss_slope_mb_per_min=slope * 60 if slope is not None else None,
                    late_rss_slope_mb_per_min=late * 60 if late is not None else None,
                    cpu_percent=used / elapsed * 100 if used is not None else None,
                    cpu_seconds=used,
                )
            )
        end_infra = self._infra_cpu()
        for group, per_pid in end_infra.items():
            before = window.infra_cpu_start.get(group, {})
            # A pid born in the window counts whole; one that died in it is lost (rare: pools keep backends).
            used = sum(cpu - before.get(pid, 0.0) for pid, cpu in per_pid.items())
            if per_pid or before:
                usages.append(ProcUsage(group, None, None, None, None, None, used / elapsed * 100, used))
        busy = machine_busy_seconds() - window.machine_start
        usages.append(ProcUsage("whole machine", None, None, None, None, None, busy / elapsed * 100, busy))
        self._window = None
        return usages
