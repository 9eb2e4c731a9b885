"""Per-job mode: every replica runs its scheduler, and each fire first takes its job's lock.

In leader mode one replica runs every job. In per-job mode every replica's scheduler is live and
fires every job at the same (anchored) instants; each fire then races for the job's own lock in
the backend — the same acquire-if-absent as an election, named ``<election>.<job id>`` unless the
job names its ``lock`` — and only the replica that gets it runs that fire. The others skip it
(logged, counted as ``locked``). Jobs therefore spread over the replicas, and a long job on one
replica does not hold up the other jobs.

Per fire, in the worker, right before the job (:meth:`PerJobScheduler._admit`):

1. ``acquire(lock, identity, lock_ttl)``; ``None`` → skip, the lock is held elsewhere.
2. ``claim(lease, job, fire)``: the same fenced claim as leader mode, keyed by the lock's lease.
   A fire that any replica has already claimed — it got the lock first, ran, and released it
   before this replica asked — is refused by the backend. So each (job, scheduled time) runs at
   most once, however the replicas race.
3. The lock is extended every ``lock_ttl / 3`` while the job runs
   (:class:`~leadercron.locks.Holding`). If an extension fails — the lock was lost, or not
   renewed for ``lock_ttl * 2 / 3`` — the run's term stops
   being ``held`` and, under ``on_lost: cancel``, the run is cancelled.
4. When the job ends the lock is released, so the next fire is free for any replica.

The fencing token a job sees (``LEADERCRON_TERM``, ``current_term().token``) is the lock's token:
it increases with every acquisition of that job's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.job import Job
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler

from leadercron.backends.base import Backend, Lease
from leadercron.errors import BackendUnavailable
from leadercron.locks import Holding
from leadercron.scheduler import EPOCH, GuardedScheduler, OnLost, fire_key
from leadercron.term import Run, Term, format_time

log = logging.getLogger("leadercron.jobs")


def lock_name(election: str, job_id: str) -> str:
    """The default lock of a job in per-job mode: ``<election>.<job id>``."""
    return f"{election}.{job_id}"


@dataclass(frozen=True)
class HeldLock:
    """A job lock this replica holds right now (for ``/status``)."""

    job_id: str
    lock: str
    token: int
    since: datetime


class PerJobScheduler(GuardedScheduler):
    """Runs every fire whose job lock this replica wins; see the module docstring.

    ``locks`` maps job ids to lock names and ``ttls`` job ids to lock ttls (seconds); a job not
    listed gets ``lock_name(election, job_id)`` and ``default_ttl``. ``identity`` names this
    replica in the backend. The scheduler is started live (not paused).
    """

    def __init__(
        self,
        scheduler: BaseScheduler,
        backend: Backend,
        *,
        election: str,
        identity: str,
        default_ttl: float = 60.0,
        locks: Mapping[str, str] | None = None,
        ttls: Mapping[str, float] | None = None,
        on_lost: OnLost = "finish",
        origin: datetime = EPOCH,
        max_workers: int = 10,
    ) -> None:
        super().__init__(scheduler, on_lost=on_lost, origin=origin, max_workers=max_workers)
        if default_ttl <= 0:
            raise ValueError("default_ttl must be greater than 0")
        self.backend = backend
        self.election = election
        self.identity = identity
        self.default_ttl = default_ttl
        self.locks = dict(locks or {})
        self.ttls = dict(ttls or {})
        self._held: dict[Run, tuple[Holding, HeldLock]] = {}
        self._held_jobs: set[str] = set()
        self._state = threading.Lock()
        self._health: list[Callable[[bool], None]] = []
        self._lost_observers: list[Callable[[str], None]] = []
        self._started = threading.Event()

    # -- set-up and life cycle ------------------------------------------------------------------

    def lock_for(self, job_id: str) -> str:
        return self.locks.get(job_id) or lock_name(self.election, job_id)

    def ttl_for(self, job_id: str) -> float:
        return self.ttls.get(job_id, self.default_ttl)

    def on_backend(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(up)`` after every backend call: whether the backend answered."""
        self._health.append(callback)

    def on_lock_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(job_id)`` when a running job's lock is lost (extension failed)."""
        self._lost_observers.append(callback)

    def start(self) -> None:
        """Start the scheduler (live: every replica fires) and probe the backend once."""
        if self.scheduler.state == STATE_STOPPED:
            self.scheduler.start()
        self._started.set()
        threading.Thread(target=self._probe, name="leadercron-probe", daemon=True).start()

    @property
    def alive(self) -> bool:
        """Whether the scheduler is dispatching (for ``/healthz``)."""
        return self._started.is_set() and self.scheduler.running and self._accepting

    def _probe(self) -> None:
        """Ask the backend about the first job's lock until it answers (readiness)."""
        jobs = self.scheduler.get_jobs()
        name = self.lock_for(jobs[0].id) if jobs else lock_name(self.election, "probe")
        delay = 0.5
        while self._accepting:
            try:
                self.backend.leader(name)
            except BackendUnavailable as exc:
                self._report(False)
                log.warning("backend not answering: %s", exc)
            else:
                self._report(True)
                return
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def held_locks(self) -> list[HeldLock]:
        """The job locks this replica holds right now."""
        with self._state:
            return [held for _holding, held in self._held.values()]

    def shutdown(self, grace: float, *, release: bool = True) -> bool:
        """Stop dispatching, let running jobs finish for up to ``grace`` s (then cancel them).

        Each run releases its lock as it ends, so the next fire is free for the other replicas
        at once. ``release`` is accepted for symmetry with :class:`LeaderScheduler`; locks are
        always released.
        """
        finished = self._stop_accepting(grace)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        return finished

    # -- dispatch (worker threads) ----------------------------------------------------------------

    def _report(self, up: bool) -> None:
        for callback in self._health:
            callback(up)

    def _admit(self, job: Job, run_time: datetime) -> tuple[Run | None, str]:
        name = self.lock_for(job.id)
        with self._state:
            if job.id in self._held_jobs:
                return None, "lock held by this replica (the previous run is still going)"
            self._held_jobs.add(job.id)
        run: Run | None = None
        try:
            run, reason = self._take(job, run_time, name)
        finally:
            if run is None:
                with self._state:
                    self._held_jobs.discard(job.id)
        return run, reason

    def _take(self, job: Job, run_time: datetime, name: str) -> tuple[Run | None, str]:
        sent = time.monotonic()
        try:
            lease = self.backend.acquire(name, self.identity, self.ttl_for(job.id))
        except BackendUnavailable as exc:
            self._report(False)
            return None, f"cannot take lock={name}: {exc}"
        self._report(True)
        if lease is None:
            return None, f"lock held by another replica (lock={name})"
        holding = Holding(self.backend, lease, None, acquired_at=sent)
        if self.backend.supports_claims:
            try:
                claimed = self.backend.claim(lease, job.id, fire_key(run_time))
            except BackendUnavailable as exc:
                self._report(False)
                self._release(lease)
                return None, f"claim failed: {exc}"
            if not claimed:
                self._release(lease)
                return None, "claim rejected: this fire already ran, or the lock was lost"
        if not holding.held:
            self._release(lease)
            return None, "lock expired while claiming"
        term = Term(
            election=name,
            identity=self.identity,
            token=lease.token,
            started_at=datetime.now(UTC),
            _holds=lambda token: holding.held,
        )
        run = Run(job_id=job.id, scheduled_time=run_time, term=term)
        holding.on_lost = lambda reason: self._lost(run, reason)
        with self._state:
            self._held[run] = (holding, HeldLock(job.id, name, lease.token, term.started_at))
        holding.start()
        return self._track(run), ""

    def _lost(self, run: Run, reason: str) -> None:
        for callback in self._lost_observers:
            callback(run.job_id)
        if self.on_lost == "cancel":
            log.info(
                "cancelling job=%s scheduled=%s term=%d: lock lost: %s",
                run.job_id,
                format_time(run.scheduled_time),
                run.term.token,
                reason,
            )
            run.cancel()

    def _done(self, run: Run) -> None:
        with self._state:
            holding, _held = self._held.pop(run)
        holding.stop()
        self._release(holding.lease)
        with self._state:
            self._held_jobs.discard(run.job_id)

    def _release(self, lease: Lease) -> None:
        try:
            self.backend.release(lease)
        except BackendUnavailable as exc:
            self._report(False)
            log.warning("release of lock=%s failed: %s (it expires by itself)", lease.election, exc)


__all__ = ["HeldLock", "PerJobScheduler", "lock_name"]
