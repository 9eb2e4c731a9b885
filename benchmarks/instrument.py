"""Client-side request counters for a measured process, and the event lines it prints.

``install()`` patches the client libraries' lowest shared send paths, once per process, so that
every request a backend (or a peer's client library) puts on the wire is counted:

* HTTP (etcd through etcd3gw/requests, Consul through py-consul/requests, Kubernetes through its
  generated client): ``urllib3.connectionpool.HTTPConnectionPool.urlopen``, one per request
  (a long-poll or a watch stream counts once, when it is opened);
* Redis: the RESP serializers' ``pack`` (``redis.connection``), one per command (each command of a
  pipeline, ``EVALSHA``, ``PUBLISH``, ``PSUBSCRIBE`` ...);
* ZooKeeper: ``kazoo.protocol.connection.ConnectionHandler._submit``, one per request, pings
  included (they are what keeps a session alive);
* PostgreSQL: ``psycopg.Cursor.execute``, one per statement (waiting in ``notifies()`` is not a
  request).

Events go to stdout as ``EV <kind> <CLOCK_MONOTONIC> <CLOCK_REALTIME> [json]`` lines; every
process on the host shares CLOCK_MONOTONIC, so stamps from different processes compare.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

COUNTS: collections.Counter[str] = collections.Counter()
_LOCK = threading.Lock()
_OUT = threading.Lock()
_installed = False


def bump(key: str, n: int = 1) -> None:
    with _LOCK:
        COUNTS[key] += n


def snapshot() -> dict[str, int]:
    with _LOCK:
        return dict(COUNTS)


def emit(kind: str, payload: Any = None) -> None:
    """Print one event line with both clocks, at once (stdout may be a pipe)."""
    mono, real = time.monotonic(), time.time()
    line = f"EV {kind} {mono:.6f} {real:.6f}"
    if payload is not None:
        line += " " + json.dumps(payload, separators=(",", ":"))
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _wrap(owner: Any, name: str, key: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        bump(key)
        return original(*args, **kwargs)

    counted.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(owner, name, counted)


def install() -> None:
    """Patch whichever client libraries are importable (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    with contextlib.suppress(ImportError):
        import urllib3.connectionpool

        _wrap(urllib3.connectionpool.HTTPConnectionPool, "urlopen", "wire")
    with contextlib.suppress(ImportError):
        import redis.connection

        for serializer in ("PythonRespSerializer", "HiredisRespSerializer"):
            if hasattr(redis.connection, serializer):
                _wrap(getattr(redis.connection, serializer), "pack", "wire")
    with contextlib.suppress(ImportError):
        import kazoo.protocol.connection

        _wrap(kazoo.protocol.connection.ConnectionHandler, "_submit", "wire")
    with contextlib.suppress(ImportError):
        import psycopg

        _wrap(psycopg.Cursor, "execute", "wire")


BACKEND_METHODS = ("acquire", "renew", "release", "leader", "wait_for_change", "claim", "ledger")


def count_backend_calls(backend: Any) -> None:
    """Count calls of the backend contract's methods on this instance (``call.<method>``)."""
    for name in BACKEND_METHODS:
        original = getattr(backend, name, None)
        if original is None:
            continue

        def counted(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            bump(f"call.{_name}")
            return _original(*args, **kw)

        setattr(backend, name, counted)
