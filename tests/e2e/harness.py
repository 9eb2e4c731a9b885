"""Several `leadercron run` processes on one backend, and what they recorded."""

from __future__ import annotations

import collections
import signal
import subprocess
from datetime import datetime
from pathlib import Path

from leadercron.backends import from_url
from tests.conftest import PYTHON


def spawn(
    config: Path, identity: str, logdir: Path, env: dict[str, str], *extra: str
) -> subprocess.Popen[bytes]:
    """Start ``leadercron run`` for one replica; its output goes to ``logdir/<identity>.log``."""
    log = open(logdir / f"{identity}.log", "ab")  # noqa: SIM115 - owned by the process
    argv = [PYTHON, "-m", "leadercron", "run", "--config", str(config), "--identity", identity]
    return subprocess.Popen([*argv, *extra], stdout=log, stderr=subprocess.STDOUT, env=env)


class Replicas:
    """Starts replicas of one config; each run appends ``identity fire term started`` to a file."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str],
        backend_url: str,
        *,
        election: str,
        ttl: float,
        renew_deadline: float,
        retry_period: float,
        interval: str = "1s",
        coalesce: bool = True,
        misfire_grace_time: str = "30s",
        extra_jobs: str = "",
    ) -> None:
        self.tmp = tmp_path
        self.env = env
        self.election = election
        self.backend_url = backend_url
        self.runs = tmp_path / "runs.txt"
        self.config = tmp_path / "leadercron.yaml"
        self.config.write_text(
            f"""
election:
  name: {election}
  backend: "{backend_url}"
  ttl: {ttl}s
  renew_deadline: {renew_deadline}s
  retry_period: {retry_period}s
scheduler:
  misfire_grace_time: {misfire_grace_time}
  coalesce: {str(coalesce).lower()}
  grace_period: 5s
jobs:
  - id: tick
    interval: {interval}
    func: tests.jobs:record
    args: ["{self.runs}"]
{extra_jobs}"""
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.backend = from_url(backend_url)

    def start(self, identity: str) -> None:
        old = self.procs.get(identity)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"{identity} is running")
        self.procs[identity] = spawn(self.config, identity, self.tmp, self.env)

    def kill(self, identity: str) -> None:
        proc = self.procs[identity]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def signal(self, identity: str, sig: signal.Signals) -> None:
        self.procs[identity].send_signal(sig)

    def leader(self) -> str | None:
        info = self.backend.leader(self.election)
        return None if info is None else info.identity

    def rows(self, path: Path | None = None) -> list[tuple[str, str, int, float]]:
        """(identity, scheduled fire, term, wall-clock start) per recorded run."""
        path = path or self.runs
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue  # a line being written right now
            identity, fire, term, started = parts
            rows.append((identity, fire, int(term), float(started)))
        return rows

    def log(self, identity: str) -> str:
        return (self.tmp / f"{identity}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()
        self.backend.close()


def fires_run_twice(rows: list[tuple[str, str, int, float]]) -> dict[str, int]:
    counts = collections.Counter(fire for _, fire, _, _ in rows)
    return {fire: n for fire, n in counts.items() if n > 1}


def parse_fire(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
