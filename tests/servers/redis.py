"""A throwaway redis-server: loopback, free port, temp dir, no persistence; optionally TLS."""

from __future__ import annotations

import redis

from tests.servers.base import Server, free_port


class RedisServer(Server):
    """``redis-server --save '' --appendonly no`` on a free loopback port.

    ``args`` are extra server arguments (e.g. ``["--requirepass", "pw"]``). With ``tls=True`` the
    port speaks TLS only, with a trustme CA (``ca_file``), server certificate and a client
    certificate (``client_cert``, ``client_key``); ``tls_auth_clients`` is passed to
    ``--tls-auth-clients`` (``no``, ``optional`` or ``yes``).
    """

    name = "redis"
    min_ttl = 1.0  # PX is in milliseconds and redis answers in microseconds

    def __init__(
        self, *, args: list[str] | None = None, tls: bool = False, tls_auth_clients: str = "no"
    ) -> None:
        super().__init__()
        self.port = free_port()
        self.args = list(args or [])
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        if tls:
            self._make_certs()

    def command(self) -> list[str]:
        cmd = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if self.tls:
            cmd += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.server_cert),
                "--tls-key-file", str(self.server_key),
                "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", self.tls_auth_clients,
            ]  # fmt: skip
        else:
            cmd += ["--port", str(self.port)]
        return cmd + self.args

    def ready_port(self) -> int:
        return self.port

    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ca_file={self.ca_file}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **options: object) -> redis.Redis:
        """A plain redis-py client for test setup (default user, no TLS options)."""
        kwargs: dict[str, object] = {"host": "127.0.0.1", "port": self.port, "socket_timeout": 5}
        if self.tls:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=str(self.ca_file),
                ssl_certfile=str(self.client_cert),
                ssl_keyfile=str(self.client_key),
            )
        kwargs.update(options)
        return redis.Redis(**kwargs)  # type: ignore[arg-type]
