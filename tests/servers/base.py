"""Start, stop, pause (SIGSTOP) and resume real server processes for tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS test server: a CA, the server's pair, and a client pair it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> TLSFiles:
        import trustme

        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("leadercron-client")
        files = cls(
            *(
                directory / name
                for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
            )
        )
        directory.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        return files


class Server(ABC):
    """One real server process. Subclasses say how to start it and what URL reaches it.

    ``start()`` may be called again after ``stop()``/``kill()``: the server comes back on the
    same ports with the same data directory (a restart).
    """

    #: The backend name this server serves (a key of ``tests.servers.SERVERS``).
    name: ClassVar[str]
    #: The shortest ttl (seconds) the backend supports well; contract tests use it.
    min_ttl: ClassVar[float] = 2.0

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"leadercron-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - kept open for the process

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    @abstractmethod
    def url(self) -> str:
        """A backend URL reaching this server."""

    def unreachable_url(self) -> str:
        """This server's URL with the host pointed at a closed port (for failure tests)."""
        port = free_port()
        head, sep, rest = self.url().partition("://")
        hostport, slash, tail = rest.partition("/")
        userinfo, at, _hosts = hostport.rpartition("@")
        return f"{head}{sep}{userinfo}{at}127.0.0.1:{port}{slash}{tail}"

    def ready_port(self) -> int:
        """A port that accepts connections once the server is up."""
        raise NotImplementedError

    def wait_ready(self) -> None:
        wait_for_port(self.ready_port())

    def env(self) -> dict[str, str] | None:
        return None

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        try:
            self.wait_ready()
        except TimeoutError:
            self.stop()
            log = (self.workdir / "server.log").read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{self.name} did not start:\n{log}") from None

    def _make_certs(self) -> None:
        """Issue TLS files into the work directory, as ``ca_file``, ``server_cert``,
        ``server_key``, ``client_cert`` and ``client_key`` (for servers that read them so)."""
        files = TLSFiles.make(self.workdir)
        self.ca_file, self.server_cert, self.server_key = (
            files.ca,
            files.server_cert,
            files.server_key,
        )
        self.client_cert, self.client_key = files.client_cert, files.client_key

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (a crash)."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self) -> None:
        """Stop the server in an orderly way."""
        if self.process is None or self.process.poll() is not None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
