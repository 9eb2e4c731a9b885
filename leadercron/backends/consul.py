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
in :attr:`url`. Other ``CONSUL_HTTP_*`` variables, proxy and CA-bundle variables and ``.netrc``
are ignored: the URL says everything.

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
``claim`` / ``ledger``
    One transaction per claim (``check-session`` on the election's key, then ``cas`` on the job's
    ledger key); the ledger lives under ``PREFIX/N.leadercron-ledger/``, beside the election's
    folder ``PREFIX/N/`` that ``consul lock`` owns. See :class:`ConsulBackend`.
``set_alarm``
    While this instance leads, a blocking query on the election's key raises the alarm as soon
    as the key's ``Session`` is no longer the term's (session expired, destroyed, node check
    failed, key deleted) or the query fails.

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
from urllib.parse import quote, unquote

import consul
import requests
from consul.exceptions import ACLDisabled, ACLPermissionDenied, ConsulException, NotFound

from leadercron.backends.base import (
    LEDGER_RETENTION,
    Backend,
    LeaderInfo,
    Lease,
    Notifier,
    duration_option,
    parse_url,
    redact_url,
    reject_unknown_options,
)
from leadercron.durations import format_duration
from leadercron.errors import BackendAuthError, BackendError, BackendUnavailable, ConfigError

#: ``Flags`` of a lock key, as ``consul lock`` (Go ``api.LockFlagValue``) writes and checks them.
LOCK_FLAGS = 0x2DDCCBC058A50C18

#: Appended to ``PREFIX/N`` to name the folder of election ``N``'s claim ledger.
LEDGER_SUFFIX = ".leadercron-ledger"

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
_CLAIM_ATTEMPTS = 16  # compare-and-set rounds before a claim gives up (BackendUnavailable)
_COMPACT_EVERY = 3600.0  # seconds between two compactions of an election's ledger, per instance
_COMPACT_BATCH = 32  # stale entries deleted by one claim (Consul allows 64 operations per txn)
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


@dataclass
class _Guard:
    """The alarm's blocking query on the key of a term this instance holds."""

    key: str
    session: str
    index: int
    stopped: bool = False


class ConsulBackend(Backend):
    """Elections on Consul sessions and KV locks. See the module docstring.

    Fenced claims (:meth:`claim`, :meth:`ledger`):

    Ledger layout
        Job ``J`` of election ``N`` has one key, ``PREFIX/N.leadercron-ledger/<J>``, whose value
        is its mark in decimal ASCII (ms since the epoch), e.g. ``1718000000000``. ``<J>`` is the
        job id percent-encoded into one segment (``/`` becomes ``%2F``, a leading ``.`` becomes
        ``%2E``; letters, digits and ``-_.~`` stay), so :meth:`ledger` lists the folder and
        decodes the ids back. The folder sits *beside* ``PREFIX/N/``, not in it: ``consul lock
        PREFIX/N`` owns ``PREFIX/N/.lock`` (and deletes it on exit; in semaphore mode it keeps
        contender keys ``PREFIX/N/<session>`` and lists the whole folder), and people clear a
        stuck lock with ``consul kv delete -recurse PREFIX/N/``. Neither sees or touches the
        ledger; a ledger key never ends in ``/.lock``. (So an election named
        ``N.leadercron-ledger`` would share its folder with the ledger of ``N``: don't.)
    Atomic step
        One ``PUT /v1/txn`` with ``check-session`` on ``PREFIX/N/.lock`` and the lease's
        session — a session holds one term only, so that is "the very same term" — and ``cas``
        on the job's key with the ``ModifyIndex`` read just before (``Index`` 0, i.e. only if
        the key does not exist, for a first claim). Consul applies all of it or nothing. The
        mark is read first (one ``GET``): a fire not above it returns ``False`` at once. A
        refused transaction names the operations that failed: the session check means the term
        is over (``False``); only the ``cas`` means another claim moved the mark in between,
        so the claim reads again and retries while ``fire`` is still above the mark (at most
        16 rounds, then ``BackendUnavailable``). A ``Permission denied`` on any operation
        raises ``BackendAuthError``, never ``False``.
    Retention
        Consul KV keys have no TTL (a session's ``delete`` behavior ties a key to a session,
        not to its age), so claims compact: the first claim for an election on this instance,
        then one per hour, reads the whole ledger folder and adds to its transaction a
        ``delete-cas`` for every entry whose mark is older than :data:`LEDGER_RETENTION` before
        ``min(now, fire)`` (at most 32 per transaction; the next claim goes on while more
        remain). The deletes are fenced with the claim: a deposed term deletes nothing, and an
        entry claimed again in between is not deleted (its ``ModifyIndex`` moved; the claim
        reads again). Values that are not a mark are left alone. The ledger keeps one key per
        job, and jobs that stopped firing vanish a week later.
    """

    schemes = ("consul", "consuls")
    supports_claims = True

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
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host  # IPv6
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
        # No proxies, CA bundles or .netrc from the environment: the URL says everything.
        self._client.http.session.trust_env = False
        self._dc_params = [("dc", dc)] if dc else []
        self._notifier = Notifier()
        self._mutex = threading.Lock()
        self._spare: _Spare | None = None
        self._delayed: set[str] = set()  # elections whose last acquire met a lock-delay
        self._compacted: dict[str, float] = {}  # election -> monotonic time of its last compaction
        self._guards: dict[str, _Guard] = {}  # session -> alarm query on the key it holds
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

        durations = {
            "timeout": duration_option(url, options, "timeout", "5s"),
            "lock_delay": duration_option(url, options, "lock_delay", "15s", positive=False),
            "session_ttl_min": duration_option(url, options, "session_ttl_min", "10s"),
        }
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

    def _ledger_folder(self, election: str) -> str:
        """``PREFIX/N.leadercron-ledger/``: next to the election's folder ``PREFIX/N/``."""
        parts = [part for part in f"{self.prefix}/{election}".split("/") if part]
        return "/".join(parts) + LEDGER_SUFFIX + "/"

    @staticmethod
    def _job_segment(job_id: str) -> str:
        """The last segment of a job's ledger key: the job id percent-encoded, ``/`` included,
        and a leading ``.`` too, so that no ledger key is ever ``.../.lock``, ``.`` or ``..``."""
        segment = quote(job_id, safe="")
        return "%2E" + segment[1:] if segment.startswith(".") else segment

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

    def _txn(self, operations: list[dict[str, Any]], what: str) -> tuple[int, Any]:
        """``PUT /v1/txn`` with KV ``operations``: (200 or 409, decoded answer)."""
        try:
            code, answer = self._client.http.put(
                _txn_answer,
                "/v1/txn",
                params=self._dc_params,
                data=json.dumps([{"KV": operation} for operation in operations]),
                headers=self._client.prepare_headers(),
            )
        except _CLIENT_ERRORS as exc:
            raise self._error(what, exc) from exc
        return int(code), answer

    def _lock(self, key: str, session: str, identity: str) -> tuple[int | None, str]:
        """Lock ``key`` for ``session`` in a transaction: (ModifyIndex or None, refusal reason)."""
        operation = {
            "Verb": "lock",
            "Key": key,
            "Value": _b64(identity),
            "Flags": LOCK_FLAGS,
            "Session": session,
        }
        code, answer = self._txn([operation], f"lock {key}")
        try:
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
                lease = Lease(election, identity, token, ttl, handle=session)
                self._guard(lease)
                return lease
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
            self._unguard(session)
            return None
        _, entry = self._get(self._key(lease.election))
        if entry is None or entry.get("Session") != session:
            self._unguard(session)
            self._destroy_quietly(session)
            return None
        self._guard(lease)  # again, if an outage ended the previous one
        return lease

    def release(self, lease: Lease) -> None:
        session: str = lease.handle
        key = self._key(lease.election)
        self._unguard(session)  # an orderly end raises no alarm
        try:
            # Flags must be repeated: a release writes them, and consul lock checks them.
            self._client.kv.put(key, "", release=session, flags=LOCK_FLAGS)
            self._client.session.destroy(session)
        except _CLIENT_ERRORS as exc:
            raise self._error(f"release {key}", exc) from exc
        finally:
            self._notifier.bump()

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        election = lease.election
        folder = self._ledger_folder(election)
        key = folder + self._job_segment(job_id)
        check_term = {"Verb": "check-session", "Key": self._key(election), "Session": lease.handle}
        for _attempt in range(_CLAIM_ATTEMPTS):
            compact = self._compaction_due(election)
            if compact:
                entries = self._ledger_entries(folder)
                entry = entries.get(key)
            else:
                _, entry = self._get(key)
            mark = None if entry is None else _mark(entry)
            if mark is not None and fire <= mark:
                return False
            if entry is not None and mark is None:
                raise BackendUnavailable(
                    f"consul at {self._where}: ledger entry {key} holds "
                    f"{entry.get('Value')!r}, not a fire time in ms"
                )
            index = 0 if entry is None else int(entry["ModifyIndex"])  # 0: only if absent
            operations = [
                check_term,
                {"Verb": "cas", "Key": key, "Value": _b64(str(fire)), "Index": index},
            ]
            stale: list[dict[str, Any]] = []
            if compact:
                horizon = min(time.time() * 1000, fire) - LEDGER_RETENTION * 1000
                stale = [
                    other
                    for other_key, other in entries.items()
                    if other_key != key and (old := _mark(other)) is not None and old < horizon
                ]
                operations += [
                    {"Verb": "delete-cas", "Key": other["Key"], "Index": other["ModifyIndex"]}
                    for other in stale[:_COMPACT_BATCH]
                ]
            code, answer = self._txn(operations, f"claim {key}")
            if code == 200:
                if compact and len(stale) <= _COMPACT_BATCH:
                    with self._mutex:
                        self._compacted[election] = time.monotonic()
                return True
            try:
                errors = answer["Errors"] or []
                failed = {int(error["OpIndex"]) for error in errors}
                reasons = "; ".join(str(error.get("What", "")) for error in errors)
            except _CLIENT_ERRORS as exc:
                raise self._error(f"claim {key}", exc) from exc
            # Only the start of a message: the others quote key names, which may say anything.
            if any(str(e.get("What", "")).startswith(("Permission denied", "ACL")) for e in errors):
                raise BackendAuthError(f"consul at {self._where} refused the ACL token: {reasons}")
            if not failed:
                raise BackendUnavailable(f"consul at {self._where}: claim {key} failed: {reasons}")
            if 0 in failed:
                return False  # the lock key is no longer held by this term's session
            # The mark (or a stale entry) changed since we read it: read again.
        raise BackendUnavailable(
            f"consul at {self._where}: claim {key} lost {_CLAIM_ATTEMPTS} compare-and-set races"
        )

    def ledger(self, election: str) -> dict[str, int]:
        folder = self._ledger_folder(election)
        marks: dict[str, int] = {}
        for key, entry in self._ledger_entries(folder).items():
            segment = key[len(folder) :]
            mark = _mark(entry)
            if "/" not in segment and mark is not None:
                marks[unquote(segment)] = mark
        return marks

    def _ledger_entries(self, folder: str) -> dict[str, dict[str, Any]]:
        """Every key under ``folder`` (a recursive read): key -> entry."""
        try:
            _, entries = self._client.kv.get(folder, recurse=True)
            return {str(entry["Key"]): entry for entry in entries or []}
        except _CLIENT_ERRORS as exc:
            raise self._error(f"read {folder}", exc) from exc

    def _compaction_due(self, election: str) -> bool:
        with self._mutex:
            last = self._compacted.get(election)
        return last is None or time.monotonic() - last >= _COMPACT_EVERY

    # -- the alarm: a blocking query on the key of the term we hold -----------------------------

    def _guard(self, lease: Lease) -> None:
        """Watch the key of ``lease`` until it leaves our session (then alarm) or we stop."""
        if getattr(self, "_alarm_callback", None) is None or self._closed:
            return
        session: str = lease.handle
        with self._mutex:
            if session in self._guards:
                return
            guard = self._guards[session] = _Guard(self._key(lease.election), session, lease.token)
        threading.Thread(
            target=self._run_guard, args=(guard,), name="leadercron-consul-alarm", daemon=True
        ).start()

    def _unguard(self, session: str) -> None:
        with self._mutex:
            guard = self._guards.pop(session, None)
        if guard is not None:
            guard.stopped = True

    def _run_guard(self, guard: _Guard) -> None:
        reason = ""
        while not guard.stopped and not self._closed:
            try:
                index, entry = self._get(guard.key, guard.index, _WAIT_STEP)
            except BackendError as exc:
                reason = f"the blocking query on it failed: {exc}"
                break
            # Consul's rule for blocking queries: start over if the index goes backwards.
            guard.index = index if index >= guard.index else 0
            holder = (entry.get("Session") or None) if entry else None
            if holder != guard.session:
                reason = "another session holds it" if holder else "our session no longer holds it"
                break
        with self._mutex:
            if self._guards.get(guard.session) is guard:
                del self._guards[guard.session]
        if reason and not guard.stopped and not self._closed:
            self._alarm(f"consul: the term on {guard.key} is in doubt: {reason}")

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
        with self._mutex:
            guards, self._guards = list(self._guards.values()), {}
        for guard in guards:
            guard.stopped = True
        self._notifier.bump()
        self._client.http.session.close()  # idle connections; a watcher's query ends by itself


def _b64(text: str) -> str:
    """A KV value as ``/v1/txn`` wants it."""
    return base64.b64encode(text.encode()).decode()


def _mark(entry: dict[str, Any]) -> int | None:
    """The fire time a ledger entry holds (its value, decimal ms), or ``None`` if it holds none."""
    value = entry.get("Value")  # py-consul decodes the base64 of a read
    if not isinstance(value, bytes) or not value.isdigit():
        return None
    return int(value)


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
