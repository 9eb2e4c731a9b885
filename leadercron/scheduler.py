"""LeaderScheduler: an APScheduler 3 scheduler that runs jobs only while this replica leads.

Every replica builds the same scheduler with the same jobs. :class:`LeaderScheduler` starts it
paused, resumes it when the elector wins and pauses it when the term ends. Pausing alone is not
enough — a resumed APScheduler fires every missed run within its grace time at once, and a job
queued just before a loss would still start — so each run is also guarded *at dispatch*: the
executor checks, in the worker, right before calling the job, that this replica holds an
unexpired term at that instant, and skips the run otherwise.

Fire times must be the same on every replica, so :meth:`LeaderScheduler.add_job` anchors
interval triggers to a fixed origin (the Unix epoch unless ``start_date`` is given) instead of the
moment the process started.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.util import iscoroutinefunction_partial

from leadercron.elector import Elector, Listener
from leadercron.errors import BackendUnavailable, ConfigError
from leadercron.term import Run, Term, format_time, reset_current_run, set_current_run

log = logging.getLogger("leadercron.jobs")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fire_key(moment: datetime) -> int:
    """A fire's scheduled time as whole milliseconds since the epoch (the claim key).

    Milliseconds, not microseconds: replicas that reach the same interval fire by different
    float arithmetic may differ in the last microsecond.
    """
    return round(moment.timestamp() * 1000)


OnLost = Literal["finish", "cancel"]


class GuardedScheduler:
    """An APScheduler 3 scheduler whose every run passes a dispatch guard (the shared part).

    The guard runs in the worker, right before the job: :meth:`_gate` says whether this replica
    may dispatch at all, then :meth:`_admit` decides for this one fire and returns the
    :class:`~leadercron.term.Run` it runs under; :meth:`_done` runs after the job. Subclasses:
    :class:`LeaderScheduler` (one leader runs every job) and
    :class:`leadercron.perjob.PerJobScheduler` (every replica runs, each fire takes its job's lock).
    """

    def __init__(
        self,
        scheduler: BaseScheduler,
        *,
        on_lost: OnLost = "finish",
        origin: datetime = EPOCH,
        max_workers: int = 10,
    ) -> None:
        if scheduler.running:
            raise RuntimeError(f"{type(self).__name__} needs a scheduler that has not been started")
        if on_lost not in ("finish", "cancel"):
            raise ConfigError(f"on_lost must be 'finish' or 'cancel', got {on_lost!r}")
        self.scheduler = scheduler
        self.on_lost = on_lost
        self.origin = origin if origin.tzinfo else origin.replace(tzinfo=UTC)
        self._accepting = True
        self._running: set[Run] = set()
        self._running_cond = threading.Condition()
        self._batches: dict[str, _Batch] = {}
        self._batches_lock = threading.Lock()
        self.outcomes: dict[str, tuple[str, datetime]] = {}
        self._observers: list[Callable[[str, str, float], None]] = []
        self._install_executor(max_workers)

    # -- setup ---------------------------------------------------------------------------------

    def _install_executor(self, max_workers: int) -> None:
        executors: dict[str, Any] = getattr(self.scheduler, "_executors", {})
        for alias, executor in executors.items():
            if not isinstance(executor, _GuardedThreadPoolExecutor | _GuardedAsyncIOExecutor):
                raise ConfigError(
                    f"executor {alias!r} ({type(executor).__name__}) would run jobs unguarded; "
                    "let LeaderScheduler install its own executor"
                )
        guarded: ThreadPoolExecutor | AsyncIOExecutor
        if isinstance(self.scheduler, AsyncIOScheduler):
            guarded = _GuardedAsyncIOExecutor(self)
        else:
            guarded = _GuardedThreadPoolExecutor(self, max_workers)
        self.scheduler.add_executor(guarded, "default")

    def add_job(self, func: Callable[..., Any] | str, trigger: Any = None, **kwargs: Any) -> Job:
        """``scheduler.add_job`` with interval triggers anchored to the origin.

        An ``"interval"`` trigger without ``start_date`` fires at ``origin + k * interval``, so
        every replica computes the same fire times whenever it started.
        """
        if trigger == "interval" and kwargs.get("start_date") is None:
            kwargs["start_date"] = self.origin
        return self.scheduler.add_job(func, trigger, **kwargs)

    def observe(self, callback: Callable[[str, str, float], None]) -> None:
        """Call ``callback(job_id, outcome, seconds)`` after every run or skip."""
        self._observers.append(callback)

    def start(self) -> None:
        """Start dispatching (and campaigning, in leader mode)."""
        raise NotImplementedError

    def shutdown(self, grace: float, *, release: bool = True) -> bool:
        """Stop dispatching, give running jobs ``grace`` seconds, cancel the rest, let go.

        Returns whether every run finished within the grace period.
        """
        raise NotImplementedError

    def running_runs(self) -> list[Run]:
        with self._running_cond:
            return list(self._running)

    def _stop_accepting(self, grace: float) -> bool:
        """Stop dispatching, let running jobs finish for up to ``grace`` s, cancel the rest."""
        self._accepting = False
        self._pause()
        with self._running_cond:
            finished = self._running_cond.wait_for(
                lambda: not self._running, timeout=max(0.0, grace)
            )
            leftover = list(self._running)
        if not finished:
            log.warning(
                "shutdown grace period of %gs over; cancelling %d running job(s): %s",
                grace,
                len(leftover),
                ", ".join(sorted({r.job_id for r in leftover})),
            )
            for run in leftover:
                run.cancel()
            with self._running_cond:
                self._running_cond.wait_for(lambda: not self._running, timeout=5.0)
        return finished

    def _pause(self) -> None:
        if self.scheduler.running:
            self.scheduler.pause()

    # -- dispatch (worker threads) ---------------------------------------------------------------

    def _gate(self) -> str | None:
        """Why this replica may not dispatch at all right now, or ``None`` if it may try."""
        return None if self._accepting else "shutting down"

    def _admit(self, job: Job, run_time: datetime) -> tuple[Run | None, str]:
        """A Run if this replica may start this fire now, else ``(None, reason)``."""
        raise NotImplementedError

    def _done(self, run: Run) -> None:
        """Called after a run ends (success or error), before its outcome is recorded."""

    def _track(self, run: Run) -> Run:
        with self._running_cond:
            self._running.add(run)
        return run

    def _finish(self, run: Run) -> None:
        with self._running_cond:
            self._running.discard(run)
            self._running_cond.notify_all()

    def _record(self, job_id: str, outcome: str, seconds: float) -> None:
        self.outcomes[job_id] = (outcome, datetime.now(UTC))
        for callback in self._observers:
            callback(job_id, outcome, seconds)

    def _before(
        self, job: Job, alias: str, run_time: datetime, events: list[JobExecutionEvent]
    ) -> Run | None:
        """The gate, lateness and the admission of one fire; returns the admitted Run or None."""
        gate = self._gate()
        if gate is not None:
            events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, alias, run_time))
            log.info("skipped job=%s scheduled=%s: %s", job.id, format_time(run_time), gate)
            self._record(job.id, "skipped", 0.0)
            return None
        if job.misfire_grace_time is not None:
            late = datetime.now(UTC) - run_time
            if late > timedelta(seconds=job.misfire_grace_time):
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, alias, run_time))
                log.warning(
                    "missed job=%s scheduled=%s late_by=%.3fs",
                    job.id,
                    format_time(run_time),
                    late.total_seconds(),
                )
                self._record(job.id, "missed", 0.0)
                return None
        run, reason = self._admit(job, run_time)
        if run is None:
            events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, alias, run_time))
            log.info("skipped job=%s scheduled=%s: %s", job.id, format_time(run_time), reason)
            self._record(job.id, _skip_outcome(reason), 0.0)
        return run

    def _after(
        self,
        run: Run,
        alias: str,
        started: float,
        events: list[JobExecutionEvent],
        retval: Any = None,
        error: BaseException | None = None,
    ) -> None:
        seconds = time.monotonic() - started
        self._finish(run)
        self._done(run)
        outcome = "success" if error is None else "error"
        line = "job=%s scheduled=%s identity=%s term=%d outcome=%s duration=%.3fs"
        fields = (
            run.job_id,
            format_time(run.scheduled_time),
            run.term.identity,
            run.term.token,
            outcome,
            seconds,
        )
        if error is None:
            log.info(line, *fields)
            events.append(
                JobExecutionEvent(
                    EVENT_JOB_EXECUTED, run.job_id, alias, run.scheduled_time, retval=retval
                )
            )
        else:
            log.error(line + " error=%s", *fields, f"{type(error).__name__}: {error}")
            tb = "".join(traceback.format_tb(error.__traceback__))
            events.append(
                JobExecutionEvent(
                    EVENT_JOB_ERROR,
                    run.job_id,
                    alias,
                    run.scheduled_time,
                    exception=error,
                    traceback=tb,
                )
            )
        self._record(run.job_id, outcome, seconds)

    # -- fires that fall due while the job is still behind schedule -----------------------------

    def _open_batch(self, job: Job, run_times: list[datetime]) -> list[datetime]:
        """Register the fires an executor is about to run (jobs with ``max_instances`` 1)."""
        batch = _Batch(list(run_times))
        if job.max_instances == 1:
            with self._batches_lock:
                self._batches[job.id] = batch
        return batch.run_times

    def _fires(self, job_id: str, run_times: list[datetime]) -> Iterator[datetime]:
        """The fires of one submission, including any queued behind it while it runs."""
        index = 0
        while True:
            with self._batches_lock:
                batch = self._batches.get(job_id)
                mine = batch if batch is not None and batch.run_times is run_times else None
                if index >= len(run_times):
                    return
                fire = run_times[index]
                index += 1
                if mine is not None:
                    mine.taken, mine.current, mine.started = index, fire, datetime.now(UTC)
            yield fire

    def _close_batch(self, job_id: str, run_times: list[datetime]) -> list[datetime]:
        """Unregister a finished submission; return the fires queued behind it too late to run."""
        with self._batches_lock:
            batch = self._batches.get(job_id)
            if batch is None or batch.run_times is not run_times:
                return []
            del self._batches[job_id]
            return batch.run_times[batch.taken :]

    def queue_behind(self, job: Job, run_times: list[datetime]) -> bool:
        """Queue fires behind a submission of the same job that is behind schedule.

        APScheduler drops a fire that falls due while the job's only allowed instance is still
        running. That is right for a run that overruns its interval, but not for an instance
        still working through fires that fell due earlier (the catch-up after a failover, or a
        backlog): there the new fire would be lost. So a fire is queued behind the running
        instance when the fire it is on started more than half an interval late; it then runs
        after the others, through the same guard (claim, lateness, coalesced by APScheduler).
        """
        with self._batches_lock:
            batch = self._batches.get(job.id)
            if batch is None:
                return False
            fire = batch.current or batch.run_times[0]
            started = batch.started or datetime.now(UTC)
            following = job.trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
            if following is None or started - fire <= (following - fire) / 2:
                return False
            batch.run_times.extend(run_times)
        log.info(
            "queued job=%s scheduled=%s behind fires still being run",
            job.id,
            ", ".join(format_time(t) for t in run_times),
        )
        return True

    def run_job(
        self, job: Job, alias: str, run_times: list[datetime], logger_name: str
    ) -> list[JobExecutionEvent]:
        """Replacement for APScheduler's ``run_job``: the same, plus the dispatch guard."""
        events: list[JobExecutionEvent] = []
        for run_time in self._fires(job.id, run_times):
            run = self._before(job, alias, run_time, events)
            if run is None:
                continue
            token = set_current_run(run)
            started = time.monotonic()
            try:
                retval = job.func(*job.args, **job.kwargs)
            except BaseException:
                self._after(run, alias, started, events, error=sys.exc_info()[1])
            else:
                self._after(run, alias, started, events, retval=retval)
            finally:
                reset_current_run(token)
        return events

    async def run_coroutine_job(
        self, job: Job, alias: str, run_times: list[datetime], logger_name: str
    ) -> list[JobExecutionEvent]:
        """Coroutine version of :meth:`run_job`."""
        events: list[JobExecutionEvent] = []
        for run_time in self._fires(job.id, run_times):
            run = self._before(job, alias, run_time, events)
            if run is None:
                continue
            token = set_current_run(run)
            started = time.monotonic()
            try:
                retval = await job.func(*job.args, **job.kwargs)
            except BaseException:
                self._after(run, alias, started, events, error=sys.exc_info()[1])
            else:
                self._after(run, alias, started, events, retval=retval)
            finally:
                reset_current_run(token)
        return events


class LeaderScheduler(GuardedScheduler, Listener):
    """Binds an APScheduler scheduler to an :class:`~leadercron.elector.Elector`.

    ``scheduler`` is a not-yet-started ``BackgroundScheduler`` (or ``BlockingScheduler``
    run from a thread) or ``AsyncIOScheduler``; leadercron installs its guarded executor as the
    scheduler's ``default`` executor. ``on_lost`` says what happens to runs in flight when the
    term ends: ``"finish"`` lets them complete (they can watch ``current_term().held``),
    ``"cancel"`` cancels them (command jobs are terminated; Python jobs see
    ``current_run().cancelled``). ``origin`` anchors interval triggers.
    """

    def __init__(
        self,
        scheduler: BaseScheduler,
        elector: Elector,
        *,
        on_lost: OnLost = "finish",
        origin: datetime = EPOCH,
        max_workers: int = 10,
    ) -> None:
        super().__init__(scheduler, on_lost=on_lost, origin=origin, max_workers=max_workers)
        self.elector = elector
        elector.subscribe(self)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler paused and the elector; jobs run once this replica leads."""
        if self.scheduler.state == STATE_STOPPED:
            self.scheduler.start(paused=True)
        self.elector.start()

    def shutdown(self, grace: float, *, release: bool = True) -> bool:
        """Stop dispatching, let running jobs finish for up to ``grace`` seconds, then resign.

        Runs still going after ``grace`` are cancelled. The lease is released last (so the
        fencing token stays valid while jobs finish), which hands leadership over at once.
        Returns whether every run finished within the grace period.
        """
        deadline = time.monotonic() + grace
        finished = self._stop_accepting(grace)
        self.elector.stop(release=release, timeout=max(5.0, deadline - time.monotonic()))
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        return finished

    # -- elector events (elector thread; never block) ------------------------------------------

    def elected(self, term: Term) -> None:
        if not self._accepting:
            return
        if self.elector.backend.supports_claims:
            # Reading the ledger is a backend call: not on the elector's thread.
            threading.Thread(
                target=self._catch_up_then_resume,
                args=(term,),
                name="leadercron-catch-up",
                daemon=True,
            ).start()
        else:
            self._resume()

    def _catch_up_then_resume(self, term: Term) -> None:
        """Point each job back at the first fire after its ledger mark, then resume.

        A new leader's scheduler may never have computed the fires that fell due during the
        failover (it started after them, or it was paused). Starting from the last claimed fire,
        APScheduler then dispatches what was missed — within ``misfire_grace_time``, folded into
        one run when ``coalesce`` is on — and the claims make sure nothing runs twice.
        """
        try:
            marks = self.elector.backend.ledger(term.election)
        except BackendUnavailable as exc:
            log.warning("catch-up skipped: cannot read the run ledger: %s", exc)
            marks = {}
        now = datetime.now(UTC)
        for job in self.scheduler.get_jobs():
            mark = marks.get(job.id)
            if mark is None or job.next_run_time is None:
                continue
            after = datetime.fromtimestamp(mark / 1000, UTC)
            first = job.trigger.get_next_fire_time(after, after + timedelta(microseconds=1))
            grace = job.misfire_grace_time
            too_old = (
                grace is not None and first is not None and now - first > timedelta(seconds=grace)
            )
            if first is None or too_old or first >= job.next_run_time:
                continue
            log.info(
                "catching up job=%s from scheduled=%s (last claimed %s)",
                job.id,
                format_time(first),
                format_time(after),
            )
            job.modify(next_run_time=first)
        if self._accepting and self.elector.holds(term.token):
            self._resume()

    def resumed(self, term: Term) -> None:
        if self._accepting:
            self._resume()

    def suspended(self, term: Term, reason: str) -> None:
        self._pause()

    def lost(self, term: Term, reason: str) -> None:
        self._pause()
        if self.on_lost == "cancel":
            for run in self.running_runs():
                if run.term.token == term.token:
                    log.info(
                        "cancelling job=%s scheduled=%s term=%d: %s",
                        run.job_id,
                        format_time(run.scheduled_time),
                        term.token,
                        reason,
                    )
                    run.cancel()

    def _resume(self) -> None:
        if self.scheduler.state != STATE_STOPPED:
            self.scheduler.resume()

    # -- dispatch ------------------------------------------------------------------------------

    def _gate(self) -> str | None:
        if not self._accepting or self.elector.term() is None:
            return "not leading at that instant"
        return None

    def _admit(self, job: Job, run_time: datetime) -> tuple[Run | None, str]:
        """The dispatch guard: a Run if this replica may start this fire now, else a reason.

        First, at this instant, this replica must hold an unexpired term. Then, where the
        backend supports it, the fire is *claimed* in the backend in one atomic step that also
        checks that this term is still the live one there (:meth:`Backend.claim`): a fire that
        any replica claimed before, or a claim by a deposed leader, is refused by the backend
        itself. After the claim the local term is checked once more.

        Backends without claims fall back to a local rule: run only fires scheduled no earlier
        than this term began. A previous leader stopped dispatching before its lease could pass
        to this term, so every fire it may have started was scheduled before this term began.
        """
        term = self.elector.term() if self._accepting else None
        if term is None:
            return None, "not leading at that instant"
        backend = self.elector.backend
        if backend.supports_claims:
            lease = self.elector.lease(term)
            if lease is None:
                return None, "not leading at that instant"
            try:
                claimed = backend.claim(lease, job.id, fire_key(run_time))
            except BackendUnavailable as exc:
                return None, f"claim failed: {exc}"
            if not claimed:
                return None, "claim rejected: already run, or the term is over in the backend"
            if not self.elector.holds(term.token):
                return None, "term ended while claiming"
        elif run_time < term.started_at:
            return None, "scheduled before this term began"
        return self._track(Run(job_id=job.id, scheduled_time=run_time, term=term)), ""


@dataclass
class _Batch:
    """One executor submission of a job: its fires, and the one being run now."""

    run_times: list[datetime]
    taken: int = 0
    current: datetime | None = None
    started: datetime | None = None


def _skip_outcome(reason: str) -> str:
    """The outcome recorded for a refused fire: ``rejected`` (claim), ``locked`` or ``skipped``."""
    if reason.startswith("claim rejected"):
        return "rejected"
    if reason.startswith("lock held"):
        return "locked"
    return "skipped"


class _GuardedThreadPoolExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """APScheduler's thread pool executor, running jobs through the dispatch guard."""

    def __init__(self, owner: GuardedScheduler, max_workers: int) -> None:
        super().__init__(max_workers)
        self._owner = owner

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        if not self._owner.queue_behind(job, run_times):
            super().submit_job(job, run_times)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        run_times = self._owner._open_batch(job, run_times)

        def callback(future: Any) -> None:
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())
            _resubmit(self, job, self._owner._close_batch(job.id, run_times))

        future = self._pool.submit(
            self._owner.run_job, job, job._jobstore_alias, run_times, self._logger.name
        )
        future.add_done_callback(callback)


class _GuardedAsyncIOExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """APScheduler's asyncio executor, running jobs through the dispatch guard."""

    def __init__(self, owner: GuardedScheduler) -> None:
        super().__init__()
        self._owner = owner

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        if not self._owner.queue_behind(job, run_times):
            super().submit_job(job, run_times)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        run_times = self._owner._open_batch(job, run_times)

        def callback(future: Any) -> None:
            self._pending_futures.discard(future)
            try:
                events = future.result()
            except BaseException:
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)
            _resubmit(self, job, self._owner._close_batch(job.id, run_times))

        if iscoroutinefunction_partial(job.func) or inspect.iscoroutinefunction(job.func):
            coro = self._owner.run_coroutine_job(
                job, job._jobstore_alias, run_times, self._logger.name
            )
            future = self._eventloop.create_task(coro)
        else:
            future = self._eventloop.run_in_executor(
                None, self._owner.run_job, job, job._jobstore_alias, run_times, self._logger.name
            )
        future.add_done_callback(callback)
        self._pending_futures.add(future)


def _resubmit(executor: Any, job: Job, fires: list[datetime]) -> None:
    """Submit fires that were queued behind a submission after its last fire had started."""
    if not fires:
        return
    try:
        executor.submit_job(job, fires)
    except MaxInstancesReachedError:
        log.warning(
            "dropped job=%s scheduled=%s: another instance started meanwhile",
            job.id,
            ", ".join(format_time(t) for t in fires),
        )
