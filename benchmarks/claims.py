"""Claim overhead per fire, per backend: what the fenced claim adds to every job start.

    python -m benchmarks.claims [--claims 2000] [--backends file,etcd,...]

Starts each server on a free loopback port (the same harness as the tests), takes a lease, then
claims ``--claims`` consecutive fires of one job, one at a time, timing each claim. Prints the
median and p99 latency, claims per second, and the ratio to the local leadership check that a
dispatch makes anyway.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from leadercron.backends import Backend, from_url
from leadercron.backends.memory import MemoryBackend
from leadercron.elector import Elector
from tests.servers import SERVERS, server_class
from tests.servers.base import Server

ALL = ["memory", "file", *SERVERS]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def local_check_seconds(samples: int) -> float:
    """Median cost of the dispatch guard's local check (Elector.term()), for the ratio."""
    elector = Elector(
        MemoryBackend(uuid.uuid4().hex),
        election="b",
        identity="b",
        ttl=30,
        renew_deadline=20,
        retry_period=5,
    )
    elector.start()
    while not elector.is_leader():
        time.sleep(0.01)
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        elector.term()
        timings.append(time.perf_counter() - start)
    elector.stop()
    return statistics.median(timings)


def bench(backend: Backend, claims: int) -> list[float]:
    election = f"bench-{uuid.uuid4().hex[:8]}"
    lease = None
    deadline = time.monotonic() + 30
    while lease is None:
        lease = backend.acquire(election, "bench", 30.0)
        if lease is None:
            if time.monotonic() > deadline:
                raise RuntimeError("could not acquire")
            backend.wait_for_change(election, 1.0)
    base = int(time.time() * 1000)
    timings = []
    for i in range(claims):
        start = time.perf_counter()
        ok = backend.claim(lease, "job", base + i)
        timings.append(time.perf_counter() - start)
        if not ok:
            raise RuntimeError(f"claim {i} refused")
        if i % 200 == 0:
            renewed = backend.renew(lease)
            if renewed is None:
                raise RuntimeError("lost the lease during the benchmark")
            lease = renewed
    backend.release(lease)
    return timings


def measure(name: str, claims: int, url: str | None = None) -> dict[str, Any]:
    """Claim ``claims`` fires on backend ``name``; start its server unless ``url`` is given.

    Returns the raw timings (seconds) and their median, p99 and rate, or ``supported: False``.
    """
    server: Server | None = None
    tmp = Path(tempfile.mkdtemp(prefix="leadercron-bench-"))
    try:
        if url is not None:
            pass
        elif name == "memory":
            url = f"memory://{uuid.uuid4().hex}"
        elif name == "file":
            url = f"file://{tmp / 'bench.lock'}"
        else:
            server = server_class(name)()
            server.start()
            url = server.url()
        backend = from_url(url)
        if not backend.supports_claims:
            return {"supported": False}
        try:
            timings = bench(backend, claims)
        finally:
            backend.close()
        return {
            "supported": True,
            "claims": len(timings),
            "median": statistics.median(timings),
            "p99": percentile(timings, 0.99),
            "per_second": len(timings) / sum(timings),
        }
    finally:
        if server is not None:
            server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--backends", default=",".join(ALL))
    args = parser.parse_args(argv)
    names = [n for n in args.backends.split(",") if n]
    local = local_check_seconds(10000)
    print(
        f"# machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {sys.platform}"
    )
    print(f"# local leadership check (Elector.term()): median {local * 1e6:.2f} us")
    print(f"{'backend':<10} {'median':>10} {'p99':>10} {'claims/s':>10} {'x local check':>14}")
    for name in names:
        row = measure(name, args.claims)
        if not row["supported"]:
            print(f"{name:<10} {'(no claims)':>10}")
            continue
        print(
            f"{name:<10} {row['median'] * 1e3:>8.3f}ms {row['p99'] * 1e3:>8.3f}ms "
            f"{row['per_second']:>10.0f} {row['median'] / local:>13.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
