"""The backend contract (leadercron.backends.base), checked against every backend.

Backends with servers run against real servers started by the fixtures in tests/conftest.py.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from leadercron.backends import Backend, Lease
from leadercron.errors import BackendUnavailable
from tests.conftest import PYTHON, BackendCase, campaign, wait_until


def test_mutual_exclusion_among_five(backend_case: BackendCase, election: str) -> None:
    backends = [backend_case.make() for _ in range(5)]
    barrier = threading.Barrier(5)

    def campaign(i: int) -> Lease | None:
        barrier.wait()
        return backends[i].acquire(election, f"c{i}", backend_case.ttl * 5)

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(campaign, range(5)))
    winners = [lease for lease in results if lease is not None]
    assert len(winners) == 1, results
    info = backends[0].leader(election)
    assert info is not None
    assert info.identity == winners[0].identity
    assert info.token == winners[0].token
    # Everyone else still loses while the term lives, and keeps losing on a second try.
    for i, backend in enumerate(backends):
        if results[i] is None:
            assert backend.acquire(election, f"c{i}", backend_case.ttl * 5) is None


def test_renew_keeps_the_term_past_its_ttl(backend_case: BackendCase, election: str) -> None:
    holder, other = backend_case.make(), backend_case.make()
    ttl = backend_case.ttl
    lease = campaign(holder, election, "holder", ttl, timeout=10 * ttl)
    deadline = time.monotonic() + 2.5 * ttl
    while time.monotonic() < deadline:
        renewed = holder.renew(lease)
        assert renewed is not None
        assert renewed.token == lease.token
        lease = renewed
        assert other.acquire(election, "other", ttl) is None
        time.sleep(ttl / 4)
    info = other.leader(election)
    assert info is not None
    assert info.identity == "holder"


def test_an_expired_term_is_not_resurrected(backend_case: BackendCase, election: str) -> None:
    holder = backend_case.make()
    needs_expiry(holder)
    ttl = backend_case.ttl
    lease = campaign(holder, election, "holder", ttl, timeout=10 * ttl)
    assert wait_until(lambda: holder.leader(election) is None, timeout=3 * ttl + 5, interval=0.1)
    assert holder.renew(lease) is None
    again = campaign(holder, election, "holder", ttl, timeout=10 * ttl)
    assert again.token > lease.token


def test_release_hands_over_at_once(backend_case: BackendCase, election: str) -> None:
    holder, waiter = backend_case.make(), backend_case.make()
    ttl = 30.0  # long: a handover that waited for expiry would fail the timing below
    lease = campaign(holder, election, "holder", ttl, timeout=30)
    assert waiter.acquire(election, "waiter", ttl) is None
    woke = threading.Event()

    def wait() -> None:
        waiter.wait_for_change(election, ttl)
        woke.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert not woke.is_set(), "wait_for_change returned while the holder still held"
    released_at = time.monotonic()
    holder.release(lease)
    assert woke.wait(5.0), "release did not wake the waiter"
    handed_over = campaign(waiter, election, "waiter", ttl, timeout=5.0)
    elapsed = time.monotonic() - released_at
    assert elapsed < 2.0, f"handover took {elapsed:.3f}s"
    assert handed_over.token > lease.token
    info = holder.leader(election)
    assert info is not None
    assert info.identity == "waiter"


def test_release_is_idempotent_and_never_deletes_a_successor(
    backend_case: BackendCase, election: str
) -> None:
    first, second = backend_case.make(), backend_case.make()
    ttl = 30.0
    old = campaign(first, election, "first", ttl, timeout=30)
    first.release(old)
    first.release(old)  # idempotent
    new = campaign(second, election, "second", ttl, timeout=10)
    first.release(old)  # a late release of the old term
    assert first.renew(old) is None
    info = first.leader(election)
    assert info is not None
    assert info.identity == "second"
    assert info.token == new.token
    assert second.renew(new) is not None


def test_fencing_tokens_strictly_increase(backend_case: BackendCase, election: str) -> None:
    backends = [backend_case.make() for _ in range(3)]
    tokens: list[int] = []
    for round_ in range(6):
        backend = backends[round_ % 3]
        lease = campaign(backend, election, f"c{round_ % 3}", 30.0, timeout=10)
        tokens.append(lease.token)
        backend.release(lease)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == len(tokens), tokens


def test_wait_returns_when_a_silent_holder_expires(
    backend_case: BackendCase, election: str
) -> None:
    holder, waiter = backend_case.make(), backend_case.make()
    needs_expiry(holder)
    ttl = backend_case.ttl
    campaign(holder, election, "holder", ttl, timeout=10 * ttl)
    start = time.monotonic()
    # The holder never renews. The waiter must get the election within ttl plus slack,
    # without being told by a release.
    lease = campaign(waiter, election, "waiter", ttl, timeout=3 * ttl + 5)
    assert lease.identity == "waiter"
    assert time.monotonic() - start < 3 * ttl + 5


def test_takeover_after_the_holder_process_is_killed(
    backend_case: BackendCase, election: str, python_env: dict[str, str]
) -> None:
    if not backend_case.multiprocess:
        pytest.skip("the memory backend lives in one process")
    ttl = backend_case.ttl * 2
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.holder", backend_case.base_url, election, "doomed", str(ttl)],
        stdout=subprocess.PIPE,
        env=python_env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("held "), line
        doomed_token = int(line.split()[1])
        waiter = backend_case.make()
        assert waiter.acquire(election, "waiter", ttl) is None
        proc.kill()
        proc.wait()
        killed_at = time.monotonic()
        lease = campaign(waiter, election, "waiter", ttl, timeout=ttl + 5)
        elapsed = time.monotonic() - killed_at
        assert elapsed < ttl + 1.0, f"takeover took {elapsed:.2f}s with ttl {ttl}s"
        assert lease.token > doomed_token
    finally:
        proc.kill()
        proc.wait()


def test_unreachable_backend_raises_unavailable(backend_case: BackendCase, election: str) -> None:
    unreachable = unreachable_url(backend_case)
    if unreachable is None:
        pytest.skip(f"{backend_case.name} has no server to be unreachable")
    backend = backend_case.make(unreachable)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.acquire(election, "x", backend_case.ttl)
    assert time.monotonic() - start < 30


def unreachable_url(case: BackendCase) -> str | None:
    """The case's URL pointed at a closed port, or ``None`` for serverless backends."""
    return None if case.server is None else case.server.unreachable_url()


def needs_expiry(backend: Backend) -> None:
    if not backend.supports_expiry:
        pytest.skip(f"{type(backend).__name__} ends a term with its session, not by ttl")


def needs_claims(backend: Backend) -> None:
    if not backend.supports_claims:
        pytest.skip(f"{type(backend).__name__} has no fenced claims yet")


def test_claims_are_fenced_by_the_term_and_never_repeat(
    backend_case: BackendCase, election: str
) -> None:
    first, second = backend_case.make(), backend_case.make()
    needs_claims(first)
    lease = campaign(first, election, "first", 30.0, timeout=30)
    base = int(time.time() * 1000)  # fires are ms since the epoch; ledgers drop very old ones
    assert first.claim(lease, "job", base + 1_000)
    assert not first.claim(lease, "job", base + 1_000), "the same fire claimed twice"
    assert not first.claim(lease, "job", base + 999), "an older fire claimed after a newer one"
    assert first.claim(lease, "job", base + 2_000)
    assert first.claim(lease, "other", base + 1_500)
    assert first.ledger(election) == {"job": base + 2_000, "other": base + 1_500}
    first.release(lease)
    # A deposed term can claim nothing, even a fire nobody claimed.
    assert not first.claim(lease, "job", base + 3_000)
    successor = campaign(second, election, "second", 30.0, timeout=10)
    assert not second.claim(successor, "job", base + 2_000), "the successor re-ran a claimed fire"
    assert second.claim(successor, "job", base + 3_000)
    assert not first.claim(lease, "job", base + 4_000)
    assert second.ledger(election)["job"] == base + 3_000


def test_racing_claims_for_one_fire_admit_exactly_one(
    backend_case: BackendCase, election: str
) -> None:
    holder = backend_case.make()
    needs_claims(holder)
    lease = campaign(holder, election, "holder", 30.0, timeout=30)
    base = int(time.time() * 1000)
    barrier = threading.Barrier(4)

    def claim(_: int) -> bool:
        barrier.wait()
        return holder.claim(lease, "job", base + 5_000)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(claim, range(4)))
    assert results.count(True) == 1, results
