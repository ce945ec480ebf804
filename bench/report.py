"""The results table: printed, and written into bench/results/ with the machine description.

``bench/results/<profile>.md`` holds the latest run of each profile in full
(every phase: figures, stages, processes, errors, targets) and ``<profile>.json``
the same figures for tools. ``bench/results/RESULTS.md`` gets the summary block
of that profile between ``<!-- bench:<profile> -->`` markers (replaced on each
run, appended when missing), so the hand-written analysis around it stays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procstat import ProcUsage
from bench.profiles import Profile, Target
from bench.results import STAGES, PhaseResult
from bench.stats import Summary, fmt_ms

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_MD = RESULTS_DIR / "RESULTS.md"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _server_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, str]:
    mem = _mem_total_gib()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} × {_cpu_model()}",
        "memory": f"{mem:.1f} GiB" if mem is not None else "?",
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "postgres": _server_version(["psql", "--version"]),
        "redis": _server_version(["redis-server", "--version"]),
    }


def machine_line(info: dict[str, str]) -> str:
    return (
        f"{info['date']} · {info['cpus']} · {info['memory']} RAM · {info['os']} · Python {info['python']} · "
        f"{info['postgres']} · {info['redis']}; services, generator and servers on the same machine, loopback"
    )


def _pcts(s: Summary, *keys: str) -> str:
    return " / ".join(fmt_ms(getattr(s, k)) for k in keys)


def evaluate(profile: Profile, results: list[PhaseResult]) -> list[tuple[Target, bool | None, str]]:
    by_name = {r.name: r for r in results}
    out: list[tuple[Target, bool | None, str]] = []
    for target in profile.targets:
        result = by_name.get(target.phase)
        if result is None:
            out.append((target, None, "phase not run"))
            continue
        met, figure = target.check(result)
        out.append((target, met, figure))
    return out


def _verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not judged"}[met]


def _errors(result: PhaseResult) -> str:
    if not result.errors:
        return "none"
    return ", ".join(f"{kind}: {n}" for kind, n in result.errors.most_common())


def summary_table(results: list[PhaseResult]) -> list[str]:
    lines = [
        "| phase | load | accepted/s | confirmed/s | submit ms p50 / p90 / p99 / max | e2e ms p50 / p99 "
        "| overhead ms p50 / p99 | WS delivery ms p50 / p99 | errors |",
        "|---|---|---:|---:|---|---|---|---|---|",
    ]
    for r in results:
        confirmed = f"{r.confirmed_per_s:.1f}" if r.confirmed_per_s is not None else "–"
        submit = _pcts(r.submit, "p50", "p90", "p99", "max")
        accepted = f"{r.accepted_per_s:.1f}" if r.fanout_subscribers is None else "–"
        lines.append(
            f"| {r.name} | {r.load} | {accepted} | {confirmed} | {submit}"
            f" | {_pcts(r.e2e, 'p50', 'p99')} | {_pcts(r.overhead, 'p50', 'p99')} | {_pcts(r.delivery, 'p50', 'p99')}"
            f" | {_errors(r)} |"
        )
    return lines


def engine_cpu_lines(results: list[PhaseResult]) -> list[str]:
    """Per phase: engine CPU ms per confirmed order, the localnet's apart."""
    out = []
    for r in results:
        if not r.procs or not any(p.cpu_ms_per_order is not None for p in r.procs):
            continue
        engine = [p for p in r.procs if p.role == "engine" and p.cpu_ms_per_order is not None]
        outside = sum(p.cpu_ms_per_order or 0 for p in r.procs if p.role == "outside")
        parts = ", ".join(
            f"{p.name} {p.cpu_ms_per_order:.2f}" for p in sorted(engine, key=lambda p: -(p.cpu_ms_per_order or 0))
        )
        total = sum(p.cpu_ms_per_order or 0 for p in engine)
        out.append(
            f"- {r.name}: engine CPU **{total:.2f} ms per confirmed order** ({parts}); "
            f"the localnet and its PostgreSQL {outside:.2f} ms (the outside world, not counted)"
        )
    return [*out, ""] if out else []


def targets_table(evaluated: list[tuple[Target, bool | None, str]]) -> list[str]:
    if not evaluated:
        return []
    lines = ["| target | verdict | measured |", "|---|---|---|"]
    lines += [f"| {t.text} | {_verdict(met)} | {figure} |" for t, met, figure in evaluated]
    return lines


def phase_detail(r: PhaseResult) -> list[str]:
    lines = [f"#### {r.name} — {r.load}", ""]
    facts = [
        f"window {r.duration_s:.1f} s; {r.sent:,} sent, {r.accepted:,} accepted ({r.accepted_per_s:.1f}/s)",
    ]
    if r.confirmed_per_s is not None:
        facts.append(f"confirmed {r.confirmed_per_s:.1f}/s ({r.confirmed_source})")
    if r.watched:
        facts.append(f"{r.confirmed_watched:,} of {r.watched:,} watched orders confirmed on the WebSocket")
    if r.details_sampled:
        facts.append(
            f"{r.details_sampled:,} read back for stages and overhead ({r.retried} retried, left out of stages)"
        )
    if r.backlog_max is not None:
        slope = f"{r.backlog_slope:+.1f}/s" if r.backlog_slope is not None else "–"
        facts.append(
            f"backlog (orders not terminal) max {r.backlog_max:,}, slope over the second half {slope}"
            f" ({'growing' if r.backlog_growing else 'flat'}), outbox rows max {r.outbox_max:,}"
        )
    if r.drain_s is not None and r.backlog_end is not None:
        facts.append(f"after the window: drained in {r.drain_s:.1f} s, {r.backlog_end:,} still live")
    if r.chain_landed_per_s is not None:
        facts.append(f"the localnet landed {r.chain_landed_per_s:.1f} transactions/s in the window (localnet_stats)")
    if r.chain_calls and r.chain_posts:
        facts.append(
            f"it served {r.chain_calls:,} JSON-RPC calls in {r.chain_posts:,} HTTP requests"
            f" ({r.chain_calls / r.chain_posts:.2f} per request: calls made together go as one batch)"
        )
    if r.generator_lag_p99 is not None:
        facts.append(f"generator lag behind schedule p99 {fmt_ms(r.generator_lag_p99)} ms")
    if r.fanout_subscribers is not None:
        facts.append(
            f"{r.fanout_connected:,} of {r.fanout_subscribers:,} subscribers connected (snapshot received) in "
            f"{r.fanout_connect_s or 0:.1f} s, {r.fanout_peak_open:,} open at once; connect ms p50 / p99 "
            f"{_pcts(r.fanout_connect, 'p50', 'p99')}; one event's spread over its subscribers ms p50 / p99 / max "
            f"{_pcts(r.fanout_spread, 'p50', 'p99', 'max')}"
        )
    if r.retry_after:
        facts.append("Retry-After sent on: " + ", ".join(f"{k} ×{n}" for k, n in r.retry_after.items()))
    facts += r.notes
    lines += [f"- {f}" for f in facts]
    lines.append(f"- errors: {_errors(r)}")
    lines.append("")
    if r.floor.count:
        lines += [
            "| latency | n | p50 | p90 | p99 | max |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        rows = [
            ("submit (HTTP 201)", r.submit),
            ("end to end (submit → confirmed on WS)", r.e2e),
            ("floor (quote wait + the chain's landing delay)", r.floor),
            ("engine overhead (e2e − floor)", r.overhead),
            ("WS delivery (event committed → received)", r.delivery),
        ]
        rows += [(f"stage {name}: {what}", r.stages[name]) for name, what in STAGES if name in r.stages]
        lines += [
            f"| {label} | {s.count:,} | {fmt_ms(s.p50)} | {fmt_ms(s.p90)} | {fmt_ms(s.p99)} | {fmt_ms(s.max)} |"
            for label, s in rows
        ]
        lines.append("")
    if r.procs:
        exact = any(p.cpu_ms_per_order is not None for p in r.procs)
        orders = (r.confirmed_per_s or 0) * r.duration_s or r.accepted
        lines += [
            "| process | role | CPU % of one core | CPU s | CPU ms per order | peak RSS MB | RSS start → end MB "
            "| RSS slope MB/min |",
            "|---|---|---:|---:|---:|---:|---|---:|",
        ]
        for p in r.procs:
            cpu = f"{p.cpu_percent:.0f}" if p.cpu_percent is not None else "–"
            secs = f"{p.cpu_seconds:.1f}" if p.cpu_seconds is not None else "–"
            peak = f"{p.peak_rss_mb:.0f}" if p.peak_rss_mb is not None else "–"
            trend = f"{p.start_rss_mb:.0f} → {p.end_rss_mb:.0f}" if p.start_rss_mb is not None and p.end_rss_mb else "–"
            slope = f"{p.rss_slope_mb_per_min:+.1f}" if p.rss_slope_mb_per_min is not None else "–"
            lines.append(
                f"| {p.name} | {p.role} | {cpu} | {secs} | {_fmt(per_order(p, orders))} | {peak} | {trend} | {slope} |"
            )
        for role, label in (("engine", "**engine total**"), ("outside", "outside world total (localnet)")):
            members = [p for p in r.procs if p.role == role and p.cpu_seconds is not None]
            if members:
                total = sum(p.cpu_seconds or 0 for p in members)
                pct = sum(p.cpu_percent or 0 for p in members)
                each = [per_order(p, orders) for p in members]
                ms = sum(e for e in each if e is not None) if all(e is not None for e in each) else None
                lines.append(f"| {label} | {role} | {pct:.0f} | {total:.1f} | {_fmt(ms)} | | | |")
        lines.append("")
        if exact:
            lines += [
                f"CPU % and CPU s: the window. CPU ms per order: the CPU each process used from the phase's start "
                f"until every order of the phase was terminal, ÷ the {r.confirmed_total:,} of them confirmed. "
                + ROLES_TEXT,
                "",
            ]
        elif orders:
            kind = "confirmed" if r.confirmed_per_s else "accepted"
            lines += [
                f"CPU ms per order: the window's CPU seconds ÷ {orders:,.0f} orders ({kind} at the window's rate). "
                + ROLES_TEXT,
                "",
            ]
    return lines


ROLES_TEXT = (
    "Engine: the five services and the PostgreSQL backends, Redis and RabbitMQ serving them; "
    "outside: the localnet and its PostgreSQL backends (matched by TCP peer); "
    "other: backends of connections from processes not in this mesh (other test runs)."
)


def _fmt(ms: float | None) -> str:
    return f"{ms:.2f}" if ms is not None else "–"


def per_order(p: ProcUsage, orders: float) -> float | None:
    """Exact (phase start → drained ÷ its confirmed orders) when measured, else the window's estimate."""
    if p.cpu_ms_per_order is not None:
        return p.cpu_ms_per_order
    if p.cpu_seconds is None or not orders:
        return None
    return p.cpu_seconds * 1000 / orders


def capacity_line(capacity: dict[str, Any] | None) -> list[str]:
    """The localnet's own capacity (the outside world, not the engine), measured after the phases."""
    if not capacity:
        return []
    if "skipped" in capacity:
        return [f"Localnet capacity: not measured ({capacity['skipped']}).", ""]
    return [
        f"Localnet capacity (the outside world, measured apart from the engine after the phases: "
        f"`localnet.bench` at {capacity['target_rate']:g} tx/s for {capacity['seconds']:g} s against this mesh's "
        f"localnet): **{capacity['landed_per_s']:.0f} landed tx/s** ({capacity['landed']:,} landed, "
        f"sent at {capacity['send_rate']:.0f}/s, {capacity['send_errors']} send errors, drained in "
        f"{capacity['drain_s']:.1f} s; sendTransaction p50 / p99 {capacity['send_latency_ms_p50']} / "
        f"{capacity['send_latency_ms_p99']} ms; localnet CPU {capacity.get('cpu_percent', 0):.0f} % of one core).",
        "",
    ]


def render(
    profile: Profile,
    results: list[PhaseResult],
    info: dict[str, str],
    command: str,
    capacity: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """(the full report of this run, the summary block for RESULTS.md)."""
    evaluated = evaluate(profile, results)
    head = [
        f"### Profile `{profile.name}` — {profile.description}",
        "",
        f"`{command}` · {machine_line(info)}",
        "",
    ]
    summary = [*head, *summary_table(results), "", *engine_cpu_lines(results), *capacity_line(capacity)]
    if evaluated:
        summary += [*targets_table(evaluated), ""]
    full = [*summary, *(line for r in results for line in phase_detail(r))]
    block = [
        *summary,
        f"Full figures (stages, CPU and RSS per process, errors): [{profile.name}.md]({profile.name}.md)",
    ]
    return "\n".join(full).rstrip() + "\n", "\n".join(block).rstrip() + "\n"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write(
    profile: Profile,
    results: list[PhaseResult],
    full: str,
    block: str,
    info: dict[str, str],
    capacity: dict[str, Any] | None = None,
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{profile.name}.md").write_text(f"# Benchmark: profile `{profile.name}`\n\n{full}")
    payload = {"profile": profile.name, "machine": info, "phases": _jsonable(results), "localnet_capacity": capacity}
    (RESULTS_DIR / f"{profile.name}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    begin, end = f"<!-- bench:{profile.name} -->", f"<!-- /bench:{profile.name} -->"
    section = f"{begin}\n{block}{end}"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    RESULTS_MD.write_text(text)
    return RESULTS_MD
