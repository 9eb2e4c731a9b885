"""Backend registry: a URL scheme selects a backend class, imported only when used.

Built-in schemes are listed in :data:`BUILTIN`. Other packages add schemes through the
``leadercron.backends`` entry-point group (name = scheme, value = ``"module:Class"``); a built-in
scheme cannot be overridden.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from leadercron.backends.base import Backend, LeaderInfo, Lease, redact_url
from leadercron.errors import ConfigError, MissingExtraError

__all__ = ["BUILTIN", "Backend", "LeaderInfo", "Lease", "backend_class", "from_url", "schemes"]

ENTRY_POINT_GROUP = "leadercron.backends"

#: scheme -> (``"module:Class"``, extra that provides its client library, that library's module)
BUILTIN: dict[str, tuple[str, str | None, str | None]] = {
    "memory": ("leadercron.backends.memory:MemoryBackend", None, None),
    "file": ("leadercron.backends.file:FileBackend", None, None),
    "etcd": ("leadercron.backends.etcd:EtcdBackend", "etcd", "etcd3gw"),
    "etcds": ("leadercron.backends.etcd:EtcdBackend", "etcd", "etcd3gw"),
    "zookeeper": ("leadercron.backends.zookeeper:ZooKeeperBackend", "zookeeper", "kazoo"),
    "zk": ("leadercron.backends.zookeeper:ZooKeeperBackend", "zookeeper", "kazoo"),
    "consul": ("leadercron.backends.consul:ConsulBackend", "consul", "consul"),
    "consuls": ("leadercron.backends.consul:ConsulBackend", "consul", "consul"),
    "redis": ("leadercron.backends.redis:RedisBackend", "redis", "redis"),
    "rediss": ("leadercron.backends.redis:RedisBackend", "redis", "redis"),
    "postgresql": ("leadercron.backends.postgres:PostgresBackend", "postgres", "psycopg"),
    "postgres": ("leadercron.backends.postgres:PostgresBackend", "postgres", "psycopg"),
    "kubernetes": ("leadercron.backends.kubernetes:KubernetesBackend", "kubernetes", "kubernetes"),
}


def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def schemes() -> list[str]:
    """Every scheme that :func:`from_url` accepts, built-in and from entry points."""
    return sorted(set(BUILTIN) | set(_entry_point_targets()))


def backend_class(scheme: str) -> type[Backend]:
    """Import and return the class serving ``scheme``.

    Raises :class:`ConfigError` for an unknown scheme and :class:`MissingExtraError` when the
    backend's client library is not installed.
    """
    if scheme in BUILTIN:
        target, extra, library = BUILTIN[scheme]
        if library is not None and importlib.util.find_spec(library) is None:
            raise MissingExtraError(
                f"the {scheme}:// backend needs the {library!r} library: "
                f"pip install 'leadercron[{extra}]'"
            )
    else:
        found = _entry_point_targets().get(scheme)
        if found is None:
            known = ", ".join(f"{s}://" for s in schemes())
            raise ConfigError(f"unknown backend scheme {scheme + '://'!r} (known: {known})")
        target = found
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"backend {scheme}:// could not be loaded: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"backend {scheme}:// points at {target!r}, which is not a Backend")
    return cls


def from_url(url: str) -> Backend:
    """Make the backend that ``url`` names. Does not contact the server."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"backend {url!r} is not a URL (expected e.g. file:///tmp/leadercron.lock)"
        )
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigError(f"backend URL {redact_url(url)!r} is malformed: {exc}") from None
    if not scheme:
        raise ConfigError(f"backend URL {redact_url(url)!r} has no scheme")
    return backend_class(scheme).from_url(url)
