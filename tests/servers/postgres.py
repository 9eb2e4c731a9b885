"""A throwaway PostgreSQL 15 server: loopback, free port, temp dir, trust auth, fsync off."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from tests.servers.base import Server, free_port

BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer(Server):
    """``postgres`` on a free loopback port with a fresh cluster (user ``postgres``, trust).

    Run as root, the server runs as the ``postgres`` system user (``initdb`` refuses root).
    ``password`` makes the ``postgres`` role need that password (scram) over TCP.
    """

    name = "postgres"
    min_ttl = 2.0

    def __init__(self, *, password: str | None = None) -> None:
        super().__init__()
        self.port = free_port()
        self.password = password
        self.data = self.workdir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        cmd = [str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        cmd += ["--no-sync", "-E", "UTF8", "--locale", "C"]
        subprocess.run(self._as_postgres(cmd), check=True, capture_output=True)
        if password is not None:
            hba = self.data / "pg_hba.conf"
            hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
            pw = password.replace("'", "''")
            single = [str(BIN / "postgres"), "--single", "-D", str(self.data), "postgres"]
            subprocess.run(
                self._as_postgres(single),
                input=f"ALTER ROLE postgres PASSWORD '{pw}';\n".encode(),
                check=True,
                capture_output=True,
            )

    @staticmethod
    def _as_postgres(cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--", *cmd]

    def command(self) -> list[str]:
        return self._as_postgres(
            [
                str(BIN / "postgres"),
                "-D", str(self.data),
                "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.workdir}",
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ]
        )  # fmt: skip

    def _children(self) -> list[int]:
        """Pids of the postmaster's children (each backend is a process group of its own)."""
        assert self.process is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.append(int(stat.parent.name))
        return found

    def _signal(self, sig: signal.Signals) -> None:
        """Signal the postmaster *and* every backend, so that SIGSTOP freezes open sessions."""
        if self.process is None or self.process.poll() is not None:
            return
        super()._signal(sig)
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def ready_port(self) -> int:
        return self.port

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.connect().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise TimeoutError("postgres did not accept connections") from None
                time.sleep(0.1)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """An admin connection (autocommit) over the unix socket, for test setup."""
        return psycopg.connect(
            host=str(self.workdir),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=2,
        )

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
