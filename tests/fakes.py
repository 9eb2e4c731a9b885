"""Test doubles: a hand-driven clock and a backend whose calls can be made to hang or fail."""

from __future__ import annotations

import threading
import time

from leadercron.backends.base import Backend, LeaderInfo, Lease
from leadercron.backends.memory import MemoryBackend
from leadercron.errors import BackendUnavailable


class FakeClock:
    """Monotonic time that moves only when a test calls :meth:`advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def wait(self, event: threading.Event, timeout: float) -> bool:
        deadline = self.monotonic() + max(0.0, timeout)
        while not event.is_set():
            if self.monotonic() >= deadline:
                return False
            event.wait(0.002)
        return True


class ControlledBackend(Backend):
    """A memory backend on a fake clock whose calls a test can make hang or fail."""

    schemes = ("controlled",)

    def __init__(self, clock: FakeClock, store: str) -> None:
        self.inner = MemoryBackend(store, clock=clock.monotonic)
        self.url = "controlled://"
        self.hang = threading.Event()  # set: calls block until ``unhang`` is set
        self.unhang = threading.Event()
        self.fail = False
        self.calls: list[str] = []
        self.entered = threading.Event()

    @classmethod
    def from_url(cls, url: str) -> Backend:
        raise NotImplementedError

    def _gate(self, name: str) -> None:
        self.calls.append(name)
        if self.fail:
            raise BackendUnavailable(f"{name}: injected failure")
        if self.hang.is_set():
            self.entered.set()
            self.unhang.wait(30)

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        self._gate("acquire")
        return self.inner.acquire(election, identity, ttl)

    def renew(self, lease: Lease) -> Lease | None:
        self._gate("renew")
        return self.inner.renew(lease)

    def release(self, lease: Lease) -> None:
        self._gate("release")
        self.inner.release(lease)

    def leader(self, election: str) -> LeaderInfo | None:
        return self.inner.leader(election)

    def wait_for_change(self, election: str, timeout: float) -> None:
        self._gate("wait")
        # Real-time bound: fake-clock tests drive waits through the elector's own deadline.
        self.inner.wait_for_change(election, min(timeout, 0.05))
        time.sleep(0.001)

    def close(self) -> None:
        self.unhang.set()
        self.inner.close()
