"""An in-repo fake Kubernetes API server for ``coordination.k8s.io/v1`` Leases.

No Kubernetes API server can run on the test machines (no kube-apiserver, k3s, kind, kwok or
envtest), so the kubernetes backend is tested against this one, through the real ``kubernetes``
Python client: the backend cannot tell it from an API server as far as Leases go.

    python -m tests.servers.fake_kube --port P [--token T] [--data FILE] [--tls-cert C --tls-key K]

What it models, for ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases``:

* ``GET .../leases/{name}``, ``POST .../leases`` (409 ``AlreadyExists``), ``PUT .../leases/{name}``
  (optimistic concurrency: ``metadata.resourceVersion`` is required, 409 ``Conflict`` when it is
  not the stored one; 404 when the Lease does not exist), ``DELETE .../leases/{name}`` (with
  optional ``preconditions``).
* ``GET .../leases`` lists (a ``LeaseList`` with the store's resourceVersion) and, with
  ``watch=true``, streams ``ADDED``/``MODIFIED``/``DELETED`` events as chunked JSON lines, from
  ``resourceVersion`` on (without one, or with ``0``: synthetic ``ADDED`` events of the current
  state first), filtered by ``fieldSelector=metadata.name=X``, ended after ``timeoutSeconds``.
  A resourceVersion older than the kept event history gets an ``ERROR`` event with a 410
  ``Expired`` Status, like a compacted etcd.
* One resourceVersion counter for the whole store, strictly increasing with every write, as
  etcd's revision is. The store is saved to ``--data`` after every write, so a restart keeps the
  Leases and the counter (but not the event history).
* Validation like the API server's: ``MicroTime`` fields must be RFC 3339 with exactly six
  fractional digits and integers must be integers (400 ``BadRequest``, a decode error);
  ``leaseDurationSeconds > 0``, ``leaseTransitions >= 0``, DNS-1123 names, annotations of at
  most 256 KiB and a resourceVersion on updates (422 ``Invalid``); the object's name and
  namespace must match the URL (400). Unknown fields are dropped, as the API server does.
* Errors are ``Status`` objects. With ``--token`` every request needs
  ``Authorization: Bearer <token>``, the scheme in any case (401 ``Unauthorized`` otherwise). With ``--tls-cert`` and
  ``--tls-key`` it serves HTTPS only.

What it does not model: other resources and API groups, discovery, PATCH (405), server-side
apply and managedFields, label selectors (400), RBAC (any valid token may do anything), admission,
watch bookmarks, ``resourceVersionMatch``, pagination, HTTP/2, and the API server's own request
timeouts and priority-and-fairness throttling (429).

``GET /fake/stats`` answers request counters (``"METHOD status"`` and ``"WATCH"``) for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from tests.servers.base import Server, TLSFiles, free_port

API_VERSION = "coordination.k8s.io/v1"
_COLLECTION = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/]+))?/?$"
)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_SPEC_FIELDS = {
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
    "preferredHolder",
    "strategy",
}
_META_FIELDS = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
}
_ANNOTATIONS_LIMIT = 256 * 1024
_INT32 = (-(2**31), 2**31 - 1)


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.name = name

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": str(self),
            "reason": self.reason,
            "code": self.code,
        }
        if self.name is not None:
            body["details"] = {"name": self.name, "group": "coordination.k8s.io", "kind": "leases"}
        return body


def _not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found', name)


def _invalid(name: str, detail: str) -> ApiError:
    return ApiError(
        422, "Invalid", f'Lease.coordination.k8s.io "{name}" is invalid: {detail}', name
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    version: int
    type: str
    namespace: str
    name: str
    object: dict[str, Any]


class Store:
    """Leases, the resourceVersion counter and the recent event history, under one condition."""

    def __init__(self, data: Path | None, history: int) -> None:
        self.cond = threading.Condition()
        self.data = data
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 1000
        self.events: deque[Event] = deque(maxlen=history)
        self.stats: Counter[str] = Counter()
        if data is not None and data.exists():
            saved = json.loads(data.read_text())
            self.version = int(saved["version"])
            for obj in saved["objects"]:
                meta = obj["metadata"]
                self.objects[(meta["namespace"], meta["name"])] = obj
        # Events up to this version are gone: older watches get 410 Expired.
        self.compacted = self.version

    def _save(self) -> None:
        if self.data is None:
            return
        tmp = self.data.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"version": self.version, "objects": list(self.objects.values())})
        )
        os.replace(tmp, self.data)

    def _commit(self, kind: str, ns: str, name: str, obj: dict[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.compacted = self.events[0].version
        self.events.append(Event(self.version, kind, ns, name, obj))
        self._save()
        self.cond.notify_all()

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def get(self, ns: str, name: str) -> dict[str, Any]:
        with self.cond:
            obj = self.objects.get((ns, name))
            if obj is None:
                raise _not_found(name)
            return obj

    def list(self, ns: str, name: str | None) -> tuple[list[dict[str, Any]], int]:
        with self.cond:
            items = [
                obj
                for (o_ns, o_name), obj in sorted(self.objects.items())
                if o_ns == ns and (name is None or o_name == name)
            ]
            return items, self.version

    def create(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = clean(body, ns, url_name=None)
        name = obj["metadata"]["name"]
        if body.get("metadata", {}).get("resourceVersion"):
            raise ApiError(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        with self.cond:
            if (ns, name) in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'leases.coordination.k8s.io "{name}" already exists',
                    name,
                )
            meta = obj["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now_rfc3339()
            meta["resourceVersion"] = self._next_version()
            self.objects[(ns, name)] = obj
            self._commit("ADDED", ns, name, obj)
            return obj

    def replace(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = clean(body, ns, url_name=name)
        wanted = str(body.get("metadata", {}).get("resourceVersion") or "")
        if not wanted:
            raise _invalid(
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
        if not wanted.isdigit():
            raise _bad_request(f"invalid resource version {wanted!r}")
        with self.cond:
            current = self.objects.get((ns, name))
            if current is None:
                raise _not_found(name)
            if current["metadata"]["resourceVersion"] != wanted:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the '
                    "object has been modified; please apply your changes to the latest version "
                    "and try again",
                    name,
                )
            meta = obj["metadata"]
            meta["uid"] = current["metadata"]["uid"]
            meta["creationTimestamp"] = current["metadata"]["creationTimestamp"]
            meta["resourceVersion"] = self._next_version()
            self.objects[(ns, name)] = obj
            self._commit("MODIFIED", ns, name, obj)
            return obj

    def delete(self, ns: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
        pre = options.get("preconditions") or {}
        with self.cond:
            current = self.objects.get((ns, name))
            if current is None:
                raise _not_found(name)
            meta = current["metadata"]
            for key in ("resourceVersion", "uid"):
                if pre.get(key) and pre[key] != meta[key]:
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": '
                        f"Precondition failed: {key}: {pre[key]}, {key} in object meta: "
                        f"{meta[key]}",
                        name,
                    )
            del self.objects[(ns, name)]
            gone = json.loads(json.dumps(current))
            gone["metadata"]["resourceVersion"] = self._next_version()
            self._commit("DELETED", ns, name, gone)
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": "coordination.k8s.io",
                    "kind": "leases",
                    "uid": meta["uid"],
                },
            }


def _int_field(name: str, path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_request(
            f'Lease in version "v1" cannot be handled as a Lease: {path}: expected an integer, '
            f"got {json.dumps(value)}"
        )
    if not _INT32[0] <= value <= _INT32[1]:
        raise _bad_request(
            f'Lease in version "v1" cannot be handled as a Lease: {path}: '
            f"value {value} overflows int32"
        )
    return value


def clean(body: Any, ns: str, url_name: str | None) -> dict[str, Any]:
    """Decode and validate a Lease the way the API server would; drop unknown fields."""
    if not isinstance(body, dict):
        raise _bad_request("the body of the request was in an unknown format")
    if body.get("kind", "Lease") != "Lease" or body.get("apiVersion", API_VERSION) != API_VERSION:
        raise _bad_request(
            f"the API version in the data ({body.get('apiVersion')}) does not match the expected "
            f"API version ({API_VERSION}) or the kind ({body.get('kind')}) is not Lease"
        )
    meta_in = body.get("metadata") or {}
    spec_in = body.get("spec") or {}
    if not isinstance(meta_in, dict) or not isinstance(spec_in, dict):
        raise _bad_request(
            'Lease in version "v1" cannot be handled as a Lease: bad metadata or spec'
        )
    name = meta_in.get("name") or ""
    if url_name is not None and name != url_name:
        raise _bad_request(
            f"the name of the object ({name}) does not match the name on the URL ({url_name})"
        )
    if meta_in.get("namespace") not in (None, "", ns):
        raise _bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    if not name:
        raise _invalid("", "metadata.name: Required value: name or generateName is required")
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise _invalid(
            name,
            f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 '
            "subdomain must consist of lower case alphanumeric characters, '-' "
            "or '.'",
        )
    meta = {k: v for k, v in meta_in.items() if k in _META_FIELDS and v is not None}
    meta["name"] = name
    meta["namespace"] = ns
    for key in ("labels", "annotations"):
        values = meta.get(key)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise _bad_request(
                f'Lease in version "v1" cannot be handled as a Lease: '
                f"metadata.{key}: expected a map of strings"
            )
    annotations = meta.get("annotations") or {}
    size = sum(len(k) + len(v) for k, v in annotations.items())
    if size > _ANNOTATIONS_LIMIT:
        raise _invalid(
            name, f"metadata.annotations: Too long: must have at most {_ANNOTATIONS_LIMIT} bytes"
        )
    spec: dict[str, Any] = {}
    for key, value in spec_in.items():
        if key not in _SPEC_FIELDS or value is None:
            continue
        if key in ("leaseDurationSeconds", "leaseTransitions"):
            _int_field(name, f"spec.{key}", value)
        elif key in ("acquireTime", "renewTime"):
            if not isinstance(value, str) or not _MICRO_TIME.match(value):
                raise _bad_request(
                    f'Lease in version "v1" cannot be handled as a Lease: spec.{key}: parsing '
                    f'time {json.dumps(value)} as "2006-01-02T15:04:05.000000Z07:00": cannot '
                    "parse"
                )
        elif not isinstance(value, str):
            raise _bad_request(
                f'Lease in version "v1" cannot be handled as a Lease: spec.{key}: expected a string'
            )
        spec[key] = value
    if "leaseDurationSeconds" in spec and spec["leaseDurationSeconds"] <= 0:
        raise _invalid(
            name,
            f"spec.leaseDurationSeconds: Invalid value: "
            f"{spec['leaseDurationSeconds']}: must be greater than 0",
        )
    if "leaseTransitions" in spec and spec["leaseTransitions"] < 0:
        raise _invalid(
            name,
            f"spec.leaseTransitions: Invalid value: {spec['leaseTransitions']}: "
            "must be greater than or equal to 0",
        )
    return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": meta, "spec": spec}


def parse_field_selector(selector: str) -> dict[str, str]:
    """``metadata.name=X[,metadata.namespace=Y]`` (``=`` or ``==``) as a dict."""
    wanted: dict[str, str] = {}
    for term in filter(None, selector.split(",")):
        field_name, op, value = term.partition("==") if "==" in term else term.partition("=")
        if not op or "!" in field_name:
            raise _bad_request(f"invalid field selector term {term!r} (the fake supports = only)")
        if field_name not in ("metadata.name", "metadata.namespace"):
            raise _bad_request(f"field label not supported: {field_name}")
        wanted[field_name] = value
    return wanted


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver/1.0"
    store: ClassVar[Store]
    token: ClassVar[str | None] = None

    def setup(self) -> None:
        super().setup()
        # As Go's net/http does: no Nagle delay between the headers and the body of an answer.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write(f"{time.monotonic():.3f} {format % args}\n")
        sys.stdout.flush()

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, code: int, body: dict[str, Any]) -> None:
        # Count before answering: a client that reads the stats after its answer sees its request.
        if not self.path.startswith("/fake/"):
            with self.store.cond:
                self.store.stats[f"{self.command} {code}"] += 1
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        if not self._raw:
            return {}
        try:
            return json.loads(self._raw)
        except ValueError:
            raise _bad_request("the body of the request was in an unknown format") from None

    def _handle(self) -> None:
        # Read the body first, whatever the answer: the connection is kept alive.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            if parts.path == "/fake/stats":
                with self.store.cond:
                    stats = dict(self.store.stats)
                self._send(200, stats)
                return
            if parts.path in ("/healthz", "/readyz", "/livez"):
                self._send(200, {"status": "ok"})
                return
            if self.token is not None:
                # As the API server's bearer-token authenticator: the scheme in any case.
                scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
                if scheme.lower() != "bearer" or token.strip() != self.token:
                    raise ApiError(401, "Unauthorized", "Unauthorized")
            match = _COLLECTION.match(parts.path)
            if match is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            ns, name = match.group("ns"), match.group("name")
            if not _LABEL.match(ns):
                raise _not_found(name or ns)
            self._route(ns, name, query)
        except ApiError as exc:
            with contextlib.suppress(OSError):
                self._send(exc.code, exc.status())

    def _route(self, ns: str, name: str | None, query: dict[str, str]) -> None:
        if self.command == "GET" and name is not None:
            self._send(200, self.store.get(ns, name))
        elif self.command == "GET":
            if "labelSelector" in query:
                raise _bad_request("the fake API server does not support labelSelector")
            selector = parse_field_selector(query.get("fieldSelector", ""))
            if selector.get("metadata.namespace", ns) != ns:
                selector["metadata.name"] = "\x00"  # matches nothing
            wanted = selector.get("metadata.name")
            if query.get("watch") in ("true", "1"):
                self._watch(ns, wanted, query)
            else:
                items, version = self.store.list(ns, wanted)
                self._send(
                    200,
                    {
                        "apiVersion": API_VERSION,
                        "kind": "LeaseList",
                        "metadata": {"resourceVersion": str(version)},
                        "items": items,
                    },
                )
        elif self.command == "POST" and name is None:
            self._send(201, self.store.create(ns, self._body()))
        elif self.command == "PUT" and name is not None:
            self._send(200, self.store.replace(ns, name, self._body()))
        elif self.command == "DELETE" and name is not None:
            self._send(200, self.store.delete(ns, name, self._body()))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{self.command} is not supported here")

    # -- watch ---------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        if isinstance(self.connection, ssl.SSLSocket):
            return False  # cannot peek below TLS; a gone client fails the next write
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _watch(self, ns: str, name: str | None, query: dict[str, str]) -> None:
        store = self.store
        try:
            timeout = int(query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise _bad_request("timeoutSeconds: expected an integer") from None
        since_text = query.get("resourceVersion", "")
        if since_text and not since_text.isdigit():
            raise _bad_request(f"invalid resource version {since_text!r}")
        pending: list[dict[str, Any]] = []
        with store.cond:
            since = int(since_text or 0)
            if since == 0:
                # No version (or "0"): the current state as ADDED events, then what follows.
                items, since = store.list(ns, name)
                pending = [{"type": "ADDED", "object": obj} for obj in items]
            elif since < store.compacted:
                pending = [
                    {
                        "type": "ERROR",
                        "object": ApiError(
                            410, "Expired", f"too old resource version: {since} ({store.compacted})"
                        ).status(),
                    }
                ]
                timeout = 0
        with store.cond:
            store.stats["WATCH"] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        try:
            while True:
                for event in pending:
                    self._chunk(json.dumps(event).encode() + b"\n")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._client_gone():
                    break
                with store.cond:
                    new = [e for e in store.events if e.version > since]
                    if not new:
                        store.cond.wait(min(remaining, 0.5))
                        new = [e for e in store.events if e.version > since]
                if new:
                    since = new[-1].version
                pending = [
                    {"type": e.type, "object": e.object}
                    for e in new
                    if e.namespace == ns and (name is None or e.name == name)
                ]
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


def serve(
    port: int,
    token: str | None,
    data: Path | None,
    cert: str | None,
    key: str | None,
    history: int = 1000,
) -> None:
    Handler.store = Store(data, history=history)
    Handler.token = token
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"fake kube-apiserver listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--data", type=Path, help="file that keeps the store across restarts")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--history", type=int, default=1000, help="events kept for watches")
    args = parser.parse_args(argv)
    serve(args.port, args.token, args.data, args.tls_cert, args.tls_key, args.history)


# -- the test fixture ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


class FakeKubeServer(Server):
    """The fake API server in a process of its own, reached through a kubeconfig file.

    ``token`` makes it demand that bearer token (and the kubeconfig carries it); ``tls`` serves
    HTTPS with a trustme CA (``ca_file``) that the kubeconfig trusts; ``history`` is how many
    events it keeps for watches that resume from an older resourceVersion.
    """

    name = "kubernetes"
    min_ttl = 2.0  # Leases are whole seconds; 2 s keeps the contract's timing slack comfortable

    def __init__(self, *, token: str | None = None, tls: bool = False, history: int = 1000) -> None:
        super().__init__()
        self.port = free_port()
        self.token = token
        self.tls = tls
        self.history = history
        self.data = self.workdir / "store.json"
        if tls:
            files = TLSFiles.make(self.workdir)
            self.ca_file, self.cert_file, self.key_file = (
                files.ca,
                files.server_cert,
                files.server_key,
            )
        self.kubeconfig = self.write_kubeconfig("kubeconfig", token=token)

    @property
    def server_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self,
        filename: str,
        *,
        token: str | None = None,
        server: str | None = None,
        namespace: str = "default",
    ) -> Path:
        """Write a kubeconfig (context ``fake``) into the workdir and return its path."""
        cluster: dict[str, Any] = {"server": server or self.server_url}
        if self.tls:
            cluster["certificate-authority"] = str(self.ca_file)
        user: dict[str, Any] = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                },
            ],
            "current-context": "fake",
        }
        path = self.workdir / filename
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "tests.servers.fake_kube",
            "--port",
            str(self.port),
            "--data",
            str(self.data),
            "--history",
            str(self.history),
        ]
        if self.token:
            cmd += ["--token", self.token]
        if self.tls:
            cmd += ["--tls-cert", str(self.cert_file), "--tls-key", str(self.key_file)]
        return cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        return env

    def ready_port(self) -> int:
        return self.port

    def url(self) -> str:
        return f"kubernetes://default/?kubeconfig={self.kubeconfig}"

    def unreachable_url(self) -> str:
        """A backend URL whose kubeconfig points at a closed port."""
        scheme = "https" if self.tls else "http"
        path = self.write_kubeconfig(
            "unreachable-kubeconfig", token=self.token, server=f"{scheme}://127.0.0.1:{free_port()}"
        )
        return f"kubernetes://default/?kubeconfig={path}"

    # -- raw access for tests (plain HTTP, not through the backend) ----------------------------

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """One request to the fake; returns the status and the decoded JSON answer."""
        import http.client

        conn: http.client.HTTPConnection
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(
                method, path, body=json.dumps(body) if body is not None else None, headers=headers
            )
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def lease_path(self, name: str, namespace: str = "default") -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"

    def stats(self) -> Counter[str]:
        status, body = self.request("GET", "/fake/stats")
        assert status == 200, body
        return Counter(body)


if __name__ == "__main__":
    main()
