"""A real single-member etcd (``/usr/bin/etcd``) on free loopback ports, plain or with TLS."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from typing import ClassVar

from tests.servers.base import Server, TLSFiles, free_port, wait_for_port

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"


class EtcdServer(Server):
    """``etcd`` with its default timing (election timeout 1 s, so its minimum lease TTL is 2 s).

    ``tls`` serves clients over HTTPS only; ``client_cert_auth`` also demands a client
    certificate signed by the test CA; ``extra_args`` go to etcd as they are.
    """

    name = "etcd"
    min_ttl: ClassVar[float] = 2.0

    def __init__(
        self, *, tls: bool = False, client_cert_auth: bool = False, extra_args: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.extra_args = list(extra_args)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.tls = TLSFiles.make(self.workdir / "tls") if tls or client_cert_auth else None
        self.client_cert_auth = client_cert_auth
        self.scheme = "https" if self.tls else "http"
        self.endpoint = f"{self.scheme}://127.0.0.1:{self.client_port}"

    def command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            ETCD,
            "--name", "test",
            "--data-dir", str(self.workdir / "data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
        ]  # fmt: skip
        if self.tls is not None:
            argv += [
                "--cert-file", str(self.tls.server_cert),
                "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca),
            ]  # fmt: skip
            if self.client_cert_auth:
                argv.append("--client-cert-auth")
        return argv + self.extra_args

    def url(self) -> str:
        if self.tls is None:
            return f"etcd://127.0.0.1:{self.client_port}"
        url = f"etcds://127.0.0.1:{self.client_port}?ca_file={self.tls.ca}"
        if self.client_cert_auth:
            url += f"&cert_file={self.tls.client_cert}&key_file={self.tls.client_key}"
        return url

    def ready_port(self) -> int:
        return self.client_port

    def wait_ready(self) -> None:
        """The port is open, and ``/health`` says the member has a leader."""
        wait_for_port(self.client_port)
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"{self.endpoint}/health", timeout=2, context=context
                ) as response:
                    if json.load(response).get("health") == "true":
                        return
            except (OSError, ValueError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise TimeoutError("etcd did not report itself healthy")

    def etcdctl_argv(self, *args: str, user: str | None = None) -> list[str]:
        """argv for ``etcdctl`` against this server (``user`` is ``name:password``)."""
        argv = [ETCDCTL, f"--endpoints={self.endpoint}", "--dial-timeout=5s"]
        if self.tls is not None:
            argv += [
                f"--cacert={self.tls.ca}",
                f"--cert={self.tls.client_cert}",
                f"--key={self.tls.client_key}",
            ]
        if user is not None:
            argv.append(f"--user={user}")
        return [*argv, *args]

    def etcdctl_env(self) -> dict[str, str]:
        return {**os.environ, "ETCDCTL_API": "3"}

    def etcdctl(self, *args: str, user: str | None = None, timeout: float = 30) -> str:
        """Run ``etcdctl`` to completion and return its stdout (raises on failure)."""
        done = subprocess.run(
            self.etcdctl_argv(*args, user=user),
            env=self.etcdctl_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout
