"""The backend contract.

Every election backend implements :class:`Backend`. The semantics are defined here, once; a
backend's own docstring only states its URL grammar, its options and how it maps the contract
onto its server.

Words used below:

``election``
    The name of one election (one lock). Replicas that share the backend URL and the election
    name compete for the same leadership.
``term``
    One uninterrupted leadership of one holder, from a successful :meth:`Backend.acquire` until
    the lease is released, expires, or is taken over. Re-acquiring after a loss starts a new term.
``fencing token``
    An integer attached to a term. It strictly increases with every new term of an election, on
    the backend's own authority (a revision, a sequence number, a counter kept by the backend),
    never from a local clock. Downstream systems may reject writes tagged with an older token.

Outcomes are kept apart on purpose: losing a race is a *return value* (``None``), and a backend
that cannot be reached or does not answer raises :class:`~leadercron.errors.BackendUnavailable`
(or a subclass). Nothing else may escape from these methods; a backend translates its client
library's exceptions.

Threading: one :class:`Backend` instance serves one candidate (one replica). The elector calls
``acquire``, ``renew``, ``release`` and ``wait_for_change`` from its own worker threads and may
abandon a call that hangs past its deadline and issue the next one while the first is still in
flight, so implementations must be thread-safe. ``leader`` and ``candidates`` may be called from
any thread at any time.

Time: the elector keeps leadership as a *local* expiry on a monotonic clock, measured from the
moment it *sent* the acquire/renew request, and stops dispatching at ``renew_deadline`` after it,
well before the backend's ``ttl`` runs out. A backend therefore must make the lease last at least
``ttl`` seconds after it received the request, and at most a bounded amount more (state the bound
in the backend's docstring when it is not ``ttl``).
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qs, urlsplit, urlunsplit

from leadercron.durations import parse_duration
from leadercron.errors import ConfigError

__all__ = [
    "LEDGER_RETENTION",
    "Backend",
    "LeaderInfo",
    "Lease",
    "duration_option",
    "parse_hosts",
    "parse_url",
    "redact_url",
]

#: Seconds a backend keeps a job's claim mark at least (7 days); see :meth:`Backend.claim`.
LEDGER_RETENTION = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Lease:
    """A term held by this candidate, as granted by the backend.

    ``token`` is the term's fencing token. ``ttl`` is the lifetime the backend granted, in
    seconds (it may round the requested ttl up, never down). ``handle`` is private to the backend
    that made the lease (a lease id, a session, a revision); callers pass the lease back unchanged.
    """

    election: str
    identity: str
    token: int
    ttl: float
    handle: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LeaderInfo:
    """Who holds an election right now, as the backend sees it.

    ``token`` is ``None`` when the holder is a foreign client that keeps no fencing token (for
    instance ``consul lock`` or a redis-py ``Lock`` sharing the election).
    """

    identity: str
    token: int | None = None


class Backend(ABC):
    """The election backend contract. See the module docstring for the vocabulary.

    Subclasses set :attr:`schemes` and implement :meth:`from_url` plus the abstract methods.
    Constructing a backend must not contact the server: connections are made lazily by the first
    call, so that configuration can be checked offline and an unreachable server at start-up is
    an ordinary :class:`~leadercron.errors.BackendUnavailable` that the elector retries.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    """URL schemes this class serves, e.g. ``("redis", "rediss")``."""

    #: Whether :meth:`wait_for_change` wakes on a crashed holder before its lease expires
    #: (for example through an ephemeral node or a lock released by the kernel).
    detects_crash: ClassVar[bool] = False

    url: str = ""
    """The URL this backend was made from, with any password replaced by ``***``."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Backend:
        """Make a backend from its URL; options come from the query string.

        Raises :class:`~leadercron.errors.ConfigError` with a one-line message for a malformed
        URL, an unknown option or a bad option value. Must not contact the server.
        """

    @abstractmethod
    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        """Campaign once: become the holder of ``election`` if nobody holds it.

        Atomic acquire-if-absent: in one step on the server, if the election has no live holder,
        make ``identity`` its holder with a lease of ``ttl`` seconds and a new fencing token
        greater than every token the election has ever had, and return the :class:`Lease`.
        If another live holder exists, change nothing that would disturb it and return ``None``.

        Queue-based backends (a candidate's entry under a prefix, lowest entry leads) may create
        this candidate's entry on the first call and keep it between calls, so that the candidate
        keeps its place in line; they return a lease once the entry is first in line. Such an
        entry must vanish when this candidate's process dies or its session expires.

        Must not be called while this instance holds a live lease for ``election``.
        Raises ``BackendUnavailable`` when the outcome is unknown; the backend must then make sure
        that a lease it may have created in the meantime expires within ``ttl``.
        """

    @abstractmethod
    def renew(self, lease: Lease) -> Lease | None:
        """Extend a term: compare-and-set on the term's identity in the backend.

        If ``lease`` is still the live term (same holder *and* same token/handle), extend it to
        ``lease.ttl`` seconds from now and return the renewed lease (same ``token``). If the term
        is over — released, expired, or taken by anyone — return ``None`` and change nothing. An
        expired term is never resurrected, even if nobody has taken it since: a new term needs
        :meth:`acquire` and a new token.

        Raises ``BackendUnavailable`` when the outcome is unknown; the caller then treats the
        lease as valid only until its own local deadline.
        """

    @abstractmethod
    def release(self, lease: Lease) -> None:
        """End a term at once: compare-and-delete.

        Removes the holder record only if it still belongs to ``lease`` (same holder and token),
        so that a late release never deletes a successor's term. Idempotent: releasing a term
        that is already over is not an error. Waiters blocked in :meth:`wait_for_change` must be
        woken by it (that is what makes a graceful handover immediate). Queue-based backends also
        remove this candidate's queue entry.

        Raises ``BackendUnavailable`` if the backend cannot be reached; the lease then expires by
        itself after its ttl.
        """

    @abstractmethod
    def leader(self, election: str) -> LeaderInfo | None:
        """Return the current holder of ``election``, or ``None`` if nobody holds it.

        A read, with no side effect. Raises ``BackendUnavailable`` when it cannot tell.
        """

    @abstractmethod
    def wait_for_change(self, election: str, timeout: float) -> None:
        """Block until the holder of ``election`` may have changed, or ``timeout`` seconds pass.

        Driven by the backend's own notifications (a watch, a blocking query, pub/sub, a kernel
        lock), never by periodic polling. Returns early when the holder (or, for queue-based
        backends, this candidate's predecessor) is released, expires, or is replaced; when the
        holder may vanish silently by expiry, it returns by that expiry at the latest. Spurious
        early returns are allowed: the caller always re-checks with :meth:`acquire`. Must return
        promptly when :meth:`close` is called from another thread.

        Raises ``BackendUnavailable`` if the backend cannot be reached.
        """

    def validate_timing(  # noqa: B027 - optional hook, accepting by default
        self, *, ttl: float, renew_deadline: float, retry_period: float
    ) -> None:
        """Reject timing the backend cannot honour, with a one-line ``ConfigError``.

        Called when the configuration loads, after the general check
        ``ttl > renew_deadline > retry_period``. For instance a backend whose server rounds leases
        up to whole seconds, or has a minimum session TTL, says here which ``ttl`` it needs.
        The default accepts everything.
        """

    def validate_election(self, election: str) -> None:  # noqa: B027 - optional hook
        """Reject an election name the backend cannot use, with a one-line ``ConfigError``.

        Called when the configuration loads. The default accepts every name.
        """

    def set_alarm(self, callback: Callable[[str], None] | None) -> None:
        """Register the callback the backend calls when a held lease may have become invalid.

        A backend that learns *before the next renew* that its lease is in doubt (a connection
        suspended, a session lost, a lease revoked, a watch on its own key firing) calls
        ``callback(reason)`` from any thread, at once. The callback never blocks. The elector
        then stops dispatching immediately and confirms with :meth:`renew`: a renew that succeeds
        lifts the doubt; otherwise the term ends at the renew deadline or on a ``None``.
        """
        self._alarm_callback = callback

    def _alarm(self, reason: str) -> None:
        """Call the registered alarm callback, if any (for subclasses)."""
        callback = getattr(self, "_alarm_callback", None)
        if callback is not None:
            callback(reason)

    #: Whether a term also ends by ``ttl`` expiry when its holder stops renewing. ``False`` for
    #: backends whose terms live exactly as long as the holder's session (PostgreSQL advisory
    #: locks): a holder that hangs but stays connected keeps its term. Say so in the docs.
    supports_expiry: ClassVar[bool] = True

    #: Whether this backend implements :meth:`claim` and :meth:`ledger`.
    supports_claims: ClassVar[bool] = False

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        """Claim one fire of a job, atomically with a check that ``lease`` is the live term.

        ``fire`` is the fire's scheduled time in whole milliseconds since the Unix epoch. In one
        atomic step on the server: if ``lease`` is still the live term *and* ``fire`` is greater
        than the job's mark (the greatest fire ever claimed for ``job_id`` in this election, by
        any term), set the mark to ``fire`` and return ``True``; otherwise change nothing and
        return ``False``. A job's fire times strictly increase, so the mark alone makes every
        fire start at most once across all replicas and terms — even when a deposed leader that
        does not know it yet tries to claim — and the ledger keeps one entry per job.

        A backend may drop a job's entry once its mark is older than :data:`LEDGER_RETENTION`
        seconds; callers never claim a fire that old. Raises ``BackendUnavailable`` when the
        outcome is unknown (the caller then skips the run).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support claims")

    def ledger(self, election: str) -> dict[str, int]:
        """Every job's mark in ``election`` (job id → fire in ms since the epoch).

        A read, with no side effect. Raises ``BackendUnavailable`` when it cannot tell.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support claims")

    def candidates(self, election: str) -> list[str] | None:
        """Identities campaigning for ``election``, leader first, or ``None`` if unknown.

        Only queue-based backends can list waiting candidates; the default says ``None``.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook with a sensible default
        """Close connections and wake pending waits. Idempotent.

        A lease still held is abandoned: it ends when the backend expires it, or at once where
        the backend ties it to the connection or session. Call :meth:`release` first for an
        immediate, orderly handover.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


# -- helpers shared by backend implementations -------------------------------------------------


def parse_url(url: str, schemes: tuple[str, ...]) -> tuple[SplitResult, dict[str, str]]:
    """Split ``url`` and its query; reject repeated options and schemes not in ``schemes``.

    Returns the split URL and a dict of options (one value each).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced [ipv6] bracket
        raise ConfigError(f"backend URL {redact_url(url)!r} is malformed: {exc}") from None
    if parts.scheme not in schemes:
        expected = " or ".join(schemes)
        raise ConfigError(f"backend URL {redact_url(url)!r}: expected scheme {expected}")
    raw = parse_qs(parts.query, keep_blank_values=True)
    options: dict[str, str] = {}
    for key, values in raw.items():
        if len(values) != 1:
            raise ConfigError(f"backend URL {redact_url(url)!r}: option {key!r} given twice")
        options[key] = values[0]
    return parts, options


_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]/,@]+))(?::(?P<port>\d{1,5}))?")


def parse_hosts(url: str, hostlist: str, default_port: int) -> list[tuple[str, int]]:
    """Split ``h1[:p1],[v6]:p2`` into ``(host, port)`` pairs, with ``default_port`` filled in.

    An IPv6 address comes back without its brackets. Raises a one-line :class:`ConfigError`
    naming the first bad item (empty, malformed, or a port outside 1-65535).
    """
    hosts = []
    for item in hostlist.split(","):
        match = _HOST.fullmatch(item)
        port = int(match.group("port") or default_port) if match else 0
        if match is None or not 0 < port < 65536:
            raise ConfigError(
                f"backend URL {redact_url(url)!r}: bad host {item!r} (expected host[:port], "
                f"e.g. 127.0.0.1:{default_port})"
            )
        hosts.append((match.group("v6") or match.group("name"), port))
    return hosts


def duration_option(
    url: str, options: dict[str, str], name: str, default: str, *, positive: bool = True
) -> float:
    """The duration option ``name`` (``default`` when absent) in seconds.

    Raises a one-line :class:`ConfigError` when it is not a duration, or (``positive``) not
    greater than zero.
    """
    try:
        seconds = parse_duration(options.get(name, default))
    except ValueError as exc:
        raise ConfigError(f"backend URL {redact_url(url)!r}: {name}: {exc}") from None
    if positive and seconds <= 0:
        raise ConfigError(f"backend URL {redact_url(url)!r}: {name} must be greater than 0s")
    return seconds


def reject_unknown_options(url: str, options: dict[str, str], known: set[str]) -> None:
    """Raise :class:`ConfigError` naming the first option not in ``known``."""
    for key in options:
        if key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"backend URL {redact_url(url)!r}: unknown option {key!r} (known: {allowed})"
            )


def redact_url(url: str) -> str:
    """Return ``url`` with the password (and any ``token``/``password`` option) masked.

    A URL too malformed to split has everything between ``://`` and the last ``@`` masked.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        _userinfo, at, tail = rest.rpartition("@")
        return f"{scheme}{sep}***@{tail}" if at else url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    query = parts.query
    if query:
        masked = []
        for item in query.split("&"):
            key, sep, _value = item.partition("=")
            lowered = key.lower()
            secret = "password" in lowered or "token" in lowered or "secret" in lowered
            masked.append(f"{key}{sep}***" if secret and sep else item)
        query = "&".join(masked)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Notifier:
    """A generation counter with a condition: the in-process building block for waits.

    ``bump()`` wakes every waiter; ``wait(seen, timeout)`` returns once the generation differs
    from ``seen`` or the timeout passes. Backends use it to turn their notifications (and
    :meth:`Backend.close`) into prompt wake-ups.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait until the generation is not ``seen``; return whether it changed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation != seen, timeout=max(0.0, timeout))
