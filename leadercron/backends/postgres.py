"""PostgreSQL backend on session-level advisory locks.

URL: ``postgresql://user[:password]@host[:port]/database[?options]`` (also ``postgres://``).

=============  ===========  ========================================================================
option         default      meaning
=============  ===========  ========================================================================
timeout        ``5s``       bound of every call: connect, each statement (client side: a call that
                            gets no answer in time closes its connection and raises
                            ``BackendUnavailable``); also ``statement_timeout`` and the TCP
                            keepalive timing on both ends
recheck        ``1s``       how often a waiter re-checks that the holder's session still holds the
                            lock (a holder that dies sends no ``NOTIFY``)
password_file  —            read the password from this file (first line); else the URL's password,
                            else the ``LEADERCRON_POSTGRES_PASSWORD`` environment variable
sslmode        —            passed to libpq (``disable`` … ``verify-full``)
sslrootcert    —            passed to libpq (CA file)
=============  ===========  ========================================================================

Each backend instance keeps one *lock session* (a connection) and, once it waits, one *listen
session*. Tables ``leadercron_terms(election, token, holder, pid)`` and
``leadercron_ledger(election, job, mark)`` are created on first use.

- **acquire**: one statement on the lock session: ``pg_try_advisory_lock(key)`` (key = the first
  8 bytes of ``sha256("leadercron:" + election)``, signed), and only if it was granted an upsert
  that increments the election's token and records holder and backend pid. A failed statement
  closes the session, which drops the lock.
- **renew**: ``None`` if the lock session the lease was made on is gone; else one statement
  checking that the term row still has this token and pid *and* that ``pg_locks`` shows the lock
  granted to this session. Nothing is extended: the lock lasts as long as the session. A renew
  that fails or times out closes the session (which frees the lock) and returns ``None``: the
  term can never continue, so the leader steps down at once rather than at its deadline.
- **release**: ``pg_advisory_unlock`` plus ``pg_notify('leadercron', election)`` in one statement,
  only if this session holds the lock for this term.
- **leader**: the pid holding the lock in ``pg_locks`` joined with the term row (a foreign holder
  shows as ``pid N`` with no token).
- **wait_for_change**: ``LISTEN leadercron`` on the listen session; returns on a ``NOTIFY`` for the
  election or when a re-check (every ``recheck``) finds the lock free.
- **claim**: one statement that upserts the mark only if ``fire`` is greater *and* this session
  still holds the lock for this term.

Limits: there is **no ttl**. A term lasts exactly as long as the holder's session. A holder whose
process dies loses the lock as soon as the server sees its connection close (at once for a killed
process, after ``tcp_keepalives_idle + interval * count`` for a vanished host); a holder that is
hung but still connected keeps it forever. Session parameters: ``statement_timeout`` and
``idle_in_transaction_session_timeout`` = ``timeout``; server-side TCP keepalives idle =
``timeout``, interval = ``timeout / 3``, count 3.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from leadercron.backends.base import (
    LEDGER_RETENTION,
    Backend,
    LeaderInfo,
    Lease,
    duration_option,
    parse_url,
    redact_url,
    reject_unknown_options,
)
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError

T = TypeVar("T")

CHANNEL = "leadercron"
_AUTH_STATES = {"28P01", "28000"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leadercron_terms (
    election text PRIMARY KEY, token bigint NOT NULL, holder text NOT NULL, pid integer NOT NULL
);
CREATE TABLE IF NOT EXISTS leadercron_ledger (
    election text NOT NULL, job text NOT NULL, mark bigint NOT NULL,
    PRIMARY KEY (election, job)
)
"""

# Granted to this session: the advisory lock of a bigint key (classid = high, objid = low half).
_MINE = """
SELECT 1 FROM pg_locks
 WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
   AND classid = %(hi)s AND objid = %(lo)s AND objsubid = 1
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

_ACQUIRE = f"""
WITH got AS (
    SELECT CASE WHEN EXISTS ({_MINE}) THEN true ELSE pg_try_advisory_lock(%(key)s) END AS ok
)
INSERT INTO leadercron_terms AS t (election, token, holder, pid)
SELECT %(election)s, 1, %(identity)s, pg_backend_pid() FROM got WHERE ok
ON CONFLICT (election) DO UPDATE
   SET token = t.token + 1, holder = EXCLUDED.holder, pid = EXCLUDED.pid
RETURNING token
"""

_RENEW = f"""
SELECT 1 FROM leadercron_terms
 WHERE election = %(election)s AND token = %(token)s AND pid = pg_backend_pid()
   AND EXISTS ({_MINE})
"""

_RELEASE = f"""
SELECT pg_advisory_unlock(%(key)s), pg_notify('{CHANNEL}', %(election)s)
  FROM leadercron_terms
 WHERE election = %(election)s AND token = %(token)s AND pid = pg_backend_pid()
   AND EXISTS ({_MINE})
"""

_LEADER = """
SELECT l.pid, t.holder, t.token FROM pg_locks l
  LEFT JOIN leadercron_terms t ON t.election = %(election)s AND t.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'
   AND l.classid = %(hi)s AND l.objid = %(lo)s AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

_CLAIM = f"""
INSERT INTO leadercron_ledger AS g (election, job, mark)
SELECT %(election)s, %(job)s, %(fire)s
 WHERE EXISTS ({_MINE})
   AND EXISTS (SELECT 1 FROM leadercron_terms WHERE election = %(election)s
               AND token = %(token)s AND pid = pg_backend_pid())
ON CONFLICT (election, job) DO UPDATE SET mark = EXCLUDED.mark WHERE g.mark < EXCLUDED.mark
RETURNING 1
"""


def lock_key(election: str) -> int:
    """The advisory lock key of ``election``: 8 bytes of sha256, as a signed 64-bit integer."""
    digest = hashlib.sha256(f"leadercron:{election}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _key_params(election: str) -> dict[str, Any]:
    key = lock_key(election)
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"key": key, "hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF, "election": election}


def _shutdown(conn: psycopg.Connection[Any]) -> None:
    """Cut a connection's socket so that a call blocked on it returns at once."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass


@dataclass(frozen=True)
class _Handle:
    session: int  # generation of the lock session the term lives on


class PostgresBackend(Backend):
    """Elections on PostgreSQL advisory locks. See the module docstring."""

    schemes = ("postgresql", "postgres")
    detects_crash = True
    supports_claims = True
    #: Terms end with the holder's session, never by ttl (see the module docstring).
    supports_expiry = False

    def __init__(
        self,
        conninfo: dict[str, Any],
        *,
        url: str = "",
        timeout: float = 5.0,
        recheck: float = 1.0,
    ) -> None:
        self.url = redact_url(url)
        self.timeout = timeout
        self.recheck = recheck
        secs = max(1, math.ceil(timeout))
        options = (
            f"-c statement_timeout={int(timeout * 1000)}"
            f" -c idle_in_transaction_session_timeout={int(timeout * 1000)}"
            f" -c tcp_keepalives_idle={secs} -c tcp_keepalives_interval={max(1, secs // 3)}"
            " -c tcp_keepalives_count=3"
        )
        self._conninfo = {
            **conninfo,
            "connect_timeout": secs,
            "keepalives": 1,
            "keepalives_idle": secs,
            "keepalives_interval": max(1, secs // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": int(timeout * 1000),
            "application_name": "leadercron",
            "options": options,
        }
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._session = 0
        self._held: set[str] = set()
        self._wait_lock = threading.Lock()
        self._listen: psycopg.Connection[Any] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> PostgresBackend:
        parts, options = parse_url(url, cls.schemes)
        where = f"backend URL {redact_url(url)!r}"
        reject_unknown_options(
            url, options, {"timeout", "recheck", "password_file", "sslmode", "sslrootcert"}
        )
        try:
            host, port = parts.hostname, parts.port or 5432
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not host:
            raise ConfigError(f"{where}: expected postgresql://user@host:port/database")
        database = parts.path.lstrip("/")
        if "/" in database:
            raise ConfigError(f"{where}: the path must be a database name")
        durations = {
            name: duration_option(url, options, name, default)
            for name, default in (("timeout", "5s"), ("recheck", "1s"))
        }
        password = parts.password
        if "password_file" in options:
            try:
                with open(options["password_file"], encoding="utf-8") as fh:
                    password = fh.readline().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"{where}: password_file: {exc.strerror}") from None
        elif password is None:
            password = os.environ.get("LEADERCRON_POSTGRES_PASSWORD")
        conninfo: dict[str, Any] = {"host": host, "port": port}
        if parts.username:
            conninfo["user"] = parts.username
        if database:
            conninfo["dbname"] = database
        if password is not None:
            conninfo["password"] = password
        for name in ("sslmode", "sslrootcert"):
            if name in options:
                conninfo[name] = options[name]
        return cls(conninfo, url=url, timeout=durations["timeout"], recheck=durations["recheck"])

    # -- plumbing ------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise BackendUnavailable("backend closed")
        try:
            conn = psycopg.connect(autocommit=True, **self._conninfo)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        return conn

    def _translate(self, exc: BaseException) -> BackendUnavailable:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state = getattr(exc, "sqlstate", None)
        if state in _AUTH_STATES or "authentication failed" in message:
            return BackendAuthError(f"postgres {self.url}: {message}")
        return BackendUnavailable(f"postgres {self.url}: {message}")

    def _guarded(self, conn: psycopg.Connection[Any], call: Callable[[], T]) -> T:
        """Run ``call`` on ``conn``; cut the connection if it takes longer than ``timeout``."""
        fired = threading.Event()

        def cut() -> None:
            fired.set()
            _shutdown(conn)

        timer = threading.Timer(self.timeout, cut)
        timer.daemon = True
        timer.start()
        try:
            return call()
        except psycopg.Error as exc:
            if fired.is_set():
                raise psycopg.OperationalError(f"no answer within {self.timeout:g}s") from exc
            raise
        finally:
            timer.cancel()

    def _session_conn(self) -> psycopg.Connection[Any]:
        """The lock session, connected (and the tables created) on first use."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = self._connect()

        def setup() -> None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("schema"),))
                conn.execute(_SCHEMA)

        try:
            self._guarded(conn, setup)
        except psycopg.Error as exc:
            conn.close()
            raise self._translate(exc) from exc
        self._conn = conn
        self._session += 1
        return conn

    def _run(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """One statement on the lock session. Any failure ends the session (and its locks)."""
        with self._lock:
            conn = self._session_conn()
            try:
                return self._guarded(conn, lambda: self._fetch(conn, sql, params))
            except psycopg.Error as exc:
                self._drop_session()
                raise self._translate(exc) from exc

    @staticmethod
    def _fetch(
        conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []

    def _drop_session(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._held:
            self._held.clear()
            self._alarm("postgres lock session lost")

    def _live(self, lease: Lease) -> bool:
        handle: _Handle = lease.handle
        return self._conn is not None and not self._conn.closed and handle.session == self._session

    # -- the contract --------------------------------------------------------------------------

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        with self._lock:
            rows = self._run(_ACQUIRE, {**_key_params(election), "identity": identity})
            if not rows:
                return None
            self._held.add(election)
            return Lease(election, identity, int(rows[0][0]), ttl, handle=_Handle(self._session))

    def renew(self, lease: Lease) -> Lease | None:
        with self._lock:
            if not self._live(lease):
                return None
            try:
                rows = self._run(_RENEW, {**_key_params(lease.election), "token": lease.token})
            except BackendUnavailable:
                return None  # the failed call ended the session, and the lock with it
            return lease if rows else None

    def release(self, lease: Lease) -> None:
        with self._lock:
            if not self._live(lease):
                return
            self._run(_RELEASE, {**_key_params(lease.election), "token": lease.token})
            self._held.discard(lease.election)

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        with self._lock:
            if not self._live(lease):
                return False
            params = {**_key_params(lease.election), "token": lease.token}
            rows = self._run(_CLAIM, {**params, "job": job_id, "fire": fire})
            if rows:
                horizon = int((time.time() - LEDGER_RETENTION) * 1000)
                self._run(
                    "DELETE FROM leadercron_ledger WHERE election = %(election)s"
                    " AND mark < %(horizon)s",
                    {"election": lease.election, "horizon": horizon},
                )
            return bool(rows)

    def ledger(self, election: str) -> dict[str, int]:
        rows = self._run(
            "SELECT job, mark FROM leadercron_ledger WHERE election = %(election)s",
            {"election": election},
        )
        return {str(job): int(mark) for job, mark in rows}

    def leader(self, election: str) -> LeaderInfo | None:
        return self._holder(self._run(_LEADER, _key_params(election)))

    @staticmethod
    def _holder(rows: list[tuple[Any, ...]]) -> LeaderInfo | None:
        if not rows:
            return None
        pid, holder, token = rows[0]
        if holder is None:
            return LeaderInfo(f"pid {pid}")  # a foreign session holds the lock
        return LeaderInfo(str(holder), int(token))

    def wait_for_change(self, election: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self._wait_lock.acquire(timeout=max(0.0, timeout)):
            return
        try:
            self._wait(election, deadline)
        finally:
            self._wait_lock.release()

    def _wait(self, election: str, deadline: float) -> None:
        if self._closed:
            return
        if self._listen is None or self._listen.closed:
            conn = self._connect()
            try:
                self._guarded(conn, lambda: conn.execute(f"LISTEN {CHANNEL}"))
            except psycopg.Error as exc:
                conn.close()
                raise self._translate(exc) from exc
            self._listen = conn
        conn = self._listen
        params = _key_params(election)
        try:
            while not self._closed:
                # Re-check after LISTEN is active, so that no release slips between the two.
                rows = self._guarded(conn, lambda: conn.execute(_LEADER, params).fetchall())
                if not rows:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                for notify in conn.notifies(timeout=min(left, self.recheck), stop_after=1):
                    if notify.payload == election:
                        return
        except psycopg.Error as exc:
            self._listen = None
            conn.close()
            if self._closed:
                return
            raise self._translate(exc) from exc

    def close(self) -> None:
        self._closed = True
        listen = self._listen
        if listen is not None:
            _shutdown(listen)  # wakes a waiter blocked in notifies(), which then closes it
            if self._wait_lock.acquire(blocking=False):
                listen.close()
                self._wait_lock.release()
        with self._lock:
            self._held.clear()
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
