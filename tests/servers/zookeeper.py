"""A standalone ZooKeeper server for the tests, run by Debian's ``zkServer.sh start-foreground``.

Its ``zoo.cfg`` lives in the server's temporary directory: a free loopback client port,
``tickTime=500`` so that sessions may be as short as one second, ``maxSessionTimeout=60000`` so
that the contract suite's 30 s leases get a matching session, the four-letter-word commands on
(readiness is ``srvr`` answering ``Mode:``) and no admin HTTP server.

Debian's ``zkEnv.sh`` sets ``ZOOCFGDIR`` and ``ZOO_LOG_DIR`` to fixed system paths, so the config
is passed as an absolute path (``zkServer.sh`` then uses it as is) and ``JVMFLAGS`` points
``zookeeper.log.dir`` at the temporary directory; JMX is off.
"""

from __future__ import annotations

import os
import socket
import time

from tests.servers.base import Server, free_port

ZKSERVER = "/usr/share/zookeeper/bin/zkServer.sh"
TICK_MS = 500


def four_letter(port: int, command: str, timeout: float = 1.0) -> str:
    """Send a four-letter-word command and return the answer ("" if nothing answers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(command.encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer(Server):
    name = "zookeeper"
    min_ttl = 2.0  # a 2 s session: kazoo pings every 0.67 s, the server expires within +0.5 s

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        (self.workdir / "data").mkdir()
        (self.workdir / "zoo.cfg").write_text(
            "\n".join(
                [
                    f"tickTime={TICK_MS}",
                    f"dataDir={self.workdir / 'data'}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "maxClientCnxns=0",
                    "maxSessionTimeout=60000",
                    "4lw.commands.whitelist=*",
                    "admin.enableServer=false",
                    "",
                ]
            )
        )

    def command(self) -> list[str]:
        return [ZKSERVER, "start-foreground", str(self.workdir / "zoo.cfg")]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ZOOCFGDIR=str(self.workdir),
            ZOO_LOG_DIR=str(self.workdir),
            ZOOPIDFILE=str(self.workdir / "zookeeper.pid"),
            JMXDISABLE="true",
            JVMFLAGS=f"-Dzookeeper.log.dir={self.workdir}",
        )
        return env

    def url(self) -> str:
        return f"zookeeper://127.0.0.1:{self.port}"

    def ready_port(self) -> int:
        return self.port

    def wait_ready(self) -> None:
        # The port accepts connections a moment before the server serves requests.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "Mode:" in four_letter(self.port, "srvr"):
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"zookeeper on port {self.port} is not serving")
