"""The metrics and health listener (``http.listen``): a small stdlib HTTP server on daemon threads.

Endpoints (``GET`` and ``HEAD``):

``/metrics``
    Prometheus exposition of the replica's own registry (OpenMetrics when the scraper asks).
``/healthz``
    Liveness. 200 while the elector's loop thread is alive and this replica is not stuck as a
    leader: a replica whose state is still ``leader`` more than ``stuck_timeout`` seconds after
    its local renew deadline passed is unhealthy (the semantics of client-go's leader-election
    ``HealthzAdaptor``). 503 otherwise.
``/readyz``
    Readiness. 200 once the backend has answered this replica at least once, 503 before.
``/leader``
    200 if this replica may dispatch right now (:meth:`Elector.is_leader`), 503 otherwise.
``/status``
    JSON: identity, election, backend kind and redacted URL, state, the election's current
    leader as the backend reports it, term, leader since, last renew, and every job's next fire
    time and last outcome. The backend lookup is cached and bounded by a timeout, so a backend
    that hangs never hangs the handler.

Nothing here blocks the elector: handlers only read its state.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from leadercron.backends.base import Backend, LeaderInfo
from leadercron.elector import Elector, State
from leadercron.errors import ConfigError
from leadercron.metrics import Metrics, backend_kind
from leadercron.perjob import PerJobScheduler
from leadercron.scheduler import GuardedScheduler
from leadercron.term import format_time

log = logging.getLogger("leadercron.http")

ENDPOINTS = ("/metrics", "/healthz", "/readyz", "/leader", "/status")


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too; an empty host means every interface)."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"http.listen: expected host:port, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


# -- the election's leader, as the backend sees it ----------------------------------------------


@dataclass(frozen=True)
class LeaderAnswer:
    """The latest answer of :meth:`Backend.leader`, as :class:`LeaderLookup` keeps it."""

    info: LeaderInfo | None
    error: str | None
    checked_at: datetime | None  # wall time of the answer (None: never answered)
    stale: bool  # ``info`` is not current: the latest lookup failed or did not answer in time


class LeaderLookup:
    """Asks the backend who leads, at most one call at a time, and never waits long for it.

    A fresh answer (younger than ``max_age``) is served from the cache. Otherwise one lookup
    runs on a daemon thread and :meth:`get` waits for it for at most ``timeout`` seconds; after
    that it returns the previous answer marked stale (and the lookup keeps running, so a hung
    backend costs one thread, not one per request).
    """

    def __init__(
        self,
        backend: Backend,
        election: str,
        *,
        timeout: float = 1.0,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.election = election
        self.timeout = timeout
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: threading.Event | None = None
        self._info: LeaderInfo | None = None
        self._error: str | None = None
        self._answered_at: float | None = None  # monotonic instant of the last success
        self._checked_at: datetime | None = None

    def get(self) -> LeaderAnswer:
        with self._lock:
            fresh = (
                self._answered_at is not None
                and self._error is None
                and self._clock() - self._answered_at < self.max_age
            )
            pending = None
            if not fresh:
                if self._inflight is None:
                    self._inflight = threading.Event()
                    threading.Thread(
                        target=self._lookup,
                        args=(self._inflight,),
                        name=f"leadercron-http-leader-{self.election}",
                        daemon=True,
                    ).start()
                pending = self._inflight
        if pending is not None:
            pending.wait(self.timeout)
        timed_out = pending is not None and not pending.is_set()
        with self._lock:
            error = f"backend did not answer within {self.timeout:g}s" if timed_out else self._error
            stale = error is not None or self._answered_at is None
            return LeaderAnswer(self._info, error, self._checked_at, stale)

    def _lookup(self, done: threading.Event) -> None:
        try:
            info = self.backend.leader(self.election)
        except Exception as exc:
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"
                self._inflight = None
        else:
            with self._lock:
                self._info = info
                self._error = None
                self._answered_at = self._clock()
                self._checked_at = datetime.now(UTC)
                self._inflight = None
        finally:
            done.set()


# -- the server ----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: HttpServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "leadercron"
    timeout = 30  # a client that stalls mid-request loses its thread after this

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        app = self.server.app
        try:
            status, content_type, body = app.handle(path, self.headers.get("Accept", ""))
        except Exception:
            log.exception("http handler failed path=%s", path)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


class HttpServer:
    """Serves ``/metrics``, ``/healthz``, ``/readyz``, ``/leader`` and ``/status`` for a replica.

    ``listen`` is ``host:port`` (port 0 picks a free port; see :attr:`address`). ``metrics`` must
    be subscribed to ``elector``. ``scheduler`` adds per-job information to ``/status``.
    ``stuck_timeout`` is how long past its local deadline a replica may still be in state
    ``leader`` before ``/healthz`` fails; it defaults to ``ttl - renew_deadline`` (at least
    ``retry_period``): by then the backend may have handed the lease to another replica.
    """

    def __init__(
        self,
        listen: str,
        *,
        elector: Elector | None = None,
        metrics: Metrics,
        scheduler: GuardedScheduler | None = None,
        stuck_timeout: float | None = None,
        leader_timeout: float = 1.0,
    ) -> None:
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self.metrics = metrics
        self.scheduler = scheduler
        self.stuck_timeout = 0.0
        self.leader_lookup: LeaderLookup | None = None
        if elector is None:
            if not isinstance(scheduler, PerJobScheduler):
                raise ValueError("HttpServer needs an elector, or a PerJobScheduler (per-job mode)")
            self.per_job: PerJobScheduler | None = scheduler
        else:
            self.per_job = None
            if stuck_timeout is None:
                stuck_timeout = max(elector.ttl - elector.renew_deadline, elector.retry_period)
            self.stuck_timeout = stuck_timeout
            self.leader_lookup = LeaderLookup(
                elector.backend,
                elector.election,
                timeout=leader_timeout,
                max_age=min(1.0, elector.retry_period),
            )
        self._elector = elector
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` once started (the configured one before)."""
        if self._server is None:
            return self.host, self.port
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
        return f"http://{shown}:{port}"

    def start(self) -> None:
        """Bind and serve on a daemon thread; a bind failure is a one-line ConfigError."""
        if self._server is not None:
            raise RuntimeError("http server already started")
        cls = _Server6 if ":" in self.host else _Server
        try:
            server = cls((self.host, self.port), _Handler)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"http.listen: cannot listen on {self.listen!r}: {reason}") from None
        server.app = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="leadercron-http",
            daemon=True,
        )
        self._thread.start()
        log.info("http listening on %s (%s)", self.url, " ".join(ENDPOINTS))

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    # -- endpoints -------------------------------------------------------------------------------

    def handle(self, path: str, accept: str = "") -> tuple[int, str, bytes]:
        """Answer one request: ``(status, content type, body)``."""
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(self.metrics.registry)
        if path == "/healthz":
            ok, reason = self.healthy()
            return (200 if ok else 503), TEXT, f"{reason}\n".encode()
        if path == "/readyz":
            if self.metrics.backend_answered:
                return 200, TEXT, b"ok\n"
            return 503, TEXT, b"not ready: the backend has not answered yet\n"
        if path == "/leader":
            if self.per_job is not None:
                return 404, TEXT, b"per-job mode: no leader election (every replica runs jobs)\n"
            if self.elector.is_leader():
                return 200, TEXT, b"leader\n"
            return 503, TEXT, b"not leader\n"
        if path == "/status":
            return 200, JSON, (json.dumps(self.status(), indent=2) + "\n").encode()
        if path == "/":
            return 200, TEXT, ("\n".join(ENDPOINTS) + "\n").encode()
        return 404, TEXT, b"not found\n"

    @property
    def elector(self) -> Elector:
        """The elector (leader mode only)."""
        if self._elector is None:
            raise RuntimeError("per-job mode has no elector")
        return self._elector

    def healthy(self) -> tuple[bool, str]:
        """Liveness: the elector loop runs, and it is not stuck as a leader past its deadline.

        In per-job mode: the scheduler is dispatching.
        """
        if self.per_job is not None:
            if self.per_job.alive:
                return True, "ok"
            return False, "unhealthy: the scheduler is not dispatching"
        if not self.elector.alive:
            return False, "unhealthy: the elector loop is not running"
        deadline = self._local_deadline()
        if self.elector.state is State.LEADER and deadline is not None:
            late = self.elector.clock.monotonic() - deadline
            if late > self.stuck_timeout:
                return False, (
                    f"unhealthy: still leader {late:.1f}s after the renew deadline "
                    f"(tolerance {self.stuck_timeout:g}s)"
                )
        return True, "ok"

    def _local_deadline(self) -> float | None:
        """The current term's dispatch deadline on the elector's clock, or ``None``.

        Read from the elector itself, so that a thread stuck in any listener (even one called
        before the metrics hear of a new term) is seen; the metrics' own record of the deadline,
        kept from the listener callbacks, is the fallback.
        """
        deadline = self.elector.deadline()
        return deadline if deadline is not None else self.metrics.local_deadline

    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        if self.per_job is not None:
            return self._per_job_status(self.per_job)
        elector = self.elector
        term = elector.term()
        holding = elector.state in (State.LEADER, State.STEPPING_DOWN)
        assert self.leader_lookup is not None
        answer = self.leader_lookup.get()
        leader: dict[str, Any] | None = None
        if answer.info is not None:
            leader = {"identity": answer.info.identity, "term": answer.info.token}
        url = elector.backend.url
        return {
            "identity": elector.identity,
            "election": elector.election,
            "mode": "leader",
            "backend": {"kind": backend_kind(url), "url": url},
            "state": elector.state.value,
            "role": "leader" if term is not None else "follower",
            "is_leader": term is not None,
            "term": None if term is None else term.token,
            "leader_since": _time(elector.leader_since) if holding else None,
            "last_renew": _time(elector.last_renew) if holding else None,
            "lease_remaining_seconds": round(elector.remaining(), 3),
            "backend_up": self.metrics.backend_up_now,
            "ready": self.metrics.backend_answered,
            "leader": leader,
            "leader_checked_at": _time(answer.checked_at),
            "leader_stale": answer.stale,
            "leader_error": answer.error,
            "timing": {
                "ttl": elector.ttl,
                "renew_deadline": elector.renew_deadline,
                "retry_period": elector.retry_period,
            },
            "jobs": self._jobs(),
        }

    def _per_job_status(self, scheduler: PerJobScheduler) -> dict[str, Any]:
        url = scheduler.backend.url
        return {
            "identity": scheduler.identity,
            "election": scheduler.election,
            "mode": "per-job",
            "backend": {"kind": backend_kind(url), "url": url},
            "state": "running" if scheduler.alive else "stopped",
            "backend_up": self.metrics.backend_up_now,
            "ready": self.metrics.backend_answered,
            "locks_held": [
                {
                    "job": held.job_id,
                    "lock": held.lock,
                    "term": held.token,
                    "since": _time(held.since),
                }
                for held in scheduler.held_locks()
            ],
            "lock_ttl": {
                job.id: scheduler.ttl_for(job.id) for job in scheduler.scheduler.get_jobs()
            },
            "jobs": self._jobs(),
        }

    def _jobs(self) -> list[dict[str, Any]]:
        if self.scheduler is None:
            return []
        outcomes = dict(self.scheduler.outcomes)
        jobs = []
        for job in self.scheduler.scheduler.get_jobs():
            last = outcomes.get(job.id)
            jobs.append(
                {
                    "id": job.id,
                    "next_fire_time": _time(_next_fire(job)),
                    "last_outcome": None if last is None else last[0],
                    "last_outcome_at": None if last is None else _time(last[1]),
                }
            )
        return jobs


def _next_fire(job: Any) -> datetime | None:
    """The job's next fire time by its trigger, from now (a follower's scheduler is paused, so
    its own ``next_run_time`` would be stale); ``None`` for a paused or finished job."""
    if getattr(job, "next_run_time", None) is None:
        return None
    try:
        fire: datetime | None = job.trigger.get_next_fire_time(None, datetime.now(UTC))
    except Exception:
        fire = job.next_run_time
    return fire


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)
