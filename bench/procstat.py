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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import slope_per_s

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
INFRA_NAMES = {"postgres": "postgres", "redis-server": "redis", "beam.smp": "rabbitmq"}


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


def pids_by_name(names: Iterable[str]) -> dict[str, list[int]]:
    """Pids whose /proc comm is one of ``names``, grouped by that name."""
    wanted = set(names)
    found: dict[str, list[int]] = {name: [] for name in wanted}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if comm in wanted:
            found[comm].append(int(entry))
    return found


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
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


class ProcSampler:
    """Samples named processes in the background; measures windows (phases)."""

    def __init__(self, pids: Mapping[str, int], interval: float = 0.5, infra: bool = True) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.infra = infra
        self._window: _Window | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="procstat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _infra_cpu(self) -> dict[str, dict[int, float]]:
        if not self.infra:
            return {}
        groups = pids_by_name(INFRA_NAMES)
        out: dict[str, dict[int, float]] = {}
        for comm, pids in groups.items():
            per_pid = {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}
            out[INFRA_NAMES[comm]] = per_pid
        return out

    def begin(self) -> None:
        now = time.monotonic()
        cpu = {name: c for name, pid in self.pids.items() if (c := cpu_seconds(pid)) is not None}
        self._window = _Window(now, cpu, self._infra_cpu())
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
        self._window = None
        return usages
