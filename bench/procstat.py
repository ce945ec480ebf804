"""RSS and CPU of processes, read from /proc (Linux only).

Services are sampled by pid every ``interval`` seconds: resident set size
(VmRSS) and CPU time (utime + stime). A *window* (one benchmark phase) reports
per process the peak RSS seen in it, the RSS at its start and end, the least
squares RSS slope (a leak shows as a steady positive slope) and the CPU used,
as a percentage of one core. The servers (PostgreSQL, Redis, RabbitMQ) are
grouped by process name and only their CPU is reported: their RSS counts
shared memory and says nothing useful here.

Every process has a *role*: ``engine`` (the services and the servers' work for
them), ``outside`` (the localnet: the cluster the engine talks to, and the
PostgreSQL backends serving it, found by matching their TCP peers), ``load``
(the generator), ``other`` (PostgreSQL backends of connections from processes
not ours: other test runs on the box) or ``machine`` (everything on the box).
A PostgreSQL backend is attributed to the process at the other end of its TCP
connection. Engine CPU per order is the sum over ``engine`` only.
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


def _tcp_table() -> dict[str, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of every IPv4/IPv6 TCP socket."""
    table: dict[str, tuple[int, int]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9:
                table[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
    return table


def socket_inodes(pid: int) -> set[str]:
    out: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


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
    role: str = "engine"
    # CPU ms per confirmed order from the phase's start until its orders were all terminal (set by the phase).
    cpu_ms_per_order: float | None = None


ROLES = ("engine", "outside", "load", "other", "machine")


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
        self,
        pids: Mapping[str, int],
        interval: float = 0.5,
        servers: Mapping[str, int] | None = None,
        roles: Mapping[str, str] | None = None,
        with_children: frozenset[str] = frozenset(),
    ) -> None:
        """``pids``: processes by name; ``servers``: server name -> the port it listens on;
        ``roles``: a process's role when not ``engine`` (``{"localnet": "outside", "generator": "load"}``):
        the servers' work for an ``outside`` process is reported apart, as ``<server> (<process>)``;
        ``with_children``: processes counted with their descendants (the gateway's workers)."""
        self.pids = dict(pids)
        self.interval = interval
        self.server_ports = dict(servers or {})
        self.servers = {name: pid for name, port in self.server_ports.items() if (pid := pid_listening_on(port))}
        self.roles = dict(roles or {})
        # These count with their descendants (the gateway's forked workers), found once here.
        self.trees = {name: process_tree(pid) for name, pid in self.pids.items() if name in with_children}
        self._window: _Window | None = None
        self._task: asyncio.Task[None] | None = None

    def _cpu(self, name: str) -> float | None:
        """CPU seconds of a named process and its descendants; None when the process is gone."""
        values = [cpu_seconds(pid) for pid in self.trees.get(name, [self.pids[name]])]
        return None if values[0] is None else sum(v for v in values if v is not None)

    def _rss(self, name: str) -> int | None:
        values = [rss_bytes(pid) for pid in self.trees.get(name, [self.pids[name]])]
        return None if values[0] is None else sum(v for v in values if v is not None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="procstat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _infra_cpu(self) -> dict[str, dict[int, float]]:
        """CPU seconds per server pid, by group: ``postgres`` for the engine's backends (and the server's own
        processes), ``postgres (localnet)`` / ``postgres (generator)`` for a named process that is not the
        engine, ``postgres (other clients)`` for connections from processes not ours (other test runs).
        A single-process server (Redis, RabbitMQ) counts whole for the engine."""
        out: dict[str, dict[int, float]] = {}
        table = _tcp_table()
        by_port: dict[int, str] = {}  # a client's local port -> the name of the process holding it
        for name, pid in self.pids.items():
            for member in self.trees.get(name, [pid]):
                for inode in socket_inodes(member):
                    if inode in table:
                        by_port[table[inode][0]] = name
        for server, root in self.servers.items():
            port = self.server_ports[server]
            for pid in process_tree(root):
                group = server
                if pid != root:
                    peers = [table[i][1] for i in socket_inodes(pid) if i in table and table[i][0] == port]
                    if peers:
                        client = by_port.get(peers[0])
                        if client is None:
                            group = f"{server} (other clients)"
                        elif self.roles.get(client, "engine") != "engine":
                            group = f"{server} ({client})"
                if (cpu := cpu_seconds(pid)) is not None:
                    out.setdefault(group, {})[pid] = cpu
            out.setdefault(server, {})
        return out

    def _group_role(self, group: str) -> str:
        if "(" not in group:
            return "engine"
        client = group[group.index("(") + 1 : -1]
        return self.roles.get(client, "other")

    def begin(self) -> None:
        now = time.monotonic()
        cpu = {name: c for name in self.pids if (c := self._cpu(name)) is not None}
        self._window = _Window(now, cpu, self._infra_cpu(), machine_busy_seconds())
        self._sample()

    def _sample(self) -> None:
        if self._window is None:
            return
        now = time.monotonic() - self._window.started
        for name in self.pids:
            rss = self._rss(name)
            if rss is not None:
                self._window.rss.setdefault(name, []).append((now, rss))

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.interval)

    def snapshot(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far per group and pid (processes by name, the servers' groups, the whole machine
        as pid 0): two of them measure a span that is not a window, e.g. a phase until its orders drained."""
        out: dict[str, dict[int, float]] = {
            name: {pid: c} for name, pid in self.pids.items() if (c := self._cpu(name)) is not None
        }
        out.update(self._infra_cpu())
        out["whole machine"] = {0: machine_busy_seconds()}
        return out

    @staticmethod
    def used_between(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
        """CPU seconds used per group between two snapshots (a backend counts by its pid, whatever its group)."""
        flat = {
            pid: cpu for group, per_pid in before.items() if group != "whole machine" for pid, cpu in per_pid.items()
        }
        used: dict[str, float] = {}
        for group, per_pid in after.items():
            if group == "whole machine":
                used[group] = per_pid[0] - before.get(group, {0: per_pid[0]})[0]
            else:
                used[group] = sum(cpu - flat.get(pid, 0.0) for pid, cpu in per_pid.items())
        return used

    def end(self) -> list[ProcUsage]:
        """Close the window; usage per process (services first, then the servers' CPU)."""
        window = self._window
        if window is None:
            return []
        self._sample()
        elapsed = max(time.monotonic() - window.started, 1e-9)
        usages: list[ProcUsage] = []
        mb = 1024 * 1024
        for name in self.pids:
            samples = window.rss.get(name, [])
            end_cpu = self._cpu(name)
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
                    role=self.roles.get(name, "engine"),
                )
            )
        end_infra = self._infra_cpu()
        # A pid's CPU before the window, whichever group it was in then (a backend is classified by its peer).
        before_all = {pid: cpu for per_pid in window.infra_cpu_start.values() for pid, cpu in per_pid.items()}
        infra = []
        for group, per_pid in end_infra.items():
            # A pid born in the window counts whole; one that died in it is lost (rare: pools keep backends).
            used = sum(cpu - before_all.get(pid, 0.0) for pid, cpu in per_pid.items())
            if per_pid or window.infra_cpu_start.get(group):
                role = self._group_role(group)
                infra.append(ProcUsage(group, None, None, None, None, None, used / elapsed * 100, used, role))
        # Engine servers first, then the others' share of them.
        usages += sorted(infra, key=lambda u: ROLES.index(u.role) if u.role in ROLES else len(ROLES))
        busy = machine_busy_seconds() - window.machine_start
        usages.append(ProcUsage("whole machine", None, None, None, None, None, busy / elapsed * 100, busy, "machine"))
        self._window = None
        return usages
