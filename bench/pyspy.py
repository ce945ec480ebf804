"""Sampling profiles of the services during a phase (py-spy), and a text summary of them.

``python -m bench.run --profile overhead --py-spy flamegraph`` writes
``bench/results/pyspy/<service>.svg``; ``--py-spy raw`` writes collapsed
stacks (``<service>.txt``), which ``python -m bench.pyspy FILE…`` sums up:
the functions with the most samples on CPU, by self and by inclusive time.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "results" / "pyspy"
SUFFIX = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}
# Frames that are the event loop or the interpreter waiting, not work.
IDLE = re.compile(r"\b(select|poll|epoll_wait|_run_once|run_forever|wait)\b")


def executable() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


async def record(
    pids: Mapping[str, int], duration_s: float, fmt: str, *, native: bool = False
) -> list[asyncio.subprocess.Process]:
    """Start one ``py-spy record`` per service, 100 samples/s.

    Python frames only, the process is not paused (``--nonblocking``). With
    ``native`` the C frames (grpc, uvloop, asyncpg, libc) are sampled too, which
    needs each sample to pause the process and slows it a lot: the figures of a
    profiled phase are not the benchmark's; profile in a run of its own.
    """
    exe = executable()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        out = OUT_DIR / f"{name}{'-native' if native else ''}.{SUFFIX[fmt]}"
        mode = ["--native"] if native else ["--nonblocking"]
        procs.append(
            await asyncio.create_subprocess_exec(
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(duration_s))),
                "--rate",
                "100",
                *mode,
                "--format",
                fmt,
                "--output",
                str(out),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    return procs


def _function(frame: str) -> str:
    """``handle (services/x.py:12)`` -> ``handle (services/x.py)``: one entry per function."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def summarize(path: Path, top: int = 12) -> str:
    """Markdown: samples on CPU, then the busiest functions by self and inclusive samples."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")[1:]]  # the first is "process …"
        if not frames or IDLE.search(frames[-1]):
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    lines = [f"**{path.stem}** — {total:,} samples on CPU", "", "| self % | function |", "|---:|---|"]
    lines += [f"| {n / total * 100:.1f} | `{f}` |" for f, n in self_counts.most_common(top)] if total else []
    lines += ["", "| inclusive % | function |", "|---:|---|"]
    # Leave out the frames under nearly everything (runpy, the event loop's own machinery).
    lines += [f"| {n / total * 100:.1f} | `{f}` |" for f, n in incl_counts.most_common() if n < 0.8 * total][:top]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Sum up py-spy raw (collapsed) profiles")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for path in args.files:
        sys.stdout.write(summarize(path, args.top) + "\n")


if __name__ == "__main__":
    main()
