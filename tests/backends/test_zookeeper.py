"""The zookeeper backend against a real ZooKeeper: interop both ways with kazoo's ``Election``,
queue order and predecessor-only watches, chroot, digest auth and ACLs, connection suspended
(server paused), session expiry, URL errors, an unreachable server; fenced claims (ledger layout,
a kazoo takeover racing claims, session expiry, a suspended connection, ACLs, compaction)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoAuthError
from kazoo.protocol.states import KazooState
from kazoo.security import ACL, Id, Permissions, make_digest_acl_credential

from leadercron.backends import Backend, Lease, from_url, zookeeper
from leadercron.backends.base import LEDGER_RETENTION
from leadercron.backends.zookeeper import PASSWORD_ENV, ZooKeeperBackend
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError
from tests.conftest import BACKENDS, campaign, shared_server, wait_until
from tests.servers.base import Server, free_port
from tests.servers.zookeeper import ZooKeeperServer, four_letter

pytestmark = pytest.mark.skipif("zookeeper" not in BACKENDS, reason="zookeeper not selected")

Make = Callable[[str], ZooKeeperBackend]
TTL = ZooKeeperServer.min_ttl
HANDOVER = 2.0  # the contract suite's bound for a graceful handover


@pytest.fixture(scope="module")
def server(servers: dict[str, Server]) -> ZooKeeperServer:
    """The test session's ZooKeeper (shared with the contract suite)."""
    srv = shared_server(servers, "zookeeper")
    assert isinstance(srv, ZooKeeperServer)
    return srv


@pytest.fixture
def make() -> Iterator[Make]:
    made: list[Backend] = []

    def _make(url: str) -> ZooKeeperBackend:
        backend = from_url(url)
        assert isinstance(backend, ZooKeeperBackend)
        made.append(backend)
        return backend

    yield _make
    for backend in made:
        backend.close()


@pytest.fixture
def kazoo() -> Iterator[Callable[..., KazooClient]]:
    """Started plain kazoo clients, stopped at teardown."""
    clients: list[KazooClient] = []

    def _client(hosts: str, **kwargs: object) -> KazooClient:
        client = KazooClient(hosts=hosts, timeout=10.0, **kwargs)
        client.start(timeout=10)
        clients.append(client)
        return client

    yield _client
    for client in clients:
        client.stop()
        client.close()


class Contender:
    """A plain kazoo ``Election("/election", identity)`` contender running in a thread."""

    def __init__(self, client: KazooClient, path: str, identity: str) -> None:
        self.election = client.Election(path, identity)
        self.leading = threading.Event()
        self.stop_leading = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # A contender whose session a test closes fails its release: that is expected.
        with contextlib.suppress(KazooException):
            self.election.run(self._lead)

    def _lead(self) -> None:
        self.leading.set()
        self.stop_leading.wait(60)

    def start(self) -> Contender:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop_leading.set()
        self.election.cancel()
        self.thread.join(10)


def node_of(server: ZooKeeperServer, path: str) -> str:
    return f"127.0.0.1:{server.port}{path}"


# -- interop with kazoo --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["returns", "session-closed"])
def test_kazoo_leader_hands_over_to_leadercron(
    server: ZooKeeperServer, make: Make, kazoo: Callable[..., KazooClient], election: str, how: str
) -> None:
    client = kazoo(node_of(server, ""))
    contender = Contender(client, f"/{election}", "kazoo-1").start()
    assert contender.leading.wait(10)
    backend = make(server.url())
    assert backend.acquire(election, "lc-1", 30.0) is None
    info = backend.leader(election)
    assert info is not None
    assert info.identity == "kazoo-1"
    assert isinstance(info.token, int)
    assert backend.candidates(election) == ["kazoo-1", "lc-1"]
    # Our node follows kazoo's layout: <uuid4 hex>__lock__<10-digit sequence>, data = identity.
    children = sorted(client.get_children(f"/{election}"), key=lambda n: n[-10:])
    assert all(re.fullmatch(r"[0-9a-f]{32}__lock__\d{10}", name) for name in children), children
    assert client.get(f"/{election}/{children[1]}")[0] == b"lc-1"

    acquired: list[tuple[float, Lease]] = []

    def wait_and_lead() -> None:
        lease = campaign(backend, election, "lc-1", 30.0, timeout=30)
        acquired.append((time.monotonic(), lease))

    thread = threading.Thread(target=wait_and_lead, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert not acquired, "leadercron led while kazoo held the election"
    started = time.monotonic()
    if how == "returns":
        contender.finish()  # the leader function returns: kazoo deletes its node
    else:
        client.stop()  # the kazoo session closes: the server deletes its ephemeral node
    thread.join(10)
    assert acquired, "leadercron did not take over"
    elapsed = acquired[0][0] - started
    assert elapsed < HANDOVER, f"handover took {elapsed:.3f}s"
    assert acquired[0][1].token > info.token
    new = backend.leader(election)
    assert new is not None
    assert (new.identity, new.token) == ("lc-1", acquired[0][1].token)
    contender.finish()


@pytest.mark.parametrize("how", ["release", "close", "expire"])
def test_leadercron_hands_over_to_a_kazoo_contender(
    server: ZooKeeperServer, make: Make, kazoo: Callable[..., KazooClient], election: str, how: str
) -> None:
    backend = make(server.url())
    ttl = TTL if how == "expire" else 30.0
    requested_at = time.monotonic()
    lease = backend.acquire(election, "lc-1", ttl)
    assert lease is not None
    contender = Contender(kazoo(node_of(server, "")), f"/{election}", "kazoo-1").start()
    assert wait_until(lambda: backend.candidates(election) == ["lc-1", "kazoo-1"], timeout=10)
    assert not contender.leading.wait(0.3), "kazoo led while leadercron held the election"
    started = time.monotonic()
    if how == "release":
        assert backend.renew(lease) is not None
        backend.release(lease)
    elif how == "close":
        backend.close()  # the session ends: the server deletes our node
    else:
        started = requested_at + ttl  # never renewed: the node goes when the lease runs out
    assert contender.leading.wait(ttl + 10), "kazoo did not take over"
    elapsed = time.monotonic() - started
    assert elapsed >= 0, "the lease ended before its ttl"
    assert elapsed < HANDOVER, f"handover took {elapsed:.3f}s after {how}"
    if how != "close":
        info = backend.leader(election)
        assert info is not None
        assert info.identity == "kazoo-1"
        assert info.token is not None
        assert info.token > lease.token
        assert backend.renew(lease) is None
    contender.finish()


def test_queue_order_and_predecessor_watches(
    server: ZooKeeperServer, make: Make, election: str
) -> None:
    a, b, c = (make(server.url()) for _ in range(3))
    lease_a = a.acquire(election, "a", 30.0)
    assert lease_a is not None
    assert b.acquire(election, "b", 30.0) is None
    assert c.acquire(election, "c", 30.0) is None
    assert a.candidates(election) == ["a", "b", "c"]
    woke: dict[str, float] = {}

    def wait(name: str, backend: Backend) -> None:
        backend.wait_for_change(election, 30.0)
        woke[name] = time.monotonic()

    threads = [
        threading.Thread(target=wait, args=(n, x), daemon=True) for n, x in (("b", b), ("c", c))
    ]
    for thread in threads:
        thread.start()

    def watched() -> dict[str, int]:
        # wchp: every watched path, followed by the sessions watching it.
        out: dict[str, int] = {}
        path = ""
        for line in four_letter(server.port, "wchp").splitlines():
            if line.startswith("/"):
                path = line
            elif line.strip().startswith("0x") and path.startswith(f"/{election}/"):
                out[path.rpartition("/")[2]] = out.get(path.rpartition("/")[2], 0) + 1
        return out

    nodes = sorted(server_children(server, election), key=lambda n: n[-10:])
    # No herd: b watches a's node, c watches b's, nobody else watches anything here.
    assert wait_until(lambda: watched() == {nodes[0]: 1, nodes[1]: 1}, timeout=10), watched()
    a.release(lease_a)
    assert wait_until(lambda: "b" in woke, timeout=5)
    lease_b = b.acquire(election, "b", 30.0)
    assert lease_b is not None
    assert lease_b.token > lease_a.token
    assert c.acquire(election, "c", 30.0) is None
    assert "c" not in woke or woke["c"] >= woke["b"]
    closed_at = time.monotonic()
    c.close()  # close() wakes a pending wait promptly
    threads[1].join(5)
    assert "c" in woke
    assert woke["c"] - closed_at < 2.0
    assert b.candidates(election) == ["b"]


def server_children(server: ZooKeeperServer, election: str) -> list[str]:
    client = KazooClient(hosts=node_of(server, ""), timeout=10.0)
    client.start(timeout=10)
    try:
        return list(client.get_children(f"/{election}"))
    finally:
        client.stop()
        client.close()


def test_a_waiting_node_goes_when_its_candidate_stops_campaigning(
    server: ZooKeeperServer, make: Make, election: str
) -> None:
    holder, idle = make(server.url()), make(server.url())
    lease = holder.acquire(election, "holder", 30.0)
    assert lease is not None
    assert idle.acquire(election, "idle", TTL) is None
    assert holder.candidates(election) == ["holder", "idle"]
    # idle never calls acquire or wait_for_change again: its place is given up after its ttl.
    assert wait_until(lambda: holder.candidates(election) == ["holder"], timeout=TTL + 10)
    holder.release(lease)
    assert holder.leader(election) is None


def test_chroot(
    server: ZooKeeperServer, make: Make, kazoo: Callable[..., KazooClient], election: str
) -> None:
    chroot = f"/apps/{election}/lc"
    backend = make(server.url() + chroot)
    lease = backend.acquire(election, "lc-1", 30.0)
    assert lease is not None
    plain = kazoo(node_of(server, ""))
    (node,) = plain.get_children(f"{chroot}/{election}")
    assert plain.get(f"{chroot}/{election}/{node}")[0] == b"lc-1"
    assert not plain.exists(f"/{election}")
    rooted = kazoo(node_of(server, chroot))
    contender = Contender(rooted, f"/{election}", "kazoo-1").start()
    assert wait_until(lambda: backend.candidates(election) == ["lc-1", "kazoo-1"], timeout=10)
    backend.release(lease)
    assert contender.leading.wait(10)
    contender.finish()


# -- auth and ACLs -------------------------------------------------------------------------------


def test_digest_auth_and_creator_acls(
    server: ZooKeeperServer,
    make: Make,
    kazoo: Callable[..., KazooClient],
    election: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    hostport = f"127.0.0.1:{server.port}"
    chroot = f"/secure-{election}"
    owner = make(f"zookeeper://alice:s3cret@{hostport}{chroot}")
    assert "s3cret" not in owner.url
    assert "s3cret" not in repr(owner)
    lease = owner.acquire(election, "alice-1", 30.0)
    assert lease is not None

    expected = [ACL(Permissions.ALL, Id("digest", make_digest_acl_credential("alice", "s3cret")))]
    authed = kazoo(hostport, auth_data=[("digest", "alice:s3cret")])
    (node,) = authed.get_children(f"{chroot}/{election}")
    for path in (chroot, f"{chroot}/{election}", f"{chroot}/{election}/{node}"):
        assert authed.get_acls(path)[0] == expected, path
    anonymous = kazoo(hostport)
    with pytest.raises(NoAuthError):
        anonymous.get_children(f"{chroot}/{election}")

    # The same user through password_file= and through the environment.
    password_file = tmp_path / "zk-password"
    password_file.write_text("s3cret\n")
    by_file = make(f"zk://{hostport}{chroot}?user=alice&password_file={password_file}")
    assert by_file.acquire(election, "alice-2", 30.0) is None
    info = by_file.leader(election)
    assert info is not None
    assert info.identity == "alice-1"
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    by_env = make(f"zookeeper://alice@{hostport}{chroot}")
    assert by_env.candidates(election) == ["alice-1", "alice-2"]

    # A wrong password, or none, is refused at once.
    monkeypatch.delenv(PASSWORD_ENV)
    for url in (f"zookeeper://alice:wrong@{hostport}{chroot}", f"zookeeper://{hostport}{chroot}"):
        intruder = make(url)
        started = time.monotonic()
        with pytest.raises(BackendAuthError):
            intruder.acquire(election, "intruder", 30.0)
        with pytest.raises(BackendAuthError):
            intruder.leader(election)
        assert time.monotonic() - started < 5.0
    assert owner.renew(lease) is not None


# -- failures ------------------------------------------------------------------------------------


@pytest.fixture
def fresh_server() -> Iterator[ZooKeeperServer]:
    srv = ZooKeeperServer()
    srv.start()
    yield srv
    srv.cleanup()


def test_suspended_connection_fires_the_alarm(
    fresh_server: ZooKeeperServer, make: Make, election: str
) -> None:
    # kazoo notices the pause after <= 2/3 of the session timeout (8 s); a renew then waits
    # 1 s for a reconnection before it gives up, which leaves 3 s before the session expires.
    ttl = 12.0
    backend = make(fresh_server.url() + "?timeout=1s")
    alarms: list[str] = []
    backend.set_alarm(alarms.append)
    lease = backend.acquire(election, "lc-1", ttl)
    assert lease is not None
    fresh_server.pause()
    try:
        assert wait_until(lambda: alarms, timeout=ttl), "no alarm while the server was paused"
        assert "suspended" in alarms[0]
        with pytest.raises(BackendUnavailable):
            backend.renew(lease)
    finally:
        fresh_server.resume()

    def renewed() -> Lease | None:
        try:
            return backend.renew(lease)
        except BackendUnavailable:
            return None

    # Back within the session timeout: the same term goes on.
    assert wait_until(renewed, timeout=10, interval=0.1)
    info = backend.leader(election)
    assert info is not None
    assert (info.identity, info.token) == ("lc-1", lease.token)


def test_session_expiry_ends_the_term(server: ZooKeeperServer, make: Make, election: str) -> None:
    backend = make(server.url())
    alarms: list[str] = []
    backend.set_alarm(alarms.append)
    lease = backend.acquire(election, "lc-1", 5.0)
    assert lease is not None
    # Expire the session the classic way: take it over with a second client, then close that.
    thief = KazooClient(hosts=node_of(server, ""), client_id=backend._zk.client_id, timeout=5.0)
    thief.start(timeout=10)
    thief.stop()
    thief.close()

    def lost() -> bool:
        try:
            return backend.renew(lease) is None
        except BackendUnavailable:
            return False

    assert wait_until(lost, timeout=15, interval=0.1)
    assert any("session lost" in reason for reason in alarms), alarms
    leases: list[Lease] = []

    def reacquired() -> bool:
        try:
            again = backend.acquire(election, "lc-1", 5.0)
        except BackendUnavailable:  # kazoo is still opening the new session
            return False
        leases.extend([again] if again else [])
        return again is not None

    assert wait_until(reacquired, timeout=15, interval=0.1)
    assert leases[0].token > lease.token


def test_unreachable_server_raises_unavailable_within_the_timeout(make: Make) -> None:
    backend = make(f"zookeeper://127.0.0.1:{free_port()}?timeout=1s")
    for call in (lambda: backend.acquire("e", "x", TTL), lambda: backend.leader("e")):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            call()
        assert time.monotonic() - started < 5.0


# -- configuration -------------------------------------------------------------------------------


def test_url_grammar() -> None:
    backend = from_url("zk://alice:pw@a:1,b,[::1]:3/x/y/?timeout=2s&max_session_timeout=1m")
    assert isinstance(backend, ZooKeeperBackend)
    assert backend.hosts == "a:1,b:2181,[::1]:3"
    assert backend.chroot == "/x/y"
    assert backend.timeout == 2.0
    assert backend.max_session_timeout == 60.0
    assert "pw" not in backend.url
    assert from_url("zookeeper://h").hosts == "h:2181"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "zookeeper://",
        "zookeeper://h:99999",
        "zookeeper://h:port",
        "zookeeper://h,,k",
        "zookeeper://h?timeout=soon",
        "zookeeper://h?timeout=0",
        "zookeeper://h?min_session_timeout=-1s",
        "zookeeper://h?bogus=1",
        "zookeeper://h?timeout=1s&timeout=2s",
        "zookeeper://h/a/../b",
        "zookeeper://h/a//b",
        "zookeeper://alice@h",
        "zookeeper://:pw@h",
        "zookeeper://alice:pw@h?user=bob",
        "zookeeper://h?password_file=/nonexistent/zk-password",
        "zookeeper://h?user=bob&password_file=/nonexistent/zk-password",
    ],
)
def test_bad_urls_raise_config_error(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError):
        from_url(url)


def test_password_given_twice(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("pw")
    with pytest.raises(ConfigError, match="twice"):
        from_url(f"zookeeper://alice:pw@h?password_file={password_file}")


def test_validate_timing() -> None:
    backend = from_url("zookeeper://h")
    backend.validate_timing(ttl=15.0, renew_deadline=10.0, retry_period=2.0)
    with pytest.raises(ConfigError, match="minimum session timeout"):
        backend.validate_timing(ttl=3.0, renew_deadline=2.0, retry_period=1.0)
    with pytest.raises(ConfigError, match="maximum session timeout"):
        backend.validate_timing(ttl=60.0, renew_deadline=40.0, retry_period=5.0)
    short = from_url("zookeeper://h?min_session_timeout=1s&max_session_timeout=2m")
    short.validate_timing(ttl=2.0, renew_deadline=1.5, retry_period=0.5)
    short.validate_timing(ttl=90.0, renew_deadline=60.0, retry_period=5.0)


def test_bad_election_name_is_a_config_error(make: Make) -> None:
    backend = make("zookeeper://127.0.0.1:1")
    with pytest.raises(ConfigError):
        backend.acquire("a//b", "x", TTL)


# -- fenced claims -------------------------------------------------------------------------------


def ledger_dir(election: str, chroot: str = "") -> str:
    return f"{chroot}/leadercron-ledger/{election}"


def test_claims_live_outside_the_election_and_leave_kazoo_alone(
    server: ZooKeeperServer, make: Make, kazoo: Callable[..., KazooClient], election: str
) -> None:
    backend = make(server.url())
    nested = f"{election}/nightly"  # an election under another election's path
    lease = backend.acquire(election, "lc-1", 30.0)
    nested_lease = backend.acquire(nested, "lc-1", 30.0)
    assert lease is not None
    assert nested_lease is not None
    base = int(time.time() * 1000)
    jobs = ["plain", "with_underscore", "a/b", "..", "", "é x", "x__lock__0000000001"]
    for offset, job in enumerate(jobs):
        assert backend.claim(lease, job, base + offset)
    assert backend.claim(nested_lease, "plain", base + 100)
    assert backend.ledger(election) == {job: base + i for i, job in enumerate(jobs)}
    assert backend.ledger(nested) == {"plain": base + 100}

    client = kazoo(node_of(server, ""))
    # One node per job, data = the mark; each name is one path component, never a __lock__ name.
    encoded = {"plain", "with%5Funderscore", "a%2Fb", "%2E%2E", "%", "%C3%A9%20x"}
    encoded.add("x%5F%5Flock%5F%5F0000000001")
    assert set(client.get_children(ledger_dir(election))) == encoded
    assert client.get(f"{ledger_dir(election)}/plain")[0] == str(base).encode()
    assert client.get_children(ledger_dir(f"{election}%2Fnightly")) == ["plain"]
    # The elections' paths hold contender nodes only: kazoo sees exactly the candidates.
    assert client.Election(f"/{election}").contenders() == ["lc-1"]
    assert client.Election(f"/{nested}").contenders() == ["lc-1"]
    assert all("__lock__" in name for name in client.get_children(f"/{nested}"))


def test_a_claim_racing_a_kazoo_takeover_is_refused_by_the_server(
    server: ZooKeeperServer, make: Make, kazoo: Callable[..., KazooClient], election: str
) -> None:
    backend = make(server.url())
    alarms: list[str] = []
    backend.set_alarm(alarms.append)
    lease = backend.acquire(election, "lc-1", 30.0)
    assert lease is not None
    admin = kazoo(node_of(server, ""))
    contender = Contender(kazoo(node_of(server, "")), f"/{election}", "kazoo-1").start()
    assert wait_until(lambda: backend.candidates(election) == ["lc-1", "kazoo-1"], timeout=10)
    base = int(time.time() * 1000)
    granted: list[int] = []
    refused = threading.Event()

    def claim_every_fire() -> None:
        for fire in range(base, base + 100_000):
            if not backend.claim(lease, "job", fire):
                refused.set()
                return
            granted.append(fire)

    claimer = threading.Thread(target=claim_every_fire, daemon=True)
    claimer.start()
    assert wait_until(lambda: len(granted) >= 5, timeout=10)
    # Our node goes (an operator, a partition healed by expiry, ...): kazoo takes over while
    # our process still believes it leads; the claims racing it must be refused by the server.
    admin.delete(lease.handle.path)
    assert contender.leading.wait(10), "kazoo did not take over"
    assert refused.wait(10), "claims went on after our node was deleted"
    claimer.join(10)
    deleted_at = admin.get(f"/{election}")[1].pzxid  # the zxid of our node's deletion
    data, stat = admin.get(f"{ledger_dir(election)}/job")
    assert stat.mzxid < deleted_at, "a claim was committed after the term's node was gone"
    assert int(data) == granted[-1]
    assert backend.ledger(election) == {"job": granted[-1]}
    assert not backend.claim(lease, "job", base + 200_000)
    assert any("check" in reason for reason in alarms), alarms
    assert backend.renew(lease) is None
    info = backend.leader(election)
    assert info is not None
    assert info.identity == "kazoo-1"
    contender.finish()


@pytest.mark.parametrize("noticed", [True, False], ids=["lost-noticed", "lost-unnoticed"])
def test_a_claim_after_session_expiry_is_refused(
    server: ZooKeeperServer,
    make: Make,
    kazoo: Callable[..., KazooClient],
    election: str,
    noticed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = make(server.url())
    alarms: list[str] = []
    backend.set_alarm(alarms.append)
    lease = backend.acquire(election, "lc-1", 30.0)
    assert lease is not None
    base = int(time.time() * 1000)
    assert backend.claim(lease, "job", base)
    if not noticed:
        # The backend misses the LOST event: its local state still says it leads, so only the
        # server's check op can refuse the claim.
        original = backend._on_state

        def hide_lost(zk: KazooClient, state: str) -> None:
            original(zk, KazooState.SUSPENDED if state == KazooState.LOST else state)

        monkeypatch.setattr(backend, "_on_state", hide_lost)
    states: list[str] = []
    backend._zk.add_listener(states.append)
    # Expire the session the classic way: take it over with a second client, then close that.
    thief = KazooClient(hosts=node_of(server, ""), client_id=backend._zk.client_id, timeout=5.0)
    thief.start(timeout=10)
    thief.stop()
    thief.close()
    admin = kazoo(node_of(server, ""))
    assert wait_until(lambda: admin.exists(lease.handle.path) is None, timeout=10)
    # kazoo has seen the expiry (LOST, every listener has run) and opened a new session.
    assert wait_until(lambda: KazooState.LOST in states and backend._zk.connected, timeout=15)
    assert lease.handle.ended is noticed

    def claimed(fire: int) -> bool | None:
        try:
            return backend.claim(lease, "job", fire)
        except BackendUnavailable:
            return None  # still reconnecting

    outcomes: list[bool | None] = []

    def answered() -> bool:
        outcomes.append(claimed(base + 1_000))
        return outcomes[-1] is not None

    assert wait_until(answered, timeout=15)
    assert outcomes[-1] is False
    assert True not in outcomes
    assert backend.ledger(election) == {"job": base}
    assert lease.handle.ended
    assert alarms
    again = campaign(backend, election, "lc-1", 30.0, timeout=15)
    assert again.token > lease.token
    assert backend.claim(again, "job", base + 1_000)
    assert not backend.claim(lease, "job", base + 2_000)
    assert backend.ledger(election) == {"job": base + 1_000}


def test_a_claim_while_suspended_does_not_succeed_on_local_state(
    fresh_server: ZooKeeperServer, make: Make, election: str
) -> None:
    ttl = 12.0  # as in test_suspended_connection_fires_the_alarm
    backend = make(fresh_server.url() + "?timeout=1s")
    alarms: list[str] = []
    backend.set_alarm(alarms.append)
    lease = backend.acquire(election, "lc-1", ttl)
    assert lease is not None
    base = int(time.time() * 1000)
    assert backend.claim(lease, "job", base)
    fresh_server.pause()
    try:
        assert wait_until(lambda: alarms, timeout=ttl), "no alarm while the server was paused"
        with pytest.raises(BackendUnavailable):
            backend.claim(lease, "job", base + 1_000)
    finally:
        fresh_server.resume()

    def claimed() -> bool:
        try:
            return backend.claim(lease, "job", base + 1_000)
        except BackendUnavailable:
            return False

    # Back within the session timeout: the node survived, the server's check admits the claim.
    assert wait_until(claimed, timeout=10, interval=0.1)
    assert backend.ledger(election) == {"job": base + 1_000}


def test_ledger_nodes_get_the_backend_acl(
    server: ZooKeeperServer,
    make: Make,
    kazoo: Callable[..., KazooClient],
    election: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    hostport = f"127.0.0.1:{server.port}"
    chroot = f"/secure-{election}"
    owner = make(f"zookeeper://alice:s3cret@{hostport}{chroot}")
    lease = owner.acquire(election, "alice-1", 30.0)
    assert lease is not None
    base = int(time.time() * 1000)
    assert owner.claim(lease, "job", base)

    expected = [ACL(Permissions.ALL, Id("digest", make_digest_acl_credential("alice", "s3cret")))]
    authed = kazoo(hostport, auth_data=[("digest", "alice:s3cret")])
    ledger = ledger_dir(election, chroot)
    for path in (f"{chroot}/leadercron-ledger", ledger, f"{ledger}/job"):
        assert authed.get_acls(path)[0] == expected, path
    anonymous = kazoo(hostport)
    with pytest.raises(NoAuthError):
        anonymous.get_children(ledger)
    with pytest.raises(NoAuthError):
        anonymous.set(f"{ledger}/job", b"0")
    assert make(f"zookeeper://alice:s3cret@{hostport}{chroot}").ledger(election) == {"job": base}
    for url in (f"zookeeper://alice:wrong@{hostport}{chroot}", f"zookeeper://{hostport}{chroot}"):
        with pytest.raises(BackendAuthError):
            make(url).ledger(election)


def test_compaction_drops_marks_older_than_the_retention(
    server: ZooKeeperServer,
    make: Make,
    kazoo: Callable[..., KazooClient],
    election: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(zookeeper, "COMPACT_BATCH", 2)
    admin = kazoo(node_of(server, ""))
    ledger = ledger_dir(election)
    now = int(time.time() * 1000)
    old = now - int(LEDGER_RETENTION * 1000) - 3_600_000  # an hour past the retention
    recent = now - int(LEDGER_RETENTION * 1000) + 3_600_000  # an hour before it
    # Marks a previous leader left: five expired ones, a recent one, and nodes not ours.
    for name, data in [*((f"old-{i}", old) for i in range(1, 6)), ("recent", recent)]:
        admin.create(f"{ledger}/{name}", str(data).encode(), makepath=True)
    admin.create(f"{ledger}/junk", b"not a mark")
    admin.create(f"{ledger}/not_ours", str(old).encode())

    def nodes() -> set[str]:
        return set(admin.get_children(ledger))

    first = make(server.url())
    lease = first.acquire(election, "first", 30.0)
    assert lease is not None
    # The first claim lists the ledger (sorted: junk, old-1..5, recent) and examines two nodes.
    assert first.claim(lease, "job", now)
    assert nodes() == {"job", "junk", "not_ours", "recent", *(f"old-{i}" for i in range(2, 6))}
    # A mark re-claimed after the listing is not dropped: it is read again when examined.
    admin.set(f"{ledger}/old-5", str(now).encode())
    for fire in range(now + 1, now + 4):
        assert first.claim(lease, "job", fire)
    assert nodes() == {"job", "junk", "not_ours", "recent", "old-5"}
    assert first.ledger(election) == {"job": now + 3, "recent": recent, "old-5": now}

    # The ledger is listed again only after COMPACT_EVERY: a newer expired mark waits for that,
    # or for the next leader, whose first claim lists it (junk, old-5, old-6, recent).
    admin.create(f"{ledger}/old-6", str(old).encode())
    assert first.claim(lease, "job", now + 4)
    assert "old-6" in nodes()
    first.release(lease)
    second = make(server.url())
    successor = campaign(second, election, "second", 30.0, timeout=10)
    assert second.claim(successor, "job", now + 5)
    assert "old-6" in nodes()
    assert second.claim(successor, "job", now + 6)
    assert nodes() == {"job", "junk", "not_ours", "recent", "old-5"}
    assert second.ledger(election) == {"job": now + 6, "recent": recent, "old-5": now}
