"""In-process backend for tests and the Python API.

URL: ``memory://[store]`` — backends made from the same store name in one process share their
elections (the default store is ``default``). No options.

Everything happens under one lock, so acquire-if-absent, compare-and-set and compare-and-delete are
trivially atomic; expiry is checked against the backend's clock (``time.monotonic`` unless a test
injects a fake one); waits are woken through a condition, never by polling.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from leadercron.backends.base import (
    Backend,
    LeaderInfo,
    Lease,
    Notifier,
    parse_url,
    reject_unknown_options,
)


@dataclass
class _Record:
    identity: str
    token: int
    expires: float
    owner: int  # id of the backend instance holding it


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, _Record] = {}
        self.ledgers: dict[str, dict[str, int]] = {}
        self.tokens: dict[str, int] = {}
        self.notifier = Notifier()


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()
_instance_ids = itertools.count(1)


def _store(name: str) -> _Store:
    with _stores_lock:
        return _stores.setdefault(name, _Store())


class MemoryBackend(Backend):
    """Elections kept in this process. See the module docstring for the URL."""

    schemes = ("memory",)
    supports_claims = True

    def __init__(self, store: str = "default", *, clock: Callable[[], float] = time.monotonic):
        self._store = _store(store)
        self._clock = clock
        self._id = next(_instance_ids)
        self._closed = False
        self.url = f"memory://{store}"

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        parts, options = parse_url(url, cls.schemes)
        reject_unknown_options(url, options, set())
        return cls(parts.netloc or "default")

    def _live(self, election: str, now: float) -> _Record | None:
        record = self._store.records.get(election)
        if record is not None and record.expires <= now:
            del self._store.records[election]
            self._store.notifier.bump()
            return None
        return record

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        with self._store.lock:
            now = self._clock()
            if self._live(election, now) is not None:
                return None
            token = self._store.tokens.get(election, 0) + 1
            self._store.tokens[election] = token
            self._store.records[election] = _Record(identity, token, now + ttl, self._id)
            return Lease(election, identity, token, ttl, handle=self._id)

    def renew(self, lease: Lease) -> Lease | None:
        with self._store.lock:
            now = self._clock()
            record = self._live(lease.election, now)
            if record is None or record.token != lease.token or record.owner != lease.handle:
                return None
            record.expires = now + lease.ttl
            return lease

    def release(self, lease: Lease) -> None:
        with self._store.lock:
            record = self._store.records.get(lease.election)
            if record is not None and record.token == lease.token and record.owner == lease.handle:
                del self._store.records[lease.election]
                self._store.notifier.bump()

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        with self._store.lock:
            record = self._live(lease.election, self._clock())
            if record is None or record.token != lease.token or record.owner != lease.handle:
                return False
            ledger = self._store.ledgers.setdefault(lease.election, {})
            if fire <= ledger.get(job_id, -1):
                return False
            ledger[job_id] = fire
            return True

    def ledger(self, election: str) -> dict[str, int]:
        with self._store.lock:
            return dict(self._store.ledgers.get(election, {}))

    def leader(self, election: str) -> LeaderInfo | None:
        with self._store.lock:
            record = self._live(election, self._clock())
            return None if record is None else LeaderInfo(record.identity, record.token)

    def wait_for_change(self, election: str, timeout: float) -> None:
        notifier = self._store.notifier
        seen = notifier.generation
        with self._store.lock:
            record = self._live(election, self._clock())
            if record is None or self._closed:
                return
            # The holder may vanish silently by expiry: wake by then at the latest.
            timeout = min(timeout, record.expires - self._clock())
        notifier.wait(seen, timeout)

    def close(self) -> None:
        self._closed = True
        self._store.notifier.bump()
