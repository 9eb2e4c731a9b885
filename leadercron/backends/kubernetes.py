"""Kubernetes backend: one ``coordination.k8s.io/v1`` Lease per election, as client-go's LeaseLock.

URL and options: :class:`KubernetesBackend`. The Lease named after the election, in the URL's
namespace, is the lock. Its spec is exactly the record of client-go's ``LeaseLock``, so a Go
``LeaderElector`` sharing the Lease and leadercron replicas exclude each other:

``spec.holderIdentity``
    The holder's identity; ``""`` when released.
``spec.leaseDurationSeconds``
    ``ceil(ttl)``: Lease durations are whole seconds.
``spec.acquireTime`` / ``spec.renewTime``
    ``MicroTime``: RFC 3339 in UTC with exactly six fractional digits, as the API server demands.
``spec.leaseTransitions``
    The fencing token. leadercron adds one on *every* acquisition, client-go only when the holder
    changes; see the fencing note below.

Expiry is decided the client-go way: a candidate remembers, on its own monotonic clock, when it
last saw the record change, and may take the Lease once the record has stayed unchanged for
``leaseDurationSeconds`` since then. ``renewTime`` is never compared with the local wall clock,
so clock skew between hosts does not matter (only clock *rates* do). Every write is a ``PUT``
of the whole Lease carrying the ``metadata.resourceVersion`` that was read: the API server
answers 409 Conflict when anybody wrote in between, which makes each step compare-and-set.

The contract on Kubernetes:

``acquire``
    ``GET`` the Lease (``POST`` it when missing; 409 AlreadyExists = lost). If it has a holder
    that has not expired as observed here, lose; else ``PUT`` this candidate as holder with
    ``leaseTransitions + 1`` (409 Conflict = lost the race). An acquire whose outcome was unknown
    (a timeout) and that the next ``GET`` shows did land is adopted with its token, instead of
    waiting for it to expire.
``renew``
    ``PUT`` the Lease as this instance last wrote it (client-go's fast path) with a new
    ``renewTime``; on 409 ``GET`` it and retry while holder, token and ``acquireTime`` are still
    this term's. A term whose last successful write was sent ``leaseDurationSeconds`` ago or more
    is over for good (``None``), even if nobody has taken it.
``release``
    What client-go's ``ReleaseOnCancel`` writes: ``holderIdentity: ""``,
    ``leaseDurationSeconds: 1``, ``acquireTime = renewTime = now``, transitions unchanged, only if
    the Lease still holds this term.
``leader``
    ``GET``; the holder unless it is empty or expired as observed here. The token is reported
    only for holders that wrote leadercron's term annotation (others: ``None``).
``wait_for_change``
    A watch (``fieldSelector=metadata.name=<election>``) from the resourceVersion last seen
    (by the preceding ``acquire``; a ``GET`` when nothing was seen yet), bounded by the timeout
    and by the holder's observed expiry. Renewals only push that expiry on; a new holder, a
    release or a deletion ends the wait; 410 Expired ends it early.
``claim`` / ``ledger``
    The ledger is the annotation ``leadercron.io/ledger`` on the same Lease, JSON
    ``{"job": fire_ms}``; a claim is one ``PUT`` carrying the read resourceVersion, made only
    while the Lease holds this term, so the term check and the mark move together.

Fencing: leadercron needs a new token per term, and client-go keeps ``leaseTransitions`` when
the same identity takes the Lease again. So leadercron bumps it on every acquisition (client-go
ignores the value). Tokens strictly increase as long as the Lease object is not deleted:
deleting it restarts the counter. A term created with the Lease has token 0.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes as _kubernetes
import urllib3
from kubernetes import client as _kube_client
from kubernetes import config as _kube_config

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
from leadercron.errors import (
    BackendAuthError,
    BackendUnavailable,
    ConfigError,
    MissingExtraError,
)

__all__ = ["LEDGER_ANNOTATION", "TERM_ANNOTATION", "KubernetesBackend"]

# The client's config loaders are untyped; its ApiClient is used through ``Any`` as well.
kube_client: Any = _kube_client
kube_config: Any = _kube_config

#: Where a pod finds its own namespace (the default namespace of ``kubernetes:///``).
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: Annotation on the Lease holding the claim ledger (JSON object: job id -> fire in ms).
LEDGER_ANNOTATION = "leadercron.io/ledger"
#: Annotation on the Lease naming the leaseTransitions value of leadercron's current term.
TERM_ANNOTATION = "leadercron.io/term"

_OPTIONS = {"kubeconfig", "context", "timeout"}
_LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_LEASE = _LEASES + "/{name}"
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INT32_MAX = 2**31 - 1
_CONFLICT_TRIES = 8  # 409s while still holding come from this term's own concurrent writes


def lease_seconds(ttl: float) -> int:
    """``leaseDurationSeconds`` for ``ttl``: rounded up to whole seconds, at least 1."""
    return max(1, math.ceil(ttl))


def _now() -> str:
    """The current time as a ``MicroTime``: always six fractional digits."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_label(name: str) -> bool:
    return len(name) <= 63 and _LABEL.match(name) is not None


def _pod_namespace() -> str | None:
    try:
        namespace = Path(NAMESPACE_FILE).read_text().strip()
    except OSError:
        return None
    return namespace if _is_label(namespace) else None


@dataclass(frozen=True)
class _Record:
    """The part of a Lease that client-go's LeaderElectionRecord compares."""

    holder: str
    duration: int
    acquire_time: str
    renew_time: str
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> _Record:
        spec = lease["spec"]
        duration = spec.get("leaseDurationSeconds") or 0
        transitions = spec.get("leaseTransitions") or 0
        if not isinstance(duration, int) or not isinstance(transitions, int):
            raise BackendUnavailable("kubernetes API answered a Lease with non-integer fields")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=duration,
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=transitions,
        )


@dataclass
class _Seen:
    """What this instance last saw of an election's Lease, and since when (monotonic)."""

    record: _Record
    at: float
    version: str


@dataclass(eq=False)
class _Handle:
    """Private part of a Kubernetes lease: what identifies the term, and its last write."""

    acquire_time: str
    duration: int
    sent: float  # time.monotonic() when the term's last successful write was sent
    lease: dict[str, Any] | None  # the Lease as that write returned it (for optimistic writes)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def expired(self) -> bool:
        return time.monotonic() - self.sent >= self.duration

    def wrote(self, lease: dict[str, Any], sent: float | None = None) -> None:
        with self.lock:
            self.lease = lease
            if sent is not None:
                self.sent = max(self.sent, sent)

    def cached(self) -> dict[str, Any] | None:
        with self.lock:
            return self.lease

    def end(self) -> dict[str, Any] | None:
        with self.lock:
            lease, self.lease, self.sent = self.lease, None, -math.inf
            return lease


def _with_spec(lease: dict[str, Any], **spec: Any) -> dict[str, Any]:
    new = copy.deepcopy(lease)
    new.setdefault("apiVersion", "coordination.k8s.io/v1")
    new.setdefault("kind", "Lease")
    new["spec"] = {**new.get("spec", {}), **spec}
    return new


def _annotations(lease: dict[str, Any]) -> dict[str, str]:
    annotations = lease["metadata"].get("annotations") or {}
    return annotations if isinstance(annotations, dict) else {}


def _ledger_of(lease: dict[str, Any]) -> dict[str, int]:
    text = _annotations(lease).get(LEDGER_ANNOTATION)
    if not text:
        return {}
    try:
        ledger = json.loads(text)
    except ValueError:
        ledger = None
    if not isinstance(ledger, dict) or not all(
        isinstance(mark, int) and not isinstance(mark, bool) for mark in ledger.values()
    ):
        raise BackendUnavailable(
            f"kubernetes: the Lease's {LEDGER_ANNOTATION} annotation is not a JSON object of "
            "integers; refusing to claim until it is fixed or removed"
        )
    return {str(job): mark for job, mark in ledger.items()}


class KubernetesBackend(Backend):
    """Elections as Kubernetes Leases. See the module docstring for the mapping.

    URL: ``kubernetes://[namespace]/[?option=value&...]``

    ``namespace`` is where the Leases live (a DNS-1123 label). Without it: the kubeconfig
    context's namespace when ``kubeconfig`` is given, else the pod's own namespace (read from
    ``/var/run/secrets/kubernetes.io/serviceaccount/namespace``), else ``default``. The election
    name is the Lease name and must be a DNS-1123 subdomain (lowercase letters, digits, ``-`` and
    ``.``, at most 253 characters); other names raise ``ConfigError``.

    ==========  ==========  =====================================================================
    option      default     meaning
    ==========  ==========  =====================================================================
    kubeconfig  in-cluster  path of a kubeconfig file; without it, the pod's service account is
                            used (``KUBERNETES_SERVICE_HOST``/``_PORT``, the mounted CA and
                            token, the token re-read as the kubelet rotates it)
    context     current     the kubeconfig context to use (needs ``kubeconfig``)
    timeout     ``5s``      timeout of each request (to connect, and to wait for the answer)
    ==========  ==========  =====================================================================

    Credentials never appear in the URL: they come from the kubeconfig file or the service
    account. The backend needs ``get``, ``list``, ``watch``, ``create`` and ``update`` on
    ``leases`` (API group ``coordination.k8s.io``) in the namespace.

    A term lasts ``leaseDurationSeconds = ceil(ttl)`` after the observer saw its last write,
    i.e. from ``ttl`` up to ``ceil(ttl)`` plus one API round trip after the API server applied
    it. :meth:`validate_timing` asks for ``renew_deadline <= ceil(ttl) - 1s``: client-go
    compares ``renewTime`` to the second, so a Go candidate may notice a renewal up to a second
    late.
    """

    schemes = ("kubernetes",)
    supports_claims = True

    def __init__(
        self,
        namespace: str = "default",
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = 5.0,
        url: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout = timeout
        self.url = redact_url(url) if url else f"kubernetes://{namespace}/"
        self._lock = threading.Lock()
        self._api: Any = None
        self._closed = False
        self._seen: dict[str, _Seen] = {}
        # election -> (identity, token, acquireTime) of an acquire whose outcome is unknown
        self._pending: dict[str, tuple[str, int, str]] = {}
        self._streams: set[Any] = set()

    @classmethod
    def from_url(cls, url: str) -> KubernetesBackend:
        if not hasattr(kube_client.ApiClient, "param_serialize"):
            version = getattr(_kubernetes, "__version__", "unknown")
            raise MissingExtraError(
                f"the kubernetes:// backend needs the kubernetes client 37 or newer (installed: "
                f"{version}): pip install -U 'leadercron[kubernetes]'"
            )
        parts, options = parse_url(url, cls.schemes)
        reject_unknown_options(url, options, _OPTIONS)
        shown = redact_url(url)
        if parts.path not in ("", "/") or parts.fragment:
            raise ConfigError(
                f"backend URL {shown!r}: expected kubernetes://[namespace]/[?options], "
                "with nothing after the namespace"
            )
        namespace = parts.netloc
        if namespace and not _is_label(namespace):
            raise ConfigError(
                f"backend URL {shown!r}: {urlsplit(shown).netloc!r} is not a namespace name (a "
                "DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)"
            )
        timeout = duration_option(url, options, "timeout", "5s")
        kubeconfig = options.get("kubeconfig")
        context = options.get("context")
        if kubeconfig == "" or context == "":
            raise ConfigError(f"backend URL {shown!r}: kubeconfig= and context= need a value")
        if context is not None and kubeconfig is None:
            raise ConfigError(f"backend URL {shown!r}: context= needs kubeconfig=")
        if kubeconfig is not None:
            context_namespace = cls._check_kubeconfig(shown, kubeconfig, context)
            namespace = namespace or context_namespace or ""
        namespace = namespace or _pod_namespace() or "default"
        return cls(namespace, kubeconfig=kubeconfig, context=context, timeout=timeout, url=url)

    @staticmethod
    def _check_kubeconfig(shown: str, path: str, context: str | None) -> str | None:
        """Read the kubeconfig (no credentials are loaded); return the context's namespace."""
        if not Path(path).is_file():
            raise ConfigError(f"backend URL {shown!r}: kubeconfig {path!r} is not a file")
        try:
            contexts, current = kube_config.list_kube_config_contexts(config_file=path)
        except Exception as exc:
            raise ConfigError(f"backend URL {shown!r}: kubeconfig {path!r}: {exc}") from None
        if context is None:
            chosen = current
        else:
            chosen = next((c for c in contexts or [] if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(str(c.get("name")) for c in contexts or []) or "none"
                raise ConfigError(
                    f"backend URL {shown!r}: kubeconfig {path!r} has no context {context!r} "
                    f"(contexts: {names})"
                )
        namespace = (chosen or {}).get("context", {}).get("namespace")
        return str(namespace) if namespace else None

    def validate_timing(self, *, ttl: float, renew_deadline: float, retry_period: float) -> None:
        duration = lease_seconds(ttl)
        if duration > _INT32_MAX:
            raise ConfigError(f"kubernetes: ttl {ttl:g}s is longer than a Lease can be")
        if renew_deadline > duration - 1:
            raise ConfigError(
                f"kubernetes: renew_deadline ({renew_deadline:g}s) must be at most "
                f"leaseDurationSeconds - 1s = {duration - 1}s (ttl {ttl:g}s rounds up to "
                f"{duration}s); client-go compares renewTime to the second, so Go candidates "
                "may see a renewal up to 1s late"
            )

    # -- requests ------------------------------------------------------------------------------

    def _client(self) -> Any:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("kubernetes backend is closed")
            if self._api is None:
                configuration = kube_client.Configuration()
                try:
                    if self.kubeconfig is None:
                        kube_config.load_incluster_config(client_configuration=configuration)
                    else:
                        kube_config.load_kube_config(
                            config_file=self.kubeconfig,
                            context=self.context,
                            client_configuration=configuration,
                            persist_config=False,
                        )
                except Exception as exc:
                    where = (
                        f"kubeconfig {self.kubeconfig!r}"
                        if self.kubeconfig
                        else "the in-cluster service account (not in a pod? use kubeconfig=)"
                    )
                    raise BackendUnavailable(f"kubernetes: cannot load {where}: {exc}") from exc
                # No automatic retries: an unknown outcome must surface as BackendUnavailable.
                configuration.retries = False
                self._api = kube_client.ApiClient(configuration)
            return self._api

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> tuple[int, Any]:
        """One API request. Returns the status and the decoded answer for 2xx, 404, 409 and 410
        (for a streamed 200, the open urllib3 response); raises for everything else."""
        api = self._client()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            request = api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                collection_formats={},
            )
            answer = api.call_api(*request, _request_timeout=(self.timeout, self.timeout))
            status = int(answer.status)
            if stream and status == 200:
                return status, answer.response
            data = answer.read()
        except Exception as exc:  # urllib3, socket and client errors alike: outcome unknown
            raise BackendUnavailable(f"kubernetes API: {method} {path}: {exc}") from exc
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            decoded = None
        if status in (200, 201, 404, 409, 410):
            if status < 300 and not isinstance(decoded, dict):
                raise BackendUnavailable(f"kubernetes API: {method} {path}: answered non-JSON")
            return status, decoded
        message = decoded.get("message") if isinstance(decoded, dict) else None
        detail = f"{status} {message or answer.reason}"
        if status == 401:
            raise BackendAuthError(f"kubernetes API rejected the credentials: {detail}")
        if status == 403:
            raise BackendAuthError(
                f"kubernetes API forbids it: {detail} (needs get, list, watch, create and update "
                f"on leases.coordination.k8s.io in namespace {self.namespace})"
            )
        raise BackendUnavailable(f"kubernetes API: {method} {path}: {detail}")

    def validate_election(self, election: str) -> None:
        self._path(election)

    def _path(self, election: str) -> str:
        if len(election) > 253 or not _SUBDOMAIN.match(election):
            raise ConfigError(
                f"kubernetes: election name {election!r} cannot name a Lease (a DNS-1123 "
                "subdomain: lowercase letters, digits, '-' and '.', at most 253 characters)"
            )
        return _LEASE.format(namespace=self.namespace, name=election)

    @staticmethod
    def _checked(lease: Any) -> dict[str, Any]:
        if (
            not isinstance(lease, dict)
            or not isinstance(lease.get("metadata"), dict)
            or not isinstance(lease.get("spec", {}), dict)
        ):
            raise BackendUnavailable("kubernetes API answered something that is not a Lease")
        lease.setdefault("spec", {})
        return lease

    def _get(self, election: str) -> dict[str, Any] | None:
        status, lease = self._call("GET", self._path(election))
        return None if status == 404 else self._checked(lease)

    def _write(self, election: str, lease: dict[str, Any], create: bool) -> dict[str, Any] | None:
        """``POST`` or ``PUT`` the Lease; ``None`` when the API server said 404 or 409."""
        if create:
            status, written = self._call(
                "POST", _LEASES.format(namespace=self.namespace), body=lease
            )
        else:
            status, written = self._call("PUT", self._path(election), body=lease)
        if status in (404, 409, 410):
            return None
        return self._checked(written)

    # -- what this instance observed -----------------------------------------------------------

    def _observe(self, election: str, lease: dict[str, Any], at: float | None = None) -> _Record:
        """Remember the record and when it was first seen (or, for our own write, sent)."""
        record = _Record.of(lease)
        version = str(lease["metadata"].get("resourceVersion") or "")
        with self._lock:
            seen = self._seen.get(election)
            if at is not None or seen is None or seen.record != record:
                self._seen[election] = _Seen(
                    record, time.monotonic() if at is None else at, version
                )
            elif version:
                seen.version = version  # e.g. a claim: the record, and so its age, is unchanged
        return record

    def _expiry(self, election: str) -> float | None:
        """When the observed holder expires on our clock; ``None`` when there is no holder."""
        with self._lock:
            seen = self._seen.get(election)
        if seen is None or not seen.record.holder:
            return None
        return seen.at + seen.record.duration

    def _live_holder(self, election: str) -> bool:
        expiry = self._expiry(election)
        return expiry is not None and time.monotonic() < expiry

    @staticmethod
    def _handle(lease: Lease) -> _Handle:
        handle = lease.handle
        assert isinstance(handle, _Handle), "a lease from another backend"
        return handle

    @staticmethod
    def _holds(current: dict[str, Any], lease: Lease, handle: _Handle) -> bool:
        record = _Record.of(current)
        return (
            record.holder == lease.identity
            and record.transitions == lease.token
            and record.acquire_time == handle.acquire_time
        )

    # -- the contract --------------------------------------------------------------------------

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        duration = lease_seconds(ttl)
        current = self._get(election)
        now = _now()
        spec = {
            "holderIdentity": identity,
            "leaseDurationSeconds": duration,
            "acquireTime": now,
            "renewTime": now,
        }
        if current is None:
            token = 0
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": election, "namespace": self.namespace},
                "spec": {**spec, "leaseTransitions": token},
            }
        else:
            record = self._observe(election, current)
            with self._lock:
                pending = self._pending.get(election)
            # Our own earlier attempt that timed out but landed: adopt it, nobody else holds it.
            adopt = record.holder == identity and pending == (
                identity,
                record.transitions,
                record.acquire_time,
            )
            if record.holder and not adopt and self._live_holder(election):
                return None
            token = record.transitions if adopt else record.transitions + 1
            if token > _INT32_MAX:
                raise BackendUnavailable(f"kubernetes: leaseTransitions of {election} overflows")
            body = _with_spec(current, **spec, leaseTransitions=token)
        body["metadata"]["annotations"] = {**_annotations(body), TERM_ANNOTATION: str(token)}
        with self._lock:
            self._pending[election] = (identity, token, now)
        sent = time.monotonic()
        written = self._write(election, body, create=current is None)
        with self._lock:
            self._pending.pop(election, None)
        if written is None:
            return None  # 409: another candidate wrote first
        self._observe(election, written, at=sent)
        handle = _Handle(acquire_time=now, duration=duration, sent=sent, lease=written)
        return Lease(election, identity, token, float(duration), handle=handle)

    def _update(
        self, lease: Lease, change: Callable[[dict[str, Any]], dict[str, Any] | bool]
    ) -> bool | None:
        """Compare-and-set loop on this term: ``change(current)`` returns the new Lease, or a
        bool to stop with. Starts from our last write (client-go's optimistic fast path) and
        re-reads after a 409. Returns ``None`` when the term is over."""
        handle = self._handle(lease)
        current = handle.cached()
        for _ in range(_CONFLICT_TRIES):
            if current is None:
                current = self._get(lease.election)
            if current is None or not self._holds(current, lease, handle):
                return None
            new = change(current)
            if isinstance(new, bool):
                return new
            sent = time.monotonic()
            written = self._write(lease.election, new, create=False)
            if written is not None:
                handle.wrote(written, sent if new["spec"] != current["spec"] else None)
                if new["spec"] != current["spec"]:
                    self._observe(lease.election, written, at=sent)
                return True
            current = None
        raise BackendUnavailable(
            f"kubernetes: writes to Lease {lease.election} kept conflicting "
            f"({_CONFLICT_TRIES} tries)"
        )

    def renew(self, lease: Lease) -> Lease | None:
        handle = self._handle(lease)

        def renewed(current: dict[str, Any]) -> dict[str, Any] | bool:
            if handle.expired():
                return False  # never resurrect a term that may have been seen expiring
            return _with_spec(current, renewTime=_now(), leaseDurationSeconds=handle.duration)

        if handle.expired():
            return None
        return lease if self._update(lease, renewed) else None

    def release(self, lease: Lease) -> None:
        handle = self._handle(lease)
        last = handle.end()  # claims and renewals of this term stop here, whatever happens next
        released = _Handle(handle.acquire_time, handle.duration, -math.inf, last)

        def cleared(current: dict[str, Any]) -> dict[str, Any]:
            now = _now()
            return _with_spec(
                current, holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now
            )

        self._update(
            Lease(lease.election, lease.identity, lease.token, lease.ttl, released), cleared
        )

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        handle = self._handle(lease)

        def marked(current: dict[str, Any]) -> dict[str, Any] | bool:
            if handle.expired():
                return False
            ledger = _ledger_of(current)
            if fire <= ledger.get(job_id, -1):
                return False
            ledger[job_id] = fire
            horizon = (time.time() - LEDGER_RETENTION) * 1000
            ledger = {job: mark for job, mark in ledger.items() if mark >= horizon}
            new = copy.deepcopy(current)
            new["metadata"]["annotations"] = {
                **_annotations(current),
                LEDGER_ANNOTATION: json.dumps(ledger, sort_keys=True, separators=(",", ":")),
            }
            return new

        if handle.expired():
            return False
        return bool(self._update(lease, marked))

    def ledger(self, election: str) -> dict[str, int]:
        current = self._get(election)
        return {} if current is None else _ledger_of(current)

    def leader(self, election: str) -> LeaderInfo | None:
        current = self._get(election)
        if current is None:
            return None
        record = self._observe(election, current)
        if not record.holder or not self._live_holder(election):
            return None
        ours = _annotations(current).get(TERM_ANNOTATION) == str(record.transitions)
        return LeaderInfo(record.holder, record.transitions if ours else None)

    def wait_for_change(self, election: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if self._closed:
            return
        with self._lock:
            seen = self._seen.get(election)
        if seen is None:
            current = self._get(election)
            if current is None:
                return
            self._observe(election, current)
            with self._lock:
                seen = self._seen[election]
        # Watching from the version last seen (usually by acquire) misses nothing since then.
        holder, version = seen.record.holder, seen.version
        while not self._closed:
            end = self._wait_end(election, deadline)
            if end is None or time.monotonic() >= end:
                return
            changed, version = self._watch(election, holder, version, deadline)
            if changed:
                return

    def _wait_end(self, election: str, deadline: float) -> float | None:
        """When a wait must return: the deadline or the holder's observed expiry, or ``None``
        when there is no holder to wait for."""
        expiry = self._expiry(election)
        return None if expiry is None else min(deadline, expiry)

    def _watch(self, election: str, holder: str, version: str, deadline: float) -> tuple[bool, str]:
        """Watch the Lease from ``version`` until the holder changes (``True``) or the wait's
        end passes or the server ends the watch (``False``). Returns the last resourceVersion."""
        until = self._wait_end(election, deadline)
        remaining = 0.0 if until is None else until - time.monotonic()
        if until is None or remaining <= 0:
            return False, version
        query = [
            ("watch", "true"),
            ("fieldSelector", f"metadata.name={election}"),
            ("timeoutSeconds", str(max(1, math.ceil(remaining)))),
            ("allowWatchBookmarks", "true"),
        ]
        if version:
            query.append(("resourceVersion", version))
        # The API server answers a watch's headers at once: that is bounded by ``timeout``;
        # the events then get until the wait's end.
        status, response = self._call(
            "GET", _LEASES.format(namespace=self.namespace), query=query, stream=True
        )
        if status != 200:
            return True, ""  # 410 Gone and the like: let the caller look again
        with self._lock:
            if self._closed:
                _shutdown(response)
            self._streams.add(response)
        _set_read_timeout(response, max(0.01, until - time.monotonic()) + 0.01)
        try:
            for event in _events(response):
                kind = event.get("type")
                obj = event.get("object")
                if kind == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    if code == 410:
                        return True, ""  # our version is too old: the caller re-reads
                    raise BackendUnavailable(f"kubernetes watch of {election} failed: {obj}")
                obj = self._checked(obj)
                version = str(obj["metadata"].get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED" or self._observe(election, obj).holder != holder:
                    return True, version
                # A renewal: the holder's expiry moved on. Read on until the new end.
                end = self._wait_end(election, deadline)
                remaining = 0.0 if end is None else end - time.monotonic()
                if remaining <= 0:
                    return False, version
                _set_read_timeout(response, remaining + 0.01)
        except BackendUnavailable:
            raise
        except urllib3.exceptions.ReadTimeoutError:
            return False, version
        except Exception as exc:
            if self._closed:
                return True, version
            raise BackendUnavailable(f"kubernetes watch of {election} broke: {exc}") from exc
        finally:
            with self._lock:
                self._streams.discard(response)
            response.close()
        return self._closed, version

    def close(self) -> None:
        with self._lock:
            self._closed = True
            streams, self._streams = list(self._streams), set()
            api, self._api = self._api, None
        for response in streams:
            _shutdown(response)
        if api is not None:
            with contextlib.suppress(Exception):
                api.close()


def _events(response: Any) -> Iterator[dict[str, Any]]:
    """The watch events of a streamed answer: one JSON object per line."""
    buffer = b""
    for chunk in response.stream(None):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError(f"not a watch event: {line[:200]!r}")
                yield event


def _socket(response: Any) -> Any:
    return getattr(getattr(response, "connection", None), "sock", None)


def _set_read_timeout(response: Any, seconds: float) -> None:
    """Bound the next reads of a streamed answer (urllib3 fixes the timeout per request)."""
    sock = _socket(response)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(seconds)


def _shutdown(response: Any) -> None:
    """Cut a streamed answer from another thread: its reader sees the end at once."""
    try:
        response.shutdown()
    except Exception:
        sock = _socket(response)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
