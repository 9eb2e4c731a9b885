"""The redis backend against real redis-server processes: interop with redis-py's Lock, ACL and
password handling, TLS, Redlock over three independent masters, pub/sub handover, URL errors."""

from __future__ import annotations

import logging
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leadercron.backends import Backend, Lease, from_url
from leadercron.backends.base import LEDGER_RETENTION
from leadercron.backends.redis import PASSWORD_ENV, RedisBackend
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError
from tests.conftest import campaign, waiting
from tests.servers.base import free_port
from tests.servers.redis import RedisServer

Make = Callable[[str], RedisBackend]


def _start(server: RedisServer) -> RedisServer:
    server.start()
    return server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = _start(RedisServer())
    yield srv
    srv.cleanup()


@pytest.fixture
def make() -> Iterator[Make]:
    made: list[Backend] = []

    def _make(url: str) -> RedisBackend:
        backend = from_url(url)
        assert isinstance(backend, RedisBackend)
        made.append(backend)
        return backend

    yield _make
    for backend in made:
        backend.close()


# -- storage format and interop ---------------------------------------------------------------


def test_value_counter_and_ttl_on_the_server(
    server: RedisServer, make: Make, election: str
) -> None:
    backend = make(server.url())
    client = server.client()
    key = f"leadercron:{election}"
    lease = backend.acquire(election, "node:a/1", 10.0)
    assert lease is not None
    value = client.get(key)
    assert isinstance(value, bytes)
    assert re.fullmatch(rb"lc1:[0-9a-f]{32}:node:a/1", value), value
    assert client.get(f"{key}:token") == str(lease.token).encode()
    assert 9000 < client.pttl(key) <= 10000
    info = backend.leader(election)
    assert info is not None
    assert (info.identity, info.token) == ("node:a/1", lease.token)
    backend.release(lease)
    assert client.exists(key) == 0
    again = backend.acquire(election, "node:a/1", 10.0)
    assert again is not None
    assert again.token == lease.token + 1
    assert client.get(key) != value  # a new term has a new value


def test_prefix_option(server: RedisServer, make: Make, election: str) -> None:
    backend = make(server.url() + "?prefix=jobs/")
    lease = backend.acquire(election, "a", 10.0)
    assert lease is not None
    client = server.client()
    assert client.exists(f"jobs/{election}") == 1
    assert client.exists(f"leadercron:{election}") == 0
    # The prefix is a glob pattern's literal part: the waiter still wakes on release.
    waiter = make(server.url() + "?prefix=jobs/")
    woke = waiting(waiter, election, 30)
    time.sleep(0.3)
    assert not woke.is_set()
    backend.release(lease)
    assert woke.wait(5)


def test_redis_py_lock_held_excludes_leadercron(
    server: RedisServer, make: Make, election: str
) -> None:
    client = server.client()
    backend = make(server.url())
    lock = client.lock(f"leadercron:{election}", timeout=30)
    assert lock.acquire(blocking=False)
    assert backend.acquire(election, "a", 10.0) is None
    info = backend.leader(election)
    assert info is not None
    assert info.token is None  # a foreign holder has no fencing token
    assert info.identity == lock.local.token.decode()
    lock.release()
    lease = backend.acquire(election, "a", 10.0)
    assert lease is not None


def test_leadercron_excludes_redis_py_lock(server: RedisServer, make: Make, election: str) -> None:
    client = server.client()
    backend = make(server.url())
    lease = backend.acquire(election, "a", 10.0)
    assert lease is not None
    lock = client.lock(f"leadercron:{election}", timeout=30)
    assert not lock.acquire(blocking=False)
    backend.release(lease)
    assert lock.acquire(blocking=False)
    lock.release()


def test_wait_returns_by_a_foreign_holders_expiry(
    server: RedisServer, make: Make, election: str
) -> None:
    """A redis-py Lock neither publishes on release nor on expiry: the PTTL read bounds the wait.

    The Lock is released early (a DEL without PUBLISH): the waiter wakes by the lock's expiry."""
    client = server.client()
    waiter = make(server.url())
    lock = client.lock(f"leadercron:{election}", timeout=1.5, thread_local=False)
    assert lock.acquire(blocking=False)
    start = time.monotonic()
    threading.Timer(0.3, lock.release).start()
    waiter.wait_for_change(election, 30)
    elapsed = time.monotonic() - start
    assert elapsed < 1.5 + 3.0, elapsed
    assert waiter.acquire(election, "w", 10.0) is not None


def test_handover_after_release_is_woken_by_pubsub(
    server: RedisServer, make: Make, election: str
) -> None:
    holder, waiter = make(server.url()), make(server.url())
    latencies = []
    for round_ in range(5):
        lease = campaign(holder, election, "holder", 30.0, timeout=10)
        assert waiter.acquire(election, "waiter", 30.0) is None
        woke_at: list[float] = []

        def wait(woke_at: list[float] = woke_at) -> None:
            waiter.wait_for_change(election, 30.0)
            woke_at.append(time.monotonic())

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.2)
        assert not woke_at, f"round {round_}: woke while the holder held"
        released_at = time.monotonic()
        holder.release(lease)
        thread.join(5.0)
        assert woke_at, "release did not wake the waiter"
        handed = waiter.acquire(election, "waiter", 30.0)
        done = time.monotonic()
        assert handed is not None
        assert handed.token > lease.token
        latencies.append(done - released_at)
        waiter.release(handed)
    print(f"redis handover latency: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")  # fmt: skip
    assert statistics.median(latencies) < 1.0, latencies  # ~1 ms on an idle machine
    assert max(latencies) < 2.0, latencies


def test_close_wakes_a_pending_wait(server: RedisServer, make: Make, election: str) -> None:
    holder, waiter = make(server.url()), make(server.url())
    assert holder.acquire(election, "holder", 30.0) is not None
    done = waiting(waiter, election, 30.0)
    time.sleep(0.3)
    assert not done.is_set()
    closed_at = time.monotonic()
    waiter.close()
    assert done.wait(2.0)
    assert time.monotonic() - closed_at < 2.0


def test_pubsub_reconnects_after_a_server_restart(make: Make, election: str) -> None:
    srv = _start(RedisServer())
    try:
        holder, waiter = make(srv.url()), make(srv.url())
        lease = holder.acquire(election, "holder", 0.5)
        assert lease is not None
        waiter.wait_for_change(election, 5.0)  # subscribes, returns by the short expiry
        srv.restart()  # the subscription's connection dies with the server
        time.sleep(0.5)  # the listener thread sees the connection close and ends
        lease = campaign(holder, election, "holder", 30.0, timeout=10)
        woke = waiting(waiter, election, 30.0)
        time.sleep(0.5)
        assert not woke.is_set(), "woke while the holder held"
        holder.release(lease)
        assert woke.wait(5.0), "release after a restart did not wake the waiter"
    finally:
        srv.cleanup()


# -- credentials --------------------------------------------------------------------------------

# The ACL the docs recommend (docs/backends/redis.md), for prefix leadercron:.
ACL = (
    "lc on >lc-secret ~leadercron:* &leadercron:* "
    "+get +set +mget +pttl +pexpire +del +incr +publish +psubscribe +evalsha +script|load "
    "+zscore +zadd +zremrangebyscore +zrange"
)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    srv = _start(RedisServer(args=["--requirepass", "admin-secret", "--user", *ACL.split()]))
    yield srv
    srv.cleanup()


def test_acl_user_with_the_documented_permissions(
    acl_server: RedisServer, make: Make, election: str
) -> None:
    url = f"redis://lc:lc-secret@{acl_server.address}/0"
    holder, waiter = make(url), make(url)
    lease = holder.acquire(election, "holder", 30.0)
    assert lease is not None
    assert holder.renew(lease) is not None
    info = waiter.leader(election)
    assert info is not None
    assert info.identity == "holder"
    fire = int(time.time() * 1000)
    assert holder.claim(lease, "job", fire)
    assert waiter.ledger(election) == {"job": fire}
    woke = waiting(waiter, election, 30)
    time.sleep(0.3)
    holder.release(lease)
    assert woke.wait(5.0)
    assert waiter.acquire(election, "waiter", 30.0) is not None


def test_password_from_file_and_environment(
    acl_server: RedisServer,
    make: Make,
    election: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = tmp_path / "password"
    secret.write_text("lc-secret\n")
    backend = make(f"redis://lc@{acl_server.address}/0?password_file={secret}")
    lease = backend.acquire(election, "file", 10.0)
    assert lease is not None
    backend.release(lease)
    monkeypatch.setenv(PASSWORD_ENV, "lc-secret")
    backend = make(f"redis://lc@{acl_server.address}/0")
    lease = backend.acquire(election, "env", 10.0)
    assert lease is not None
    backend.release(lease)
    monkeypatch.setenv(PASSWORD_ENV, "admin-secret")  # the default user's password
    backend = make(f"redis://{acl_server.address}/0")
    assert backend.leader(election) is None


@pytest.mark.parametrize(
    "userinfo",
    ["lc:wrong@", "nobody:lc-secret@", "", ":wrong@"],
    ids=["wrong-password", "unknown-user", "no-credentials", "wrong-default-password"],
)
def test_refused_credentials_raise_auth_error_quickly(
    acl_server: RedisServer, make: Make, election: str, userinfo: str
) -> None:
    backend = make(f"redis://{userinfo}{acl_server.address}/0?timeout=10s")
    start = time.monotonic()
    with pytest.raises(BackendAuthError):
        backend.acquire(election, "x", 10.0)
    with pytest.raises(BackendAuthError):
        backend.wait_for_change(election, 10.0)  # the pub/sub connection authenticates too
    with pytest.raises(BackendAuthError):
        backend.leader(election)
    assert time.monotonic() - start < 5.0  # refused at once, not after the 10s timeout


def test_permission_denied_is_an_auth_error(
    acl_server: RedisServer, make: Make, election: str
) -> None:
    backend = make(f"redis://lc:lc-secret@{acl_server.address}/0?prefix=other:")
    with pytest.raises(BackendAuthError, match=r"NOPERM|permission"):
        backend.acquire(election, "x", 10.0)


def test_password_never_in_url_repr_errors_or_logs(
    make: Make, election: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    backend = make(f"redis://lc:pa%2Fss-word@127.0.0.1:{port}/0?timeout=1s")
    for shown in (backend.url, repr(backend)):
        assert "ss-word" not in shown
        assert "lc:***@" in shown
    with pytest.raises(BackendUnavailable) as excinfo:
        backend.acquire(election, "x", 1.0)
    with pytest.raises(BackendUnavailable) as excinfo2:
        backend.wait_for_change(election, 1.0)
    for text in (str(excinfo.value), str(excinfo2.value), caplog.text):
        assert "ss-word" not in text
        assert "pa%2Fss" not in text
    secret = tmp_path / "pw"
    secret.write_text("file-secret")
    backend = make(f"redis://lc@127.0.0.1:{port}/0?password_file={secret}")
    assert "file-secret" not in repr(backend)
    with pytest.raises(ConfigError) as bad:
        from_url(f"redis://lc:url-secret@127.0.0.1:{port}/0?bogus=1")
    assert "url-secret" not in str(bad.value)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server() -> Iterator[RedisServer]:
    srv = _start(RedisServer(tls=True, tls_auth_clients="yes"))
    yield srv
    srv.cleanup()


def test_tls_with_ca_and_client_certificate(
    tls_server: RedisServer, make: Make, election: str
) -> None:
    url = (
        f"rediss://127.0.0.1:{tls_server.port}/0?ca_file={tls_server.ca_file}"
        f"&cert_file={tls_server.client_cert}&key_file={tls_server.client_key}"
    )
    holder, waiter = make(url), make(url)
    lease = holder.acquire(election, "holder", 30.0)
    assert lease is not None
    assert holder.renew(lease) is not None
    woke = waiting(waiter, election, 30)
    time.sleep(0.3)
    assert not woke.is_set()
    holder.release(lease)
    assert woke.wait(5.0)
    handed = waiter.acquire(election, "waiter", 30.0)
    assert handed is not None
    assert handed.token > lease.token


def test_tls_refusals_are_unavailable(tls_server: RedisServer, make: Make, election: str) -> None:
    no_client_cert = make(f"rediss://127.0.0.1:{tls_server.port}/0?ca_file={tls_server.ca_file}")
    with pytest.raises(BackendUnavailable):
        no_client_cert.acquire(election, "x", 10.0)
    unknown_ca = make(
        f"rediss://127.0.0.1:{tls_server.port}/0?cert_file={tls_server.client_cert}"
        f"&key_file={tls_server.client_key}&timeout=2s"
    )
    with pytest.raises(BackendUnavailable, match=r"(?i)certificate|ssl"):
        unknown_ca.acquire(election, "x", 10.0)
    plain = make(f"redis://127.0.0.1:{tls_server.port}/0?timeout=1s")
    with pytest.raises(BackendUnavailable):
        plain.acquire(election, "x", 10.0)


# -- Redlock ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def masters() -> Iterator[list[RedisServer]]:
    servers = [_start(RedisServer()) for _ in range(3)]
    yield servers
    for srv in servers:
        srv.cleanup()


@pytest.fixture
def redlock_url(masters: list[RedisServer]) -> Iterator[str]:
    yield f"redis://{','.join(m.address for m in masters)}/0?mode=redlock&timeout=1s"
    for srv in masters:  # tests that stop masters leave them running again
        srv.resume()
        if srv.process is None or srv.process.poll() is not None:
            srv.start()


def test_redlock_acquire_renew_release_on_every_master(
    masters: list[RedisServer], redlock_url: str, make: Make, election: str
) -> None:
    holder, other = make(redlock_url), make(redlock_url)
    lease = holder.acquire(election, "holder", 10.0)
    assert lease is not None
    values = {m.client().get(f"leadercron:{election}") for m in masters}
    assert len(values) == 1
    assert None not in values
    assert other.acquire(election, "other", 10.0) is None
    assert holder.renew(lease) is not None
    info = other.leader(election)
    assert info is not None
    assert (info.identity, info.token) == ("holder", lease.token)
    woke = waiting(other, election, 30)
    time.sleep(0.3)
    assert not woke.is_set()
    holder.release(lease)
    assert woke.wait(5.0)
    assert all(m.client().exists(f"leadercron:{election}") == 0 for m in masters)
    handed = other.acquire(election, "other", 10.0)
    assert handed is not None
    assert handed.token > lease.token


def test_redlock_mutual_exclusion(redlock_url: str, make: Make, election: str) -> None:
    backends = [make(redlock_url) for _ in range(5)]
    barrier = threading.Barrier(5)
    results: list[Lease | None] = [None] * 5

    def first(i: int) -> None:
        barrier.wait()
        results[i] = backends[i].acquire(election, f"c{i}", 10.0)

    threads = [threading.Thread(target=first, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) <= 1, results  # a split vote may leave nobody: never two
    for i, lease in enumerate(results):
        if lease is not None:
            backends[i].release(lease)

    # Now everyone campaigns for two terms; nobody may hold while another holds.
    guard = threading.Lock()
    holder: list[str] = []
    violations: list[str] = []
    grants: list[int] = []

    def run(i: int) -> None:
        for _ in range(2):
            lease = campaign(backends[i], election, f"c{i}", 10.0, timeout=60)
            with guard:
                if holder:
                    violations.append(f"c{i} acquired while {holder[0]} held")
                holder.append(f"c{i}")
                grants.append(lease.token)
            time.sleep(0.02)
            with guard:
                holder.remove(f"c{i}")
            backends[i].release(lease)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not violations
    assert len(grants) == 10
    assert grants == sorted(grants)
    assert len(set(grants)) == 10


def test_redlock_one_master_down_still_works(
    masters: list[RedisServer], redlock_url: str, make: Make, election: str
) -> None:
    holder, other = make(redlock_url), make(redlock_url)
    masters[0].kill()
    lease = holder.acquire(election, "holder", 10.0)
    assert lease is not None
    assert other.acquire(election, "other", 10.0) is None
    assert holder.renew(lease) is not None
    info = other.leader(election)
    assert info is not None
    assert info.identity == "holder"
    woke = waiting(other, election, 30)
    time.sleep(0.3)
    assert not woke.is_set()
    holder.release(lease)
    assert woke.wait(5.0)
    assert other.acquire(election, "other", 10.0) is not None


def test_redlock_quorum_lost_never_grants(
    masters: list[RedisServer], redlock_url: str, make: Make, election: str
) -> None:
    holder, other = make(redlock_url), make(redlock_url)
    lease = holder.acquire(election, "holder", 10.0)
    assert lease is not None
    masters[0].kill()
    masters[1].kill()
    with pytest.raises(BackendUnavailable, match="quorum"):
        holder.renew(lease)
    with pytest.raises(BackendUnavailable):
        other.acquire(election, "other", 10.0)
    fresh = f"test-{election}-fresh"
    with pytest.raises(BackendUnavailable):
        other.acquire(fresh, "other", 10.0)  # one free master of three is no quorum
    assert masters[2].client().exists(f"leadercron:{fresh}") == 0  # the partial key is given back
    with pytest.raises(BackendUnavailable):
        other.leader(election)
    with pytest.raises(BackendUnavailable):
        other.wait_for_change(election, 1.0)


def test_redlock_validity_accounts_for_elapsed_time(
    masters: list[RedisServer], make: Make, election: str
) -> None:
    """A hung master costs the call its timeout; the lease is granted only while still valid."""
    url = f"redis://{','.join(m.address for m in masters)}/0?mode=redlock&timeout=1.2s"
    backend = make(url)
    masters[2].pause()
    try:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match="validity"):
            backend.acquire(election, "slow", 1.0)  # 1.2s elapsed > 1s ttl: never a lease
        assert time.monotonic() - start < 5
        for srv in masters[:2]:  # the too-slow campaign gave its keys back
            assert srv.client().exists(f"leadercron:{election}") == 0
        lease = backend.acquire(election, "patient", 10.0)  # 10 - 1.2 - 0.102 > 0
        assert lease is not None
        assert backend.renew(lease) is not None
    finally:
        masters[2].resume()


def test_redlock_tokens_increase_across_different_quorums(
    masters: list[RedisServer], redlock_url: str, make: Make, election: str
) -> None:
    backend = make(redlock_url)
    counter = f"leadercron:{election}:token"
    masters[0].client().set(counter, 100)  # the masters' counters disagree
    first = backend.acquire(election, "a", 10.0)
    assert first is not None
    assert first.token == 101
    # The grant raised every winning master's counter to the token.
    assert [int(m.client().get(counter) or 0) for m in masters] == [101, 101, 101]
    backend.release(first)
    masters[0].kill()  # the next quorum does not contain the master that had the largest count
    second = backend.acquire(election, "a", 10.0)
    assert second is not None
    assert second.token > first.token


def test_redlock_claims_need_a_quorum(
    masters: list[RedisServer], redlock_url: str, make: Make, election: str
) -> None:
    holder, reader = make(redlock_url), make(redlock_url)
    ledger = f"leadercron:{election}:ledger"
    lease = holder.acquire(election, "holder", 30.0)
    assert lease is not None
    base = int(time.time() * 1000)
    masters[0].client().zadd(ledger, {"job": base + 1_000})  # a partial claim on one master
    assert holder.claim(lease, "job", base + 1_000)  # the other two make a quorum
    assert not holder.claim(lease, "job", base + 1_000)
    assert reader.ledger(election) == {"job": base + 1_000}
    for srv in masters[:2]:  # a fire marked on a quorum is never claimed again
        srv.client().zadd(ledger, {"job": base + 2_000})
    assert not holder.claim(lease, "job", base + 2_000)
    assert reader.ledger(election) == {"job": base + 2_000}
    masters[2].client().zadd(ledger, {"lonely": base})  # on one master only: no mark
    assert "lonely" not in reader.ledger(election)
    masters[0].kill()
    assert holder.claim(lease, "job", base + 3_000)  # one master down: still a quorum
    assert reader.ledger(election)["job"] == base + 3_000
    masters[1].kill()
    with pytest.raises(BackendUnavailable):
        holder.claim(lease, "job", base + 4_000)
    with pytest.raises(BackendUnavailable):
        reader.ledger(election)


def test_claims_drop_marks_older_than_the_retention(
    server: RedisServer, make: Make, election: str
) -> None:
    backend = make(server.url())
    now = int(time.time() * 1000)
    week = int(LEDGER_RETENTION * 1000)
    server.client().zadd(f"leadercron:{election}:ledger", {"gone": now - week - 60_000})
    lease = backend.acquire(election, "a", 30.0)
    assert lease is not None
    assert backend.claim(lease, "job", now)
    assert backend.ledger(election) == {"job": now}
    backend.release(lease)
    assert not backend.claim(lease, "job", now + 1)  # a released term claims nothing


def test_redlock_validate_timing(redlock_url: str, make: Make, server: RedisServer) -> None:
    backend = make(redlock_url)
    backend.validate_timing(ttl=10.0, renew_deadline=9.8, retry_period=2.0)
    with pytest.raises(ConfigError, match="renew_deadline"):
        backend.validate_timing(ttl=10.0, renew_deadline=9.95, retry_period=2.0)
    single = make(server.url())
    single.validate_timing(ttl=10.0, renew_deadline=9.95, retry_period=2.0)


# -- URLs, options and failures -----------------------------------------------------------------


def test_url_parsing(tmp_path: Path) -> None:
    backend = from_url("redis://h1:7000,[::1]:7001,h3/2?mode=redlock&prefix=x:&timeout=250ms")
    assert isinstance(backend, RedisBackend)
    assert backend.redlock
    assert backend.quorum == 2
    assert backend.prefix == "x:"
    assert backend.timeout == 0.25
    assert [m.name for m in backend._masters] == ["h1:7000", "[::1]:7001", "h3:6379"]
    backend.close()
    single = from_url("redis://localhost")
    assert isinstance(single, RedisBackend)
    assert not single.redlock
    assert single.timeout == 5.0
    single.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h?bogus=1", "unknown option"),
        ("redis://h?timeout=soon", "timeout"),
        ("redis://h?timeout=0", "timeout"),
        ("redis://h?mode=paxos", "mode"),
        ("redis://h1,h2", "redlock"),
        ("redis://h:99999", "port"),
        ("redis://h:port", "host"),
        ("redis://", "host"),
        ("redis://h1,,h2?mode=redlock", "host"),
        ("redis://h/db0", "database"),
        ("redis://h?ca_file=/etc/hostname", "rediss"),
        ("rediss://h?ca_file=/nonexistent/ca.pem", "no such file"),
        ("rediss://h?key_file=/etc/hostname", "cert_file"),
        ("redis://u:p@h?password_file=/etc/hostname", "not both"),
        ("redis://u@h?password_file=/nonexistent/pw", "password_file"),
        ("redis://u@h", "needs a password"),
        ("redis://h?timeout=1s&timeout=2s", "twice"),
    ],
)
def test_bad_urls_raise_config_error(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match=message):
        from_url(url)


def test_malformed_url_is_a_config_error() -> None:
    # Through RedisBackend directly: the registry's from_url calls urlsplit() before us.
    with pytest.raises(ConfigError, match="IPv6"):
        RedisBackend.from_url("redis://[::1")


def test_unreachable_raises_unavailable_within_the_timeout(make: Make, election: str) -> None:
    backend = make(f"redis://127.0.0.1:{free_port()}/0?timeout=1s")
    lease = Lease(election, "x", 1, 10.0, handle="lc1:" + "0" * 32 + ":x")
    calls: list[Callable[[], object]] = [
        lambda: backend.acquire(election, "x", 10.0),
        lambda: backend.renew(lease),
        lambda: backend.release(lease),
        lambda: backend.leader(election),
        lambda: backend.wait_for_change(election, 10.0),
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(BackendUnavailable):
            call()
        assert time.monotonic() - start < 3.0


def test_hung_server_raises_unavailable_within_the_timeout(make: Make, election: str) -> None:
    srv = _start(RedisServer())
    try:
        backend = make(srv.url() + "?timeout=1s")
        lease = backend.acquire(election, "x", 30.0)
        assert lease is not None
        srv.pause()
        for call in (
            lambda: backend.renew(lease),
            lambda: backend.acquire(election, "y", 10.0),
            lambda: backend.leader(election),
        ):
            start = time.monotonic()
            with pytest.raises(BackendUnavailable):
                call()
            assert time.monotonic() - start < 4.0
        srv.resume()
        assert backend.renew(lease) is not None  # recovers once the server answers again
    finally:
        srv.cleanup()


def test_from_url_does_not_contact_the_server() -> None:
    start = time.monotonic()
    backend = from_url("redis://10.255.255.1:6379,10.255.255.2,10.255.255.3/0?mode=redlock")
    backend.close()
    assert time.monotonic() - start < 0.5


def test_closed_backend_raises_unavailable(server: RedisServer, election: str) -> None:
    backend = from_url(server.url())
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendUnavailable):
        backend.acquire(election, "x", 10.0)
    backend.wait_for_change(election, 10.0)  # returns at once
