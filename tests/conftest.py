"""Fixtures shared by every test: one backend fixture parametrized over every backend.

Backends with a server get a real one, started once per test session on free loopback ports;
tests that stop, kill or pause a server ask for ``fresh_server`` and get their own.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from leadercron.backends import Backend, Lease, from_url
from tests.servers import SERVERS, server_class
from tests.servers.base import Server

ROOT = Path(__file__).resolve().parent.parent
_ALL_BACKENDS = ["memory", "file", *SERVERS]
#: ``LEADERCRON_TEST_BACKENDS=memory,file pytest`` runs the backend suites on a subset.
BACKENDS = [
    b for b in os.environ.get("LEADERCRON_TEST_BACKENDS", ",".join(_ALL_BACKENDS)).split(",") if b
]
_unknown = set(BACKENDS) - set(_ALL_BACKENDS)
if _unknown:
    raise RuntimeError(f"LEADERCRON_TEST_BACKENDS names unknown backends: {sorted(_unknown)}")


@dataclass
class BackendCase:
    """One backend under test: how to reach it and how short its ttl may be."""

    name: str
    base_url: str
    ttl: float
    server: Server | None = None
    made: list[Backend] = field(default_factory=list)

    def make(self, url: str | None = None) -> Backend:
        backend = from_url(url or self.base_url)
        self.made.append(backend)
        return backend

    @property
    def multiprocess(self) -> bool:
        """Whether separate processes can share an election through this backend."""
        return self.name != "memory"

    def close_all(self) -> None:
        for backend in self.made:
            with contextlib.suppress(Exception):
                backend.close()


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    yield started
    for server in started.values():
        server.cleanup()


def _case(name: str, servers: dict[str, Server], tmp_path: Path, fresh: bool) -> BackendCase:
    if name == "memory":
        return BackendCase(name, f"memory://{uuid.uuid4().hex}", ttl=1.0)
    if name == "file":
        return BackendCase(name, f"file://{tmp_path / 'election.lock'}", ttl=1.0)
    cls = server_class(name)
    if fresh:
        server = cls()
        server.start()
    else:
        server = shared_server(servers, name)
    return BackendCase(name, server.url(), ttl=cls.min_ttl, server=server)


def shared_server(servers: dict[str, Server], name: str) -> Server:
    """The test session's server for backend ``name``, started on first use."""
    if name not in servers:
        servers[name] = server_class(name)()
        servers[name].start()
    return servers[name]


@pytest.fixture(params=BACKENDS)
def backend_case(
    request: pytest.FixtureRequest, servers: dict[str, Server], tmp_path: Path
) -> Iterator[BackendCase]:
    case = _case(request.param, servers, tmp_path, fresh=False)
    yield case
    case.close_all()


@pytest.fixture(params=[b for b in BACKENDS if b not in ("memory", "file")])
def fresh_server_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendCase]:
    """A backend on a server of its own, which the test may pause, kill and restart."""
    case = _case(request.param, {}, tmp_path, fresh=True)
    yield case
    case.close_all()
    assert case.server is not None
    case.server.cleanup()


@pytest.fixture
def fresh_case(tmp_path: Path) -> Iterator[Callable[[str], BackendCase]]:
    """A factory: ``fresh_case(name)`` starts a server of its own for backend ``name``."""
    made: list[BackendCase] = []

    def factory(name: str) -> BackendCase:
        case = _case(name, {}, tmp_path, fresh=True)
        made.append(case)
        return case

    yield factory
    for case in made:
        case.close_all()
        if case.server is not None:
            case.server.cleanup()


@pytest.fixture
def election() -> str:
    """An election name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def python_env() -> dict[str, str]:
    """Environment for child Python processes that import leadercron and tests from this tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes (for tests only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def campaign(backend: Backend, election: str, identity: str, ttl: float, timeout: float) -> Lease:
    """Campaign the way the elector does: acquire, else wait for a change, until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lease = backend.acquire(election, identity, ttl)
        if lease is not None:
            return lease
        backend.wait_for_change(election, min(ttl, max(0.01, deadline - time.monotonic())))
    raise AssertionError(f"{identity} did not acquire {election} within {timeout}s")


def waiting(backend: Backend, election: str, timeout: float) -> threading.Event:
    """Call ``wait_for_change`` in a thread; the event is set when it returns (or raises)."""
    returned = threading.Event()

    def wait() -> None:
        try:
            backend.wait_for_change(election, timeout)
        finally:
            returned.set()

    threading.Thread(target=wait, daemon=True).start()
    return returned


PYTHON = sys.executable
