"""The measurements: graceful handover, crash takeover, steady state, 50-candidate handover."""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.impls import PYTHON, Impl, Site, child_env, server_requests
from benchmarks.procs import Event, Proc

SETTLE = 0.3  # seconds of quiet between cycles, after the replacement candidate is in line


def _settle() -> None:
    """Quiet before the next cycle, plus a random 0-0.2 s so that the signal falls at a random
    phase of any polling loop (tooz, redis-py's Lock poll every 0.1 s)."""
    time.sleep(SETTLE + random.uniform(0.0, 0.2))


class ScenarioError(RuntimeError):
    pass


def _until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _ready(impl: Impl, election: str, procs: list[Proc], timeout: float = 60.0) -> None:
    def check() -> bool:
        for p in procs:
            if not p.alive():
                raise ScenarioError(f"{impl.key} candidate {p.label} exited (see its log)")
        try:
            return impl.ready(election, procs)
        except OSError:
            return False

    _until(check, timeout, f"{impl.key} candidates to be in line", interval=0.02)


def _elected_since(
    impl: Impl, procs: list[Proc], marks: dict[int, int]
) -> tuple[Proc, Event] | None:
    for p in procs:
        with p._cond:
            events = p.events[marks.get(p.pid, 0) :]
        for event in events:
            if impl.is_elected(event):
                return p, event
    return None


@contextlib.contextmanager
def _closing(procs: list[Proc]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.close()


def _start_group(impl: Impl, election: str, n: int, prefix: str = "c") -> tuple[list[Proc], Proc]:
    """Start the first candidate, wait for it to lead, then the others; return (all, leader)."""
    first = impl.spawn(election, f"{prefix}0")
    procs = [first]
    _until(lambda: _elected_since(impl, [first], {}), 60, f"{impl.key} first leader")
    procs += [impl.spawn(election, f"{prefix}{i}") for i in range(1, n)]
    _ready(impl, election, procs)
    return procs, first


def _cycles(
    impl: Impl, cycles: int, sig: signal.Signals, timeout: float, candidates: int = 3
) -> list[float]:
    """Signal the leader, time until another candidate leads; replace the leader; repeat."""
    election = impl.new_election()
    procs: list[Proc] = []
    samples: list[float] = []
    with _closing(procs):
        started, leader = _start_group(impl, election, candidates)
        procs += started
        _settle()
        serial = candidates
        for _ in range(cycles):
            others = [p for p in procs if p is not leader]
            marks = {p.pid: p.mark() for p in others}
            t0 = time.monotonic()
            leader.signal(sig)
            found = _until(
                lambda others=others, marks=marks: _elected_since(impl, others, marks),
                timeout,
                f"{impl.key} takeover after {sig.name}",
                interval=0.001,
            )
            new_leader, event = found
            samples.append(event.mono - t0)
            if sig is signal.SIGTERM and not leader.wait(15):
                raise ScenarioError(f"{impl.key} leader did not exit on SIGTERM")
            leader.close()
            procs.remove(leader)
            procs.append(impl.spawn(election, f"c{serial}"))
            serial += 1
            _ready(impl, election, procs)
            _settle()
            leader = new_leader
    return samples


def graceful(impl: Impl, cycles: int) -> list[float]:
    return _cycles(impl, cycles, signal.SIGTERM, timeout=30)


def crash(impl: Impl, cycles: int) -> list[float]:
    timeout = 3 * impl.ttl + 30
    if not impl.parallel_crash:
        return _cycles(impl, cycles, signal.SIGKILL, timeout=timeout)
    # ttl-bound at tens of seconds: ``cycles`` independent elections, leaders killed at once.
    procs: list[Proc] = []
    samples: list[float] = []
    with _closing(procs):
        groups = []
        for _ in range(cycles):
            election = impl.new_election()
            group, leader = _start_group(impl, election, 2)
            procs += group
            groups.append((group, leader))
        _settle()
        kills = []
        for group, leader in groups:
            follower = next(p for p in group if p is not leader)
            mark = follower.mark()
            t0 = time.monotonic()
            leader.signal(signal.SIGKILL)
            kills.append((follower, mark, t0))
        for follower, mark, t0 in kills:
            left = max(1.0, t0 + timeout - time.monotonic())
            event = follower.wait_event(impl.is_elected, start=mark, timeout=left)
            if event is None:
                raise ScenarioError(f"{impl.key}: no takeover within {timeout:g}s of kill -9")
            samples.append(event.mono - t0)
    return samples


def _counts(proc: Proc) -> dict[str, int]:
    mark = proc.mark()
    proc.signal(signal.SIGUSR1)
    event = proc.wait_event(lambda e: e.kind == "counts", start=mark, timeout=10)
    if event is None:
        raise ScenarioError(f"{proc.label} did not report its counts")
    return dict(event.payload)


def steady(impl: Impl, window: float, settle: float) -> dict[str, Any]:
    """Requests/s, CPU% and RSS of a leader and a follower over ``window`` seconds."""
    election = impl.new_election()
    procs: list[Proc] = []
    with _closing(procs):
        started, leader = _start_group(impl, election, 2)
        procs += started
        follower = next(p for p in procs if p is not leader)
        time.sleep(settle)
        roles = {"leader": leader, "follower": follower}
        before: dict[str, tuple[float, float, dict[str, int]]] = {}
        rss: dict[str, int] = dict.fromkeys(roles, 0)
        server0 = (time.monotonic(), server_requests(impl.site))
        for role, p in roles.items():
            counts = _counts(p) if impl.instrumented else {}
            before[role] = (time.monotonic(), p.cpu_seconds(), counts)
        end = time.monotonic() + window
        while time.monotonic() < end:
            for role, p in roles.items():
                rss[role] = max(rss[role], p.rss_bytes())
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        server1 = (time.monotonic(), server_requests(impl.site))
        result: dict[str, Any] = {"window": window, "server_per_s": None}
        if server0[1] is not None and server1[1] is not None:
            result["server_per_s"] = (server1[1] - server0[1]) / (server1[0] - server0[0])
        for role, p in roles.items():
            if not p.alive():
                raise ScenarioError(f"{impl.key} {role} exited during the window")
            counts = _counts(p) if impl.instrumented else {}
            t1, cpu1 = time.monotonic(), p.cpu_seconds()
            t0, cpu0, counts0 = before[role]
            elapsed = t1 - t0
            rates = {k: (v - counts0.get(k, 0)) / elapsed for k, v in counts.items()}
            result[role] = {
                "cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
                "rss_mb": max(rss[role], p.rss_bytes()) / 2**20,
                "wire_per_s": rates.get("wire") if impl.instrumented else None,
                "calls_per_s": {k[5:]: v for k, v in rates.items() if k.startswith("call.")},
            }
        if leader.has("lost"):
            raise ScenarioError(f"{impl.key} leader lost its leadership during the window")
    return result


# -- 50 candidates ---------------------------------------------------------------------------


class _Pool:
    """``benchmarks.worker pool`` processes holding ``n`` electors between them."""

    def __init__(self, site: Site, election: str, n: int, per_process: int) -> None:
        self.procs: list[Proc] = []
        self.owner: dict[str, Proc] = {}
        for w in range(0, n, per_process):
            count = min(per_process, n - w)
            prefix = f"w{w // per_process}-"
            argv = [PYTHON, "-m", "benchmarks.worker", "pool", "--url", site.url]
            argv += ["--election", election, "--n", str(count), "--prefix", prefix]
            proc = Proc(argv, log=site.log(prefix.rstrip("-")), env=child_env(), stdin=True)
            self.procs.append(proc)
            for i in range(count):
                self.owner[f"{prefix}{i}"] = proc

    def find(self, kind: str, marks: dict[int, int], ident: str | None = None) -> Event | None:
        for p in self.procs:
            with p._cond:
                events = p.events[marks.get(p.pid, 0) :]
            for e in events:
                if e.kind == kind and (ident is None or e.payload.get("id") == ident):
                    return e
        return None

    def marks(self) -> dict[int, int]:
        return {p.pid: p.mark() for p in self.procs}

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for p in self.procs:
            mark = p.mark()
            p.send("counts")
            event = p.wait_event(lambda e: e.kind == "counts", start=mark, timeout=10)
            if event is None:
                raise ScenarioError("a pool worker did not report its counts")
            for k, v in event.payload.items():
                total[k] = total.get(k, 0) + v
        return total

    def in_line(self) -> int:
        ids = set()
        for p in self.procs:
            with p._cond:
                ids |= {e.payload["id"] for e in p.events if e.kind in ("waiting", "elected")}
        return len(ids)

    def close(self) -> None:
        for p in self.procs:
            p.close()


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def herd(
    site: Site, n: int, handovers: int, idle: float = 5.0, window: float = 0.5
) -> dict[str, Any]:
    """``n`` candidates (default timing); the leader resigns, time until the next one leads.

    Counts every candidate's requests from the resign until ``window`` seconds after the new
    leader was elected, and separately over an ``idle`` window with nobody resigning.
    """
    election = f"bench-herd-{site.counter}"
    pool = _Pool(site, election, n, per_process=10)
    try:
        _until(lambda: pool.in_line() >= n, 120, f"{n} candidates in line", interval=0.05)
        first = pool.find("elected", {})
        if first is None:
            raise ScenarioError("nobody leads")
        leader = first.payload["id"]
        time.sleep(2.0)
        before = pool.counts()
        time.sleep(idle)
        idle_counts = _delta(pool.counts(), before)
        latencies: list[float] = []
        windows: list[dict[str, int]] = []
        for _ in range(handovers):
            marks = pool.marks()
            before = pool.counts()
            pool.owner[leader].send(f"resign {leader}")
            resigning = _until(
                lambda m=marks, who=leader: pool.find("resigning", m, who), 10, "resign"
            )
            elected = _until(
                lambda m=marks: pool.find("elected", m), 30, "the next leader", interval=0.001
            )
            latencies.append(elected.mono - resigning.mono)
            _until(lambda m=marks, who=leader: pool.find("resigned", m, who), 10, "resigned")
            time.sleep(max(0.0, elected.mono + window - time.monotonic()))
            windows.append(_delta(pool.counts(), before))
            marks = pool.marks()
            pool.owner[leader].send(f"join {leader}")
            _until(lambda m=marks, who=leader: pool.find("waiting", m, who), 30, "rejoin")
            _settle()
            leader = elected.payload["id"]
        return {
            "candidates": n,
            "latencies": latencies,
            "windows": windows,
            "window_after_elected": window,
            "idle_seconds": idle,
            "idle_counts": idle_counts,
        }
    finally:
        pool.close()
