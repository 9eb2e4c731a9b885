"""Benchmarks of leadercron against peers, on real servers: ``python -m benchmarks``.

    python -m benchmarks [--quick] [--backends file,etcd,...] [--cycles 30] [--out DIR]

Per backend (file, etcd, zookeeper, consul, redis, postgres, kubernetes against the in-repo fake
API server), on one server started for the run on free loopback ports:

1. graceful handover: SIGTERM to the leader -> the instant another candidate leads;
2. crash takeover: kill -9 of the leader -> another leads (absolute and relative to the ttl);
3. steady state: requests/s, CPU% and RSS of a leader and of a follower (default timing);
4. handover among 50 candidates (etcd and Redis): latency and the requests it sets off;
5. claim overhead per fire (:mod:`benchmarks.claims`).

Peers run on the same servers with the same method: ``etcdctl elect`` (etcd), ``consul lock``
(Consul), tooz (ZooKeeper, Redis) and a redis-py ``Lock`` loop (Redis). Prints the tables and
writes ``results.json``, ``tables.md`` and PNG plots into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import claims, report, scenarios
from benchmarks.impls import ROOT, Site, impls_for, steady_impls_for
from tests.servers import server_class

BACKENDS = ["file", "etcd", "zookeeper", "consul", "redis", "postgres", "kubernetes"]
HERD = ["etcd", "redis"]
SECTIONS = ["handover", "crash", "steady", "herd", "claims"]


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _run(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (out.stdout or out.stderr).strip()


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory_gb": round(mem / 2**30, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def versions() -> dict[str, str]:
    found = {
        "etcd": _first_line(_run(["etcd", "--version"])),
        "etcdctl": _first_line(_run(["etcdctl", "version"])),
        "consul": _first_line(_run(["consul", "version"])),
        "redis-server": _first_line(_run(["redis-server", "--version"])),
        "postgres": _first_line(_run(["/usr/lib/postgresql/15/bin/postgres", "--version"])),
        "java": _first_line(_run(["java", "-version"])),
    }
    jars = sorted(Path("/usr/share/java").glob("zookeeper-3*.jar"))
    found["zookeeper"] = jars[0].stem if jars else "unknown"
    for package in (
        "leadercron",
        "APScheduler",
        "etcd3gw",
        "kazoo",
        "py-consul",
        "redis",
        "psycopg",
        "kubernetes",
        "tooz",
        "matplotlib",
    ):
        try:
            found[f"python:{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[f"python:{package}"] = "not installed"
    return found


def guarded(results: dict[str, Any], key: str, what: str, fn: Callable[[], Any]) -> None:
    """Run one measurement; keep its result under ``key`` or the error that stopped it."""
    started = time.monotonic()
    log(f"{what} ...")
    try:
        results[key] = fn()
    except Exception as exc:
        results[f"{key}_error"] = f"{type(exc).__name__}: {exc}"
        log(f"{what}: FAILED {exc}")
        traceback.print_exc(file=sys.stderr)
    else:
        log(f"{what}: done in {time.monotonic() - started:.1f}s")


def run_backend(name: str, args: argparse.Namespace, out: dict[str, Any]) -> None:
    server = None
    workdir = Path(tempfile.mkdtemp(prefix=f"leadercron-bench-{name}-"))
    try:
        if name != "file":
            server = server_class(name)()
            server.start()
        site = Site(name, server, workdir)
        entry: dict[str, Any] = {"impls": {}, "steady": {}}
        out["backends"][name] = entry
        background: list[threading.Thread] = []
        impls = impls_for(site, peers=not args.no_peers)
        for impl in impls:
            entry["impls"][impl.key] = impl.describe()
        if "crash" in args.sections:
            # Peers whose session TTL is fixed at tens of seconds wait out their expiry while
            # the other measurements run (their candidates sit idle until then).
            for impl in impls:
                if impl.parallel_crash and args.quick:
                    entry["impls"][impl.key]["crash_error"] = (
                        f"skipped in --quick (session TTL fixed at {impl.ttl:g}s)"
                    )
                elif impl.parallel_crash:
                    thread = threading.Thread(
                        target=guarded,
                        args=(
                            entry["impls"][impl.key],
                            "crash",
                            f"{name} / {impl.key}: crash takeover x{args.crash_cycles} "
                            f"(ttl {impl.ttl:g}s, in the background)",
                            lambda impl=impl: scenarios.crash(impl, args.crash_cycles),
                        ),
                    )
                    thread.start()
                    background.append(thread)
        for impl in impls:
            row: dict[str, Any] = entry["impls"][impl.key]
            if "handover" in args.sections:
                guarded(
                    row,
                    "graceful",
                    f"{name} / {impl.key}: graceful handover x{args.cycles}",
                    lambda impl=impl: scenarios.graceful(impl, args.cycles),
                )
            if "crash" in args.sections and not impl.parallel_crash:
                guarded(
                    row,
                    "crash",
                    f"{name} / {impl.key}: crash takeover x{args.crash_cycles} (ttl {impl.ttl:g}s)",
                    lambda impl=impl: scenarios.crash(impl, args.crash_cycles),
                )
        for thread in background:
            thread.join()  # the steady-state figures want a quiet server
        if "steady" in args.sections:
            for impl in steady_impls_for(site, peers=not args.no_peers):
                row = {"ttl": impl.ttl, "instrumented": impl.instrumented}
                entry["steady"][impl.key] = row
                guarded(
                    row,
                    "result",
                    f"{name} / {impl.key}: steady state over {args.window:g}s",
                    lambda impl=impl: scenarios.steady(impl, args.window, args.settle),
                )
        if "herd" in args.sections and name in args.herd_backends:
            herd: dict[str, Any] = {}
            out["herd"][name] = herd
            guarded(
                herd,
                "result",
                f"{name}: {args.herd_n} candidates x{args.herd_handovers} handovers",
                lambda: scenarios.herd(site, args.herd_n, args.herd_handovers),
            )
        if "claims" in args.sections:
            row = {}
            out["claims"][name] = row
            url = None
            if server is not None:
                url = server.url()
            guarded(
                row,
                "result",
                f"{name}: {args.claims} claims",
                lambda: claims.measure(name, args.claims, url),
            )
        for thread in background:
            thread.join()
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="few cycles (a run of ~3 minutes)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--cycles", type=int, help="graceful handovers per implementation")
    parser.add_argument("--crash-cycles", type=int, help="kill -9 takeovers per implementation")
    parser.add_argument("--window", type=float, help="steady-state window, seconds")
    parser.add_argument("--herd-backends", default=",".join(HERD))
    parser.add_argument("--herd-n", type=int, help="candidates in the herd runs")
    parser.add_argument("--herd-handovers", type=int)
    parser.add_argument("--claims", type=int, help="claims per backend")
    parser.add_argument("--no-peers", action="store_true", help="leadercron only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--merge",
        type=Path,
        help="add this run's backends to an earlier results.json (replacing theirs)",
    )
    parser.add_argument(
        "--from-json", type=Path, help="only redo the tables and plots from this results.json"
    )
    args = parser.parse_args(argv)
    defaults = (
        {"cycles": 5, "crash_cycles": 1, "window": 3.0, "herd_n": 20, "herd_handovers": 5}
        if args.quick
        else {"cycles": 30, "crash_cycles": 5, "window": 25.0, "herd_n": 50, "herd_handovers": 30}
    )
    args.settle = 1.0 if args.quick else 3.0
    defaults["claims"] = 300 if args.quick else 2000
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.backends = [b for b in args.backends.split(",") if b]
    args.sections = [s for s in args.sections.split(",") if s]
    args.herd_backends = [b for b in args.herd_backends.split(",") if b]
    unknown = (set(args.backends) - set(BACKENDS)) | (set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown backend or section: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.from_json is not None:
        out = json.loads(args.from_json.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tables.md").write_text(report.tables(out))
        print(report.tables(out))
        for path in report.plots(out, args.out):
            log(f"wrote {path}")
        return 0
    started = time.monotonic()
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    out: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command.strip(),
            "machine": machine(),
            "versions": versions(),
            "options": {
                k: v for k, v in vars(args).items() if k not in ("out",) and not callable(v)
            },
        },
        "backends": {},
        "herd": {},
        "claims": {},
    }
    if "claims" in args.sections:
        out["meta"]["local_check_seconds"] = claims.local_check_seconds(10000)
        memory: dict[str, Any] = {}
        out["claims"]["memory"] = memory
        guarded(memory, "result", "memory: claims", lambda: claims.measure("memory", args.claims))
    for name in args.backends:
        run_backend(name, args, out)
    out["meta"]["seconds"] = round(time.monotonic() - started, 1)
    if args.merge is not None:
        earlier = json.loads(args.merge.read_text())
        for section in ("backends", "herd", "claims"):
            earlier[section].update(out[section])
        earlier["meta"].setdefault("merged", []).append(out["meta"])
        out = earlier
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    tables = report.tables(out)
    (args.out / "tables.md").write_text(tables)
    print(tables)
    if not args.no_plots:
        for path in report.plots(out, args.out):
            log(f"wrote {path}")
    log(f"all done in {out['meta']['seconds']:.0f}s; results in {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
