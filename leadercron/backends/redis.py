"""Redis backend: one master, or Redlock over several. URL and options: :class:`RedisBackend`.

Keys and channels of election ``E`` (``P`` = prefix):

``P E`` — the leader key
    ``SET P E VALUE NX PX ttl_ms``: the same lock that redis-py's ``Lock`` and redsync take on a
    key of that name, so each of them excludes leadercron and vice versa. ``VALUE`` is
    ``lc1:<32 hex random>:<identity>``, unique per term, so compare-and-renew and
    compare-and-delete are exact. A value in any other format is a foreign holder: ``leader()``
    reports the raw value as its identity and no token.
``P E:token`` — the fencing counter
    ``INCR``-ed by the acquire script only when its ``SET NX`` succeeded, in the same script, so
    every term gets the next number. Needs a Redis that keeps it: persistence if tokens must
    survive a restart, and an eviction policy that spares keys without a TTL (``noeviction`` or
    ``volatile-*``).
``P E:ledger`` — the run ledger (a sorted set)
    One member per job id, scored with the fire (ms since the epoch) last claimed for it; the
    claim script drops members older than ``LEDGER_RETENTION``.
``P E:released`` — a pub/sub channel
    The release script publishes the released value on it. Waiters share one ``PSUBSCRIBE P*``
    connection per master (read by a thread); once it is confirmed, a wait reads the key's value
    and ``PTTL`` and wakes at once when that value's release is published (stale messages about
    older terms are ignored), or by the key's expiry at the latest, which catches a crashed
    holder and a foreign holder that deletes the key without publishing. No server
    configuration is needed.

The contract on one master:

* ``acquire``: script ``SET NX PX`` + ``INCR``; the lease lasts ``ttl`` (rounded up to a whole
  millisecond) from when the server ran the script.
* ``renew``: script ``if GET == value then PEXPIRE`` — an expired term's key is gone, so it is
  never resurrected.
* ``release``: script ``if GET == value then DEL; PUBLISH``.
* ``leader``: ``MGET key counter``.
* ``wait_for_change``: pub/sub plus ``PTTL``, as above.
* ``claim``: script ``if GET == value and ZSCORE(job) < fire then ZADD`` (and prune);
  ``ledger``: ``ZRANGE ... WITHSCORES``.

Redlock (``mode=redlock``, N masters, quorum ``N // 2 + 1``): every call runs the same scripts
on all masters in parallel. A term is granted when ``SET NX`` succeeded on a quorum *and* its
validity ``ttl - elapsed - drift`` is still positive, where ``elapsed`` runs from before the
first request to after the last answer and ``drift = ttl * 0.01 + 2ms`` (redsync's formula). The
keys then live until at least ``start + ttl - drift`` on this host's clock, so
``validate_timing`` requires ``renew_deadline <= ttl - drift``. A failed campaign deletes its
partial keys. Losing is ``None`` only when enough masters refused that no quorum was possible;
when too few masters answered (two of three down) the call raises ``BackendUnavailable``: a
lease is never granted without a quorum. Renewal and claims need a quorum of successes the
same way (two claims of one fire cannot both reach a quorum, and a fire marked on a quorum is
refused by more than N - quorum masters afterwards); ``ledger`` reports, per job, the mark that
enough of the answering masters carry to include a quorum.

Redlock fencing token: each master's acquire script returns its own ``INCR``; the token is the
largest among the winning quorum, and a second round raises the counter of those masters to
that token (``SET counter max(counter, token)``). The term is granted only if that raise reached
a quorum. Any later term's quorum shares a master with that raised quorum, where its ``INCR``
runs after ours (the key there outlives our grant), so its token is larger: tokens strictly
increase as long as no master loses its data. A master restarted without persistence forgets
both the lock and the counter, which breaks Redlock's own safety too (restart masters only
after a ttl, or persist with ``appendfsync always``).

Asynchronous replication (Sentinel, Redis Cluster failover) can lose a lock: a replica promoted
before it received the ``SET`` lets a second holder in. Use one master, or Redlock's
independent masters, when that matters; fencing tokens let downstream systems reject the stale
holder. Redis Cluster is not supported (the scripts use two keys without a hash tag).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import unquote

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from leadercron.backends.base import (
    LEDGER_RETENTION,
    Backend,
    LeaderInfo,
    Lease,
    duration_option,
    parse_hosts,
    parse_url,
    redact_url,
    reject_unknown_options,
)
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError

__all__ = ["RedisBackend"]

log = logging.getLogger(__name__)

T = TypeVar("T")

PASSWORD_ENV = "LEADERCRON_REDIS_PASSWORD"
_OPTIONS = {"prefix", "timeout", "mode", "password_file", "ca_file", "cert_file", "key_file"}
_VALUE_TAG = "lc1"
_VALUE = re.compile(r"^lc1:[0-9a-f]{32}:(.*)$", re.DOTALL)
_LISTEN_SLICE = 0.2  # how often the listener thread looks at its stop flag

# SET NX PX, then INCR the fencing counter only if the SET succeeded.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
"""
# Extend the term only if the key still holds this term's value.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Delete the key only if it still holds this term's value, and tell the waiters.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
"""
# Claim a job's fire: only for the live term, only if the fire is newer than the job's mark.
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local mark = redis.call('ZSCORE', KEYS[2], ARGV[2])
if mark and tonumber(mark) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
return 1
"""
# Redlock only: counter = max(counter, token).
_RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""

_AUTH_ERRORS: tuple[type[Exception], ...] = tuple(
    cls
    for cls in (
        getattr(redis.exceptions, name, None)
        for name in (
            "AuthenticationError",
            "AuthenticationWrongNumberOfArgsError",
            "AuthorizationError",
            "NoPermissionError",
        )
    )
    if isinstance(cls, type)
)


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def drift(ttl: float) -> float:
    """Redlock's allowance for clock drift between masters and this host (as redsync)."""
    return ttl * 0.01 + 0.002


class _Listener:
    """One pub/sub connection to one master, read by one thread: ``PSUBSCRIBE prefix*``.

    Started by the first wait and kept while it works; a failure ends the thread (the next wait
    starts a new one). Every message calls ``on_message(channel, payload)``; the end of a
    confirmed subscription calls ``on_lost()``, since messages may be missed until the next one.
    """

    def __init__(
        self,
        master: _Master,
        pattern: str,
        on_message: Callable[[str, bytes], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._master = master
        self._pattern = pattern
        self._on_message = on_message
        self._on_lost = on_lost
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._ready = False
        self._failures = 0
        self._error: BackendUnavailable | None = None
        self._stop = False
        self._closed = False

    def ensure(self, timeout: float) -> None:
        """Return once the subscription is confirmed; raise ``BackendUnavailable`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._ready or self._closed):
                if self._thread is None:
                    self._stop = False
                    self._thread = threading.Thread(
                        target=self._run, name=f"leadercron-redis-{self._master.name}", daemon=True
                    )
                    self._thread.start()
                failures = self._failures
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendUnavailable(
                        f"redis {self._master.name}: no pub/sub subscription after {timeout:g}s"
                    )
                self._cond.wait(remaining)  # notified on confirmation, failure and close
                if self._failures != failures and self._error is not None:
                    raise self._error
                # A thread stopped by reset() ends without an error: start another one.

    def reset(self) -> None:
        """Drop the connection (it may be dead without knowing); the next wait reconnects."""
        with self._cond:
            self._stop = True

    def close(self) -> threading.Thread | None:
        """Stop for good; return the thread to join, if any."""
        with self._cond:
            self._closed = self._stop = True
            self._cond.notify_all()
            return self._thread

    def _run(self) -> None:
        error: BackendUnavailable | None = None
        pubsub = self._master.client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.psubscribe(self._pattern)
            while True:
                with self._cond:
                    if self._stop:
                        break
                message = pubsub.get_message(timeout=_LISTEN_SLICE)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    with self._cond:
                        self._ready = True
                        self._cond.notify_all()
                elif message["type"] == "pmessage":
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode("utf-8", "replace")
                    data = message["data"]
                    self._on_message(str(channel), data if isinstance(data, bytes) else b"")
        except (redis.RedisError, OSError) as exc:
            error = self._master.translate(exc)
            log.debug("redis %s: pub/sub connection lost: %s", self._master.name, error)
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
            with self._cond:
                was_ready, self._ready = self._ready, False
                self._thread = None
                self._failures += 1
                self._error = error
                self._cond.notify_all()
            if was_ready:  # waiters relied on this subscription: they may have missed a release
                self._on_lost()


class _Watch:
    """One pending wait: set by the release of a value it saw, by a lost subscription, or close.

    Releases published between subscribing and reading the key are kept in ``early`` until the
    wait knows which values it saw. Only touched under the backend's lock.
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.event = threading.Event()
        self.values: set[bytes] | None = None
        self.early: list[bytes] = []

    def offer(self, payload: bytes) -> None:
        if self.values is None:
            self.early.append(payload)
        elif payload in self.values:
            self.event.set()

    def arm(self, values: set[bytes]) -> None:
        self.values = values
        if any(payload in values for payload in self.early):
            self.event.set()


@dataclass(frozen=True)
class _Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class _Master:
    """One Redis server: a client (connection pool), the scripts and the pub/sub listener."""

    def __init__(self, address: _Address, client_options: dict[str, Any]) -> None:
        self.name = str(address)
        self.client = redis.Redis(host=address.host, port=address.port, **client_options)
        self.acquire = self.client.register_script(_ACQUIRE)
        self.renew = self.client.register_script(_RENEW)
        self.release = self.client.register_script(_RELEASE)
        self.raise_counter = self.client.register_script(_RAISE)
        self.claim = self.client.register_script(_CLAIM)
        self.listener: _Listener | None = None

    def translate(self, exc: BaseException) -> BackendUnavailable:
        if isinstance(exc, BackendUnavailable):
            return exc
        if isinstance(exc, _AUTH_ERRORS):
            return BackendAuthError(f"redis {self.name}: credentials refused: {exc}")
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError) and self.listener:
            self.listener.reset()
        return BackendUnavailable(f"redis {self.name}: {type(exc).__name__}: {exc}")


class RedisBackend(Backend):
    """Elections in Redis, on one master or Redlock over several masters.

    URL::

        redis://[user[:password]@]host[:port][/db][?option=value&...]
        rediss://...                                       (TLS)
        redis://[user[:password]@]h1:p1,h2:p2,h3:p3[/db]?mode=redlock

    Hosts are ``name``, ``name:port`` or ``[ipv6]:port`` (port 6379 by default); ``db`` is 0 by
    default. Several hosts need ``mode=redlock``; user, password, db and TLS settings then apply
    to every master.

    =============  ===============  ============================================================
    option         default          meaning
    =============  ===============  ============================================================
    prefix         ``leadercron:``  prefix of every key and channel (see the module docstring)
    timeout        ``5s``           connect and read timeout of every call to a master; a call
                                    that exceeds it raises ``BackendUnavailable``. With Redlock
                                    keep it well below the ttl: a hung master costs every call
                                    that long.
    mode           ``single``       ``single`` (one master) or ``redlock`` (N independent
                                    masters, quorum N/2+1)
    password_file  (none)           file holding the password. The password comes from the
                                    URL, else this file, else the ``LEADERCRON_REDIS_PASSWORD``
                                    environment variable (URL and file together: an error). It
                                    never appears in ``url``, ``repr`` or logs.
    ca_file        system CAs       ``rediss://`` only: CA bundle that verifies the server
    cert_file      (none)           ``rediss://`` only: client certificate (PEM), mutual TLS
    key_file       in cert_file     ``rediss://`` only: the client certificate's private key
    =============  ===============  ============================================================

    How each contract method maps onto Redis: see the module docstring.
    """

    schemes = ("redis", "rediss")
    supports_claims = True

    def __init__(
        self,
        hosts: Sequence[tuple[str, int]],
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        prefix: str = "leadercron:",
        timeout: float = 5.0,
        redlock: bool = False,
        url: str | None = None,
    ) -> None:
        if not hosts:
            raise ConfigError("the redis backend needs at least one host")
        if len(hosts) > 1 and not redlock:
            raise ConfigError("several redis hosts need mode=redlock")
        self.prefix = prefix
        self.timeout = timeout
        self.redlock = redlock
        self.quorum = len(hosts) // 2 + 1
        options: dict[str, Any] = {
            "db": db,
            "username": username,
            "password": password,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # No hidden retries: the elector retries, and a retried script could run twice.
            "retry": Retry(NoBackoff(), 0),
        }
        if tls:
            options.update(
                ssl=True,
                ssl_ca_certs=ca_file,
                ssl_certfile=cert_file,
                ssl_keyfile=key_file,
                ssl_cert_reqs="required",
                ssl_check_hostname=True,
            )
        pattern = _escape_glob(prefix) + "*"
        self._masters = [_Master(_Address(h, p), options) for h, p in hosts]
        for master in self._masters:
            master.listener = _Listener(master, pattern, self._on_message, self._on_lost)
        self._pool = (
            ThreadPoolExecutor(4 * len(hosts), thread_name_prefix="leadercron-redlock")
            if len(hosts) > 1
            else None
        )
        self._lock = threading.Lock()
        self._watches: dict[str, set[_Watch]] = {}
        self._closed = False
        hostlist = ",".join(m.name for m in self._masters)
        self.url = redact_url(url) if url else f"{'rediss' if tls else 'redis'}://{hostlist}"

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        try:
            shown = redact_url(url)
            parts, options = parse_url(url, cls.schemes)
        except ValueError as exc:  # urlsplit: e.g. an unbalanced [ipv6] bracket
            raise ConfigError(f"backend URL is malformed: {exc}") from None

        def bad(message: str) -> ConfigError:
            return ConfigError(f"backend URL {shown!r}: {message}")

        reject_unknown_options(url, options, _OPTIONS)
        userinfo, at, hostlist = parts.netloc.rpartition("@")
        hosts = parse_hosts(url, hostlist, 6379)
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise bad(f"the path names a database number, got {parts.path!r}")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        if "password_file" in options:
            if password is not None:
                raise bad("give the password in the URL or in password_file, not both")
            password = _read_password(options["password_file"], bad)
        if password is None:
            password = os.environ.get(PASSWORD_ENV) or None
        if username and password is None:
            raise bad(f"user {username!r} needs a password (URL, password_file or {PASSWORD_ENV})")
        tls = parts.scheme == "rediss"
        files: dict[str, str | None] = {}
        for name in ("ca_file", "cert_file", "key_file"):
            value = options.get(name)
            if value is not None:
                if not tls:
                    raise bad(f"{name} needs a rediss:// URL")
                if not os.path.isfile(value):
                    raise bad(f"{name}: no such file {value!r}")
            files[name] = value
        if files["key_file"] and not files["cert_file"]:
            raise bad("key_file needs cert_file")
        mode = options.get("mode", "single")
        if mode not in ("single", "redlock"):
            raise bad(f"mode must be single or redlock, got {mode!r}")
        if len(hosts) > 1 and mode != "redlock":
            raise bad("several hosts need mode=redlock")
        timeout = duration_option(url, options, "timeout", "5s")
        return cls(
            hosts,
            db=int(path or 0),
            username=username,
            password=password,
            tls=tls,
            ca_file=files["ca_file"],
            cert_file=files["cert_file"],
            key_file=files["key_file"],
            prefix=options.get("prefix", "leadercron:"),
            timeout=timeout,
            redlock=mode == "redlock",
            url=url,
        )

    def validate_timing(self, *, ttl: float, renew_deadline: float, retry_period: float) -> None:
        if self.redlock and renew_deadline > ttl - drift(ttl):
            raise ConfigError(
                f"redis redlock: renew_deadline must be at most ttl - drift = "
                f"{ttl - drift(ttl):.3f}s for ttl {ttl:g}s (drift = ttl*0.01 + 2ms)"
            )

    # -- plumbing ------------------------------------------------------------------------------

    def _key(self, election: str) -> str:
        return f"{self.prefix}{election}"

    def _on_message(self, channel: str, payload: bytes) -> None:
        with self._lock:
            for watch in self._watches.get(channel, ()):
                watch.offer(payload)

    def _on_lost(self) -> None:
        with self._lock:
            for watches in self._watches.values():
                for watch in watches:
                    watch.event.set()

    def _guard(self, master: _Master, fn: Callable[[_Master], T]) -> T | BackendUnavailable:
        try:
            return fn(master)
        except (BackendUnavailable, redis.RedisError, OSError) as exc:
            return master.translate(exc)

    def _each(
        self, fn: Callable[[_Master], T], masters: Sequence[_Master] | None = None
    ) -> list[T | BackendUnavailable]:
        """Run ``fn`` on every master (in parallel if several); errors come back as values."""
        if self._closed:
            raise BackendUnavailable("redis backend is closed")
        targets = self._masters if masters is None else masters
        if self._pool is None or len(targets) == 1:
            return [self._guard(m, fn) for m in targets]
        try:
            futures = [self._pool.submit(self._guard, m, fn) for m in targets]
            return [future.result() for future in futures]
        except (RuntimeError, CancelledError):  # close() shut the pool down
            raise BackendUnavailable("redis backend is closed") from None

    def _failure(self, results: Sequence[object]) -> BackendUnavailable:
        errors = [r for r in results if isinstance(r, BackendUnavailable)]
        first = next((e for e in errors if isinstance(e, BackendAuthError)), None) or (
            errors[0] if errors else BackendUnavailable("redis: no answer")
        )
        if len(self._masters) == 1:
            return first
        answered = len(results) - len(errors)
        kind = BackendAuthError if isinstance(first, BackendAuthError) else BackendUnavailable
        return kind(
            f"redis redlock: {answered} of {len(results)} masters answered, "
            f"quorum is {self.quorum}: {first}"
        )

    def _still_valid(self, start: float, ttl: float) -> bool:
        """Redlock: the keys set since ``start`` are still live on every master, drift included."""
        if not self.redlock:
            return True
        return ttl - (time.monotonic() - start) - drift(ttl) > 0

    def _delete_value(self, key: str, value: str) -> list[int | BackendUnavailable]:
        channel = f"{key}:released"
        return self._each(lambda m: int(m.release(keys=[key], args=[value, channel])))

    # -- the contract --------------------------------------------------------------------------

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        key = self._key(election)
        value = f"{_VALUE_TAG}:{uuid.uuid4().hex}:{identity}"
        start = time.monotonic()
        results = self._each(
            lambda m: cast(
                "int | None", m.acquire(keys=[key, f"{key}:token"], args=[value, _ms(ttl)])
            )
        )
        won = [(m, r) for m, r in zip(self._masters, results, strict=True) if isinstance(r, int)]
        refused = sum(1 for r in results if r is None)
        failure: BackendUnavailable | None = None
        if len(won) >= self.quorum:
            token = max(int(r) for _, r in won)
            if len(self._masters) > 1:
                raised = self._each(
                    lambda m: int(m.raise_counter(keys=[f"{key}:token"], args=[token])),
                    [m for m, _ in won],
                )
                if sum(1 for r in raised if r == 1) < self.quorum:
                    failure = self._failure(raised)
            if failure is None and self._still_valid(start, ttl):
                return Lease(election, identity, token, ttl, handle=value)
            failure = failure or BackendUnavailable(
                f"redis redlock: acquiring took {time.monotonic() - start:.3f}s, "
                f"longer than the validity of a {ttl:g}s lease"
            )
        if won:  # a partial (or too slow) campaign: give its keys back at once
            self._delete_value(key, value)
        if failure is not None:
            raise failure
        if refused > len(self._masters) - self.quorum:
            return None
        raise self._failure(results)

    def renew(self, lease: Lease) -> Lease | None:
        key = self._key(lease.election)
        value = str(lease.handle)
        start = time.monotonic()
        results = self._each(lambda m: int(m.renew(keys=[key], args=[value, _ms(lease.ttl)])))
        extended = sum(1 for r in results if r == 1)
        refused = sum(1 for r in results if r == 0)
        if extended >= self.quorum:
            if self._still_valid(start, lease.ttl):
                return lease
            raise BackendUnavailable(
                f"redis redlock: renewing took {time.monotonic() - start:.3f}s, "
                f"longer than the validity of a {lease.ttl:g}s lease"
            )
        if refused > len(self._masters) - self.quorum:
            if extended:  # redlock: the term is over, free the masters that still had it
                self._delete_value(key, value)
            return None
        raise self._failure(results)

    def release(self, lease: Lease) -> None:
        results = self._delete_value(self._key(lease.election), str(lease.handle))
        if sum(1 for r in results if isinstance(r, int)) < self.quorum:
            raise self._failure(results)

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        key = self._key(lease.election)
        horizon = int((time.time() - LEDGER_RETENTION) * 1000)
        args: list[str | int] = [str(lease.handle), job_id, fire, horizon]
        results = self._each(lambda m: int(m.claim(keys=[key, f"{key}:ledger"], args=args)))
        if sum(1 for r in results if r == 1) >= self.quorum:
            return True
        if sum(1 for r in results if r == 0) > len(self._masters) - self.quorum:
            return False
        raise self._failure(results)

    def ledger(self, election: str) -> dict[str, int]:
        ledger = f"{self._key(election)}:ledger"
        results = self._each(
            lambda m: cast(
                "list[tuple[bytes, float]]", m.client.zrange(ledger, 0, -1, withscores=True)
            )
        )
        answers = [r for r in results if isinstance(r, list)]
        # A successful claim marked a quorum of masters, so at least ``rank`` of the masters that
        # answered carry it: the rank-th largest mark is the job's mark (the only one on a
        # single master).
        rank = self.quorum - (len(results) - len(answers))
        if rank < 1:
            raise self._failure(results)
        marks: dict[str, list[int]] = {}
        for answer in answers:
            for job, score in answer:
                marks.setdefault(job.decode("utf-8", "replace"), []).append(int(score))
        return {
            job: sorted(found, reverse=True)[rank - 1]
            for job, found in marks.items()
            if len(found) >= rank
        }

    def leader(self, election: str) -> LeaderInfo | None:
        key = self._key(election)
        results = self._each(
            lambda m: cast("list[bytes | None]", m.client.mget(key, f"{key}:token"))
        )
        answers = [r for r in results if isinstance(r, list)]
        counts: dict[bytes, list[int | None]] = {}
        for value, counter in answers:
            if value is not None:
                counts.setdefault(value, []).append(
                    int(counter) if counter is not None and counter.isdigit() else None
                )
        best = max(counts.items(), key=lambda item: len(item[1]), default=None)
        held = len(best[1]) if best else 0
        unknown = len(results) - len(answers)
        if held < self.quorum <= held + unknown or len(answers) < self.quorum:
            raise self._failure(results)
        if best is None or held < self.quorum:
            return None
        text = best[0].decode("utf-8", "replace")
        match = _VALUE.match(text)
        if match is None:
            return LeaderInfo(text, None)  # a foreign holder (redis-py Lock, redsync)
        tokens = [t for t in best[1] if t is not None]
        return LeaderInfo(match.group(1), max(tokens) if tokens else None)

    def wait_for_change(self, election: str, timeout: float) -> None:
        key = self._key(election)
        watch = _Watch(f"{key}:released")
        with self._lock:
            if self._closed:
                return
            self._watches.setdefault(watch.channel, set()).add(watch)
        try:

            def prepare(master: _Master) -> tuple[bytes | None, int]:
                assert master.listener is not None
                master.listener.ensure(self.timeout)  # subscribed before reading the key
                pipe = master.client.pipeline(transaction=False)
                pipe.get(key)
                pipe.pttl(key)
                value, pttl = pipe.execute()
                return value, int(pttl)

            start = time.monotonic()
            try:
                results = self._each(prepare)
            except BackendUnavailable:
                if self._closed:
                    return
                raise
            answers = [r for r in results if isinstance(r, tuple)]
            if len(answers) < self.quorum:
                if self._closed:
                    return
                raise self._failure(results)
            with self._lock:
                watch.arm({value for value, _ in answers if value is not None})
            free = sum(1 for _, pttl in answers if pttl == -2)
            if free >= self.quorum:  # nobody holds a quorum: campaign now
                if self.redlock and free < len(answers):
                    # Another campaign is under way on some masters: a random pause breaks
                    # the symmetry of split votes (as redsync's retry delay does).
                    watch.event.wait(random.uniform(0.0, 0.05))
                return
            expiring = [pttl for _, pttl in answers if pttl >= 0]  # -1: no expiry (foreign)
            if expiring:
                timeout = min(timeout, min(expiring) / 1000 + 0.002)
            watch.event.wait(max(0.0, timeout - (time.monotonic() - start)))
        finally:
            with self._lock:
                self._watches[watch.channel].discard(watch)
                if not self._watches[watch.channel]:
                    del self._watches[watch.channel]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_lost()  # wake every pending wait at once
        threads = [m.listener.close() for m in self._masters if m.listener is not None]
        for thread in threads:
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=1.0)  # each notices the stop flag within _LISTEN_SLICE
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for master in self._masters:
            with contextlib.suppress(redis.RedisError, OSError):
                master.client.close()


def _read_password(path: str, bad: Callable[[str], ConfigError]) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            password = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise bad(f"password_file: cannot read {path!r}: {exc.strerror}") from None
    if not password:
        raise bad(f"password_file {path!r} is empty")
    return password
