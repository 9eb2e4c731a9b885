"""The service: config → backend → elector → scheduler → (HTTP), signals, graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from leadercron.backends import Backend, from_url
from leadercron.command import run_command
from leadercron.config import Config, JobConfig, resolve_jobs
from leadercron.elector import Elector
from leadercron.http import HttpServer
from leadercron.metrics import Metrics
from leadercron.perjob import PerJobScheduler
from leadercron.scheduler import GuardedScheduler, LeaderScheduler

log = logging.getLogger("leadercron.service")


def make_trigger(job: JobConfig, config: Config) -> Any:
    """The APScheduler trigger for a configured job, with interval fires anchored to an origin."""
    zone = ZoneInfo(config.scheduler.timezone)
    if job.cron is not None:
        return CronTrigger.from_crontab(job.cron, timezone=zone)
    if job.interval is not None:
        origin = job.start_date or config.scheduler.interval_origin
        return IntervalTrigger(seconds=job.interval, start_date=origin, timezone=zone)
    assert job.date is not None
    return DateTrigger(run_date=job.date, timezone=zone)


class Service:
    """One replica.

    Leader mode: campaigns for the election and runs the configured jobs while it leads.
    Per-job mode: runs every job's fires whose lock it wins (see :mod:`leadercron.perjob`).
    """

    def __init__(self, config: Config, *, backend: Backend | None = None) -> None:
        self.config = config
        self.funcs = resolve_jobs(config)
        self.backend = backend or from_url(config.election.backend)
        election = config.election
        self.scheduler = BackgroundScheduler(
            timezone=ZoneInfo(config.scheduler.timezone),
            job_defaults={
                "misfire_grace_time": config.scheduler.misfire_grace_time,
                "coalesce": config.scheduler.coalesce,
                "max_instances": 1,
            },
        )
        self.elector: Elector | None = None
        self.leader_scheduler: GuardedScheduler
        jobs = [job.id for job in config.jobs]
        if config.mode == "per-job":
            per_job = PerJobScheduler(
                self.scheduler,
                self.backend,
                election=election.name,
                identity=election.identity,
                default_ttl=config.scheduler.lock_ttl,
                locks={job.id: config.lock_name(job) for job in config.jobs},
                ttls={job.id: config.lock_ttl(job) for job in config.jobs},
                on_lost=config.scheduler.on_lost,
                origin=config.scheduler.interval_origin,
                max_workers=config.scheduler.max_workers,
            )
            self.leader_scheduler = per_job
            self.metrics = Metrics(
                jobs=jobs,
                election=election.name,
                identity=election.identity,
                backend_url=self.backend.url,
            )
            per_job.on_backend(self.metrics.backend_health)
            per_job.on_lock_lost(self.metrics.lock_lost)
            self.metrics.count_locks(lambda: float(len(per_job.held_locks())))
        else:
            self.elector = Elector(
                self.backend,
                election=election.name,
                identity=election.identity,
                ttl=election.ttl,
                renew_deadline=election.renew_deadline,
                retry_period=election.retry_period,
            )
            self.leader_scheduler = LeaderScheduler(
                self.scheduler,
                self.elector,
                on_lost=config.scheduler.on_lost,
                origin=config.scheduler.interval_origin,
                max_workers=config.scheduler.max_workers,
            )
            self.metrics = Metrics(self.elector, jobs=jobs)
            self.elector.subscribe(self.metrics)
        for job in config.jobs:
            self._add(job)
        self.leader_scheduler.observe(self.metrics.observe_job)
        self.http: HttpServer | None = None
        if config.http.listen:
            self.http = HttpServer(
                config.http.listen,
                elector=self.elector,
                metrics=self.metrics,
                scheduler=self.leader_scheduler,
            )
        self._stop = threading.Event()
        self._signals = 0

    def _add(self, job: JobConfig) -> None:
        options: dict[str, Any] = {"id": job.id, "name": job.id, "max_instances": job.max_instances}
        if job.misfire_grace_time is not None:
            options["misfire_grace_time"] = job.misfire_grace_time
        if job.coalesce is not None:
            options["coalesce"] = job.coalesce
        trigger = make_trigger(job, self.config)
        if job.command is not None:
            self.scheduler.add_job(run_command, trigger, args=[list(job.command)], **options)
        else:
            func = self.funcs[job.id]
            self.scheduler.add_job(func, trigger, args=job.args, kwargs=job.kwargs, **options)

    def start(self) -> None:
        """Start the HTTP listener (if configured), then campaign and schedule.

        A listener that cannot bind raises a one-line ConfigError before anything else starts.
        """
        if self.http is not None:
            self.http.start()
        try:
            self.metrics.campaigning()
            self.leader_scheduler.start()
        except BaseException:
            if self.http is not None:
                self.http.stop()
            raise

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down gracefully (thread-safe)."""
        self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("%s received: shutting down gracefully", name)
        else:
            log.warning("%s received again: cancelling running jobs now", name)
            for run in self.leader_scheduler.running_runs():
                run.cancel()
        self._stop.set()

    def serve(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`stop`), then hand over and return 0."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.start()
        log.info(
            "started identity=%s election=%s mode=%s backend=%s jobs=%d",
            self.config.election.identity,
            self.config.election.name,
            self.config.mode,
            self.backend.url,
            len(self.config.jobs),
        )
        while not self._stop.wait(3600):
            pass
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        grace = self.config.scheduler.grace_period
        try:
            finished = self.leader_scheduler.shutdown(grace)
            self.backend.close()
        finally:
            if self.http is not None:
                self.http.stop()
        log.info(
            "stopped identity=%s election=%s jobs_finished=%s",
            self.config.election.identity,
            self.config.election.name,
            finished,
        )
