"""The candidates compared: leadercron and its peers, each spawned as separate processes."""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import Event, Proc
from tests.servers.base import Server

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["ETCDCTL_API"] = "3"
    return env


@dataclass
class Site:
    """One backend under measurement: its name, server (none for ``file``) and a work dir."""

    backend: str
    server: Server | None
    workdir: Path
    counter: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url()

    def log(self, label: str) -> Path:
        self.counter += 1
        return self.workdir / f"{self.counter:04d}-{label}.log"


@dataclass
class Impl:
    """How one implementation campaigns on one backend."""

    site: Site
    ttl: float
    key: str = "impl"
    #: Whether the process counts its own requests (answers SIGUSR1 with a ``counts`` line).
    instrumented: bool = True
    #: Whether the crash cycles run as parallel elections (for ttls fixed at tens of seconds).
    parallel_crash: bool = False
    #: What the elected stamp is: taken in the candidate, or by the driver on reading its output.
    stamp: str = "in-process listener"
    notes: list[str] = field(default_factory=list)

    def new_election(self) -> str:
        return f"bench-{uuid.uuid4().hex[:10]}"

    def spawn(self, election: str, ident: str) -> Proc:
        raise NotImplementedError

    def is_elected(self, event: Event) -> bool:
        return event.kind == "elected"

    def ready(self, election: str, procs: list[Proc]) -> bool:
        """Whether every live candidate is in line (or leads)."""
        return all(p.has("waiting") or p.has("elected") for p in procs)

    def describe(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "stamp": self.stamp, "notes": self.notes}


class Leadercron(Impl):
    """``leadercron run`` (through :mod:`benchmarks.worker`'s ``cli`` mode)."""

    def __init__(
        self, site: Site, ttl: float = 3.0, renew_deadline: float = 2.0, retry_period: float = 1.0
    ) -> None:
        super().__init__(site, ttl, key="leadercron")
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period

    def url(self, election: str) -> str:
        if self.site.backend == "file":
            return f"file://{self.site.workdir / election}.lock"
        url = self.site.url
        if self.site.backend == "zookeeper" and "min_session_timeout" not in url:
            # The test server runs tickTime=500, so its minSessionTimeout is 1 s.
            url += ("&" if "?" in url else "?") + "min_session_timeout=1s"
        return url

    def spawn(self, election: str, ident: str) -> Proc:
        config = self.site.workdir / f"{election}.yaml"
        if not config.exists():
            config.write_text(
                f"""election:
  name: {election}
  backend: "{self.url(election)}"
  ttl: {self.ttl:g}s
  renew_deadline: {self.renew_deadline:g}s
  retry_period: {self.retry_period:g}s
scheduler:
  grace_period: 5s
jobs:
  - id: idle
    cron: "0 0 1 1 *"
    func: builtins:len
    args: [""]
"""
            )
        argv = [PYTHON, "-m", "benchmarks.worker", "cli", "--config", str(config)]
        argv += ["--identity", ident]
        return Proc(argv, log=self.site.log(ident), env=child_env(), label=ident)


class EtcdctlElect(Impl):
    """``etcdctl elect NAME PROPOSAL``: prints the leader key when elected, resigns on SIGTERM.

    Its session is ``concurrency.NewSession`` with the default 60 s TTL (``etcdctl elect`` has
    no flag to change it).
    """

    def __init__(self, site: Site) -> None:
        super().__init__(
            site,
            60.0,
            key="etcdctl elect",
            instrumented=False,
            parallel_crash=True,
            stamp="driver reads its stdout",
        )
        self.notes.append("session TTL fixed at 60 s (etcdctl elect has no --ttl)")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.site.server.client_port}"  # type: ignore[union-attr]

    def spawn(self, election: str, ident: str) -> Proc:
        argv = ["etcdctl", "--endpoints", self.endpoint, "elect", election, ident]
        return Proc(argv, log=self.site.log(ident), env=child_env(), label=ident)

    def is_elected(self, event: Event) -> bool:
        return event.kind == "line"

    def ready(self, election: str, procs: list[Proc]) -> bool:
        prefix = f"{election}/".encode()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        body = json.dumps(
            {
                "key": base64.b64encode(prefix).decode(),
                "range_end": base64.b64encode(end).decode(),
                "count_only": True,
            }
        ).encode()
        request = urllib.request.Request(f"http://{self.endpoint}/v3/kv/range", data=body)
        with urllib.request.urlopen(request, timeout=5) as response:
            count = int(json.load(response).get("count", 0))
        return count == sum(1 for p in procs if p.alive())


class ConsulLock(Impl):
    """``consul lock -name N PREFIX sh -c 'echo elected; exec sleep …'``.

    Its session has Consul's client default TTL (15 s) and lock-delay (15 s); ``consul lock``
    has no flag to change either.
    """

    def __init__(self, site: Site) -> None:
        super().__init__(
            site,
            15.0,
            key="consul lock",
            instrumented=False,
            parallel_crash=True,
            stamp="driver reads the child's stdout",
        )
        self.notes.append("session TTL 15 s and lock-delay 15 s fixed by consul lock")

    @property
    def address(self) -> str:
        return self.site.server.http_address  # type: ignore[union-attr]

    def spawn(self, election: str, ident: str) -> Proc:
        argv = ["consul", "lock", "-http-addr", self.address, "-name", election, "-shell=false"]
        argv += [f"bench/{election}", "sh", "-c", "echo elected; exec sleep 86400"]
        return Proc(argv, log=self.site.log(ident), env=child_env(), label=ident)

    def is_elected(self, event: Event) -> bool:
        return event.kind == "line" and event.text.strip() == "elected"

    def ready(self, election: str, procs: list[Proc]) -> bool:
        with urllib.request.urlopen(f"http://{self.address}/v1/session/list", timeout=5) as r:
            sessions = json.load(r)
        count = sum(1 for s in sessions if s.get("Name") == election)
        return count == sum(1 for p in procs if p.alive())


class Tooz(Impl):
    """A tooz coordinator (``zookeeper://`` or ``redis://`` driver) in leader election."""

    def __init__(self, site: Site, ttl: float = 3.0) -> None:
        super().__init__(site, ttl, key="tooz")
        self.notes.append("heartbeat() + run_watchers() every 0.1 s")

    def tooz_url(self) -> str:
        server = self.site.server
        assert server is not None
        port = server.port  # type: ignore[attr-defined]
        if self.site.backend == "zookeeper":
            return f"zookeeper://127.0.0.1:{port}?timeout={int(self.ttl)}"
        return f"redis://127.0.0.1:{port}?lock_timeout={int(self.ttl)}"

    def spawn(self, election: str, ident: str) -> Proc:
        argv = [PYTHON, "-m", "benchmarks.worker", "tooz", "--url", self.tooz_url()]
        argv += ["--group", election, "--member", ident]
        return Proc(argv, log=self.site.log(ident), env=child_env(), label=ident)


class RedisLock(Impl):
    """A redis-py ``Lock`` loop (blocking acquire, 0.1 s between tries)."""

    def __init__(self, site: Site, ttl: float = 3.0) -> None:
        super().__init__(site, ttl, key="redis-py Lock")
        self.notes.append("Lock(timeout=ttl, sleep=0.1), reacquire() every ttl/3")

    def spawn(self, election: str, ident: str) -> Proc:
        argv = [PYTHON, "-m", "benchmarks.worker", "redislock", "--url", self.site.url]
        argv += ["--name", election, "--member", ident, "--ttl", f"{self.ttl:g}"]
        return Proc(argv, log=self.site.log(ident), env=child_env(), label=ident)


def server_requests(site: Site) -> int | None:
    """Requests the server has answered so far, where it counts them exactly, else ``None``.

    etcd: the sum of ``grpc_server_msg_received_total`` on ``/metrics`` (every unary request and
    every message on a stream; the HTTP gateway's requests arrive there as gRPC too). Redis: the
    sum of ``calls`` in ``INFO commandstats``, less the ``INFO`` calls made to read it.
    """
    server = site.server
    if site.backend == "etcd" and server is not None:
        port = server.client_port  # type: ignore[attr-defined]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("grpc_server_msg_received_total{")
        )
    if site.backend == "redis" and server is not None:
        import redis

        client = redis.Redis(port=server.port)  # type: ignore[attr-defined]
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        calls = sum(int(v["calls"]) for v in stats.values())
        return calls - int(stats.get("cmdstat_info", {}).get("calls", 0))
    return None


def impls_for(site: Site, *, ttl: float = 3.0, peers: bool = True) -> list[Impl]:
    """leadercron and the peers that run on ``site``'s backend, for the handover runs."""
    found: list[Impl] = [Leadercron(site, ttl=ttl)]
    if not peers:
        return found
    if site.backend == "etcd":
        found.append(EtcdctlElect(site))
    elif site.backend == "consul":
        found.append(ConsulLock(site))
    elif site.backend == "zookeeper":
        found.append(Tooz(site, ttl=ttl))
    elif site.backend == "redis":
        found += [Tooz(site, ttl=ttl), RedisLock(site, ttl=ttl)]
    return found


def steady_impls_for(site: Site, *, peers: bool = True) -> list[Impl]:
    """The same, with the default timing (ttl 15 s, renew 10 s, retry 2 s) where one is set."""
    found: list[Impl] = [Leadercron(site, ttl=15.0, renew_deadline=10.0, retry_period=2.0)]
    if not peers:
        return found
    if site.backend == "etcd":
        found.append(EtcdctlElect(site))
    elif site.backend == "consul":
        found.append(ConsulLock(site))
    elif site.backend == "zookeeper":
        found.append(Tooz(site, ttl=15.0))
    elif site.backend == "redis":
        found += [Tooz(site, ttl=15.0), RedisLock(site, ttl=15.0)]
    return found
