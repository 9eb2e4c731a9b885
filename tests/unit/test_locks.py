"""Per-job locks: skip when held elsewhere, extension while running, loss, release."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from leadercron.backends.memory import MemoryBackend
from leadercron.locks import SKIPS, LockHeld, hold, locked
from tests.conftest import wait_until


def store() -> str:
    return uuid.uuid4().hex


def test_locked_runs_and_returns_and_releases() -> None:
    backend = MemoryBackend(store())

    @locked(backend, "job", ttl=5)
    def job(x: int) -> int:
        info = backend.leader("job")
        assert info is not None  # held while running
        return x * 2

    assert job(21) == 42
    assert backend.leader("job") is None  # released afterwards


def test_locked_skips_when_another_holds_the_lock(caplog: pytest.LogCaptureFixture) -> None:
    name = store()
    other = MemoryBackend(name)
    mine = MemoryBackend(name)
    assert other.acquire("job", "other", 30) is not None
    calls: list[int] = []

    @locked(mine, "job", ttl=5)
    def job() -> None:
        calls.append(1)

    caplog.set_level("INFO", logger="leadercron.locks")
    before = SKIPS.labels(lock="job")._value.get()
    assert job() is None
    assert job() is None
    assert calls == []
    assert "skipped lock=job: held by another holder" in caplog.text
    assert SKIPS.labels(lock="job")._value.get() == before + 2
    assert REGISTRY.get_sample_value("leadercron_locked_skips_total", {"lock": "job"}) == before + 2


def test_hold_extends_the_lock_past_its_ttl() -> None:
    name = store()
    mine, other = MemoryBackend(name), MemoryBackend(name)
    with hold(mine, "long", ttl=0.6, identity="me") as holding:
        for _ in range(6):  # 1.8 s: three times the ttl
            time.sleep(0.3)
            assert other.acquire("long", "other", 0.6) is None
            assert holding.held
    lease = other.acquire("long", "other", 0.6)
    assert lease is not None
    assert lease.token > holding.lease.token


def test_losing_the_lock_signals_the_work() -> None:
    backend = MemoryBackend(store())
    lost = threading.Event()
    reasons: list[str] = []

    def on_lost(reason: str) -> None:
        reasons.append(reason)
        lost.set()

    with hold(backend, "job", ttl=0.6, on_lost=on_lost) as holding:
        with backend._store.lock:  # another party takes the lock behind our back
            backend._store.records["job"].owner = -1
        assert lost.wait(2)
        assert not holding.held
    assert reasons == ["the backend no longer holds this lock"]


def test_hold_raises_lock_held() -> None:
    name = store()
    first, second = MemoryBackend(name), MemoryBackend(name)
    with hold(first, "x", ttl=5), pytest.raises(LockHeld), hold(second, "x", ttl=5):
        pass
    assert wait_until(lambda: second.leader("x") is None, 1)
