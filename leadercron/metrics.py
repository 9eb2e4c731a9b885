"""Prometheus metrics for one replica, in a registry of its own.

:class:`Metrics` is an :class:`~leadercron.elector.Listener` (subscribe it to the elector) and
provides :meth:`Metrics.observe_job`, the callback for :meth:`LeaderScheduler.observe
<leadercron.scheduler.LeaderScheduler.observe>`. Every series carries the labels ``election`` and
``identity`` (job series also ``job``), except ``leadercron_build_info``.

Values that describe *this instant* — whether this replica leads, its term, the time left on its
lease — are computed from the elector when Prometheus scrapes, never cached, so a scrape never
reports leadership that has already expired locally. Everything else is counted from the
elector's and the scheduler's callbacks, which only touch in-memory counters and never block.

The same callbacks keep the two facts the health endpoints need: whether the backend has
answered at least once (:attr:`Metrics.backend_answered`) and the local instant at which the
current term stops dispatching (:attr:`Metrics.local_deadline`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from leadercron.elector import Elector, Listener
from leadercron.term import Term

log = logging.getLogger("leadercron.metrics")

#: Outcomes counted by ``leadercron_job_runs_total``; ``missed`` goes to its own counter.
JOB_OUTCOMES = ("success", "error", "skipped")

#: Campaigns last from milliseconds (a handover) to hours (a standby replica).
CAMPAIGN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 300, 900, 3600, 21600)
#: Backend round trips of a renew.
RENEW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Job runs, from a quick function to an hour-long command.
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600)

#: Every metric name this module exports (without the ``_bucket``/``_sum``/``_count`` suffixes).
METRIC_NAMES = (
    "leadercron_build_info",
    "leadercron_is_leader",
    "leadercron_term",
    "leadercron_leader_transitions_total",
    "leadercron_lease_renewals_total",
    "leadercron_lease_renew_duration_seconds",
    "leadercron_lease_remaining_seconds",
    "leadercron_backend_up",
    "leadercron_campaign_duration_seconds",
    "leadercron_job_runs_total",
    "leadercron_job_duration_seconds",
    "leadercron_job_last_success_timestamp_seconds",
    "leadercron_fires_missed_total",
    "leadercron_claims_rejected_total",
)

#: Metrics exported only in per-job mode (instead of the election's ``is_leader``, ``term``,
#: ``lease_*``, ``leader_transitions`` and ``campaign`` series, which need an elector).
PER_JOB_METRIC_NAMES = (
    "leadercron_locks_held",
    "leadercron_lock_skips_total",
    "leadercron_lock_losses_total",
)


def backend_kind(url: str) -> str:
    """The backend's URL scheme (``file``, ``etcd``, ...), or ``unknown``."""
    return urlsplit(url).scheme or "unknown"


def _package_version() -> str:
    from leadercron import __version__

    return __version__


class Metrics(Listener):
    """The metrics of one replica: its elector, its lease and its jobs.

    ``jobs`` are the configured job ids; their series exist (at zero) from the start, so that
    ``increase()`` sees the first event. Jobs added later get their series when first observed.
    ``registry`` defaults to a new :class:`~prometheus_client.CollectorRegistry`, which also
    gets the standard ``process_*``, ``python_*`` collectors unless ``process_collectors`` is
    false. Subscribe the instance to the elector and pass :meth:`observe_job` to
    :meth:`LeaderScheduler.observe <leadercron.scheduler.LeaderScheduler.observe>`.
    """

    def __init__(
        self,
        elector: Elector | None = None,
        *,
        jobs: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
        version: str | None = None,
        process_collectors: bool = True,
        election: str | None = None,
        identity: str | None = None,
        backend_url: str | None = None,
    ) -> None:
        self.elector = elector
        self.registry = registry if registry is not None else CollectorRegistry()
        if registry is None and process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        if elector is not None:
            election, identity = elector.election, elector.identity
            backend_url = elector.backend.url
            self._clock: Any = elector.clock
        else:
            if election is None or identity is None or backend_url is None:
                raise ValueError("without an elector, pass election, identity and backend_url")
            self._clock = time
        self._wall = time.time
        self._labels = {"election": election, "identity": identity}
        self._jobs_seen: set[str] = set()
        self._jobs_lock = threading.Lock()
        names = ("election", "identity")
        job_names = (*names, "job")
        reg = self.registry

        if version is None:
            version = _package_version()
        build = Gauge(
            "leadercron_build_info",
            "Always 1; the labels give the leadercron version and the backend kind (URL scheme).",
            ("version", "backend"),
            registry=reg,
        )
        build.labels(version=version, backend=backend_kind(backend_url)).set(1)
        self.backend_up = Gauge(
            "leadercron_backend_up",
            "1 if the backend's last answer to this replica was a success, 0 after a failure or "
            "before the first answer.",
            names,
            registry=reg,
        )
        self.backend_up.labels(**self._labels).set(0)
        self.job_runs = Counter(
            "leadercron_job_runs_total",
            "Fires this replica handled, by outcome: success, error, or skipped (not leading at "
            "that instant, scheduled before the term began, or the job's lock held elsewhere).",
            (*job_names, "outcome"),
            registry=reg,
        )
        self.job_duration = Histogram(
            "leadercron_job_duration_seconds",
            "Duration of the job runs this replica executed (success or error).",
            job_names,
            buckets=JOB_BUCKETS,
            registry=reg,
        )
        self.job_last_success = Gauge(
            "leadercron_job_last_success_timestamp_seconds",
            "Unix time at which a run of the job last succeeded on this replica.",
            job_names,
            registry=reg,
        )
        self.fires_missed = Counter(
            "leadercron_fires_missed_total",
            "Fires that started later than their misfire grace time and were not run.",
            job_names,
            registry=reg,
        )
        self.claims_rejected = Counter(
            "leadercron_claims_rejected_total",
            "Fires whose fenced claim was rejected because another term had claimed them.",
            job_names,
            registry=reg,
        )
        self.lock_skips: Counter | None = None
        self.lock_losses: Counter | None = None
        if elector is not None:
            self._election_series(elector, names)
        else:
            self._per_job_series(job_names)
        for job in jobs:
            self._job_series(job)

        self._backend_answered = threading.Event()
        self._backend_up: bool | None = None
        # Local (elector clock) instant the current term stops dispatching; None when not leading.
        self._deadline: float | None = None
        self._campaign_started: float | None = self._clock.monotonic()

    def _election_series(self, elector: Elector, names: tuple[str, ...]) -> None:
        """The series that describe this replica's place in the election (leader mode)."""
        reg = self.registry
        self.is_leader = Gauge(
            "leadercron_is_leader",
            "1 if this replica may dispatch jobs at scrape time (leads, deadline ahead, no doubt).",
            names,
            registry=reg,
        )
        self.is_leader.labels(**self._labels).set_function(
            lambda: 1.0 if elector.is_leader() else 0.0
        )
        self.term = Gauge(
            "leadercron_term",
            "Fencing token of the term this replica dispatches in at scrape time; 0 when it does "
            "not lead.",
            names,
            registry=reg,
        )
        self.term.labels(**self._labels).set_function(self._term_token)
        self.remaining = Gauge(
            "leadercron_lease_remaining_seconds",
            "Seconds until this replica's local renew deadline; 0 when it does not lead.",
            names,
            registry=reg,
        )
        self.remaining.labels(**self._labels).set_function(elector.remaining)
        self.transitions = Counter(
            "leadercron_leader_transitions_total",
            "Terms this replica started (each one a change of leader for the election).",
            names,
            registry=reg,
        )
        self.renewals = Counter(
            "leadercron_lease_renewals_total",
            "Renew attempts by this replica, by result (failure: an error, a timeout or a loss).",
            (*names, "result"),
            registry=reg,
        )
        self.renew_duration = Histogram(
            "leadercron_lease_renew_duration_seconds",
            "Time a renew attempt took, until the backend answered or the elector gave up.",
            names,
            buckets=RENEW_BUCKETS,
            registry=reg,
        )
        self.campaign_duration = Histogram(
            "leadercron_campaign_duration_seconds",
            "Time from starting to campaign (at start, or after losing a term) until elected.",
            names,
            buckets=CAMPAIGN_BUCKETS,
            registry=reg,
        )
        for result in ("success", "failure"):
            self.renewals.labels(**self._labels, result=result)
        self.transitions.labels(**self._labels)
        self.renew_duration.labels(**self._labels)
        self.campaign_duration.labels(**self._labels)

    def _per_job_series(self, job_names: tuple[str, ...]) -> None:
        """The series of per-job mode: job locks held, fires skipped on a held lock, locks lost."""
        reg = self.registry
        self.locks_held = Gauge(
            "leadercron_locks_held",
            "Job locks this replica holds at scrape time (per-job mode).",
            tuple(self._labels),
            registry=reg,
        )
        self.locks_held.labels(**self._labels).set(0)
        self.lock_skips = Counter(
            "leadercron_lock_skips_total",
            "Fires this replica skipped because another replica held the job's lock (per-job "
            "mode; also counted as skipped in leadercron_job_runs_total).",
            job_names,
            registry=reg,
        )
        self.lock_losses = Counter(
            "leadercron_lock_losses_total",
            "Runs whose job lock was lost while they ran (an extension failed; per-job mode).",
            job_names,
            registry=reg,
        )

    def count_locks(self, held: Callable[[], float]) -> None:
        """Report ``held()`` as ``leadercron_locks_held`` at scrape time (per-job mode)."""
        self.locks_held.labels(**self._labels).set_function(held)

    def lock_lost(self, job_id: str) -> None:
        """Count a run whose job lock was lost while it ran (per-job mode)."""
        if self.lock_losses is not None:
            self._job_series(job_id)
            self.lock_losses.labels(**self._labels, job=job_id).inc()

    # -- what the health endpoints read ---------------------------------------------------------

    @property
    def backend_answered(self) -> bool:
        """Whether the backend has answered this replica at least once."""
        return self._backend_answered.is_set()

    @property
    def backend_up_now(self) -> bool | None:
        """Whether the backend's last answer was a success (``None`` before any answer)."""
        return self._backend_up

    @property
    def local_deadline(self) -> float | None:
        """The current term's dispatch deadline on the elector's clock, or ``None``."""
        return self._deadline

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    # -- elector events (elector thread; never block) --------------------------------------------

    def campaigning(self) -> None:
        """Mark the instant this replica starts to campaign (call right before starting)."""
        self._campaign_started = self._clock.monotonic()

    def elected(self, term: Term) -> None:
        assert self.elector is not None
        now = self._clock.monotonic()
        self._deadline = now + self.elector.remaining()
        started, self._campaign_started = self._campaign_started, None
        if started is not None:
            self.campaign_duration.labels(**self._labels).observe(max(0.0, now - started))
        self.transitions.labels(**self._labels).inc()

    def lost(self, term: Term, reason: str) -> None:
        self._deadline = None
        self._campaign_started = self._clock.monotonic()

    def renewed(self, term: Term, ok: bool, seconds: float) -> None:
        self.renewals.labels(**self._labels, result="success" if ok else "failure").inc()
        self.renew_duration.labels(**self._labels).observe(max(0.0, seconds))
        if ok and self._deadline is not None and self.elector is not None:
            # The elector's new deadline: the instant the renew was sent + renew_deadline.
            sent = self._clock.monotonic() - seconds
            self._deadline = sent + self.elector.renew_deadline

    def backend_health(self, up: bool) -> None:
        self._backend_up = up
        self.backend_up.labels(**self._labels).set(1 if up else 0)
        if up:
            self._backend_answered.set()

    # -- scheduler events (worker threads) --------------------------------------------------------

    def observe_job(self, job_id: str, outcome: str, seconds: float) -> None:
        """The :meth:`LeaderScheduler.observe` callback: count one run, skip or miss."""
        self._job_series(job_id)
        labels = {**self._labels, "job": job_id}
        if outcome == "rejected":  # the backend refused the fenced claim: skipped, and counted
            self.claim_rejected(job_id)
            outcome = "skipped"
        if outcome == "locked":  # another replica held the job's lock: skipped, and counted
            if self.lock_skips is not None:
                self.lock_skips.labels(**labels).inc()
            outcome = "skipped"
        if outcome == "missed":
            self.fires_missed.labels(**labels).inc()
            return
        if outcome not in JOB_OUTCOMES:
            log.debug("unknown job outcome %r for job=%s: not counted", outcome, job_id)
            return
        self.job_runs.labels(**labels, outcome=outcome).inc()
        if outcome in ("success", "error"):
            self.job_duration.labels(**labels).observe(max(0.0, seconds))
        if outcome == "success":
            self.job_last_success.labels(**labels).set(self._wall())

    def claim_rejected(self, job_id: str) -> None:
        """Count a fire whose fenced claim was rejected (for the claims mechanism)."""
        self._job_series(job_id)
        self.claims_rejected.labels(**self._labels, job=job_id).inc()

    # -- helpers --------------------------------------------------------------------------------

    def _term_token(self) -> float:
        assert self.elector is not None
        term = self.elector.term()
        return 0.0 if term is None else float(term.token)

    def _job_series(self, job_id: str) -> None:
        """Create a job's counters at zero the first time the job is seen."""
        if job_id in self._jobs_seen:
            return
        with self._jobs_lock:
            if job_id in self._jobs_seen:
                return
            labels = {**self._labels, "job": job_id}
            for outcome in JOB_OUTCOMES:
                self.job_runs.labels(**labels, outcome=outcome)
            self.job_duration.labels(**labels)
            self.fires_missed.labels(**labels)
            self.claims_rejected.labels(**labels)
            for counter in (self.lock_skips, self.lock_losses):
                if counter is not None:
                    counter.labels(**labels)
            self._jobs_seen.add(job_id)
