"""Real servers for the backend tests, started on free loopback ports in temporary directories.

Each module defines one :class:`tests.servers.base.Server` subclass; :data:`SERVERS` maps a
backend name to ``"module:Class"`` so that the fixtures import only what a test run needs.
"""

from __future__ import annotations

import importlib

from tests.servers.base import Server

SERVERS: dict[str, str] = {
    "etcd": "tests.servers.etcd:EtcdServer",
    "zookeeper": "tests.servers.zookeeper:ZooKeeperServer",
    "consul": "tests.servers.consul:ConsulServer",
    "redis": "tests.servers.redis:RedisServer",
    "postgres": "tests.servers.postgres:PostgresServer",
    "kubernetes": "tests.servers.fake_kube:FakeKubeServer",
}


def server_class(name: str) -> type[Server]:
    module_name, _, attr = SERVERS[name].partition(":")
    cls: object = getattr(importlib.import_module(module_name), attr)
    assert isinstance(cls, type)
    assert issubclass(cls, Server)
    return cls
