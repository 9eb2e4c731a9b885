"""Candidate processes seen from the benchmark driver: their event lines and /proc figures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Event:
    """One line from a candidate: ``kind`` with the candidate's own CLOCK_MONOTONIC stamp
    (``mono``) for ``EV`` lines, or the driver's stamp on receipt for other output (``line``)."""

    kind: str
    mono: float
    recv: float
    payload: Any = None
    text: str = ""


class Proc:
    """A candidate process whose stdout is read line by line on a thread of its own."""

    def __init__(
        self,
        argv: list[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        label: str = "",
    ) -> None:
        self.label = label or Path(argv[0]).name
        self._log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            recv = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\n")
            if text.startswith("EV "):
                parts = text.split(" ", 4)
                payload = json.loads(parts[4]) if len(parts) > 4 else None
                event = Event(parts[1], float(parts[2]), recv, payload, text)
            else:
                event = Event("line", recv, recv, None, text)
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.events.append(Event("eof", time.monotonic(), time.monotonic()))
            self._cond.notify_all()

    def wait_event(
        self, predicate: Callable[[Event], bool], *, start: int = 0, timeout: float
    ) -> Event | None:
        """The first event from index ``start`` on that matches, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[start:]:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def has(self, kind: str, start: int = 0) -> bool:
        with self._cond:
            return any(e.kind == kind for e in self.events[start:])

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write((line + "\n").encode())
        self.popen.stdin.flush()

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        """Kill the process and whatever it started (its own session), and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()
        self._reader.join(2)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        self._log.close()

    # -- /proc ---------------------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads)."""
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0
