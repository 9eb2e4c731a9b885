"""A throwaway single-node Consul server: loopback, free ports, temp data dir; ACLs, TLS."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from tests.servers.base import Server, free_port, wait_for_port

NODE = "leadercron-test"


class ConsulServer(Server):
    """``consul agent -server -bootstrap-expect 1`` on free loopback ports.

    Not ``-dev``: a dev agent keeps its state in memory, so a restart would lose every key and
    session and start the Raft index (the fencing tokens) over. This server keeps its data
    directory across ``stop()``/``start()`` and is ready in about 1.5 s instead of 0.2 s.

    ``session_ttl_min`` is lowered to 1 s (``-hcl 'session_ttl_min = "1s"'``, accepted by consul
    1.8.7), so a ``ttl`` of 2 s (session TTL 1 s) works; :meth:`url` says so with
    ``?session_ttl_min=1s``, and turns the lock-delay off so that a killed holder is replaced
    within its ttl, as the contract suite expects.

    With ``acl_token``, ACLs are on with ``default_policy = "deny"`` and that token as the master
    (initial management) token. With ``tls=True``, an HTTPS port (``https_port``) serves a trustme
    certificate and requires client certificates (``verify_incoming_https``); the plain HTTP port
    stays open for set-up.
    """

    name = "consul"
    min_ttl = 2.0  # the session TTL is ttl/2, and session_ttl_min is 1s here

    def __init__(self, *, acl_token: str | None = None, tls: bool = False) -> None:
        super().__init__()
        self.ports = {
            name: free_port() for name in ("http", "dns", "server", "serf_lan", "serf_wan", "grpc")
        }
        self.http_port = self.ports["http"]
        self.acl_token = acl_token
        self.tls = tls
        self.https_port = free_port() if tls else 0
        if tls:
            self._make_certs()

    def hcl(self) -> list[str]:
        snippets = [
            'session_ttl_min = "1s"',
            "disable_update_check = true",
            "performance { raft_multiplier = 1 }",
        ]
        if self.acl_token:
            snippets.append(
                'acl { enabled = true\ndefault_policy = "deny"\n'
                f'tokens {{ master = "{self.acl_token}"\nagent = "{self.acl_token}" }} }}'
            )
        if self.tls:
            snippets += [
                f"ports {{ https = {self.https_port} }}",
                f'ca_file = "{self.ca_file}"',
                f'cert_file = "{self.server_cert}"',
                f'key_file = "{self.server_key}"',
                "verify_incoming_https = true",
            ]
        return snippets

    def command(self) -> list[str]:
        cmd = [
            "consul", "agent", "-server", "-bootstrap-expect", "1",
            "-data-dir", str(self.workdir / "data"),
            "-node", NODE,
            "-bind", "127.0.0.1",
            "-client", "127.0.0.1",
            "-log-level", "info",
            "-http-port", str(self.ports["http"]),
            "-dns-port", str(self.ports["dns"]),
            "-server-port", str(self.ports["server"]),
            "-serf-lan-port", str(self.ports["serf_lan"]),
            "-serf-wan-port", str(self.ports["serf_wan"]),
            "-grpc-port", str(self.ports["grpc"]),
        ]  # fmt: skip
        for snippet in self.hcl():
            cmd += ["-hcl", snippet]
        return cmd

    def ready_port(self) -> int:
        return self.http_port

    def wait_ready(self) -> None:
        """Wait for the HTTP port, a Raft leader and this node's serfHealth check to pass:
        sessions can be made only then."""
        wait_for_port(self.http_port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                checks = self.api("GET", f"/v1/health/node/{NODE}")
                if any(c["CheckID"] == "serfHealth" and c["Status"] == "passing" for c in checks):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError("consul did not elect itself leader")

    def url(self) -> str:
        return f"consul://127.0.0.1:{self.http_port}/?session_ttl_min=1s&lock_delay=0s"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        """One call to the HTTP API for test set-up (with the master token if ACLs are on)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{self.http_address}{path}", data=data, method=method
        )
        token = token or self.acl_token
        if token:
            request.add_header("X-Consul-Token", token)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return json.loads(text) if text.strip() else None
