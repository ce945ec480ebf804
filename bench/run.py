"""``make bench``: load and latency benchmark of the whole mesh.

    python -m bench.run [--profile seed|overhead|scale|fanout] [--duration S]
                        [--rate R | --concurrency N] [--watch F] [--count N]
                        [--subscribers N] [--url http://host:port [--database-url DSN]]

Without ``--url`` it starts the five services as real processes on free
ports, with their own database (dexengine_bench, dropped and created afresh),
Redis database 2 and AMQP prefix ``bench.``, and the profile's settings; it
stops them at the end. The load comes from this process, over loopback HTTP
and WebSocket. The table is printed and written to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench import load as loadmod
from bench import mesh as meshmod
from bench import pyspy, report
from bench.phases import ChainMonitor, DbMonitor, run_phase
from bench.procstat import ProcSampler, cpu_seconds
from bench.profiles import PROFILES, Profile, custom
from bench.results import PhaseResult
from localnet import bench as localnet_bench
from localnet.config import Settings as LocalnetSettings

log = logging.getLogger("bench")
# Not the engine: the localnet is the cluster it talks to (the outside world), the generator is the load.
ROLES = {"localnet": "outside", "generator": "load"}


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (inherited by the services we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        choices=sorted([*PROFILES, ORDER_TYPES]),
        default="seed",
        help=f"{ORDER_TYPES}: the limit trigger with 100,000 armed orders (its own options: bench/order_types.py)",
    )
    parser.add_argument("--duration", type=float, help="seconds of load per phase (default: the profile's)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--rate", type=float, help="one open-loop phase at this many orders/s")
    shape.add_argument("--concurrency", type=int, help="one phase of N clients, each submit (→ watch) → repeat")
    parser.add_argument("--watch", type=float, help="fraction of orders followed on the WebSocket (0..1)")
    parser.add_argument("--count", type=int, help="at most this many orders per phase")
    parser.add_argument("--subscribers", type=int, help="fan-out: WebSocket subscribers (default 10,000)")
    parser.add_argument("--orders", type=int, help="fan-out: live orders they watch (default 100)")
    parser.add_argument("--url", help="use the mesh at this gateway URL instead of starting one")
    parser.add_argument("--database-url", help="with --url: its orders database, for backlog and confirmed/s")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting on top of the profile's (repeatable), e.g. --set EXECUTOR_PREFETCH=100",
    )
    parser.add_argument(
        "--executors", type=int, help="executor replicas (each with its own prefetch), as KEDA scales them"
    )
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services started (default INFO)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results/ alone")
    parser.add_argument(
        "--hold", action="store_true", help="after the phases, keep the mesh up until Ctrl-C or SIGTERM"
    )
    parser.add_argument(
        "--py-spy",
        choices=sorted(pyspy.SUFFIX),
        help="profile every service with py-spy during the first phase, into bench/results/pyspy/",
    )
    parser.add_argument("--native", action="store_true", help="with --py-spy: C frames too (pauses the services)")
    parser.add_argument(
        "--capacity-rate",
        type=float,
        default=1000.0,
        help="after the phases, the localnet's own capacity: localnet.bench at this rate (0: skip; default 1000/s)",
    )
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    return parser.parse_args(argv)


def shape_profile(args: argparse.Namespace) -> Profile:
    profile = custom(PROFILES[args.profile], rate=args.rate, concurrency=args.concurrency, watch=args.watch)
    longest = max((p.duration_s for p in profile.phases if p.mode != "fanout"), default=30.0)
    phases = []
    for phase in profile.phases:
        changes: dict[str, object] = {}
        if args.duration is not None:
            # Phases keep their proportions (the overhead profile's submit phase is a third of the others);
            # for fan-out the duration is how long subscribers may wait for the orders to finish.
            changes["duration_s"] = (
                max(args.duration, phase.duration_s)
                if phase.mode == "fanout"
                else args.duration * phase.duration_s / longest
            )
        if args.watch is not None and args.rate is None and args.concurrency is None:
            changes["watch"] = args.watch
        if args.subscribers is not None and phase.mode == "fanout":
            changes["subscribers"] = args.subscribers
        if args.orders is not None and phase.mode == "fanout":
            changes["orders"] = args.orders
        phases.append(dataclasses.replace(phase, **changes))  # type: ignore[arg-type]
    env = dict(profile.env)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set wants NAME=VALUE, got {item!r}")
        env[name] = value
    description = profile.description + "".join(f"; {item}" for item in args.set)
    executors = profile.executors
    if args.executors is not None:
        if args.executors < 1:
            raise SystemExit(f"--executors wants 1 or more, got {args.executors}")
        executors = args.executors
        description += f"; {executors} executor replicas"
    return dataclasses.replace(profile, phases=tuple(phases), env=env, description=description, executors=executors)


async def warm_up(client: loadmod.Client, n: int) -> None:
    """A few orders end to end (not counted): connections, caches and queues in place."""
    if n <= 0:
        return
    result = await loadmod.fixed_concurrency(client, concurrency=min(n, 4), duration_s=120, count=n)
    await result.finish()
    if result.errors:
        log.warning("warm-up errors: %s", dict(result.errors))


async def run_phases(
    profile: Profile,
    client: loadmod.Client,
    sampler: ProcSampler | None,
    db: DbMonitor | None,
    count: int | None,
    bench_mesh: meshmod.BenchMesh | None,
    py_spy: str | None = None,
    native: bool = False,
    chain: ChainMonitor | None = None,
) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    await warm_up(client, profile.warmup)
    for n, phase in enumerate(profile.phases):
        spies = []
        if py_spy and n == 0 and bench_mesh is not None:
            spies = await pyspy.record(bench_mesh.pids(), phase.duration_s, py_spy, native=native)
        result = await run_phase(phase, client, sampler, db, count=count, chain=chain)
        for spy in spies:
            await spy.wait()
        if spies:
            result.notes.append(f"profiled with py-spy ({py_spy}) into bench/results/pyspy/")
        if bench_mesh is not None and (crashed := bench_mesh.crashed()):
            result.errors.update({f"service exited: {name}": 1 for name in crashed})
            results.append(result)
            log.error("services exited during %r: %s", phase.name, crashed)
            break
        results.append(result)
    return results


async def localnet_capacity(
    bench_mesh: meshmod.BenchMesh, landing_max_ms: float, rate: float, seconds: float
) -> dict[str, object]:
    """The localnet's own landed tx/s, the engine idle: ``localnet.bench`` against the mesh's localnet."""
    if rate <= 0:
        return {"skipped": "--capacity-rate 0"}
    if landing_max_ms > 0:
        return {"skipped": f"the profile's landing delay is up to {landing_max_ms:g} ms; capacity needs 0"}
    pid = bench_mesh.pids().get("localnet")
    cpu0 = cpu_seconds(pid) if pid else None
    started = time.monotonic()
    result: dict[str, object] = await localnet_bench.run(bench_mesh.rpc_url, rate, seconds, wallets=8)
    elapsed = time.monotonic() - started
    cpu1 = cpu_seconds(pid) if pid else None
    result["seconds"] = seconds
    if cpu0 is not None and cpu1 is not None:
        result["cpu_percent"] = (cpu1 - cpu0) / elapsed * 100
    log.info("localnet capacity: %s", result)
    return result


async def main_async(args: argparse.Namespace) -> int:
    profile = shape_profile(args)
    fds = raise_fd_limit()
    subs = max((p.subscribers for p in profile.phases), default=0)
    if subs and subs * 2 + 1000 > fds:
        log.warning("open-files limit %d is low for %d subscribers (the gateway holds one per subscriber)", fds, subs)
    info = report.machine()
    command = "python -m bench.run " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "make bench"
    sampler: ProcSampler | None = None
    db: DbMonitor | None = None
    bench_mesh: meshmod.BenchMesh | None = None
    chain: ChainMonitor | None = None
    capacity: dict[str, object] | None = None
    env: dict[str, str] = {}
    try:
        if args.url:
            base_url = args.url
            if args.database_url:
                db = DbMonitor(args.database_url)
            sampler = ProcSampler({"generator": os.getpid()}, servers=meshmod.server_ports(), roles=ROLES)
        else:
            log_dir = Path(tempfile.mkdtemp(prefix=f"dexengine-bench-{profile.name}-"))
            env = meshmod.bench_env(profile.env, args.log_level, log_dir)
            await meshmod.reset_infra(env)
            log.info(
                "starting the mesh (%s; %d executor(s)); logs in %s", profile.description, profile.executors, log_dir
            )
            bench_mesh = meshmod.BenchMesh(env, log_dir)
            await bench_mesh.start_all(profile.executors)
            base_url = bench_mesh.http
            db = DbMonitor(meshmod.database_url())
            landing_max = float(LocalnetSettings.from_env(env).landing_ms[1])
            quote_max = float(meshmod.settings_from(env).quote_latency_ms[1])
            chain = ChainMonitor(bench_mesh.rpc_url, landing_max, quote_max)
            sampler = ProcSampler(
                {**bench_mesh.pids(), "generator": os.getpid()},
                servers=meshmod.server_ports(),
                roles=ROLES,
                with_children=frozenset({"gateway"}),
            )
        if db is not None:
            await db.open()
        sampler.start()
        async with loadmod.Client(base_url) as client:
            results = await run_phases(
                profile, client, sampler, db, args.count, bench_mesh, args.py_spy, args.native, chain
            )
        if bench_mesh is not None and chain is not None and chain.landing_max_ms is not None and not args.hold:
            # The engine stopped first (the last phase may leave a backlog running): the localnet alone.
            for name in [n for n in bench_mesh.procs if n != "localnet"]:
                await bench_mesh.stop_one(name)
            try:
                capacity = await localnet_capacity(
                    bench_mesh, chain.landing_max_ms, args.capacity_rate, args.capacity_seconds
                )
            except (RuntimeError, OSError) as exc:
                capacity = {"skipped": f"failed: {exc}"}
        if args.hold and bench_mesh is not None:
            log.info("mesh held at %s (pids %s); Ctrl-C or SIGTERM to stop", base_url, bench_mesh.pids())
            await asyncio.Event().wait()
    finally:
        if sampler is not None:
            await sampler.stop()
        if db is not None:
            await db.close()
        if bench_mesh is not None:
            await bench_mesh.stop()
            await meshmod.cleanup_infra(env)
    full, block = report.render(profile, results, info, command, capacity)
    sys.stdout.write("\n" + full)
    if not args.no_write:
        path = report.write(profile, results, full, block, info, capacity)
        log.info("written: %s and %s", path, path.parent / f"{profile.name}.md")
    return 1 if any(r.errors for r in results) else 0


ORDER_TYPES = "order-types"  # 100,000 armed limit orders: the trigger's latency, CPU and RSS (bench/order_types.py)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s", stream=sys.stderr)
    given = sys.argv[1:] if argv is None else argv
    if given[:2] == ["--profile", ORDER_TYPES] or f"--profile={ORDER_TYPES}" in given[:1]:
        from bench import order_types

        sys.argv = [sys.argv[0], *given[2:]]
        order_types.cli()
        return
    args = parse_args(argv)
    started = time.monotonic()
    code = meshmod.run_stoppable(lambda: main_async(args))
    log.info("done in %.0f s", time.monotonic() - started)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
