"""etcd v3 backend, interoperable with ``etcdctl elect`` and Go's ``concurrency.Election``.

URL: ``etcd://[user[:password]@]host[:port][,host[:port]...][/path][?option=value&...]``, or
``etcds://`` for TLS. The port defaults to 2379; IPv6 hosts go in brackets. Several endpoints of
one cluster are tried in turn. It speaks etcd's JSON gateway (``/v3/...``, etcd 3.4 or newer)
through ``etcd3gw``'s HTTP session.

=============  =======  ========================================================================
option         default  meaning
=============  =======  ========================================================================
timeout        ``5s``   timeout of each request (to connect, and to wait for the answer)
user           none     user name for etcd's auth, instead of the URL's ``user@``
password_file  none     file whose content (stripped) is the user's password, read at each
                        authentication; else the URL's password; else ``$LEADERCRON_ETCD_PASSWORD``
ca_file        system   ``etcds://`` only: PEM bundle of the CAs that sign the server certificate
cert_file      none     ``etcds://`` only: PEM client certificate (with ``key_file``)
key_file       none     ``etcds://`` only: PEM private key of ``cert_file``
=============  =======  ========================================================================

Keys (exactly those of ``etcdctl elect NAME``): with election ``N`` and URL path ``/P`` the
candidates' keys are ``P/N/<lease id in lowercase hex>`` (without a path: ``N/<lease id>``), each
attached to that candidate's lease, its value the candidate's identity. The key with the lowest
create revision under the prefix leads; its create revision is the fencing token (etcd's revision
counter, so every new term has a greater one). A path given as ``//P`` keeps a leading ``/``.

The contract on etcd:

``acquire``
    The first call grants a lease of ``ceil(ttl)`` seconds and runs the campaign transaction
    ``if create_revision(key) == 0 then put(key, identity, lease) else get(key)``; the key keeps
    the candidate's place in line. Every call keeps the lease alive (a dead lease is re-granted
    and re-queued: no phantom leadership after a long wait, etcd issue 11456) and then, in one
    transaction, checks that the key still exists and reads the lowest key: the candidate leads
    when that is its own key.
``renew``
    Keeps the lease alive, then a transaction compares the key's create revision with the term's.
    A lease etcd has expired cannot be kept alive, so an expired term is never resurrected.
``release``
    ``if create_revision(key) == token then delete(key)``, then revokes the lease.
``wait_for_change``
    Watches (for deletions) the predecessor in line, i.e. the key with the highest create
    revision below the candidate's own, and the candidate's own key; a non-candidate watches the
    leading key. It also returns after half the candidate's lease so that ``acquire`` keeps the
    lease, and so the place in line, alive.
``leader`` / ``candidates``
    The values under the prefix in create-revision order.
``set_alarm``
    While leading, a watch on the candidate's own key raises the alarm when the key is deleted or
    the watch breaks.
``close``
    Cuts the watches and revokes this instance's leases, as Go's ``Session.Close`` does.
``claim`` / ``ledger``
    One transaction per claim; the ledger lives under ``P/N.leadercron-ledger/``, outside the
    election's prefix. See :class:`EtcdBackend`.

Leases are whole seconds: a term lasts from ``ttl`` up to ``ceil(ttl)`` plus etcd's expiry scan
(0.5 s) after etcd received the request. etcd raises every lease to its minimum TTL
(``ceil(1.5 x election timeout)``, 2 s with the default election timeout of 1 s), so
:meth:`EtcdBackend.validate_timing` asks for ``ttl >= 2s``; a server with a longer election
timeout grants more, which the :class:`Lease` reports in its ``ttl``.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import requests
from etcd3gw import exceptions as etcd_errors
from etcd3gw.client import Etcd3Client

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
from leadercron.durations import format_duration
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError

PASSWORD_ENV = "LEADERCRON_ETCD_PASSWORD"
MIN_TTL = 2.0
_OPTIONS = {"timeout", "user", "password_file", "ca_file", "cert_file", "key_file"}
_TOKEN_REJECTED = ("invalid auth token", "user name is empty", "auth store is old")
_AUTH_REFUSED = ("authentication failed", "permission denied")
#: Appended to ``P/N`` to name the election's ledger prefix ``P/N.leadercron-ledger/``.
LEDGER_SUFFIX = ".leadercron-ledger/"
#: Marks are stored as zero-padded decimals of this width, so etcd's byte-wise ``VALUE LESS``
#: compare orders them as numbers.
_MARK_DIGITS = 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


class _EtcdError(BackendUnavailable):
    """etcd answered with an error; ``code`` is its gRPC status code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _TokenRejected(BackendAuthError):
    """The auth token expired or is missing: authenticate again."""


@dataclass(eq=False)
class _Campaign:
    """This candidate's place in line: its lease and its key (``revision`` 0 until created)."""

    election: str
    identity: str
    key: bytes
    lease_id: int
    ttl: int
    refreshed: float  # time.monotonic() when the lease was last granted or kept alive
    revision: int = 0
    alarm_watch: _Watch | None = field(default=None, repr=False)


class _Watch:
    """A watch stream that another thread can cut (close(), release, a term's end)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.stopped = False

    def attach(self, response: Any) -> socket.socket | None:
        """Remember the stream's socket and return it; ``None`` if the watch was stopped."""
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if not isinstance(sock, socket.socket):
            raise BackendUnavailable("cannot reach the socket of the etcd watch stream")
        with self._lock:
            if self.stopped:
                return None
            self._sock = sock
            return sock

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            sock, self._sock = self._sock, None
        if sock is not None:
            with suppress(OSError):  # the base class's shutdown also works under TLS
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class EtcdBackend(Backend):
    """Elections kept in etcd, as ``etcdctl elect`` keeps them. See the module docstring.

    **Fenced claims.** The ledger of election ``N`` (URL path ``P``) is one key per job,
    ``P/N.leadercron-ledger/<job id>`` (``N.leadercron-ledger/<job id>`` without a path), whose
    value is the job's mark (the last fire claimed, in ms since the epoch) as a 20-digit
    zero-padded decimal. Because ``.`` sorts before ``/``, that prefix lies outside the range
    ``P/N/`` .. ``P/N0`` that ``etcdctl elect``, Go's ``concurrency.Election`` and this backend
    treat as the line of candidates: ledger keys never become candidates and never lead. (So do
    not also name an election ``N.leadercron-ledger``.)

    :meth:`claim` is a single etcd transaction, evaluated by etcd at one revision::

        if   create_revision(K) == token and lease(K) == lease id and create_revision(L) == 0
        then put(L, fire, ledger lease)
        else txn(if   create_revision(K) == token and lease(K) == lease id and value(L) < fire
                 then put(L, fire, ledger lease))

    where ``K`` is this candidate's key ``P/N/<lease id hex>`` and ``L`` the job's ledger key.
    The outer branch creates a job's first mark, the nested one raises an existing mark; both
    carry the same term check, so the whole claim is one compare-and-set on the term *and* the
    mark. Why "``K`` still exists with the term's create revision" means "this term still
    leads": :meth:`acquire` granted the term only after one transaction saw ``K`` as the key with
    the lowest create revision under ``P/N/``. etcd's revisions only grow, so every key created
    since has a greater create revision than ``K``, and no key can ever again appear below it; a
    key deleted and put again gets a new create revision. So as long as ``K`` exists with that
    very create revision (and is still attached to this session's lease), it is the lowest key
    under the prefix: the leader for this backend, ``etcdctl elect`` and Go alike. Any successor
    leads only at a revision after ``K``'s deletion (a release, an expired or revoked lease, an
    ``etcdctl del``), so every claim of a deposed term is refused by etcd itself, whatever the
    deposed process believes, and etcd's single order of revisions serializes claims across
    terms. A term whose lease has expired in etcd's clock but whose revoke etcd has not yet
    committed still leads in etcd (nobody else can lead before that delete): its claims are
    still fenced correctly. A ``fire`` outside ``0 .. 10**20 - 1`` is refused (``False``)
    without asking etcd.

    **Retention.** Ledger keys are attached to a *ledger lease* of ``2 x LEDGER_RETENTION``
    (14 days), shared by the election's ledger keys and never kept alive. A claim attaches its
    key only to a ledger lease with at least ``1.5 x LEDGER_RETENTION`` left; an older one is
    replaced by the lease of the newest ledger key if that has enough time left (so replicas
    and restarts share leases), else by a new grant. A job's mark therefore lives at least
    ``1.5 x LEDGER_RETENTION`` after its last claim, and a job that is no longer claimed
    disappears from the ledger at most ``2 x LEDGER_RETENTION`` later (longer only if etcd
    renews the lease on a restart or leader change). The ledger holds one key per job, and an
    election has a handful of ledger leases at a time (a new one every half retention).
    :meth:`close` never revokes a ledger lease. Every claim is a new revision of a ledger key;
    old revisions are removed by etcd's usual compaction (``--auto-compaction-retention``),
    which leadercron neither needs nor does itself: claims compare only the current value.
    """

    schemes = ("etcd", "etcds")
    supports_claims = True

    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        *,
        tls: bool = False,
        path: str = "",
        timeout: float = 5.0,
        user: str | None = None,
        password: str | None = None,
        password_file: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        url: str | None = None,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._user = user
        self._password = password
        self._password_file = password_file
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or CA bundles from the environment
        if tls:
            self._session.verify = ca_file or True
            if cert_file and key_file:
                self._session.cert = (cert_file, key_file)
        protocol = "https" if tls else "http"
        self._clients = [
            Etcd3Client(
                host, port, protocol, timeout=timeout, api_path="/v3/", session=self._session
            )
            for host, port in endpoints
        ]
        self._current = 0
        self._token: str | None = None  # "" once we know that etcd has auth disabled
        self._auth_lock = threading.Lock()
        self._serial_lock = threading.Lock()
        self._lock = threading.Lock()
        self._campaigns: dict[str, _Campaign] = {}
        self._watches: set[_Watch] = set()
        self._ledger_lock = threading.Lock()
        # election -> (ledger lease id, time.monotonic() by which etcd expires it at the earliest)
        self._ledger_leases: dict[str, tuple[int, float]] = {}
        self._closed = False
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in endpoints)
        self.url = redact_url(url or f"{'etcds' if tls else 'etcd'}://{hosts}/{path}")

    @classmethod
    def from_url(cls, url: str) -> EtcdBackend:
        parts, options = parse_url(url, cls.schemes)
        reject_unknown_options(url, options, _OPTIONS)
        shown = redact_url(url)

        def fail(reason: str) -> ConfigError:
            return ConfigError(f"backend URL {shown!r}: {reason}")

        userinfo, at, hosts = parts.netloc.rpartition("@")
        endpoints = parse_hosts(url, hosts, 2379)
        user: str | None = unquote(userinfo.partition(":")[0]) if at else None
        password = unquote(userinfo.partition(":")[2]) if ":" in userinfo else None
        if "user" in options:
            if user is not None:
                raise fail("give the user either in the URL or as user=, not both")
            user = options["user"]
        if user == "":
            raise fail("empty user name")
        password_file = options.get("password_file")
        if password_file is not None and password is not None:
            raise fail("give the password either in the URL or as password_file=, not both")
        if user is None and (password is not None or password_file is not None):
            raise fail("a password needs a user (user@host or user=)")
        no_password = password is None and password_file is None
        if user is not None and no_password and PASSWORD_ENV not in os.environ:
            raise fail(f"user {user!r} needs a password: password_file= or ${PASSWORD_ENV}")
        tls = parts.scheme == "etcds"
        files: dict[str, str] = {
            k: options[k] for k in ("ca_file", "cert_file", "key_file") if k in options
        }
        if files and not tls:
            raise fail(f"{', '.join(files)} need the etcds:// scheme")
        if ("cert_file" in files) != ("key_file" in files):
            raise fail("cert_file and key_file go together")
        if password_file is not None:
            files["password_file"] = password_file
        for name, value in files.items():
            if not os.path.isfile(value):
                raise fail(f"{name}: no such file {value!r}")
        timeout = duration_option(url, options, "timeout", "5s")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(
            endpoints,
            tls=tls,
            path=path.rstrip("/"),
            timeout=timeout,
            user=user,
            password=password,
            password_file=password_file,
            ca_file=files.get("ca_file"),
            cert_file=files.get("cert_file"),
            key_file=files.get("key_file"),
            url=url,
        )

    def validate_timing(self, *, ttl: float, renew_deadline: float, retry_period: float) -> None:
        if ttl < MIN_TTL:
            raise ConfigError(
                f"the etcd backend needs ttl >= {format_duration(MIN_TTL)} (etcd's minimum lease "
                f"TTL), got {format_duration(ttl)}"
            )

    # -- requests ------------------------------------------------------------------------------

    def _prefix(self, election: str) -> bytes:
        return (f"{self.path}/{election}/" if self.path else f"{election}/").encode()

    def _ledger_prefix(self, election: str) -> bytes:
        """``P/N.leadercron-ledger/``: beside the election's prefix ``P/N/``, not under it."""
        name = f"{self.path}/{election}" if self.path else election
        return (name + LEDGER_SUFFIX).encode()

    @staticmethod
    def _range_end(prefix: bytes) -> bytes:
        return prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes end with "/", never 0xff

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def _post(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        """POST to the first endpoint that answers; rotate past those that refuse."""
        failures = []
        count = len(self._clients)
        for step in range(count):
            index = (self._current + step) % count
            client = self._clients[index]
            headers = self._headers() if auth else {}
            try:
                result: dict[str, Any] = client.post(
                    client.get_url(path), json=body, headers=headers
                )
            except etcd_errors.ConnectionFailedError as exc:
                failures.append(f"{client.host}:{client.port}: {_detail(exc)}")
                continue
            except etcd_errors.ConnectionTimeoutError:
                self._current = (index + 1) % count
                raise BackendUnavailable(
                    f"etcd at {client.host}:{client.port} did not answer within "
                    f"{format_duration(self.timeout)}"
                ) from None
            except etcd_errors.Etcd3Exception as exc:
                raise _translate(exc) from None
            except (requests.RequestException, OSError, ValueError) as exc:
                raise BackendUnavailable(f"etcd at {client.host}:{client.port}: {exc}") from None
            self._current = index
            return result
        raise BackendUnavailable(f"cannot reach etcd: {'; '.join(failures)}")

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A request with authentication: log in when needed and once more on a stale token."""
        if self._user is not None and self._token is None:
            self._authenticate()
        try:
            return self._post(path, body)
        except _TokenRejected:
            if self._user is None:
                raise BackendAuthError(
                    "etcd requires authentication: give a user (user@host or user=)"
                ) from None
            self._authenticate()
            return self._post(path, body)

    def _authenticate(self) -> None:
        with self._auth_lock:
            user = self._user
            assert user is not None
            password = self._password
            if password is None and self._password_file is not None:
                try:
                    with open(self._password_file, encoding="utf-8") as fh:
                        password = fh.read().strip()
                except OSError as exc:
                    raise BackendAuthError(f"cannot read the etcd password file: {exc}") from None
            if password is None:
                password = os.environ.get(PASSWORD_ENV, "")
            try:
                answer = self._post(
                    "/auth/authenticate", {"name": user, "password": password}, auth=False
                )
            except _EtcdError as exc:
                if "not enabled" in str(exc):
                    self._token = ""
                    return
                raise
            except BackendAuthError:
                raise BackendAuthError(f"etcd refused the credentials of user {user!r}") from None
            self._token = str(answer.get("token", ""))

    def _range_request(self, election: str, **fields: str) -> dict[str, Any]:
        """A range request over the election's prefix (``fields`` as etcd's JSON names them)."""
        prefix = self._prefix(election)
        return {"key": _b64(prefix), "range_end": _b64(self._range_end(prefix)), **fields}

    def _txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        return self._call(
            "/kv/txn", {"compare": compare, "success": success, "failure": failure or []}
        )

    @staticmethod
    def _owns(camp: _Campaign) -> dict[str, Any]:
        """The compare clause "the key still has the campaign's create revision"."""
        return {
            "key": _b64(camp.key),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": str(camp.revision),
        }

    def _keepalive(self, camp: _Campaign) -> bool:
        """Keep the campaign's lease alive; ``False`` if etcd no longer has it."""
        sent = time.monotonic()
        answer = self._call("/lease/keepalive", {"ID": str(camp.lease_id)})
        if int(answer.get("result", {}).get("TTL", 0)) <= 0:
            return False
        camp.refreshed = sent
        return True

    @contextmanager
    def _serial(self) -> Iterator[None]:
        """One state-changing call at a time; a hung one makes the next fail, not queue."""
        self._check_open()
        if not self._serial_lock.acquire(timeout=self.timeout):
            raise BackendUnavailable("a previous call to etcd is still in flight")
        try:
            with _answers():
                yield
        finally:
            self._serial_lock.release()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("the etcd backend is closed")

    # -- the contract --------------------------------------------------------------------------

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        with self._serial():
            for _attempt in range(2):
                camp = self._campaigns.get(election)
                if camp is None or camp.identity != identity:
                    camp = self._grant(election, identity, ttl)
                elif not self._keepalive(camp):
                    self._forget(camp)  # the lease expired while we waited: re-queue
                    camp = self._grant(election, identity, ttl)
                if camp.revision == 0:
                    self._campaign(camp)
                head = self._range_request(
                    election, sort_order="ASCEND", sort_target="CREATE", limit="1"
                )
                answer = self._txn([self._owns(camp)], [{"request_range": head}])
                if not answer.get("succeeded"):
                    self._forget(camp)  # our key is gone (expired or deleted): re-queue
                    continue
                kvs = answer["responses"][0]["response_range"].get("kvs", [])
                if not kvs or _unb64(kvs[0]["key"]) != camp.key:
                    return None
                self._watch_own_key(camp, int(answer["header"]["revision"]) + 1)
                return Lease(election, identity, camp.revision, float(camp.ttl), handle=camp)
            return None

    def _grant(self, election: str, identity: str, ttl: float) -> _Campaign:
        sent = time.monotonic()
        answer = self._call("/lease/grant", {"TTL": str(max(1, math.ceil(ttl)))})
        lease_id = int(answer["ID"])
        key = self._prefix(election) + f"{lease_id:x}".encode()
        camp = _Campaign(election, identity, key, lease_id, int(answer["TTL"]), sent)
        with self._lock:
            self._campaigns[election] = camp  # kept before the put: a retry reuses this lease
        return camp

    def _campaign(self, camp: _Campaign) -> None:
        """etcdctl's campaign: create the key if absent, else read it (a retried put)."""
        key = _b64(camp.key)
        put = {"key": key, "value": _b64(camp.identity.encode()), "lease": str(camp.lease_id)}
        answer = self._txn(
            [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": put}],
            [{"request_range": {"key": key}}],
        )
        if answer.get("succeeded"):
            camp.revision = int(answer["header"]["revision"])
        else:
            kvs = answer["responses"][0]["response_range"].get("kvs", [])
            camp.revision = int(kvs[0]["create_revision"]) if kvs else 0
        if camp.revision == 0:
            raise BackendUnavailable("etcd answered the campaign without a create revision")

    def _forget(self, camp: _Campaign) -> None:
        with self._lock:
            if self._campaigns.get(camp.election) is camp:
                del self._campaigns[camp.election]
            watch, camp.alarm_watch = camp.alarm_watch, None
        if watch is not None:
            watch.stop()

    def renew(self, lease: Lease) -> Lease | None:
        camp: _Campaign = lease.handle
        with self._serial():
            answer = self._txn([self._owns(camp)], []) if self._keepalive(camp) else {}
            if not answer.get("succeeded"):
                self._forget(camp)
                return None
            if camp.alarm_watch is None:  # the alarm watch broke: start it again
                self._watch_own_key(camp, int(answer["header"]["revision"]) + 1)
            return lease

    def release(self, lease: Lease) -> None:
        camp: _Campaign = lease.handle
        with self._serial():
            self._forget(camp)
            self._resign(camp)

    def _resign(self, camp: _Campaign) -> None:
        self._txn([self._owns(camp)], [{"request_delete_range": {"key": _b64(camp.key)}}])
        try:
            self._call("/lease/revoke", {"ID": str(camp.lease_id)})
        except _EtcdError as exc:
            if exc.code != 5:  # NotFound: already expired or revoked
                raise

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        camp: _Campaign = lease.handle
        self._check_open()
        if not 0 <= fire < 10**_MARK_DIGITS:
            return False  # not a fire any ledger keeps (and not one the mark encoding orders)
        key = _b64(self._ledger_prefix(lease.election) + job_id.encode())
        mark = _b64(f"{fire:0{_MARK_DIGITS}d}".encode())
        term = [
            {"key": _b64(camp.key), "target": "CREATE", "result": "EQUAL",
             "create_revision": str(lease.token)},
            {"key": _b64(camp.key), "target": "LEASE", "result": "EQUAL",
             "lease": str(camp.lease_id)},
        ]  # fmt: skip
        first = {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        higher = {"key": key, "target": "VALUE", "result": "LESS", "value": mark}
        with _answers():
            for attempt in range(2):
                ledger_lease = self._ledger_lease(lease.election)
                put = {"request_put": {"key": key, "value": mark, "lease": str(ledger_lease)}}
                raise_mark = {"compare": [*term, higher], "success": [put], "failure": []}
                try:
                    answer = self._txn([*term, first], [put], [{"request_txn": raise_mark}])
                except _EtcdError as exc:
                    # NotFound: the ledger lease is gone (revoked by hand). etcd checks leases
                    # before it applies anything, so the claim changed nothing: retry once.
                    if exc.code != 5 or attempt:
                        raise
                    self._drop_ledger_lease(lease.election, ledger_lease)
                    continue
                if answer.get("succeeded"):
                    return True
                return bool(answer["responses"][0]["response_txn"].get("succeeded"))
        raise AssertionError("unreachable")  # pragma: no cover

    def _ledger_lease(self, election: str) -> int:
        """A ledger lease with at least 1.5 x LEDGER_RETENTION left (see the class docstring)."""
        wanted = 1.5 * LEDGER_RETENTION
        with self._ledger_lock:
            held = self._ledger_leases.get(election)
            if held is not None and held[1] - time.monotonic() >= wanted:
                return held[0]
            # The newest ledger key's lease, if another replica or an earlier run granted one.
            prefix = self._ledger_prefix(election)
            newest = {
                "key": _b64(prefix), "range_end": _b64(self._range_end(prefix)),
                "sort_order": "DESCEND", "sort_target": "MOD", "limit": "1", "keys_only": True,
            }  # fmt: skip
            kvs = self._call("/kv/range", newest).get("kvs", [])
            found = int(kvs[0].get("lease", 0)) if kvs else 0
            if found and found != (held[0] if held else 0):
                sent = time.monotonic()
                left = int(self._call("/lease/timetolive", {"ID": str(found)}).get("TTL", -1))
                if left >= wanted:
                    self._ledger_leases[election] = (found, sent + left)
                    return found
            sent = time.monotonic()
            ttl = max(1, math.ceil(2 * LEDGER_RETENTION))
            answer = self._call("/lease/grant", {"TTL": str(ttl)})
            granted = (int(answer["ID"]), sent + int(answer["TTL"]))
            self._ledger_leases[election] = granted
            return granted[0]

    def _drop_ledger_lease(self, election: str, lease_id: int) -> None:
        with self._ledger_lock:
            held = self._ledger_leases.get(election)
            if held is not None and held[0] == lease_id:
                del self._ledger_leases[election]

    def ledger(self, election: str) -> dict[str, int]:
        self._check_open()
        prefix = self._ledger_prefix(election)
        request = {"key": _b64(prefix), "range_end": _b64(self._range_end(prefix))}
        with _answers():
            kvs = self._call("/kv/range", request).get("kvs", [])
            return {
                _unb64(kv["key"])[len(prefix) :].decode("utf-8", errors="replace"): int(
                    _unb64(kv.get("value", ""))
                )
                for kv in kvs
            }

    def leader(self, election: str) -> LeaderInfo | None:
        self._check_open()
        request = self._range_request(
            election, sort_order="ASCEND", sort_target="CREATE", limit="1"
        )
        with _answers():
            kvs = self._call("/kv/range", request).get("kvs", [])
            if not kvs:
                return None
            return LeaderInfo(_value(kvs[0]), int(kvs[0]["create_revision"]))

    def candidates(self, election: str) -> list[str] | None:
        self._check_open()
        request = self._range_request(election, sort_order="ASCEND", sort_target="CREATE")
        with _answers():
            answer = self._call("/kv/range", request)
            return [_value(kv) for kv in answer.get("kvs", [])]

    def wait_for_change(self, election: str, timeout: float) -> None:
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        camp = self._campaigns.get(election)
        try:
            with _answers():
                found = self._ahead(election, camp)
        except BackendUnavailable:
            if self._closed:
                return
            raise
        if found is not None:
            keys, start_revision = found
            if camp is not None and camp.revision:
                # Come back in time to keep our lease, and so our place in line, alive.
                deadline = min(deadline, camp.refreshed + camp.ttl / 2)
            self._wait_for_delete(keys, start_revision, deadline)

    def _ahead(self, election: str, camp: _Campaign | None) -> tuple[list[bytes], int] | None:
        """The keys to watch and the revision to watch from; ``None`` if nobody is ahead."""
        if camp is not None and camp.revision:
            before = self._range_request(
                election,
                sort_order="DESCEND",
                sort_target="CREATE",
                limit="1",
                max_create_revision=str(camp.revision - 1),
            )
            answer = self._txn([self._owns(camp)], [{"request_range": before}])
            if not answer.get("succeeded"):
                return None  # our key is gone: acquire re-queues
            kvs = answer["responses"][0]["response_range"].get("kvs", [])
            if not kvs:
                return None  # we are first in line
            keys = [_unb64(kvs[0]["key"]), camp.key]
        else:
            head = self._range_request(
                election, sort_order="ASCEND", sort_target="CREATE", limit="1"
            )
            answer = self._call("/kv/range", head)
            keys = [_unb64(kv["key"]) for kv in answer.get("kvs", [])]
            if not keys:
                return None
        return keys, int(answer["header"]["revision"]) + 1

    def _open_watch(self, keys: list[bytes], start_revision: int, read_timeout: float) -> Any:
        """Start a watch for deletions of ``keys``; return the streaming response."""
        requests_ = [{"create_request": {"key": _b64(key), "filters": ["NOPUT"]}} for key in keys]
        if start_revision:
            for item in requests_:
                item["create_request"]["start_revision"] = str(start_revision)
        client = self._clients[self._current]
        response = self._session.post(
            client.get_url("/watch"),
            data="\n".join(json.dumps(item) for item in requests_),
            headers=self._headers(),
            stream=True,
            timeout=(self.timeout, read_timeout),
        )
        if response.status_code != 200:
            response.close()
            raise BackendUnavailable(f"etcd refused a watch: {response.text[:200]}")
        return response

    def _deleted(self, response: Any) -> bool:
        """Read the stream until a deletion (``True``) or its end (``False``)."""
        for line in response.iter_lines():
            if not line:
                continue
            result = json.loads(line).get("result")
            if result is None:
                raise BackendUnavailable(f"etcd broke the watch: {line[:200]!r}")
            if result.get("canceled"):
                reason = str(result.get("cancel_reason", "compacted"))
                if any(text in reason for text in _TOKEN_REJECTED):
                    self._token = None
                raise BackendUnavailable(f"etcd cancelled the watch: {reason}")
            if any(event.get("type") == "DELETE" for event in result.get("events", [])):
                return True
        return False

    def _wait_for_delete(self, keys: list[bytes], start_revision: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        watch = _Watch()
        with self._lock:
            if self._closed:
                return
            self._watches.add(watch)
        response = None
        try:
            response = self._open_watch(keys, start_revision, min(self.timeout, remaining))
            sock = watch.attach(response)
            if sock is None:
                return
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            if not self._deleted(response) and not watch.stopped:
                raise BackendUnavailable("etcd closed the watch")
        except (requests.RequestException, OSError, ValueError) as exc:
            if watch.stopped or time.monotonic() >= deadline - 0.01:
                return
            raise BackendUnavailable(f"watch on etcd failed: {exc}") from None
        finally:
            with self._lock:
                self._watches.discard(watch)
            if response is not None:
                response.close()

    def _watch_own_key(self, camp: _Campaign, start_revision: int) -> None:
        """While leading, raise the alarm when our key is deleted or the watch breaks."""
        with self._lock:
            if camp.alarm_watch is not None or self._closed:
                return
            watch = camp.alarm_watch = _Watch()
            self._watches.add(watch)

        def run() -> None:
            response = None
            try:
                response = self._open_watch([camp.key], start_revision, self.timeout)
                sock = watch.attach(response)
                if sock is None:
                    return
                sock.settimeout(None)  # a stream that stays idle for the whole term
                deleted = self._deleted(response)
                reason = "its key was deleted" if deleted else "etcd closed the watch"
            except (BackendUnavailable, requests.RequestException, OSError, ValueError) as exc:
                reason = f"the watch on its key failed: {exc}"
            finally:
                with self._lock:
                    self._watches.discard(watch)
                    if camp.alarm_watch is watch:
                        camp.alarm_watch = None
                if response is not None:
                    response.close()
            if not watch.stopped:
                self._alarm(
                    f"etcd: the lease on {camp.key.decode(errors='replace')} is in doubt: {reason}"
                )

        threading.Thread(target=run, name="leadercron-etcd-alarm", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watches = list(self._watches)
            campaigns = list(self._campaigns.values())
            self._campaigns.clear()
        for watch in watches:
            watch.stop()
        for camp in campaigns:  # end the session as Go's Session.Close does: our keys go at once
            with suppress(BackendUnavailable):
                self._call("/lease/revoke", {"ID": str(camp.lease_id)})
        self._session.close()


@contextmanager
def _answers() -> Iterator[None]:
    """Turn an answer of an unexpected shape into ``BackendUnavailable``."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BackendUnavailable(f"unexpected answer from etcd: {exc!r}") from None


def _value(kv: dict[str, Any]) -> str:
    return _unb64(kv.get("value", "")).decode("utf-8", errors="replace")


def _detail(exc: etcd_errors.Etcd3Exception) -> str:
    """The error text of an etcd3gw exception (etcd's JSON message if there is one)."""
    text = exc.detail_text or ""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300] or type(exc).__name__
    return (
        str(data.get("message") or data.get("error") or text)[:300]
        if isinstance(data, dict)
        else text
    )


def _translate(exc: etcd_errors.Etcd3Exception) -> BackendUnavailable:
    """etcd's error answer as BackendUnavailable, or an auth error where it is one."""
    message = _detail(exc)
    try:
        code = int(json.loads(exc.detail_text or "{}").get("code", 2))
    except (ValueError, AttributeError):
        code = 2
    if any(text in message for text in _TOKEN_REJECTED):
        return _TokenRejected(f"etcd: {message}")
    if code == 7 or any(text in message for text in _AUTH_REFUSED):
        return BackendAuthError(f"etcd: {message}")
    return _EtcdError(f"etcd: {message}", code)
