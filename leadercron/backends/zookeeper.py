"""ZooKeeper backend: kazoo's election recipe, shared with plain kazoo ``Election`` clients.

URL::

    zookeeper://[user[:password]@]host[:port][,host[:port]...][/chroot][?option=value&...]

``zk://`` is an alias. The port defaults to 2181; IPv6 hosts go in brackets (``[::1]:2181``).
The chroot is a path prefix: election ``N`` lives at ``/chroot/N`` (``/N`` without a chroot), and a
kazoo client connected to ``host:port/chroot`` sees it at ``/N``. Missing parent nodes, the chroot
included, are created.

====================  ========  ===============================================================
option                default   meaning
====================  ========  ===============================================================
timeout               ``5s``    bound on connecting and on every request; past it the call raises
                                ``BackendUnavailable``
user                  none      digest user (or put it in the URL's userinfo)
password_file         none      file holding the digest password (one line); without it the
                                password comes from the URL or ``LEADERCRON_ZOOKEEPER_PASSWORD``
min_session_timeout   ``4s``    the server's ``minSessionTimeout`` (2 * tickTime by default);
                                :meth:`validate_timing` rejects a shorter ``ttl``
max_session_timeout   ``40s``   the server's ``maxSessionTimeout`` (20 * tickTime by default);
                                :meth:`validate_timing` rejects a longer ``ttl``
====================  ========  ===============================================================

Authentication and ACLs: with a user, the session authenticates with ``digest user:password`` and
every node this backend creates (parents, chroot, candidate and ledger nodes) gets
``CREATOR_ALL_ACL``: all permissions for clients authenticated as the same user, none for anyone
else (a foreign kazoo contender needs ``auth_data=[("digest", "user:password")]``). Without a
user nodes are created world-open (``OPEN_ACL_UNSAFE``), like kazoo's defaults. ``NoAuth`` answers
raise ``BackendAuthError``. Digest auth itself never fails in ZooKeeper: a wrong password shows as
``NoAuth`` on the first node it may not touch.

The election is kazoo's ``Lock``/``Election`` recipe, so leadercron and kazoo contenders exclude
each other. Each candidate owns one ephemeral-sequential node
``/N/<uuid4 hex>__lock__<10-digit sequence>`` holding its identity; the lowest sequence leads;
every waiter watches only its predecessor (no herd). Contract mapping:

``acquire``
    Creates this candidate's node on the first call and keeps it (and its place in line) between
    calls; returns a lease when the node is the lowest.
``renew``
    The session must be connected and the node must still exist with the same ``czxid`` and
    session owner; otherwise ``None``. Extends the local expiry.
``release``
    Deletes this candidate's node (a missing node is fine), which fires the successor's watch.
``wait_for_change``
    A data watch on the predecessor node (on the leader's node when this candidate has no node,
    on its own node while it leads); also woken by connection state changes and :meth:`close`.
``leader`` / ``candidates``
    The lowest node's data and ``czxid`` / every contender's data in sequence order.
``claim`` / ``ledger``
    One multi-op transaction: ``check`` of the term's own node (path and version) plus a
    compare-and-set of the job's mark node in ``/leadercron-ledger/N/`` (outside ``/N``); see
    :class:`ZooKeeperBackend` for the layout, the retries and the compaction.

Fencing token: the ``czxid`` of the leader's node (the zxid of the transaction that created it).
Zxids are global and strictly increasing, and a new leader's node is always younger than its
predecessor's, so tokens strictly increase per term, kazoo contenders' terms included, and even
if the election's parent node is deleted and re-created (which resets sequence numbers).

Lease lifetime: a ZooKeeper session stays alive as long as its client process pings, whether or
not the candidate renews. So the backend expires a term itself: a lease lasts ``ttl`` from the
answer to the acquire/renew, and a timer deletes the node when it runs out (a waiting node is kept
while the candidate campaigns: ``ttl`` after its last ``acquire``, or after the end of its
current ``wait_for_change``). If the process dies or freezes, the ephemeral node goes with the
session: one client per backend instance, made lazily by the first ``acquire`` with a session
timeout of ``ttl`` (ZooKeeper expires it within one tickTime after that). So a node lives at most
``2 * ttl + tickTime`` after the last renew, reached by a process frozen just before its timer.

Connection states: ``SUSPENDED`` (the connection dropped, the session may live; kazoo notices
after 2/3 of the session timeout without an answer) calls the alarm at once when a lease is held;
calls then wait up to ``timeout`` for kazoo to reconnect, and raise ``BackendUnavailable`` after
that. ``LOST`` (the session expired, its nodes are gone) ends every term (``renew`` answers
``None``) and calls the alarm. A request whose outcome is unknown and may have left a node behind
(a create, a failed delete) abandons the session, so that the server removes its nodes within the
session timeout; the next call opens a new one. The first connection is preceded by a TCP probe
of the hosts, so that a refused connection fails at once instead of after ``timeout``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.protocol.states import KazooState, KeeperState
from kazoo.security import CREATOR_ALL_ACL, OPEN_ACL_UNSAFE

from leadercron.backends.base import (
    LEDGER_RETENTION,
    Backend,
    LeaderInfo,
    Lease,
    Notifier,
    duration_option,
    parse_hosts,
    parse_url,
    redact_url,
    reject_unknown_options,
)
from leadercron.errors import BackendAuthError, BackendError, BackendUnavailable, ConfigError

PASSWORD_ENV = "LEADERCRON_ZOOKEEPER_PASSWORD"
NODE_NAME = "__lock__"  # kazoo's Lock._NODE_NAME
_CONTENDER = re.compile(r"__lock__(-?\d{10})$")  # kazoo's Lock._contenders_re
_READ_SESSION = 10.0  # session timeout of a client made by a read before any acquire
LEDGER_NODE = "leadercron-ledger"  # /chroot/leadercron-ledger/<election>/<job>: the claim marks
COMPACT_EVERY = 3600.0  # seconds between two listings of an election's ledger by one backend
COMPACT_BATCH = 8  # ledger nodes a claim examines for compaction, at most
_CLAIM_ATTEMPTS = 8  # compare-and-set rounds a claim makes before it gives up
_NAME_SAFE = frozenset(string.ascii_letters + string.digits + "-.~")
_MARK = re.compile(rb"-?[0-9]{1,19}")


@dataclass(eq=False)
class _Entry:
    """This candidate's node in one election; the private handle of its leases."""

    client: Any  # the KazooClient whose session owns the node
    path: str
    czxid: int
    session: int
    ttl: float
    version: int = 0  # the node's data version: a claim's check op asserts it
    expires: float = 0.0
    leased: bool = False
    ended: bool = False
    timer: threading.Timer | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


@dataclass
class _Sweep:
    """Compaction progress of one election's ledger in this backend."""

    due: float = 0.0  # monotonic time of the next listing
    pending: list[str] = field(default_factory=list)  # listed node names not yet examined


def _encode_name(text: str) -> str:
    """``text`` as one znode name: percent-encoded UTF-8, keeping letters, digits and ``-.~``.

    ``_`` is encoded too, so a ledger node never looks like a kazoo contender (``__lock__``);
    ``/`` is encoded, so every name is one path component. ``""`` is ``%``; names made of dots
    only (``.`` and ``..`` are not valid node names) are encoded in full.
    """
    if not text:
        return "%"
    name = "".join(
        ch
        if ch in _NAME_SAFE
        else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text
    )
    if not name.strip("."):
        name = "%2E" * len(name)
    return name


def _decode_name(name: str) -> str | None:
    """The text an :func:`_encode_name` name stands for; ``None`` for any other node name."""
    if name == "%":
        return ""
    try:
        text = unquote(name, "utf-8", "surrogatepass")
    except UnicodeError:
        return None
    return text if text and _encode_name(text) == name else None


def _parse_mark(data: bytes | None) -> int | None:
    """A ledger node's data: the mark as ASCII decimal digits; ``None`` if it is not one."""
    return int(data) if data is not None and _MARK.fullmatch(data) else None


def _parse_hosts(url: str, hosts: str) -> str:
    """``h1[:p1],[v6]:p2`` -> kazoo's host string with every port filled in."""
    return ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for host, port in parse_hosts(url, hosts, 2181)
    )


def _check_path(what: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise ConfigError(f"{what} {path!r} is not a valid ZooKeeper path")
    return "/" + "/".join(parts)


class ZooKeeperBackend(Backend):
    """Elections as kazoo ``Election`` queues in ZooKeeper. See the module docstring.

    Fenced claims (:meth:`claim`, :meth:`ledger`). The ledger of election ``N`` lives *outside*
    ``/N``, where kazoo lists every child as a possible contender::

        /chroot/leadercron-ledger/<N>/<job>     persistent, data = the mark (ASCII decimal ms)

    ``<N>`` and ``<job>`` are percent-encoded into one node name each (letters, digits and
    ``-.~`` kept; ``_`` and ``/`` encoded, so a ledger node never looks like a ``__lock__``
    contender and an election ``a/b`` does not nest under election ``a``). One node per job.
    The nodes, and the parents this backend creates, get the backend's ACL (``CREATOR_ALL_ACL``
    with a user, else ``OPEN_ACL_UNSAFE``), like the election's nodes.

    A claim reads the job's node (its mark and data version), then commits ONE multi-op
    transaction: ``check`` that the term's own contender node still exists with the version it
    was created with (the node path is unique to the term, and while it exists it is the lowest
    contender: sequence numbers only grow and ``/N`` cannot be deleted while it has children),
    plus ``set_data`` of the mark node at the version read (compare-and-set), or ``create`` of it
    for a first claim. ZooKeeper applies both or neither. A failed ``check`` means this is not
    the live term: the claim returns ``False``, the term ends locally (its node is deleted if it
    is still there) and the alarm goes off. A failed compare-and-set (another claim or a
    compaction moved the mark in between) reads the mark again and retries while
    ``fire > mark``. Local state can only refuse a claim (a term already ended or past its local
    expiry, a suspended connection that does not come back within ``timeout``): it never admits
    one, the server's check does. A transaction whose answer is lost raises
    ``BackendUnavailable``; kazoo may still deliver it after a reconnection, and the check then
    decides on the server whether it applies.

    Retention: a successful claim also compacts, bounded: the election's ledger is listed at
    most every ``COMPACT_EVERY`` (1 h) per backend instance, and each claim examines at most
    ``COMPACT_BATCH`` (8) listed nodes; a node whose mark is older than ``LEDGER_RETENTION``
    (by this host's clock) is deleted in a transaction with the same term ``check`` and the
    version it was read at, so only the live term compacts and a mark re-claimed meanwhile
    stays. The ledger directory of an election stays (one empty node once all jobs are gone).
    """

    schemes = ("zookeeper", "zk")
    supports_claims = True

    def __init__(
        self,
        hosts: str,
        *,
        chroot: str = "",
        timeout: float = 5.0,
        auth: tuple[str, str] | None = None,
        min_session_timeout: float = 4.0,
        max_session_timeout: float = 40.0,
        url: str | None = None,
    ) -> None:
        self.hosts = hosts
        self.chroot = chroot
        self.timeout = timeout
        self.min_session_timeout = min_session_timeout
        self.max_session_timeout = max_session_timeout
        self._auth = auth  # (user, password)
        self._acl = CREATOR_ALL_ACL if auth else OPEN_ACL_UNSAFE
        user = f"{auth[0]}@" if auth else ""
        self.url = redact_url(url) if url else f"zookeeper://{user}{hosts}{chroot}"
        self._zk: Any = None  # the KazooClient, made lazily
        self._session_ttl: float | None = None
        self._entries: dict[str, _Entry] = {}
        self._sweeps: dict[str, _Sweep] = {}  # per ledger directory
        self._lock = threading.Lock()  # guards the fields above; never held over network calls
        self._connect_lock = threading.Lock()
        self._campaign_lock = threading.Lock()
        self._notifier = Notifier()
        self._live = threading.Event()  # the current client is connected
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> ZooKeeperBackend:
        parts, options = parse_url(url, cls.schemes)
        known = {"timeout", "user", "password_file", "min_session_timeout", "max_session_timeout"}
        reject_unknown_options(url, options, known)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        if not hosts:
            raise ConfigError(f"backend URL {redact_url(url)!r}: expected zookeeper://host:port")
        chroot = _check_path("chroot", parts.path) if parts.path.strip("/") else ""
        durations = {
            name: duration_option(url, options, name, default)
            for name, default in (
                ("timeout", "5s"),
                ("min_session_timeout", "4s"),
                ("max_session_timeout", "40s"),
            )
        }
        user, has_password, password = userinfo.partition(":")
        user, password = unquote(user), unquote(password)
        if "user" in options:
            if user:
                raise ConfigError(f"backend URL {redact_url(url)!r}: user given twice")
            user = options["user"]
        if "password_file" in options:
            if has_password:
                raise ConfigError(f"backend URL {redact_url(url)!r}: password given twice")
            try:
                with open(options["password_file"], encoding="utf-8") as fh:
                    password = fh.readline().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"zookeeper password_file: {exc}") from None
            has_password = ":"
        elif not has_password and PASSWORD_ENV in os.environ:
            password, has_password = os.environ[PASSWORD_ENV], ":"
        if has_password and not user:
            raise ConfigError(f"backend URL {redact_url(url)!r}: a password needs a user")
        if user and not has_password:
            raise ConfigError(
                f"backend URL {redact_url(url)!r}: user {user!r} has no password "
                f"(use password_file= or {PASSWORD_ENV})"
            )
        return cls(
            _parse_hosts(url, hosts),
            chroot=chroot,
            timeout=durations["timeout"],
            auth=(user, password) if user else None,
            min_session_timeout=durations["min_session_timeout"],
            max_session_timeout=durations["max_session_timeout"],
            url=url,
        )

    def validate_timing(self, *, ttl: float, renew_deadline: float, retry_period: float) -> None:
        if ttl < self.min_session_timeout:
            raise ConfigError(
                f"zookeeper: ttl {ttl:g}s is below the server's minimum session timeout "
                f"{self.min_session_timeout:g}s (min_session_timeout=): a crashed leader's node "
                "would outlive the ttl"
            )
        if ttl > self.max_session_timeout:
            raise ConfigError(
                f"zookeeper: ttl {ttl:g}s is above the server's maximum session timeout "
                f"{self.max_session_timeout:g}s (max_session_timeout=): the server would end "
                "a leader's session before its ttl"
            )

    # -- the session -----------------------------------------------------------------------------

    def _client(self, ttl: float | None) -> Any:
        """The connected client; made (or remade for a new ttl) when needed."""
        zk = self._session(ttl)
        # Suspended: kazoo is reconnecting. Give it up to ``timeout`` to come back (a blip must
        # not fail a call); the alarm has already gone off if a lease is held.
        if not zk.connected and not self._live.wait(self.timeout):
            raise BackendUnavailable(f"zookeeper connection suspended for over {self.timeout:g}s")
        return zk

    def _session(self, ttl: float | None) -> Any:
        with self._connect_lock:
            with self._lock:
                if self._closed:
                    raise BackendUnavailable("zookeeper backend is closed")
                zk = self._zk
                if (
                    zk is not None
                    and ttl is not None
                    and ttl != self._session_ttl
                    and not self._entries  # no nodes of ours depend on this session
                ):
                    self._discard(zk)  # made by a read, or for another ttl
                    self._zk = zk = None
            if zk is not None:
                return zk
            self._probe()
            session = ttl if ttl is not None else _READ_SESSION
            zk = KazooClient(
                hosts=self.hosts,
                timeout=session,
                auth_data=[("digest", ":".join(self._auth))] if self._auth else None,
                connection_retry={
                    "max_tries": -1,
                    "delay": 0.05,
                    "max_delay": 1.0,
                    "max_jitter": 0.1,
                },
            )
            zk.add_listener(lambda state: self._on_state(zk, state))
            try:
                connected = zk.start_async().wait(self.timeout)
            except Exception as exc:  # the client library's own failures
                connected = False
                reason = f": {exc}"
            else:
                reason = ""
            if not connected:
                refused = zk.client_state == KeeperState.AUTH_FAILED
                self._discard(zk)
                if refused:
                    raise BackendAuthError(f"zookeeper {self.hosts} rejected the credentials")
                raise BackendUnavailable(
                    f"cannot reach zookeeper {self.hosts} within {self.timeout:g}s{reason}"
                )
            with self._lock:
                if self._closed:
                    self._discard(zk)
                    raise BackendUnavailable("zookeeper backend is closed")
                self._zk, self._session_ttl = zk, session
                self._live.set()
            return zk

    def _probe(self) -> None:
        """Fail fast when no host accepts a TCP connection (kazoo would retry until the timeout)."""
        hosts = self.hosts.split(",")
        error: OSError | None = None
        for item in hosts:
            host, _, port = item.rpartition(":")
            try:
                socket.create_connection(
                    (host.strip("[]"), int(port)), self.timeout / len(hosts)
                ).close()
                return
            except OSError as exc:
                error = exc
        raise BackendUnavailable(f"cannot reach zookeeper {self.hosts}: {error}")

    def _discard(self, zk: Any) -> None:
        """Close a client in the background (stop() may wait for a dead server)."""

        def stop() -> None:
            try:
                zk.stop()
                zk.close()
            except Exception:  # best effort on a client we drop
                pass

        threading.Thread(target=stop, name="leadercron-zk-stop", daemon=True).start()

    def _abandon(self, zk: Any) -> None:
        """Drop a session whose nodes are in doubt: the server removes them when it ends."""
        with self._lock:
            if self._zk is not zk:
                return
            self._zk = None
            for entry in list(self._entries.values()):
                self._end(entry)
        self._discard(zk)
        self._notifier.bump()
        self._live.set()  # calls waiting for this client to reconnect go on to a new one

    def _on_state(self, zk: Any, state: str) -> None:
        # Runs in kazoo's connection thread: must not block (self._lock is only held briefly).
        if zk is self._zk:
            if state == KazooState.CONNECTED:
                self._live.set()
            else:
                self._live.clear()
        if zk is self._zk and state in (KazooState.SUSPENDED, KazooState.LOST):
            with self._lock:
                leading = any(e.leased and not e.ended for e in self._entries.values())
                if state == KazooState.LOST:
                    for entry in list(self._entries.values()):
                        self._end(entry)
            if leading:
                self._alarm(
                    "zookeeper connection suspended"
                    if state == KazooState.SUSPENDED
                    else "zookeeper session lost"
                )
        self._notifier.bump()

    def _on_watch(self, event: Any) -> None:
        self._notifier.bump()

    def _call(self, result: Any) -> Any:
        """Wait for a kazoo async result; translate its failures (``NoNodeError`` passes)."""
        try:
            return result.get(timeout=self.timeout)
        except (NoNodeError, NodeExistsError):
            raise
        except (NoAuthError, AuthFailedError) as exc:
            raise self._refused(exc) from exc
        except Exception as exc:  # any other failure: "unavailable"
            raise BackendUnavailable(f"zookeeper {self.hosts}: {exc!r}") from exc

    def _refused(self, exc: Exception) -> BackendAuthError:
        who = f"user {self._auth[0]!r}" if self._auth else "an unauthenticated client"
        return BackendAuthError(f"zookeeper refused access to {who} ({exc!r})")

    # -- nodes -----------------------------------------------------------------------------------

    def _path(self, election: str) -> str:
        return self.chroot + _check_path("election", election)

    def _contenders(self, zk: Any, parent: str) -> list[str]:
        """Contender node names, in kazoo's order (lowest sequence first)."""
        try:
            children = self._call(zk.get_children_async(parent))
        except NoNodeError:
            return []
        matches = [m for m in map(_CONTENDER.search, children) if m is not None]
        return [m.string for m in sorted(matches, key=lambda m: m.group(1))]

    def _create(self, zk: Any, parent: str, identity: str, ttl: float) -> _Entry:
        path = f"{parent}/{os.urandom(16).hex()}{NODE_NAME}"
        data = identity.encode()
        try:
            try:
                created = self._call(zk.create_async(path, data, self._acl, True, True))
            except NoNodeError:
                with contextlib.suppress(NodeExistsError):
                    self._call(zk.ensure_path_async(parent, self._acl))
                created = self._call(zk.create_async(path, data, self._acl, True, True))
            stat = self._call(zk.exists_async(created))
        except BackendAuthError:
            raise
        except (BackendUnavailable, NoNodeError, NodeExistsError) as exc:
            # The node may exist without us knowing its name: end the session that owns it.
            self._abandon(zk)
            raise BackendUnavailable(f"zookeeper: creating a node under {parent}: {exc}") from exc
        if stat is None:
            raise BackendUnavailable(f"zookeeper: node {created} vanished at once")
        return _Entry(zk, created, stat.czxid, stat.ephemeralOwner, ttl, version=stat.version)

    def _arm(self, entry: _Entry, expires: float) -> None:
        """Delete ``entry``'s node at ``expires`` unless renewed first (under ``self._lock``)."""
        entry.expires = expires
        if entry.timer is not None:
            entry.timer.cancel()
        entry.timer = threading.Timer(max(0.0, expires - time.monotonic()), self._expire, (entry,))
        entry.timer.daemon = True
        entry.timer.start()

    def _end(self, entry: _Entry) -> None:
        """Mark a term over and forget the entry (under ``self._lock``)."""
        entry.ended = True
        if entry.timer is not None:
            entry.timer.cancel()
        for election, known in list(self._entries.items()):
            if known is entry:
                del self._entries[election]

    def _expire(self, entry: _Entry) -> None:
        with self._lock:
            if entry.ended or threading.current_thread() is not entry.timer:
                return  # ended, or renewed since (a newer timer is armed)
            if time.monotonic() < entry.expires:
                self._arm(entry, entry.expires)  # woke a little early
                return
            self._end(entry)
        # On failure _delete abandons the session: the server drops the node with it.
        with contextlib.suppress(BackendUnavailable):
            self._delete(entry)

    def _delete(self, entry: _Entry) -> None:
        zk = entry.client
        if zk is not self._zk:
            return  # that session is being closed: its nodes go with it
        try:
            self._call(zk.delete_async(entry.path))
        except NoNodeError:
            pass
        except BackendUnavailable:
            self._abandon(zk)
            raise

    # -- the contract ----------------------------------------------------------------------------

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        parent = self._path(election)
        if not self._campaign_lock.acquire(timeout=self.timeout):
            raise BackendUnavailable("zookeeper: a previous acquire is still running")
        try:
            zk = self._client(ttl)
            for _attempt in range(2):
                with self._lock:
                    entry = self._entries.get(election)
                if entry is None or entry.client is not zk:
                    entry = self._create(zk, parent, identity, ttl)
                    with self._lock:
                        self._entries[election] = entry
                names = self._contenders(zk, parent)
                if entry.name in names:
                    break
                with self._lock:  # our node vanished (session lost): take a new place
                    self._end(entry)
            else:
                raise BackendUnavailable(f"zookeeper: our node under {parent} keeps vanishing")
            with self._lock:
                if entry.ended:
                    return None
                self._arm(entry, time.monotonic() + ttl)
                if names[0] != entry.name:
                    return None
                entry.leased = True
                return Lease(election, identity, entry.czxid, ttl, handle=entry)
        finally:
            self._campaign_lock.release()

    def renew(self, lease: Lease) -> Lease | None:
        entry: _Entry = lease.handle
        if self._lapsed(entry):
            return None
        zk = entry.client
        if zk is not self._zk or zk is not self._client(None):
            return None  # that session was abandoned: its node is gone or going
        stat = self._call(zk.exists_async(entry.path))
        if stat is None or stat.czxid != entry.czxid or stat.ephemeralOwner != entry.session:
            with self._lock:
                self._end(entry)
            return None
        with self._lock:
            if not entry.ended and time.monotonic() < entry.expires:
                self._arm(entry, time.monotonic() + lease.ttl)
                return lease
        self._lapsed(entry)  # expired while we asked: never extend it
        return None

    def _lapsed(self, entry: _Entry) -> bool:
        """Whether a term is over; ends it (and deletes its node) once its expiry has passed."""
        with self._lock:
            if entry.ended or not entry.leased:
                return True
            if time.monotonic() < entry.expires:
                return False
            self._end(entry)  # its timer is due: do its work now
        with contextlib.suppress(BackendUnavailable):
            self._delete(entry)
        return True

    def release(self, lease: Lease) -> None:
        entry: _Entry = lease.handle
        with self._lock:
            if entry.ended:
                return
            self._end(entry)
        self._delete(entry)

    # -- fenced claims ---------------------------------------------------------------------------

    def _ledger_path(self, election: str) -> str:
        """The election's ledger directory, outside ``/N`` (where kazoo lists contenders)."""
        name = _check_path("election", election).lstrip("/")
        return f"{self.chroot}/{LEDGER_NODE}/{_encode_name(name)}"

    def _commit(self, zk: Any, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Run ``ops`` as one multi-op transaction; one result (or exception) per op.

        An exception in the results is an op that failed (the whole transaction then changed
        nothing); ``RolledBackError`` marks ops that would have succeeded.
        """
        txn = zk.transaction()
        for name, args in ops:
            getattr(txn, name)(*args)
        results = list(self._call(txn.commit_async()))
        for result in results:
            if isinstance(result, (NoAuthError, AuthFailedError)):
                raise self._refused(result) from result
        if len(results) != len(ops):
            raise BackendUnavailable(f"zookeeper {self.hosts}: a multi answered {results!r}")
        return results

    def _deposed(self, entry: _Entry, why: Exception) -> None:
        """The server says the term's node is gone or changed: the term is over."""
        with self._lock:
            if entry.ended:
                return
            self._end(entry)
        self._alarm(f"zookeeper: our node {entry.path} failed a claim's check ({why!r})")
        self._notifier.bump()
        with contextlib.suppress(BackendUnavailable):
            self._delete(entry)  # if it is still there (changed by someone), it must go

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        entry: _Entry = lease.handle
        directory = self._ledger_path(lease.election)
        path = f"{directory}/{_encode_name(job_id)}"
        value = str(int(fire)).encode()
        for _attempt in range(_CLAIM_ATTEMPTS):
            # Local state may only refuse: a term that is over here is over (like renew). It
            # never admits: the check op in the transaction below is what does.
            if self._lapsed(entry):
                return False
            zk = entry.client
            if zk is not self._zk or zk is not self._client(None):
                return False  # that session was abandoned: its node is gone or going
            try:
                data, stat = self._call(zk.get_async(path))
            except NoNodeError:
                stat = None
            else:
                mark = _parse_mark(data)
                if mark is None:
                    raise BackendUnavailable(f"zookeeper: ledger node {path} holds {data!r}")
                if fire <= mark:
                    return False
            write = (
                ("create", (path, value, self._acl))
                if stat is None
                else ("set_data", (path, value, stat.version))
            )
            check, result = self._commit(zk, [("check", (entry.path, entry.version)), write])
            if isinstance(check, Exception) and not isinstance(check, RolledBackError):
                self._deposed(entry, check)  # NoNode or BadVersion: not the live term
                return False
            if not isinstance(result, Exception):
                self._compact(zk, entry, directory, path)
                return True
            if isinstance(result, NoNodeError) and stat is None:
                # No ledger directory yet: make it, with the backend's ACL, and try again.
                with contextlib.suppress(NodeExistsError):
                    self._call(zk.ensure_path_async(directory, self._acl))
            elif not isinstance(result, (NodeExistsError, NoNodeError, BadVersionError)):
                raise BackendUnavailable(f"zookeeper: claiming {path}: {result!r}")
            # Otherwise another claim (or a compaction) moved the mark: read it again.
        raise BackendUnavailable(f"zookeeper: the mark {path} kept changing while we claimed")

    def _compact(self, zk: Any, entry: _Entry, directory: str, claimed: str) -> None:
        """Drop ledger nodes whose mark is older than ``LEDGER_RETENTION`` (bounded per claim).

        Lists the directory at most every ``COMPACT_EVERY`` seconds, then examines at most
        ``COMPACT_BATCH`` of the listed nodes per successful claim. Each deletion is one
        transaction with the term's check and the node's version, so only the live term
        compacts, and a mark claimed since it was read is never deleted. Failures are left to
        the next sweep: they must not fail the claim that has already succeeded.
        """
        with self._lock:
            sweep = self._sweeps.setdefault(directory, _Sweep())
            listing = not sweep.pending and time.monotonic() >= sweep.due
            if listing:
                sweep.due = time.monotonic() + COMPACT_EVERY
        try:
            if listing:
                names = self._call(zk.get_children_async(directory))
                own = claimed.rpartition("/")[2]
                names = sorted(n for n in names if n != own and _decode_name(n) is not None)
                with self._lock:
                    sweep.pending.extend(names)
            with self._lock:
                batch = sweep.pending[:COMPACT_BATCH]
                del sweep.pending[:COMPACT_BATCH]
            if not batch:
                return
            horizon = int((time.time() - LEDGER_RETENTION) * 1000)
            reads = [(f"{directory}/{n}", zk.get_async(f"{directory}/{n}")) for n in batch]
            for path, read in reads:
                try:
                    data, stat = self._call(read)
                except NoNodeError:
                    continue
                mark = _parse_mark(data)
                if mark is None or mark >= horizon:
                    continue
                check, _ = self._commit(
                    zk, [("check", (entry.path, entry.version)), ("delete", (path, stat.version))]
                )
                if isinstance(check, Exception) and not isinstance(check, RolledBackError):
                    return  # the term is over: the next leader compacts
        except (BackendError, NoNodeError):
            with self._lock:
                if listing:
                    sweep.due = 0.0  # list again on the next claim

    def ledger(self, election: str) -> dict[str, int]:
        zk = self._client(None)
        directory = self._ledger_path(election)
        try:
            names = self._call(zk.get_children_async(directory))
        except NoNodeError:
            return {}
        reads = []
        for name in names:
            job = _decode_name(name)
            if job is not None:
                reads.append((job, zk.get_async(f"{directory}/{name}")))
        marks: dict[str, int] = {}
        for job, read in reads:
            try:
                data, _stat = self._call(read)
            except NoNodeError:
                continue  # compacted since the listing
            mark = _parse_mark(data)
            if mark is not None:
                marks[job] = mark
        return marks

    # -- reads -----------------------------------------------------------------------------------

    def leader(self, election: str) -> LeaderInfo | None:
        zk = self._client(None)
        parent = self._path(election)
        for name in self._contenders(zk, parent):
            try:
                data, stat = self._call(zk.get_async(f"{parent}/{name}"))
            except NoNodeError:
                continue  # gone since the listing: the next one leads now
            return LeaderInfo((data or b"").decode("utf-8", "replace"), stat.czxid)
        return None

    def candidates(self, election: str) -> list[str] | None:
        zk = self._client(None)
        parent = self._path(election)
        identities = []
        for name in self._contenders(zk, parent):
            try:
                data, _stat = self._call(zk.get_async(f"{parent}/{name}"))
            except NoNodeError:
                continue
            identities.append((data or b"").decode("utf-8", "replace"))
        return identities

    def wait_for_change(self, election: str, timeout: float) -> None:
        seen = self._notifier.generation
        if self._closed:
            return
        zk = self._client(None)
        parent = self._path(election)
        names = self._contenders(zk, parent)
        if not names:
            return
        with self._lock:
            entry = self._entries.get(election)
            if entry is not None and (entry.ended or entry.client is not zk):
                entry = None
            if entry is None or entry.name not in names:
                target = names[0]  # the leader
            elif entry.name != names[0]:
                target = names[names.index(entry.name) - 1]  # our predecessor
                # We are campaigning: keep our place for this wait and a ttl after it.
                self._arm(entry, max(entry.expires, time.monotonic() + timeout + entry.ttl))
            elif entry.leased:
                target = entry.name  # we lead: our node going away is the change
            else:
                return  # we are first in line: acquire now
        try:
            # get, not exists: no watch is left behind on a node that is already gone.
            self._call(zk.get_async(f"{parent}/{target}", watch=self._on_watch))
        except NoNodeError:
            return
        self._notifier.wait(seen, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            zk, self._zk = self._zk, None
            for entry in list(self._entries.values()):
                self._end(entry)
        self._notifier.bump()
        self._live.set()  # wake calls waiting for a reconnection: they find the client gone
        if zk is not None:
            try:
                zk.stop()  # ends the session: the server deletes our nodes at once
                zk.close()
            except Exception:  # best effort
                pass
