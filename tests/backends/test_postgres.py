"""The postgres backend against real PostgreSQL 15 servers: advisory-lock exclusion, NOTIFY
handover, a terminated holder session, a paused server, fencing tokens, fenced claims, URLs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from leadercron.backends import Backend, Lease, from_url
from leadercron.backends.postgres import PostgresBackend, lock_key
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError
from tests.conftest import campaign, wait_until, waiting
from tests.servers.base import free_port
from tests.servers.postgres import PostgresServer

Make = Callable[..., PostgresBackend]


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    srv = PostgresServer()
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture
def make(server: PostgresServer) -> Iterator[Make]:
    made: list[Backend] = []

    def _make(url: str | None = None) -> PostgresBackend:
        backend = from_url(url or server.url())
        assert isinstance(backend, PostgresBackend)
        made.append(backend)
        return backend

    yield _make
    for backend in made:
        backend.close()


def session_pid(server: PostgresServer, election: str) -> int:
    with server.connect() as conn:
        row = conn.execute(
            "SELECT pid FROM leadercron_terms WHERE election = %s", (election,)
        ).fetchone()
    assert row is not None
    pid = row[0]
    assert isinstance(pid, int)
    return pid


def test_mutual_exclusion_and_the_lock_on_the_server(
    server: PostgresServer, make: Make, election: str
) -> None:
    backends = [make() for _ in range(6)]
    barrier = threading.Barrier(len(backends))

    def race(i: int) -> Lease | None:
        barrier.wait()
        return backends[i].acquire(election, f"c{i}", 10.0)

    with ThreadPoolExecutor(len(backends)) as pool:
        leases = list(pool.map(race, range(len(backends))))
    won = [lease for lease in leases if lease is not None]
    assert len(won) == 1
    key = lock_key(election) & 0xFFFFFFFFFFFFFFFF
    with server.connect() as conn:
        rows = conn.execute(
            "SELECT l.pid = t.pid FROM pg_locks l JOIN leadercron_terms t ON t.election = %s"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s",
            (election, key >> 32, key & 0xFFFFFFFF),
        ).fetchall()
    assert rows == [(True,)]
    info = backends[0].leader(election)
    assert info is not None
    assert (info.identity, info.token) == (won[0].identity, won[0].token)


def test_release_wakes_a_waiter_by_notify(make: Make, election: str) -> None:
    holder = make()
    waiter = make(f"{holder.url}?recheck=60s")  # only the NOTIFY can wake it in time
    lease = campaign(holder, election, "holder", 10.0, 10)
    woke = waiting(waiter, election, 30)
    time.sleep(0.3)
    assert not woke.is_set()
    released = time.monotonic()
    holder.release(lease)
    assert woke.wait(5)
    successor = waiter.acquire(election, "waiter", 10.0)
    handover = time.monotonic() - released
    assert successor is not None
    assert successor.token > lease.token
    assert handover < 1.0, f"handover took {handover:.3f}s"
    holder.release(lease)  # idempotent, and never touches the successor
    assert waiter.renew(successor) is not None


def test_terminated_holder_session_ends_the_term(
    server: PostgresServer, make: Make, election: str
) -> None:
    holder, other = make(), make()
    alarms: list[str] = []
    holder.set_alarm(alarms.append)
    lease = campaign(holder, election, "holder", 10.0, 10)
    assert other.acquire(election, "other", 10.0) is None
    with server.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (session_pid(server, election),))
    taken = campaign(other, election, "other", 10.0, 10)  # woken by the recheck
    assert taken.token > lease.token
    assert holder.renew(lease) is None
    assert not holder.claim(lease, "job", int(time.time() * 1000))
    holder.release(lease)  # a no-op: the session is gone
    info = holder.leader(election)
    assert info is not None
    assert info.identity == "other"
    assert alarms, "losing the lock session must raise the alarm"


def test_fencing_tokens_increase_and_persist(make: Make, election: str) -> None:
    first, second = make(), make()
    tokens = []
    for i in range(6):
        backend = (first, second)[i % 2]
        lease = campaign(backend, election, f"c{i % 2}", 10.0, 10)
        tokens.append(lease.token)
        backend.release(lease)
    assert tokens == list(range(tokens[0], tokens[0] + 6))


def test_claims_are_fenced(server: PostgresServer, make: Make, election: str) -> None:
    holder, other = make(), make()
    lease = campaign(holder, election, "holder", 10.0, 10)
    base = int(time.time() * 1000)
    assert holder.claim(lease, "job", base)
    assert not holder.claim(lease, "job", base)
    with server.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (session_pid(server, election),))
    # The deposed holder cannot claim, even before anyone else took over: the first call finds
    # the session gone (outcome unknown to the caller), later ones know the term is over.
    with pytest.raises(BackendUnavailable):
        holder.claim(lease, "job", base + 1)
    assert not holder.claim(lease, "job", base + 1)
    successor = campaign(other, election, "other", 10.0, 10)
    assert not other.claim(successor, "job", base)
    assert other.claim(successor, "job", base + 1)
    assert other.ledger(election) == {"job": base + 1}


def test_foreign_session_holding_the_lock_excludes_leadercron(
    server: PostgresServer, make: Make, election: str
) -> None:
    backend = make()
    with server.connect() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(election),))
        assert backend.acquire(election, "x", 10.0) is None
        info = backend.leader(election)
        assert info is not None
        assert info.token is None
        assert info.identity.startswith("pid ")
    assert campaign(backend, election, "x", 10.0, 10).identity == "x"


def test_close_wakes_a_pending_wait(make: Make, election: str) -> None:
    holder, waiter = make(), make()
    campaign(holder, election, "holder", 10.0, 10)
    woke = waiting(waiter, election, 30)
    time.sleep(0.3)
    waiter.close()
    assert woke.wait(5)


def test_paused_server_raises_unavailable_within_the_timeout(election: str) -> None:
    server = PostgresServer()
    server.start()
    backend = from_url(f"{server.url()}?timeout=1s")
    other = from_url(f"{server.url()}?timeout=1s")
    try:
        lease = backend.acquire(election, "holder", 10.0)
        assert lease is not None
        server.pause()
        start = time.monotonic()
        with pytest.raises(BackendUnavailable):
            other.acquire(election, "o", 10.0)  # connect_timeout
        assert time.monotonic() - start < 5
        start = time.monotonic()
        with pytest.raises(BackendUnavailable):
            other.leader(election)
        assert time.monotonic() - start < 5
        # The holder's renew hangs; it is cut after the timeout, which ends the session: None.
        start = time.monotonic()
        assert backend.renew(lease) is None
        assert time.monotonic() - start < 5
        server.resume()
        # The lock frees once the server sees the cut connection closed.
        assert wait_until(lambda: other.acquire(election, "o", 10.0) is not None, 15, 0.1)
    finally:
        server.resume()
        backend.close()
        other.close()
        server.cleanup()


def test_server_restart_ends_the_term_and_tokens_survive(election: str) -> None:
    server = PostgresServer()
    server.start()
    backend = from_url(server.url())
    try:
        lease = backend.acquire(election, "holder", 10.0)
        assert lease is not None
        server.restart()
        assert backend.renew(lease) is None  # the dead connection is found out
        assert backend.renew(lease) is None
        again = campaign(backend, election, "holder", 10.0, 10)
        assert again.token > lease.token
    finally:
        backend.close()
        server.cleanup()


def test_password_from_url_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, election: str
) -> None:
    server = PostgresServer(password="s3cret")
    server.start()
    try:
        base = server.url().replace("postgres@", "postgres:s3cret@")
        backend = from_url(base)
        assert "s3cret" not in repr(backend)
        assert backend.acquire(election, "a", 10.0) is not None
        backend.close()
        secret = tmp_path / "pw"
        secret.write_text("s3cret\n")
        backend = from_url(f"{server.url()}?password_file={secret}")
        assert backend.leader(election) is None
        backend.close()
        monkeypatch.setenv("LEADERCRON_POSTGRES_PASSWORD", "s3cret")
        backend = from_url(server.url())
        assert backend.leader(election) is None
        backend.close()
        monkeypatch.setenv("LEADERCRON_POSTGRES_PASSWORD", "wrong")
        backend = from_url(server.url())
        with pytest.raises(BackendAuthError) as err:
            backend.acquire(election, "a", 10.0)
        assert "wrong" not in str(err.value)
        backend.close()
    finally:
        server.cleanup()


def test_unreachable_raises_unavailable_quickly(election: str) -> None:
    backend = from_url(f"postgresql://u@127.0.0.1:{free_port()}/db?timeout=1s")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.acquire(election, "x", 10.0)
    assert time.monotonic() - start < 5


def test_url_parsing(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    backend = from_url(
        "postgres://alice:hunter2@db.example:6543/app?timeout=2s&recheck=500ms"
        "&sslmode=verify-full&sslrootcert=/ca.pem"
    )
    assert isinstance(backend, PostgresBackend)
    assert backend.url == (
        "postgres://alice:***@db.example:6543/app?timeout=2s&recheck=500ms"
        "&sslmode=verify-full&sslrootcert=/ca.pem"
    )
    assert (backend.timeout, backend.recheck) == (2.0, 0.5)
    info = backend._conninfo
    assert (info["host"], info["port"], info["user"], info["dbname"]) == (
        "db.example",
        6543,
        "alice",
        "app",
    )
    assert (info["password"], info["sslmode"], info["sslrootcert"]) == (
        "hunter2",
        "verify-full",
        "/ca.pem",
    )
    default = from_url(f"postgresql://bob@h/d?password_file={secret}")
    assert isinstance(default, PostgresBackend)
    assert (default._conninfo["port"], default._conninfo["password"], default.timeout) == (
        5432,
        "pw",
        5.0,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql:///db", "expected postgresql://"),
        ("postgresql://u@h:99999/db", "out of range"),
        ("postgresql://u@h/db/x", "database name"),
        ("postgresql://u@h/db?bogus=1", "unknown option"),
        ("postgresql://u@h/db?timeout=soon", "timeout"),
        ("postgresql://u@h/db?recheck=0s", "recheck must be greater than 0s"),
        ("postgresql://u@h/db?password_file=/nonexistent/pw", "password_file"),
        ("postgresql://u@h/db?timeout=1s&timeout=2s", "given twice"),
    ],
)
def test_bad_urls_raise_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_url(url)


def test_from_url_does_not_contact_the_server() -> None:
    start = time.monotonic()
    backend = from_url("postgresql://u@192.0.2.1:5432/db")
    assert time.monotonic() - start < 0.5
    backend.close()
