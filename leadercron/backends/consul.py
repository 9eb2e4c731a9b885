"""Elections in Consul's KV store, on sessions, compatible with ``consul lock``.

URL: ``consul://HOST[:PORT][/PREFIX][?option=value&...]`` (HTTP, port 8500 by default) or
``consuls://HOST[:PORT][/PREFIX][?...]`` (HTTPS, port 8501 by default). The leader key of election
``N`` is ``PREFIX/N/.lock`` (``N/.lock`` without a prefix): the key ``consul lock PREFIX/N CMD``
uses, so both exclude each other and hand over to each other.

===============  ==========  =======================================================================
option           default     meaning
===============  ==========  =======================================================================
timeout          ``5s``      limit for every HTTP request (a blocking query gets its wait on top)
lock_delay       ``15s``     the sessions' lock-delay (Consul's default; at most ``60s``): after a
                             session is *invalidated* (expired, destroyed) while holding the key,
                             nobody can take the key for this long. ``0s`` turns it off
session_ttl_min  ``10s``     the servers' ``session_ttl_min``; ``validate_timing`` rejects a ``ttl``
                             below twice this (see below)
token_file       none        file holding the ACL token (read once, when the URL is parsed)
token            none        the ACL token itself (discouraged: URLs end up in logs and ``ps``)
dc               none        datacenter to use instead of the agent's own
ca_file          none        ``consuls://`` only: CA bundle that signed the server's certificate
cert_file        none        ``consuls://`` only: client certificate (PEM), for ``verify_incoming``
key_file         none        ``consuls://`` only: its private key, when not in ``cert_file``
verify           ``true``    ``consuls://`` only: ``false`` skips server certificate verification
===============  ==========  =======================================================================

Without ``token_file``/``token``, the ACL token comes from ``LEADERCRON_CONSUL_TOKEN``, else from
``CONSUL_HTTP_TOKEN``. It is sent in the ``X-Consul-Token`` header only, never logged, and masked
in :attr:`url`. Other ``CONSUL_HTTP_*`` variables are ignored: the URL says everything.

Mapping of the contract:

``acquire``
    Renews (or creates) a spare session of this candidate — ``TTL`` = ``ttl/2``, behavior
    ``release``, ``LockDelay`` = ``lock_delay``, name ``leadercron <identity>`` — then locks the
    key with it in a one-operation transaction (``PUT /v1/txn``, verb ``lock``; value = identity,
    flags ``0x2ddccbc058a50c18`` like ``consul lock``). A session holds at most one term: it is
    used up by a successful acquire and kept for the next try otherwise. A refusal because of
    lock-delay (the key is free but a session holding it was invalidated less than its lock-delay
    ago) is a lost race too: ``None``.
``renew``
    ``PUT /v1/session/renew/<session>``, then reads the key: the term lives if the session does
    and still holds the key; otherwise the session is destroyed and ``None`` returned.
``release``
    ``PUT /v1/kv/KEY?release=<session>`` first (a voluntary release sets no lock-delay, so a
    waiter takes over at once), then ``PUT /v1/session/destroy/<session>``.
``leader``
    Reads the key: no ``Session`` means nobody leads. The identity is the value, or — for a holder
    that wrote none, like ``consul lock`` — its session's name, with no token.
``wait_for_change``
    Blocking queries (``GET /v1/kv/KEY?index=N&wait=…``) in a helper thread until the key's
    ``Session`` changes, which includes the holder's session expiring. The caller waits on a
    condition that :meth:`close` also signals, so it returns at once on close; the helper thread
    ends with its current query (at most 5 s later). If the key is free but the last acquire met
    a lock-delay, Consul announces nothing when the delay ends, so the wait lasts at most 1 s.

Fencing token: the key's ``ModifyIndex`` written by the lock operation, i.e. the Raft index of
the acquisition. It strictly increases across every term of every election of the cluster, also
when the key is deleted in between (``consul lock`` deletes it when its command exits; that resets
the key's ``LockIndex`` to 1, which is why ``LockIndex`` is not the token). A foreign plain
``PUT`` to a held key would change the ``ModifyIndex`` that :meth:`leader` reports.

Timing: Consul documents a session TTL as a lower bound and may keep a session up to twice its
TTL after the last renew (its servers arm the timer at 2 x TTL). A session TTL of ``ttl/2``
therefore ends a silent term ``ttl`` after the last renew the server received, as the contract
wants; a server that invalidates as early as the documented bound (``ttl/2``) is still covered by
``lock_delay`` when ``ttl/2 + lock_delay >= ttl``. Consul rejects session TTLs below the servers'
``session_ttl_min`` (default ``10s``), hence ``ttl >= 2 x session_ttl_min``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import consul
import requests
from consul.exceptions import ACLDisabled, ACLPermissionDenied, ConsulException, NotFound

from leadercron.backends.base import (
    Backend,
    LeaderInfo,
    Lease,
    Notifier,
    parse_url,
    redact_url,
    reject_unknown_options,
)
from leadercron.durations import format_duration, parse_duration
from leadercron.errors import BackendAuthError, BackendError, BackendUnavailable, ConfigError

#: ``Flags`` of a lock key, as ``consul lock`` (Go ``api.LockFlagValue``) writes and checks them.
LOCK_FLAGS = 0x2DDCCBC058A50C18

_OPTIONS = {
    "timeout",
    "lock_delay",
    "session_ttl_min",
    "token_file",
    "token",
    "dc",
    "ca_file",
    "cert_file",
    "key_file",
    "verify",
}
_TLS_OPTIONS = ("ca_file", "cert_file", "key_file", "verify")
# What py-consul, requests and the decoding of an answer may raise.
_CLIENT_ERRORS = (
    ConsulException,
    requests.RequestException,
    ValueError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
)
_WAIT_STEP = 5.0  # longest single blocking query of a watcher thread
_LOCK_DELAY_RETRY = 1.0  # how long a wait lasts while a lock-delay keeps a free key locked
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _go_duration(seconds: float) -> str:
    """A Go duration, rounded up to whole milliseconds: ``10s``, ``1500ms``."""
    millis = math.ceil(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass
class _Spare:
    """A session made for ``identity`` and ``ttl`` that holds no term yet."""

    session: str
    identity: str
    ttl: float


@dataclass
class _Watch:
    """One :meth:`ConsulBackend.wait_for_change` call, shared with its helper thread."""

    key: str
    index: int
    holder: str | None
    deadline: float
    cancelled: bool = False
    error: BackendError | None = None


class ConsulBackend(Backend):
    """Elections on Consul sessions and KV locks. See the module docstring."""

    schemes = ("consul", "consuls")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8500,
        *,
        https: bool = False,
        prefix: str = "",
        token: str | None = None,
        dc: str | None = None,
        timeout: float = 5.0,
        lock_delay: float = 15.0,
        session_ttl_min: float = 10.0,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        url: str | None = None,
    ) -> None:
        self.prefix = prefix.strip("/")
        self.timeout = timeout
        self.lock_delay = lock_delay
        self.session_ttl_min = session_ttl_min
        scheme = "https" if https else "http"
        self.url = redact_url(url or f"consul{'s' if https else ''}://{host}:{port}/{self.prefix}")
        self._where = f"{scheme}://{host}:{port}"
        self._client = consul.Consul(
            host=host,
            port=port,
            scheme=scheme,
            dc=dc,
            verify=verify,
            cert=cert,
            connections_timeout=timeout,
        )
        self._client.token = token  # py-consul would prefer CONSUL_HTTP_TOKEN over an argument
        self._dc_params = [("dc", dc)] if dc else []
        self._notifier = Notifier()
        self._mutex = threading.Lock()
        self._spare: _Spare | None = None
        self._delayed: set[str] = set()  # elections whose last acquire met a lock-delay
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> ConsulBackend:
        parts, options = parse_url(url, cls.schemes)
        reject_unknown_options(url, options, _OPTIONS)
        shown = redact_url(url)

        def bad(message: str) -> ConfigError:
            return ConfigError(f"backend URL {shown!r}: {message}")

        if "@" in parts.netloc:
            raise bad("no user info in a consul URL; give the ACL token with token_file=")
        if not parts.hostname:
            raise bad("expected consul://host[:port][/prefix]")
        try:
            port = parts.port
        except ValueError:
            raise bad("invalid port") from None
        https = parts.scheme == "consuls"
        if not https:
            for option in _TLS_OPTIONS:
                if option in options:
                    raise bad(f"option {option!r} needs the consuls:// scheme")

        durations: dict[str, float] = {}
        for option, default in (
            ("timeout", "5s"),
            ("lock_delay", "15s"),
            ("session_ttl_min", "10s"),
        ):
            try:
                durations[option] = parse_duration(options.get(option, default))
            except ValueError as exc:
                raise bad(f"{option}: {exc}") from None
        if durations["timeout"] <= 0 or durations["session_ttl_min"] <= 0:
            raise bad("timeout and session_ttl_min must be more than 0s")
        if durations["lock_delay"] > 60:
            raise bad("lock_delay: Consul allows at most 60s")

        verify: bool | str = _BOOLEANS.get(options.get("verify", "true").lower(), "bad")
        if verify == "bad":
            raise bad(f"verify: expected true or false, got {options['verify']!r}")
        for option in ("ca_file", "cert_file", "key_file"):
            if option in options and not os.path.isfile(options[option]):
                raise bad(f"{option}: no such file {options[option]!r}")
        if verify and "ca_file" in options:
            verify = options["ca_file"]
        cert: str | tuple[str, str] | None = options.get("cert_file")
        if "key_file" in options:
            if "cert_file" not in options:
                raise bad("key_file needs cert_file")
            cert = (options["cert_file"], options["key_file"])

        if "token" in options and "token_file" in options:
            raise bad("give token_file or token, not both")
        token = options.get("token")
        if "token_file" in options:
            try:
                with open(options["token_file"], encoding="utf-8") as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise bad(f"token_file: cannot read it: {exc.strerror}") from None
            if not token:
                raise bad("token_file: the file is empty")
        if token is None:
            token = os.environ.get("LEADERCRON_CONSUL_TOKEN") or os.environ.get("CONSUL_HTTP_TOKEN")

        return cls(
            parts.hostname,
            port or (8501 if https else 8500),
            https=https,
            prefix=parts.path,
            token=token or None,
            dc=options.get("dc") or None,
            verify=verify,
            cert=cert,
            url=url,
            **durations,
        )

    # -- helpers -------------------------------------------------------------------------------

    def _key(self, election: str) -> str:
        parts = [part for part in f"{self.prefix}/{election}".split("/") if part]
        return "/".join([*parts, ".lock"])

    def _error(self, what: str, exc: Exception) -> BackendError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ACLPermissionDenied | ACLDisabled):
            return BackendAuthError(
                f"consul at {self._where} refused the ACL token ({what}): {detail}"
            )
        return BackendUnavailable(f"consul at {self._where}: {what} failed: {detail}")

    def _get(
        self, key: str, index: int = 0, wait: float = 0.0
    ) -> tuple[int, dict[str, Any] | None]:
        """Read ``key``: a blocking query when ``index`` is given. Returns (index, entry)."""
        try:
            if index:
                raw_index, entry = self._client.kv.get(key, index=index, wait=_go_duration(wait))
            else:
                raw_index, entry = self._client.kv.get(key)
            return int(raw_index), entry
        except _CLIENT_ERRORS as exc:
            raise self._error(f"read {key}", exc) from exc

    def _session_alive(self, session: str) -> bool:
        """Renew ``session``; ``False`` if Consul no longer knows it."""
        try:
            self._client.session.renew(session)
        except NotFound:
            return False
        except _CLIENT_ERRORS as exc:
            raise self._error("renew session", exc) from exc
        return True

    def _create_session(self, identity: str, ttl: float) -> str:
        body = {
            "Name": f"leadercron {identity}",
            "TTL": _go_duration(ttl / 2),
            "LockDelay": _go_duration(self.lock_delay),
            "Behavior": "release",
        }
        try:
            session: str = self._client.http.put(
                _session_id,
                "/v1/session/create",
                params=self._dc_params,
                data=json.dumps(body),
                headers=self._client.prepare_headers(),
            )
        except _CLIENT_ERRORS as exc:
            raise self._error(f"create session with TTL {format_duration(ttl / 2)}", exc) from exc
        return session

    def _destroy_quietly(self, session: str) -> None:
        with contextlib.suppress(*_CLIENT_ERRORS):  # else it expires within its ttl
            self._client.session.destroy(session)

    def _take_session(self, identity: str, ttl: float) -> str:
        """A live session for ``identity`` and ``ttl`` holding no term, renewed just now."""
        with self._mutex:
            spare, self._spare = self._spare, None
        if (
            spare is not None
            and (spare.identity, spare.ttl) == (identity, ttl)
            and self._session_alive(spare.session)
        ):
            return spare.session
        return self._create_session(identity, ttl)

    def _lock(self, key: str, session: str, identity: str) -> tuple[int | None, str]:
        """Lock ``key`` for ``session`` in a transaction: (ModifyIndex or None, refusal reason)."""
        operation = {
            "Verb": "lock",
            "Key": key,
            "Value": base64.b64encode(identity.encode()).decode(),
            "Flags": LOCK_FLAGS,
            "Session": session,
        }
        try:
            code, answer = self._client.http.put(
                _txn_answer,
                "/v1/txn",
                params=self._dc_params,
                data=json.dumps([{"KV": operation}]),
                headers=self._client.prepare_headers(),
            )
            if code == 200:
                return int(answer["Results"][0]["KV"]["ModifyIndex"]), ""
            return None, "; ".join(str(error.get("What", "")) for error in answer["Errors"] or [])
        except _CLIENT_ERRORS as exc:
            raise self._error(f"lock {key}", exc) from exc

    # -- the contract --------------------------------------------------------------------------

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        key = self._key(election)
        for _attempt in range(2):
            session = self._take_session(identity, ttl)
            token, reason = self._lock(key, session, identity)
            if token is not None:
                self._delayed.discard(election)
                return Lease(election, identity, token, ttl, handle=session)
            if "invalid session" in reason:
                continue  # destroyed behind our back since the renew: make another one
            with self._mutex:
                self._spare = _Spare(session, identity, ttl)
            if "lock delay" in reason:
                self._delayed.add(election)
                return None
            if "already held" in reason:
                self._delayed.discard(election)
                return None
            if "Permission denied" in reason or "ACL" in reason:
                raise BackendAuthError(f"consul at {self._where} refused the ACL token: {reason}")
            raise BackendUnavailable(f"consul at {self._where}: lock {key} failed: {reason}")
        raise BackendUnavailable(f"consul at {self._where}: our new session vanished at once")

    def renew(self, lease: Lease) -> Lease | None:
        session: str = lease.handle
        if not self._session_alive(session):
            return None
        _, entry = self._get(self._key(lease.election))
        if entry is None or entry.get("Session") != session:
            self._destroy_quietly(session)
            return None
        return lease

    def release(self, lease: Lease) -> None:
        session: str = lease.handle
        key = self._key(lease.election)
        try:
            # Flags must be repeated: a release writes them, and consul lock checks them.
            self._client.kv.put(key, "", release=session, flags=LOCK_FLAGS)
            self._client.session.destroy(session)
        except _CLIENT_ERRORS as exc:
            raise self._error(f"release {key}", exc) from exc
        finally:
            self._notifier.bump()

    def leader(self, election: str) -> LeaderInfo | None:
        _, entry = self._get(self._key(election))
        session = entry.get("Session") if entry else None
        if entry is None or not session:
            return None
        value = entry.get("Value")
        if value:
            return LeaderInfo(value.decode("utf-8", "replace"), int(entry["ModifyIndex"]))
        try:
            _, info = self._client.session.info(session)
        except _CLIENT_ERRORS as exc:
            raise self._error("read session", exc) from exc
        name = info.get("Name") if info else None
        return LeaderInfo(str(name or session), None)

    def wait_for_change(self, election: str, timeout: float) -> None:
        seen = self._notifier.generation
        deadline = time.monotonic() + timeout
        key = self._key(election)
        index, entry = self._get(key)
        holder = (entry.get("Session") or None) if entry else None
        if self._closed:
            return
        if holder is None:
            if election not in self._delayed:
                return  # free: the caller campaigns again
            deadline = min(deadline, time.monotonic() + _LOCK_DELAY_RETRY)
        watch = _Watch(key, index, holder, deadline)
        threading.Thread(
            target=self._watch,
            args=(watch,),
            name=f"leadercron-consul-watch-{election}",
            daemon=True,
        ).start()
        try:
            self._notifier.wait(seen, deadline - time.monotonic())
        finally:
            watch.cancelled = True
        if watch.error is not None:
            raise watch.error

    def _watch(self, watch: _Watch) -> None:
        """Run blocking queries until the key's holder changes, then wake the waiter."""
        while not watch.cancelled and not self._closed:
            remaining = watch.deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                index, entry = self._get(watch.key, watch.index, min(remaining, _WAIT_STEP))
            except BackendError as exc:
                watch.error = exc
                break
            # Consul's rule for blocking queries: start over if the index goes backwards.
            watch.index = index if index >= watch.index else 0
            holder = (entry.get("Session") or None) if entry else None
            if holder != watch.holder:
                break
        if not watch.cancelled:
            self._notifier.bump()

    def validate_timing(self, *, ttl: float, renew_deadline: float, retry_period: float) -> None:
        if ttl / 2 < self.session_ttl_min:
            raise ConfigError(
                f"consul: ttl {format_duration(ttl)} needs a session TTL of ttl/2 = "
                f"{format_duration(ttl / 2)}, below the servers' session_ttl_min "
                f"{format_duration(self.session_ttl_min)}: set ttl to at least "
                f"{format_duration(2 * self.session_ttl_min)} (or lower session_ttl_min on the "
                f"Consul servers and pass ?session_ttl_min= in the URL)"
            )
        if ttl / 2 > 86400:
            raise ConfigError(f"consul: ttl {format_duration(ttl)} is above Consul's limit of 48h")

    def close(self) -> None:
        self._closed = True
        self._notifier.bump()
        self._client.http.session.close()  # idle connections; a watcher's query ends by itself


def _session_id(response: Any) -> str:
    """Callback for ``PUT /v1/session/create``: the new session's ID."""
    if response.code in (401, 403):
        raise ACLPermissionDenied(response.body)
    if response.code != 200:
        raise ConsulException(f"{response.code} {response.body}")
    return str(json.loads(response.body)["ID"])


def _txn_answer(response: Any) -> tuple[int, Any]:
    """Callback for ``PUT /v1/txn``: (status, decoded body); 409 is a refused transaction."""
    if response.code in (401, 403):
        raise ACLPermissionDenied(response.body)
    if response.code not in (200, 409):
        raise ConsulException(f"{response.code} {response.body}")
    return response.code, json.loads(response.body)
