"""Per-job distributed locks: run a piece of work only while holding a lock in a backend.

:func:`hold` takes the lock (acquire-if-absent, like an election), extends it while the work
runs (a renew every ``ttl / 3``) and releases it at the end. If an extension fails — the lock was
lost, or could not be renewed for ``ttl * 2 / 3`` — it calls ``on_lost`` so that the work can
stop before the lock can pass to another replica. :func:`locked` wraps any APScheduler job
function the same way and skips the run (logged) when another replica holds the lock.

Wrapper order: put :func:`locked` *outermost*, so that the lock is held for everything the other
wrappers do (retries, timing, error reporting)::

    @locked(backend, "nightly-export", ttl=60)
    @retry(3)
    def export() -> None: ...
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from prometheus_client import Counter

from leadercron.backends.base import Backend, Lease
from leadercron.errors import BackendUnavailable, LeadercronError

log = logging.getLogger("leadercron.locks")

#: Calls of :func:`locked` functions skipped because another holder had the lock, by lock name.
#: Registered in prometheus_client's default registry (what ``start_http_server`` serves).
SKIPS = Counter(
    "leadercron_locked_skips_total",
    "Calls of @locked functions skipped because another holder had the lock.",
    ("lock",),
)

P = ParamSpec("P")
R = TypeVar("R")


class LockHeld(LeadercronError):
    """Another holder has the lock: the work is skipped."""


class Holding:
    """A lock being held: its current lease, and whether it is still held."""

    def __init__(
        self,
        backend: Backend,
        lease: Lease,
        on_lost: Callable[[str], None] | None,
        *,
        acquired_at: float | None = None,
    ) -> None:
        self.backend = backend
        self.lease = lease
        self.on_lost = on_lost
        self._lost: str | None = None
        self._stop = threading.Event()
        # The instant the acquire was *sent* (the backend's ttl runs from no earlier than that).
        self._renewed_at = time.monotonic() if acquired_at is None else acquired_at
        self._thread = threading.Thread(
            target=self._extend, name=f"leadercron-lock-{lease.election}", daemon=True
        )

    @property
    def held(self) -> bool:
        """Whether the lock is still held (not lost, and renewed within ``ttl * 2 / 3``)."""
        deadline = self._renewed_at + self.lease.ttl * 2 / 3
        return self._lost is None and time.monotonic() < deadline

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            log.warning(
                "lock lost lock=%s term=%d: %s", self.lease.election, self.lease.token, reason
            )
            if self.on_lost is not None:
                self.on_lost(reason)

    def _extend(self) -> None:
        period = self.lease.ttl / 3
        while not self._stop.wait(period):
            sent = time.monotonic()
            try:
                renewed = self.backend.renew(self.lease)
            except BackendUnavailable as exc:
                if time.monotonic() >= self._renewed_at + self.lease.ttl * 2 / 3:
                    self._lose(f"not renewed in time: {exc}")
                    return
                continue
            if renewed is None:
                self._lose("the backend no longer holds this lock")
                return
            self.lease = renewed
            self._renewed_at = sent

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.lease.ttl)


@contextmanager
def hold(
    backend: Backend,
    name: str,
    *,
    ttl: float,
    identity: str | None = None,
    on_lost: Callable[[str], None] | None = None,
) -> Iterator[Holding]:
    """Hold lock ``name`` for the ``with`` block, extending it; raise :class:`LockHeld` if taken.

    ``BackendUnavailable`` propagates: whether the lock is free is then unknown.
    """
    if ttl <= 0:
        raise ValueError("ttl must be greater than 0")
    who = identity or f"{socket.gethostname()}-{threading.get_native_id()}"
    sent = time.monotonic()
    lease = backend.acquire(name, who, ttl)
    if lease is None:
        raise LockHeld(f"lock {name!r} is held by another holder")
    holding = Holding(backend, lease, on_lost, acquired_at=sent)
    holding.start()
    try:
        yield holding
    finally:
        holding.stop()
        try:
            backend.release(holding.lease)
        except BackendUnavailable as exc:
            log.warning("release of lock=%s failed: %s (it expires by itself)", name, exc)


def locked(
    backend: Backend, name: str | None = None, *, ttl: float = 60.0, identity: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorate a job function so that each call runs only while holding lock ``name``.

    ``name`` defaults to the function's qualified name. A call that finds the lock held
    elsewhere is skipped: it logs one line, counts it in :data:`SKIPS`
    (``leadercron_locked_skips_total{lock=...}``) and returns ``None``. If the lock is lost
    while the function runs, the run's :attr:`leadercron.Run.cancelled` event is set when the
    function runs under leadercron (``current_run()``); either way ``Holding.held`` turns false.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R | None]:
        lock_name = name or f"{func.__module__}.{func.__qualname__}"

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            from leadercron.term import current_run

            run = current_run()

            def lost(reason: str) -> None:
                if run is not None:
                    run.cancel()

            try:
                with hold(backend, lock_name, ttl=ttl, identity=identity, on_lost=lost):
                    return func(*args, **kwargs)
            except LockHeld:
                log.info("skipped lock=%s: held by another holder", lock_name)
                SKIPS.labels(lock=lock_name).inc()
                return None

        return wrapper

    return decorate


__all__ = ["SKIPS", "Holding", "LockHeld", "hold", "locked"]
