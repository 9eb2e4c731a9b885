"""Single-host backend on ``flock(2)`` locks: several processes on one machine, no server.

URL: ``file:///absolute/path/to/lockfile[?timeout=5s]``

========  =======  ==============================================================================
option    default  meaning
========  =======  ==============================================================================
timeout   ``5s``   how long an operation may wait for the lock file's mutex before it raises
                   ``BackendUnavailable`` (a process stopped while holding it blocks others)
========  =======  ==============================================================================

Files, all next to each other (the directory is created if missing):

``PATH``
    The lock file. Every operation holds ``flock(LOCK_EX)`` on it for a few microseconds, which
    makes acquire-if-absent, compare-and-set and compare-and-delete atomic across processes.
``PATH.state``
    One JSON line: per election the holder, its term's fencing token, its expiry, the counter
    the tokens come from, and the claim ledger (per job, the last fire claimed). Only changed
    under the lock file's mutex, so the counter strictly increases across processes and
    restarts.
``PATH.<election>.held``
    The live holder keeps ``flock(LOCK_EX)`` on it for its whole term. The kernel drops that lock
    the instant the holder's process dies, which wakes waiters (they block on the same lock, so no
    polling) and tells them the holder is gone: a crashed holder is replaced at once instead of
    after its ttl. A holder that is alive but stopped (SIGSTOP, a debugger) keeps that lock, so
    its term ends by expiry like on any other backend.

Expiry uses ``CLOCK_MONOTONIC``, which all processes on a host share, tagged with the kernel's
boot id so that a reboot ends every term.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadercron.backends.base import (
    LEDGER_RETENTION,
    Backend,
    LeaderInfo,
    Lease,
    Notifier,
    duration_option,
    parse_url,
    reject_unknown_options,
)
from leadercron.errors import BackendUnavailable, ConfigError


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_BOOT_ID = _boot_id()
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass
class _Handle:
    """Private part of a file lease: the term's owner id and the open liveness lock, if any."""

    owner: str
    held_fd: int | None

    def drop(self) -> None:
        if self.held_fd is not None:
            fd, self.held_fd = self.held_fd, None
            os.close(fd)  # closing drops the flock


class FileBackend(Backend):
    """Elections kept in a lock file on this host. See the module docstring."""

    schemes = ("file",)
    detects_crash = True
    supports_claims = True

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.state_path = Path(f"{self.path}.state")
        self.timeout = timeout
        self.url = f"file://{self.path}"
        self._notifier = Notifier()
        self._lock = threading.Lock()
        self._watchers: dict[str, threading.Thread] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> FileBackend:
        parts, options = parse_url(url, cls.schemes)
        reject_unknown_options(url, options, {"timeout"})
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"backend URL {url!r}: a file:// URL names no host (file:///path)")
        if not parts.path or not parts.path.startswith("/") or parts.path.endswith("/"):
            raise ConfigError(f"backend URL {url!r}: expected file:///absolute/path/to/lockfile")
        return cls(parts.path, timeout=duration_option(url, options, "timeout", "5s"))

    # -- files ---------------------------------------------------------------------------------

    def _held_path(self, election: str) -> Path:
        name = election if _SAFE_NAME.match(election) else election.encode().hex()[:200]
        return Path(f"{self.path}.{name}.held")

    def _open(self, path: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise BackendUnavailable(f"cannot open {path}: {exc.strerror}") from exc

    @contextmanager
    def _mutex(self) -> Iterator[None]:
        fd = self._open(self.path)
        try:
            deadline = time.monotonic() + self.timeout
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BackendUnavailable(
                            f"lock file {self.path} stayed busy for {self.timeout:g}s"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                line = fh.readline()
        except FileNotFoundError:
            return {"elections": {}, "tokens": {}}
        except OSError as exc:
            raise BackendUnavailable(f"cannot read {self.state_path}: {exc.strerror}") from exc
        try:
            state = json.loads(line) if line.strip() else {}
        except ValueError as exc:
            raise BackendUnavailable(f"{self.state_path} is corrupt: {exc}") from exc
        state.setdefault("elections", {})
        state.setdefault("tokens", {})
        return state

    def _write(self, state: dict[str, Any]) -> None:
        # Written in place under the mutex. Only the first line counts, so a process killed
        # between write and truncate leaves a valid file.
        data = (json.dumps(state, separators=(",", ":"), sort_keys=True) + "\n").encode()
        fd = self._open(self.state_path)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        except OSError as exc:
            raise BackendUnavailable(f"cannot write {self.state_path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _try_hold(self, election: str) -> int | None:
        fd = self._open(self._held_path(election))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise BackendUnavailable(f"cannot lock {self._held_path(election)}: {exc}") from exc
        return fd

    @staticmethod
    def _alive(record: dict[str, Any] | None, now: float) -> bool:
        return (
            record is not None
            and record.get("boot") == _BOOT_ID
            and float(record.get("expires", 0)) > now
        )

    # -- the contract --------------------------------------------------------------------------

    def acquire(self, election: str, identity: str, ttl: float) -> Lease | None:
        with self._mutex():
            state = self._read()
            record = state["elections"].get(election)
            now = time.monotonic()
            held_fd: int | None = None
            if self._alive(record, now):
                if not record.get("live"):
                    return None  # holder alive without the liveness lock: its ttl decides
                held_fd = self._try_hold(election)
                if held_fd is None:
                    return None  # the holder's process still holds its liveness lock
                # The holder held the liveness lock and no longer does: its process died.
            if held_fd is None:
                held_fd = self._try_hold(election)
            token = int(state["tokens"].get(election, 0)) + 1
            owner = uuid.uuid4().hex
            state["tokens"][election] = token
            state["elections"][election] = {
                "holder": identity,
                "token": token,
                "owner": owner,
                "boot": _BOOT_ID,
                "expires": now + ttl,
                "live": held_fd is not None,
            }
            try:
                self._write(state)
            except BackendUnavailable:
                if held_fd is not None:
                    os.close(held_fd)
                raise
            return Lease(election, identity, token, ttl, handle=_Handle(owner, held_fd))

    def renew(self, lease: Lease) -> Lease | None:
        handle: _Handle = lease.handle
        with self._mutex():
            state = self._read()
            record = state["elections"].get(lease.election)
            now = time.monotonic()
            if (
                not self._alive(record, now)
                or record.get("owner") != handle.owner
                or int(record.get("token", -1)) != lease.token
            ):
                handle.drop()
                return None
            if handle.held_fd is None:
                handle.held_fd = self._try_hold(lease.election)
            record["expires"] = now + lease.ttl
            record["live"] = handle.held_fd is not None
            self._write(state)
            return lease

    def release(self, lease: Lease) -> None:
        handle: _Handle = lease.handle
        with self._mutex():
            state = self._read()
            record = state["elections"].get(lease.election)
            if record is not None and record.get("owner") == handle.owner:
                del state["elections"][lease.election]
                self._write(state)
            # Dropping the liveness lock wakes the waiters, after the state says "free".
            handle.drop()

    def claim(self, lease: Lease, job_id: str, fire: int) -> bool:
        handle: _Handle = lease.handle
        with self._mutex():
            state = self._read()
            record = state["elections"].get(lease.election)
            if (
                not self._alive(record, time.monotonic())
                or record.get("owner") != handle.owner
                or int(record.get("token", -1)) != lease.token
            ):
                return False
            ledgers = state.setdefault("ledgers", {})
            ledger = ledgers.setdefault(lease.election, {})
            if fire <= int(ledger.get(job_id, -1)):
                return False
            ledger[job_id] = fire
            horizon = (time.time() - LEDGER_RETENTION) * 1000
            for stale in [job for job, mark in ledger.items() if mark < horizon]:
                del ledger[stale]
            self._write(state)
            return True

    def ledger(self, election: str) -> dict[str, int]:
        with self._mutex():
            ledger = self._read().get("ledgers", {}).get(election, {})
        return {job: int(mark) for job, mark in ledger.items()}

    def leader(self, election: str) -> LeaderInfo | None:
        with self._mutex():
            record = self._read()["elections"].get(election)
        if not self._alive(record, time.monotonic()):
            return None
        return LeaderInfo(str(record["holder"]), int(record["token"]))

    def wait_for_change(self, election: str, timeout: float) -> None:
        seen = self._notifier.generation
        with self._mutex():
            record = self._read()["elections"].get(election)
        now = time.monotonic()
        if self._closed or not self._alive(record, now):
            return
        if record.get("live"):
            self._watch(election)
        self._notifier.wait(seen, min(timeout, float(record["expires"]) - now))

    def _watch(self, election: str) -> None:
        """Make sure a thread blocks on the election's liveness lock and bumps when it frees."""
        with self._lock:
            thread = self._watchers.get(election)
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(
                target=self._block_on_held,
                args=(election,),
                name=f"leadercron-file-watch-{election}",
                daemon=True,
            )
            self._watchers[election] = thread
            thread.start()

    def _block_on_held(self, election: str) -> None:
        try:
            fd = self._open(self._held_path(election))
        except BackendUnavailable:
            self._notifier.bump()
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # returns when the holder releases or dies
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._notifier.bump()

    def close(self) -> None:
        self._closed = True
        self._notifier.bump()
