"""The elector: campaign, renew and release on a backend, with leadership as a local expiry.

States (:class:`State`)::

    FOLLOWER ──acquired──▶ LEADER ──lost / deadline / shutdown──▶ STEPPING_DOWN ──▶ FOLLOWER
        │                    │ ▲                                                   └──▶ STOPPED
        └──stop──▶ STOPPED   └─┘ renewed (a doubt raised by the backend is lifted)

* A FOLLOWER calls :meth:`Backend.acquire`; when it loses it blocks in
  :meth:`Backend.wait_for_change` (the backend's own notifications) and tries again when woken.
  Backend errors are retried with exponential backoff from ``retry_period`` up to ``ttl``.
* A LEADER renews every ``retry_period``. Leadership is never a stored flag: it is the instant
  ``last successful renew sent + renew_deadline`` on the monotonic clock. The leader may dispatch
  only before that instant (:meth:`Elector.is_leader` compares the clock, so it stops the moment
  the deadline passes even while a backend call hangs; a late answer never extends it). The
  backend keeps the lease for ``ttl`` > ``renew_deadline`` after the same send time, so the
  margin ``ttl - renew_deadline`` absorbs clock-rate drift and the time from the dispatch check to
  a job's start.
* A backend may raise a *doubt* (:meth:`Backend.set_alarm`), e.g. a ZooKeeper connection
  suspended: dispatching stops at once and the elector renews immediately to confirm.
* STEPPING_DOWN closes dispatching first, tells listeners, then releases the lease
  (compare-and-delete) so that a follower takes over at once.

Every transition logs one line with the identity, election, term and reason.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from leadercron.backends.base import Backend, Lease
from leadercron.clock import SYSTEM_CLOCK, Clock
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError
from leadercron.term import Term

log = logging.getLogger("leadercron.elector")

T = TypeVar("T")


class State(enum.Enum):
    """Where the elector is. Only LEADER may dispatch, and only before its local deadline."""

    FOLLOWER = "follower"
    LEADER = "leader"
    STEPPING_DOWN = "stepping-down"
    STOPPED = "stopped"


class Listener:
    """Receives the elector's transitions. Methods run on the elector's thread and must not block.

    Subclass and override what you need; every method defaults to doing nothing.
    """

    def elected(self, term: Term) -> None:
        """This replica leads in ``term``: dispatching may start."""

    def suspended(self, term: Term, reason: str) -> None:
        """Leadership is in doubt: stop dispatching, the term may still be held."""

    def resumed(self, term: Term) -> None:
        """A renew confirmed the term after a doubt: dispatching may resume."""

    def lost(self, term: Term, reason: str) -> None:
        """The term is over (lost, expired locally, or given up at shutdown)."""

    def renewed(self, term: Term, ok: bool, seconds: float) -> None:
        """A renew attempt finished (``ok`` is False for an error or a loss)."""

    def backend_health(self, up: bool) -> None:
        """The backend answered (``up``) or failed, after a change of that fact."""


def validate_timing(ttl: float, renew_deadline: float, retry_period: float) -> None:
    """Require ``ttl > renew_deadline > retry_period > 0``; raise a one-line ConfigError."""
    if not retry_period > 0:
        raise ConfigError(f"retry_period must be > 0, got {retry_period:g}s")
    if not renew_deadline > retry_period:
        raise ConfigError(
            f"renew_deadline ({renew_deadline:g}s) must be greater than retry_period "
            f"({retry_period:g}s): a leader needs more than one renew attempt before it steps down"
        )
    if not ttl > renew_deadline:
        raise ConfigError(
            f"ttl ({ttl:g}s) must be greater than renew_deadline ({renew_deadline:g}s): a leader "
            f"must stop dispatching before the backend can hand its lease to another replica"
        )


class _Stopped(Exception):
    """Internal: the elector is stopping; the pending call was abandoned."""


class Elector:
    """Campaigns for one election on one backend and keeps this replica's leadership.

    Create it, :meth:`subscribe` listeners, :meth:`start` it (a daemon thread), and call
    :meth:`stop` to resign. :meth:`is_leader` and :meth:`term` are safe from any thread.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        election: str,
        identity: str,
        ttl: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        validate_timing(ttl, renew_deadline, retry_period)
        backend.validate_timing(ttl=ttl, renew_deadline=renew_deadline, retry_period=retry_period)
        backend.validate_election(election)
        if not election:
            raise ConfigError("election name must not be empty")
        if not identity:
            raise ConfigError("identity must not be empty")
        self.backend = backend
        self.election = election
        self.identity = identity
        self.ttl = ttl
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock

        self._state = State.FOLLOWER
        self._listeners: list[Listener] = []
        self._lease: Lease | None = None
        # (term, local expiry); replaced as a whole so that readers on other threads need no lock.
        self._lead: tuple[Term, float] | None = None
        self._doubt: str | None = None
        self._doubt_told = False
        self._doubt_checked = False
        self._next_renew = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._backend_up: bool | None = None
        self._last_wait_instant = False
        self.last_renew: datetime | None = None
        self.leader_since: datetime | None = None
        backend.set_alarm(self._on_alarm)

    # -- what other threads may ask ------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    def is_leader(self) -> bool:
        """Whether this replica may dispatch at this instant: it leads, no doubt, deadline ahead."""
        lead = self._lead
        return lead is not None and self._doubt is None and self.clock.monotonic() < lead[1]

    def term(self) -> Term | None:
        """The current term if :meth:`is_leader`, else ``None``."""
        lead = self._lead
        if lead is None or self._doubt is not None or self.clock.monotonic() >= lead[1]:
            return None
        return lead[0]

    def lease(self, term: Term) -> Lease | None:
        """The backend lease of ``term`` while it is current (for fenced claims), else ``None``."""
        lease = self._lease
        current = self.term()
        if lease is None or current is None or current.token != term.token:
            return None
        return lease if lease.token == term.token else None

    def holds(self, token: int) -> bool:
        """Whether this replica leads right now in the term with fencing token ``token``."""
        term = self.term()
        return term is not None and term.token == token

    @property
    def alive(self) -> bool:
        """Whether the elector loop is running (started and not yet stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def deadline(self) -> float | None:
        """The current term's local deadline on :attr:`clock`, or ``None`` between terms."""
        lead = self._lead
        return None if lead is None else lead[1]

    def remaining(self) -> float:
        """Seconds until the local deadline (0 when not leading)."""
        lead = self._lead
        return 0.0 if lead is None else max(0.0, lead[1] - self.clock.monotonic())

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("elector already started")
        self._thread = threading.Thread(
            target=self.run, name=f"leadercron-elector-{self.election}", daemon=True
        )
        self._thread.start()

    def stop(self, *, release: bool = True, timeout: float | None = None) -> None:
        """Stop campaigning. A leader steps down and, with ``release``, releases at once."""
        self._release_on_stop = release
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self) -> None:
        """The elector loop; :meth:`start` runs it on a thread of its own."""
        log.info(
            "campaigning election=%s identity=%s backend=%s ttl=%gs renew_deadline=%gs "
            "retry_period=%gs",
            self.election,
            self.identity,
            self.backend.url,
            self.ttl,
            self.renew_deadline,
            self.retry_period,
        )
        try:
            while not self._stopping.is_set():
                if self._lease is None:
                    self._campaign()
                else:
                    self._hold()
        finally:
            if self._lease is not None:
                self._step_down("shutdown", release=self._release_on_stop, final=True)
            else:
                self._transition(State.STOPPED, None, "shutdown")

    # -- follower ------------------------------------------------------------------------------

    def _campaign(self) -> None:
        sent = self.clock.monotonic()
        try:
            lease = self._call(
                self.backend.acquire,
                self.election,
                self.identity,
                self.ttl,
                deadline=sent + self.renew_deadline,
                on_late=self._release_quietly,
            )
        except _Stopped:
            return
        except BackendUnavailable as exc:
            self._backend_failed("acquire", exc)
            self._sleep(self._backoff())
            return
        self._backend_ok()
        if lease is None:
            self._wait_for_change()
            return
        expiry = sent + self.renew_deadline
        if self.clock.monotonic() >= expiry:
            log.warning(
                "acquire took longer than renew_deadline election=%s identity=%s term=%d: "
                "giving the lease back",
                self.election,
                self.identity,
                lease.token,
            )
            self._release_quietly(lease)
            return
        self._become_leader(lease, expiry)

    def _wait_for_change(self) -> None:
        started = self.clock.monotonic()
        try:
            self._call(
                self.backend.wait_for_change,
                self.election,
                self.ttl,
                deadline=started + self.ttl + self.retry_period,
            )
        except _Stopped:
            return
        except BackendUnavailable as exc:
            self._backend_failed("wait", exc)
            self._sleep(self._backoff())
            return
        # A backend that keeps returning at once (a holder it cannot see expire) must not turn
        # the campaign into a busy loop: after two instant returns in a row, pause briefly.
        instant = self.clock.monotonic() - started < 0.001
        if instant and self._last_wait_instant:
            self._sleep(min(0.05, self.retry_period))
        self._last_wait_instant = instant

    def _become_leader(self, lease: Lease, expiry: float) -> None:
        self._lease = lease
        now_wall = datetime.now(UTC)
        term = Term(
            election=self.election,
            identity=self.identity,
            token=lease.token,
            started_at=now_wall,
            _holds=self.holds,
        )
        self._doubt = None
        self._doubt_told = False
        self._next_renew = expiry - self.renew_deadline + self.retry_period
        self._lead = (term, expiry)
        self.leader_since = now_wall
        self.last_renew = now_wall
        self._transition(State.LEADER, term, "acquired")
        for listener in self._listeners:
            listener.elected(term)

    # -- leader --------------------------------------------------------------------------------

    def _hold(self) -> None:
        assert self._lead is not None
        term, expiry = self._lead
        while not self._stopping.is_set():
            self._wake.clear()
            self._tell_doubt(term)
            now = self.clock.monotonic()
            if now >= expiry:
                self._step_down("renew deadline passed without a successful renew")
                return
            if now >= self._next_renew:
                break
            if self._doubt is not None and not self._doubt_checked:
                self._doubt_checked = True  # confirm once at once, then at the usual cadence
                break
            self.clock.wait(self._wake, min(self._next_renew, expiry) - now)
        if not self._stopping.is_set():
            self._renew(term, expiry)

    def _renew(self, term: Term, expiry: float) -> None:
        assert self._lease is not None
        sent = self.clock.monotonic()
        self._next_renew = sent + self.retry_period
        try:
            renewed = self._call(self.backend.renew, self._lease, deadline=expiry)
        except _Stopped:
            return
        except BackendUnavailable as exc:
            # Keep the old deadline; _hold retries every retry_period and steps down at it.
            self._backend_failed("renew", exc)
            self._notify_renewed(term, ok=False, sent=sent)
            return
        self._backend_ok()
        self._notify_renewed(term, ok=renewed is not None, sent=sent)
        if renewed is None:
            self._step_down("lease lost: the backend no longer holds this term")
            return
        self._lease = renewed
        self._lead = (term, sent + self.renew_deadline)
        self.last_renew = datetime.now(UTC)
        if self._doubt is not None:
            reason, self._doubt = self._doubt, None
            if self._doubt_told:
                self._doubt_told = False
                log.info(
                    "doubt lifted election=%s identity=%s term=%d (was: %s)",
                    self.election,
                    self.identity,
                    term.token,
                    reason,
                )
                for listener in self._listeners:
                    listener.resumed(term)

    def _notify_renewed(self, term: Term, *, ok: bool, sent: float) -> None:
        seconds = self.clock.monotonic() - sent
        for listener in self._listeners:
            listener.renewed(term, ok, seconds)

    def _step_down(self, reason: str, *, release: bool = True, final: bool = False) -> None:
        lease, lead = self._lease, self._lead
        self._lead = None  # dispatching closes before anything else happens
        term = lead[0] if lead is not None else None
        self._transition(State.STEPPING_DOWN, term, reason)
        if term is not None:
            for listener in self._listeners:
                listener.lost(term, reason)
        if release and lease is not None:
            try:
                self._call(
                    self.backend.release,
                    lease,
                    deadline=self.clock.monotonic() + self.retry_period,
                    stoppable=False,
                )
            except (BackendUnavailable, _Stopped) as exc:
                log.warning(
                    "release failed election=%s identity=%s term=%d: %s (the lease will expire)",
                    self.election,
                    self.identity,
                    lease.token,
                    exc,
                )
        self._lease = None
        self._doubt = None
        self._doubt_told = False
        self._transition(State.STOPPED if final else State.FOLLOWER, term, reason)

    # -- doubts raised by the backend ----------------------------------------------------------

    def _on_alarm(self, reason: str) -> None:
        if self._lead is not None and self._doubt is None:
            self._doubt_checked = False
            self._doubt = reason
            self._wake.set()

    def _tell_doubt(self, term: Term) -> None:
        if self._doubt is not None and not self._doubt_told:
            self._doubt_told = True
            log.warning(
                "leadership in doubt election=%s identity=%s term=%d: %s; dispatching stopped",
                self.election,
                self.identity,
                term.token,
                self._doubt,
            )
            for listener in self._listeners:
                listener.suspended(term, self._doubt)

    # -- plumbing ------------------------------------------------------------------------------

    def _transition(self, new: State, term: Term | None, reason: str) -> None:
        old, self._state = self._state, new
        if old is new:
            return
        log.info(
            "%s -> %s election=%s identity=%s term=%s reason=%s",
            old.value,
            new.value,
            self.election,
            self.identity,
            "-" if term is None else term.token,
            reason,
        )

    def _call(
        self,
        fn: Callable[..., T],
        *args: Any,
        deadline: float,
        on_late: Callable[[Any], None] | None = None,
        stoppable: bool = True,
    ) -> T:
        """Run a backend call on a worker thread; give up on it at ``deadline`` (or on stop).

        A call given up on keeps running; if it later returns a value and ``on_late`` is given,
        ``on_late(value)`` runs (to release a lease nobody will use). Never returns after the
        deadline, so a hung backend cannot hold the elector past its local expiry.
        """
        done = threading.Event()
        box: dict[str, Any] = {}
        guard = threading.Lock()

        def target() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as exc:
                box["error"] = exc
            with guard:
                done.set()
                abandoned = box.get("abandoned", False)
            self._wake.set()
            if abandoned and on_late is not None and box.get("result") is not None:
                try:
                    on_late(box["result"])
                except Exception:
                    log.debug("late cleanup failed", exc_info=True)

        worker = threading.Thread(
            target=target, name=f"leadercron-call-{getattr(fn, '__name__', 'call')}", daemon=True
        )
        worker.start()
        while True:
            self._wake.clear()
            if done.is_set():
                break
            if self._lead is not None:
                self._tell_doubt(self._lead[0])
            now = self.clock.monotonic()
            stop = stoppable and self._stopping.is_set()
            if now >= deadline or stop:
                with guard:
                    if not done.is_set():
                        box["abandoned"] = True
                if box.get("abandoned"):
                    if stop:
                        raise _Stopped
                    raise BackendUnavailable(
                        f"{getattr(fn, '__name__', 'call')} did not answer in time"
                    )
                break
            self.clock.wait(self._wake, deadline - now)
        if "error" in box:
            error = box["error"]
            if isinstance(error, BackendUnavailable):
                raise error
            if isinstance(error, Exception):
                raise BackendUnavailable(f"{type(error).__name__}: {error}") from error
            raise error
        return box["result"]  # type: ignore[no-any-return]

    def _release_quietly(self, lease: Lease) -> None:
        try:
            self.backend.release(lease)
        except BackendUnavailable as exc:
            log.debug("release of an unused lease failed: %s", exc)

    def _backend_failed(self, what: str, exc: BackendUnavailable) -> None:
        self._failures += 1
        auth = isinstance(exc, BackendAuthError)
        kind = "credentials rejected" if auth else "backend unavailable"
        log.warning(
            "%s: %s failed election=%s identity=%s attempt=%d: %s",
            kind,
            what,
            self.election,
            self.identity,
            self._failures,
            exc,
        )
        if self._backend_up is not False:
            self._backend_up = False
            for listener in self._listeners:
                listener.backend_health(False)

    def _backend_ok(self) -> None:
        if self._failures:
            log.info(
                "backend reachable again election=%s identity=%s after %d failed attempts",
                self.election,
                self.identity,
                self._failures,
            )
        self._failures = 0
        if self._backend_up is not True:
            self._backend_up = True
            for listener in self._listeners:
                listener.backend_health(True)

    def _backoff(self) -> float:
        exponent = min(self._failures - 1, 16)
        delay = min(self.retry_period * (2**exponent), max(self.ttl, self.retry_period))
        return float(delay * random.uniform(0.8, 1.2))

    def _sleep(self, seconds: float) -> None:
        self._sleep_until(self.clock.monotonic() + seconds)

    def _sleep_until(self, instant: float) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            now = self.clock.monotonic()
            if now >= instant:
                return
            self.clock.wait(self._wake, instant - now)
