"""The etcd backend against real etcd servers and the real ``etcdctl elect``.

The contract itself is checked by tests/contract; these tests cover what is etcd's own: interop
with etcdctl, the URL path prefix, fencing tokens, auth, TLS, URL errors and failures.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from leadercron.backends import Lease, from_url
from leadercron.backends import etcd as etcd_backend
from leadercron.backends.etcd import PASSWORD_ENV, EtcdBackend, _Campaign
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError
from tests.conftest import BACKENDS, campaign, shared_server, wait_until
from tests.servers.base import Server, free_port
from tests.servers.etcd import EtcdServer

pytestmark = pytest.mark.skipif(
    "etcd" not in BACKENDS, reason="etcd not in LEADERCRON_TEST_BACKENDS"
)

TTL = EtcdServer.min_ttl


class Etcdctl:
    """A running ``etcdctl`` whose stdout lines are read in the background."""

    def __init__(self, server: EtcdServer, *args: str) -> None:
        self.proc = subprocess.Popen(
            server.etcdctl_argv(*args),
            env=server.etcdctl_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 10.0) -> str:
        return self.lines.get(timeout=timeout)

    def no_line(self, within: float) -> bool:
        try:
            self.lines.get(timeout=within)
        except queue.Empty:
            return True
        return False

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """SIGINT/SIGTERM make ``etcdctl elect`` resign before it exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def etcd(servers: dict[str, Server]) -> EtcdServer:
    """The session's shared etcd (the one the contract suite uses)."""
    server = shared_server(servers, "etcd")
    assert isinstance(server, EtcdServer)
    return server


@pytest.fixture
def make(etcd: EtcdServer) -> Iterator[list[EtcdBackend]]:
    made: list[EtcdBackend] = []
    yield made
    for backend in made:
        backend.close()


def backend(made: list[EtcdBackend], url: str) -> EtcdBackend:
    made_backend = from_url(url)
    assert isinstance(made_backend, EtcdBackend)
    made.append(made_backend)
    return made_backend


def kv(server: EtcdServer, key: str) -> dict[str, object] | None:
    """One key as ``etcdctl get -w json`` shows it (key and value decoded)."""
    import base64

    kvs = json.loads(server.etcdctl("get", key, "-w", "json")).get("kvs", [])
    if not kvs:
        return None
    found = kvs[0]
    found["key"] = base64.b64decode(found["key"]).decode()
    found["value"] = base64.b64decode(found.get("value", "")).decode()
    return dict(found)


# -- interop with etcdctl elect ---------------------------------------------------------------


def test_etcdctl_leader_blocks_us_until_it_resigns(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    elect = Etcdctl(etcd, "elect", election, "from-etcdctl")
    try:
        key = elect.line()
        assert key.startswith(f"{election}/")
        assert elect.line() == "from-etcdctl"
        ours = backend(make, etcd.url())
        assert ours.acquire(election, "leadercron", TTL) is None
        info = ours.leader(election)
        assert info is not None
        assert info.identity == "from-etcdctl"
        assert ours.candidates(election) == ["from-etcdctl", "leadercron"]
        got: list[Lease] = []
        waiter = threading.Thread(
            target=lambda: got.append(campaign(ours, election, "leadercron", TTL, 30)),
            daemon=True,
        )
        waiter.start()
        time.sleep(0.5)
        assert not got, "leadercron led while etcdctl held the election"
        stopped_at = time.monotonic()
        elect.stop(signal.SIGINT)  # etcdctl's lease has a 60 s TTL: only its resign is fast
        waiter.join(timeout=20)
        assert got, "leadercron did not take over after etcdctl resigned"
        assert time.monotonic() - stopped_at < 10
        assert info.token is not None
        assert got[0].token > info.token
    finally:
        elect.stop()


def test_etcdctl_observer_shows_our_identity(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, etcd.url())
    lease = ours.acquire(election, "observed-identity", TTL)
    assert lease is not None
    observer = Etcdctl(etcd, "elect", "-l", election)
    try:
        key = observer.line()
        assert observer.line() == "observed-identity"
        assert key == f"{election}/{lease.handle.lease_id:x}"
        stored = kv(etcd, key)
        assert stored is not None
        assert stored["create_revision"] == lease.token
        assert int(str(stored["lease"])) == lease.handle.lease_id
    finally:
        observer.stop(signal.SIGTERM)
        ours.release(lease)


def test_etcdctl_queued_behind_us_takes_over_on_release(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, etcd.url())
    lease = ours.acquire(election, "leadercron", 30)
    assert lease is not None
    elect = Etcdctl(etcd, "elect", election, "queued-etcdctl")
    try:
        assert wait_until(lambda: ours.candidates(election) == ["leadercron", "queued-etcdctl"], 10)
        assert elect.no_line(within=0.5), "etcdctl led while leadercron held the election"
        released_at = time.monotonic()
        ours.release(lease)
        assert elect.line().startswith(f"{election}/")
        assert time.monotonic() - released_at < 5
        assert elect.line() == "queued-etcdctl"
        info = ours.leader(election)
        assert info is not None
        assert info.identity == "queued-etcdctl"
        assert info.token is not None
        assert info.token > lease.token
        assert ours.acquire(election, "leadercron", TTL) is None
    finally:
        elect.stop()


def test_url_path_puts_the_keys_under_it(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, f"{etcd.url()}/jobs/prod/")
    assert ours.path == "jobs/prod"
    lease = ours.acquire(election, "pathed", TTL)
    assert lease is not None
    key = f"jobs/prod/{election}/{lease.handle.lease_id:x}"
    stored = kv(etcd, key)
    assert stored is not None
    assert stored["value"] == "pathed"
    # The same election without the path is a different one...
    assert backend(make, etcd.url()).leader(election) is None
    # ...and etcdctl reaches it as P/N.
    elect = Etcdctl(etcd, "elect", f"jobs/prod/{election}", "other")
    try:
        assert elect.no_line(within=0.5)
        ours.release(lease)
        assert elect.line().startswith(f"jobs/prod/{election}/")
    finally:
        elect.stop()


def test_fencing_token_is_the_create_revision_and_grows_across_tools(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, etcd.url())
    first = ours.acquire(election, "leadercron", TTL)
    assert first is not None
    ours.release(first)
    elect = Etcdctl(etcd, "elect", election, "between")
    try:
        key = elect.line()
        stored = kv(etcd, key)
        assert stored is not None
        middle = int(str(stored["create_revision"]))
        info = ours.leader(election)
        assert info is not None
        assert info.token == middle
    finally:
        elect.stop()
    second = campaign(ours, election, "leadercron", TTL, timeout=10)
    assert first.token < middle < second.token
    ours.release(second)


# -- leases ------------------------------------------------------------------------------------


def test_a_lease_lost_while_waiting_is_regranted_not_led(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    """Phantom leadership (etcd issue 11456): a waiter whose lease died must re-queue."""
    holder, waiter = backend(make, etcd.url()), backend(make, etcd.url())
    held = holder.acquire(election, "holder", 30)
    assert held is not None
    assert waiter.acquire(election, "waiter", 30) is None
    old = waiter._campaigns[election]
    etcd.etcdctl("lease", "revoke", f"{old.lease_id:x}")  # as if it expired during a long wait
    holder.release(held)
    lease = campaign(waiter, election, "waiter", 30, timeout=10)
    assert lease.handle.lease_id != old.lease_id
    assert lease.token > old.revision
    info = waiter.leader(election)
    assert info is not None
    assert (info.identity, info.token) == ("waiter", lease.token)
    assert waiter.renew(lease) is not None


def test_alarm_when_our_key_is_deleted_under_us(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, etcd.url())
    alarms: list[str] = []
    ours.set_alarm(alarms.append)
    lease = ours.acquire(election, "alarmed", 30)
    assert lease is not None
    etcd.etcdctl("del", f"{election}/{lease.handle.lease_id:x}")
    assert wait_until(lambda: alarms, 10), "no alarm after the leader key was deleted"
    assert "deleted" in alarms[0]
    assert ours.renew(lease) is None
    # An orderly release raises no alarm.
    again = campaign(ours, election, "alarmed", 30, timeout=10)
    ours.release(again)
    time.sleep(0.3)
    assert len(alarms) == 1, alarms


def test_close_wakes_a_waiter_at_once(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    holder, waiter = backend(make, etcd.url()), backend(make, etcd.url())
    assert holder.acquire(election, "holder", 30) is not None
    assert waiter.acquire(election, "waiter", 30) is None
    thread = threading.Thread(target=waiter.wait_for_change, args=(election, 30), daemon=True)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    waiter.close()
    thread.join(timeout=2)
    assert not thread.is_alive(), "close() did not wake wait_for_change"
    assert holder.candidates(election) == ["holder"]  # close ended the waiter's session


def test_ttl_is_rounded_up_and_validated(etcd: EtcdServer, make: list[EtcdBackend]) -> None:
    ours = backend(make, etcd.url())
    with pytest.raises(ConfigError, match="ttl >= 2s"):
        ours.validate_timing(ttl=1.5, renew_deadline=1, retry_period=0.5)
    ours.validate_timing(ttl=2.5, renew_deadline=2, retry_period=0.5)
    lease = ours.acquire("rounding-" + str(free_port()), "x", 2.2)
    assert lease is not None
    assert lease.ttl == 3.0
    ours.release(lease)


# -- fenced claims ----------------------------------------------------------------------------


def lease_info(server: EtcdServer, lease_id: int) -> dict[str, int]:
    """``etcdctl lease timetolive -w json``: ``ttl`` (-1 once gone) and ``granted-ttl``."""
    answer = json.loads(server.etcdctl("lease", "timetolive", f"{lease_id:x}", "-w", "json"))
    return {"ttl": int(answer["ttl"]), "granted-ttl": int(answer.get("granted-ttl", 0))}


def test_ledger_lives_beside_the_election_where_etcdctl_does_not_see_it(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, f"{etcd.url()}/jobs")
    lease = ours.acquire(election, "leadercron", 30)
    assert lease is not None
    base = int(time.time() * 1000)
    assert ours.claim(lease, "nightly", base)
    assert ours.claim(lease, "reports/weekly", base + 1)
    assert not ours.claim(lease, "nightly", -1), "a fire before the epoch is never claimable"
    ledger_key = f"jobs/{election}.leadercron-ledger/nightly"
    stored = kv(etcd, ledger_key)
    assert stored is not None
    assert stored["value"] == f"{base:020d}"
    ledger_lease = int(str(stored["lease"]))
    assert ledger_lease not in (0, lease.handle.lease_id)  # not the session: it outlives terms
    assert lease_info(etcd, ledger_lease)["granted-ttl"] == 14 * 24 * 3600
    assert ours.ledger(election) == {"nightly": base, "reports/weekly": base + 1}
    assert ours._ledger_prefix(election) == f"jobs/{election}.leadercron-ledger/".encode()
    assert EtcdBackend.from_url("etcd://h")._ledger_prefix("N") == b"N.leadercron-ledger/"
    # The election's line is untouched: only our key is under jobs/N/.
    assert etcd.etcdctl("get", "--prefix", "--keys-only", f"jobs/{election}/").split() == [
        f"jobs/{election}/{lease.handle.lease_id:x}"
    ]
    assert ours.candidates(election) == ["leadercron"]
    observer = Etcdctl(etcd, "elect", "-l", f"jobs/{election}")
    elect = Etcdctl(etcd, "elect", f"jobs/{election}", "etcdctl")
    try:
        assert observer.line() == f"jobs/{election}/{lease.handle.lease_id:x}"
        assert observer.line() == "leadercron"
        assert wait_until(lambda: ours.candidates(election) == ["leadercron", "etcdctl"], 10)
        assert elect.no_line(within=0.5), "etcdctl led past our key (or past a ledger key)"
        ours.release(lease)
        assert elect.line().startswith(f"jobs/{election}/")
        assert elect.line() == "etcdctl"
        assert observer.line().startswith(f"jobs/{election}/")
        assert observer.line() == "etcdctl"
    finally:
        elect.stop()
        observer.stop(signal.SIGTERM)
    assert ours.ledger(election) == {"nightly": base, "reports/weekly": base + 1}


def test_a_claim_racing_an_etcdctl_takeover_is_refused_by_etcd(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    """Claims in a loop while our key is deleted and the queued etcdctl takes over."""
    ours = backend(make, etcd.url())
    lease = ours.acquire(election, "leadercron", 30)
    assert lease is not None
    our_key = f"{election}/{lease.handle.lease_id:x}"
    elect = Etcdctl(etcd, "elect", election, "usurper")
    base = int(time.time() * 1000)
    results: list[tuple[int, bool, bool]] = []  # fire, claimed, sent after etcdctl led
    stop, etcdctl_leads = threading.Event(), threading.Event()

    def claim_forever() -> None:  # a deposed leader that never learns it was deposed
        fire = base
        while not stop.is_set() and len(results) < 5000:
            fire += 1
            late = etcdctl_leads.is_set()
            results.append((fire, ours.claim(lease, "job", fire), late))

    claimer = threading.Thread(target=claim_forever, daemon=True)
    try:
        assert wait_until(lambda: ours.candidates(election) == ["leadercron", "usurper"], 10)
        claimer.start()
        assert wait_until(lambda: sum(ok for _, ok, _ in results) >= 3, 10)
        deleted = json.loads(etcd.etcdctl("del", our_key, "-w", "json"))
        assert int(deleted.get("deleted", 0)) == 1
        takeover_revision = int(deleted["header"]["revision"])
        assert elect.line().startswith(f"{election}/")  # etcdctl leads now
        assert elect.line() == "usurper"
        etcdctl_leads.set()
        assert wait_until(lambda: sum(late for _, _, late in results) >= 3, 10)
    finally:
        stop.set()
        claimer.join(timeout=10)
        elect.stop()
    outcomes = [ok for _, ok, _ in results]
    wins = outcomes.count(True)
    assert outcomes == [True] * wins + [False] * (len(outcomes) - wins), "a claim won after a loss"
    assert not any(ok for _, ok, late in results if late), "a claim won while etcdctl led"
    stored = kv(etcd, f"{election}.leadercron-ledger/job")
    assert stored is not None
    assert int(str(stored["mod_revision"])) < takeover_revision
    assert ours.ledger(election) == {"job": results[wins - 1][0]}


def test_a_claim_after_the_lease_expired_in_etcd_is_refused(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, etcd.url())
    lease = ours.acquire(election, "short", TTL)
    assert lease is not None
    base = int(time.time() * 1000)
    assert ours.claim(lease, "job", base)
    # No renew: etcd expires the lease (2 s, plus its 0.5 s expiry scan) and deletes our key.
    assert wait_until(lambda: kv(etcd, f"{election}/{lease.handle.lease_id:x}") is None, 15)
    assert not ours.claim(lease, "job", base + 1)
    assert not ours.claim(lease, "new-job", base + 1)
    assert ours.ledger(election) == {"job": base}
    # The same identity on the same instance starts a new term; only that term can claim.
    again = campaign(ours, election, "short", 30, timeout=10)
    assert again.identity == lease.identity
    assert again.token > lease.token
    assert not ours.claim(lease, "job", base + 2)
    assert ours.claim(again, "job", base + 2)
    assert ours.ledger(election) == {"job": base + 2}
    ours.release(again)


def test_racing_claims_from_two_processes_views_admit_one(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    """The leader's claim and a deposed term's claim for one fire: only the leader's wins."""
    old, new = backend(make, etcd.url()), backend(make, etcd.url())
    deposed = old.acquire(election, "old", 30)
    assert deposed is not None
    etcd.etcdctl("lease", "revoke", f"{deposed.handle.lease_id:x}")  # ends the term in etcd
    current = campaign(new, election, "new", 30, timeout=10)
    base = int(time.time() * 1000)
    barrier = threading.Barrier(8)

    def claim(index: int) -> tuple[str, bool]:
        who, client, lease = ("old", old, deposed) if index % 2 else ("new", new, current)
        barrier.wait()
        return who, client.claim(lease, "job", base)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, range(8)))
    assert [who for who, ok in results if ok] == ["new"], results
    new.release(current)


def test_ledger_lease_is_shared_by_later_terms_and_replaced_when_revoked(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    first, second = backend(make, etcd.url()), backend(make, etcd.url())
    lease = first.acquire(election, "first", 30)
    assert lease is not None
    base = int(time.time() * 1000)
    assert first.claim(lease, "a", base)
    key_a = f"{election}.leadercron-ledger/a"
    stored = kv(etcd, key_a)
    assert stored is not None
    shared = int(str(stored["lease"]))
    first.release(lease)
    first.close()  # close revokes sessions, never the ledger lease
    assert lease_info(etcd, shared)["ttl"] > 0
    # A successor in another process finds the ledger lease through the newest ledger key.
    successor = campaign(second, election, "second", 30, timeout=10)
    assert second.claim(successor, "b", base + 1)
    stored = kv(etcd, f"{election}.leadercron-ledger/b")
    assert stored is not None
    assert int(str(stored["lease"])) == shared
    # An operator revokes the ledger lease: the marks go (as retention allows), claims go on.
    etcd.etcdctl("lease", "revoke", f"{shared:x}")
    assert second.ledger(election) == {}
    assert second.claim(successor, "a", base + 2)
    stored = kv(etcd, key_a)
    assert stored is not None
    assert int(str(stored["lease"])) not in (0, shared)
    assert second.ledger(election) == {"a": base + 2}
    second.release(successor)


def test_ledger_entries_expire_and_the_ledger_lease_rotates(
    etcd: EtcdServer, make: list[EtcdBackend], election: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a retention of 2 s: ledger leases of 4 s, replaced once less than 3 s are left."""
    monkeypatch.setattr(etcd_backend, "LEDGER_RETENTION", 2.0)
    ours = backend(make, etcd.url())
    lease = ours.acquire(election, "leadercron", 30)
    assert lease is not None
    base = int(time.time() * 1000)
    assert ours.claim(lease, "a", base)
    stored = kv(etcd, f"{election}.leadercron-ledger/a")
    assert stored is not None
    lease_a = int(str(stored["lease"]))
    assert lease_info(etcd, lease_a)["granted-ttl"] == 4
    time.sleep(1.1)  # lease_a now has less than 1.5 x retention left: the next claim rotates
    assert ours.claim(lease, "b", base + 1)
    stored = kv(etcd, f"{election}.leadercron-ledger/b")
    assert stored is not None
    lease_b = int(str(stored["lease"]))
    assert lease_b not in (0, lease_a)
    assert lease_info(etcd, lease_b)["granted-ttl"] == 4
    assert wait_until(lambda: "a" not in ours.ledger(election), 15), "mark a never expired"
    assert wait_until(lambda: ours.ledger(election) == {}, 15), "mark b never expired"
    # An expired mark is simply gone; the leader keeps claiming.
    assert ours.claim(lease, "a", base + 2)
    assert ours.ledger(election) == {"a": base + 2}
    ours.release(lease)


def test_claims_and_ledger_raise_unavailable_when_etcd_is_unreachable(
    make: list[EtcdBackend], election: str
) -> None:
    closed = backend(make, f"etcd://127.0.0.1:{free_port()}?timeout=1s")
    camp = _Campaign(election, "x", f"{election}/1".encode(), 1, 2, time.monotonic(), 7)
    lease = Lease(election, "x", 7, TTL, handle=camp)
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        closed.claim(lease, "job", int(time.time() * 1000))
    with pytest.raises(BackendUnavailable):
        closed.ledger(election)
    assert time.monotonic() - start < 4


# -- auth, TLS, URLs, failures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdServer]:
    """An etcd with auth enabled (root:secret) and 1 s auth tokens, to exercise re-login."""
    server = EtcdServer(extra_args=("--auth-token-ttl", "1"))
    server.start()
    server.etcdctl("user", "add", "root:secret")
    server.etcdctl("user", "grant-role", "root", "root")
    server.etcdctl("auth", "enable")
    yield server
    server.cleanup()


def test_auth_right_password_works_and_survives_token_expiry(
    auth_etcd: EtcdServer,
    make: list[EtcdBackend],
    election: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "secret")
    holder = backend(make, f"etcd://root:secret@127.0.0.1:{auth_etcd.client_port}")
    waiter = backend(make, f"etcd://127.0.0.1:{auth_etcd.client_port}?user=root&timeout=3s")
    assert "secret" not in holder.url
    lease = holder.acquire(election, "holder", 30)
    assert lease is not None
    time.sleep(2.5)  # the 1 s tokens expire; the next calls log in again
    assert holder.renew(lease) is not None
    assert waiter.acquire(election, "waiter", TTL) is None
    thread = threading.Thread(target=waiter.wait_for_change, args=(election, 30), daemon=True)
    thread.start()
    time.sleep(0.3)
    holder.release(lease)
    thread.join(timeout=5)
    assert not thread.is_alive(), "the watch did not see the release under auth"
    assert campaign(waiter, election, "waiter", TTL, timeout=10).identity == "waiter"


def test_auth_password_file(
    auth_etcd: EtcdServer, make: list[EtcdBackend], election: str, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("secret\n")
    ours = backend(
        make, f"etcd://127.0.0.1:{auth_etcd.client_port}?user=root&password_file={secret}"
    )
    assert ours.acquire(election, "x", TTL) is not None


@pytest.mark.parametrize(
    "userinfo",
    ["root:wrong@", "nobody:secret@", ""],
    ids=["wrong-password", "no-user", "anonymous"],
)
def test_auth_wrong_credentials_fail_fast(
    auth_etcd: EtcdServer, make: list[EtcdBackend], election: str, userinfo: str
) -> None:
    ours = backend(make, f"etcd://{userinfo}127.0.0.1:{auth_etcd.client_port}?timeout=3s")
    start = time.monotonic()
    with pytest.raises(BackendAuthError) as caught:
        ours.acquire(election, "x", TTL)
    assert time.monotonic() - start < 3
    assert "wrong" not in str(caught.value)
    with pytest.raises(BackendAuthError):
        ours.leader(election)


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(client_cert_auth=True)
    server.start()
    yield server
    server.cleanup()


def test_tls_with_client_certificate(
    tls_etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    assert tls_etcd.url().startswith("etcds://")
    holder, waiter = backend(make, tls_etcd.url()), backend(make, tls_etcd.url())
    lease = holder.acquire(election, "holder", TTL)
    assert lease is not None
    assert waiter.acquire(election, "waiter", TTL) is None
    thread = threading.Thread(target=waiter.wait_for_change, args=(election, 30), daemon=True)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()
    holder.release(lease)
    thread.join(timeout=5)
    assert not thread.is_alive(), "the TLS watch did not see the release"
    assert campaign(waiter, election, "waiter", TTL, timeout=10).identity == "waiter"
    # close() cuts a TLS watch stream too
    thread = threading.Thread(target=holder.wait_for_change, args=(election, 30), daemon=True)
    thread.start()
    time.sleep(0.3)
    holder.close()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_tls_refuses_an_unknown_ca_or_a_missing_client_certificate(
    tls_etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    assert tls_etcd.tls is not None
    port = tls_etcd.client_port
    no_cert = backend(make, f"etcds://127.0.0.1:{port}?ca_file={tls_etcd.tls.ca}&timeout=3s")
    system_ca = backend(make, f"etcds://127.0.0.1:{port}?timeout=3s")
    plain = backend(make, f"etcd://127.0.0.1:{port}?timeout=3s")
    for client in (no_cert, system_ca, plain):
        start = time.monotonic()
        with pytest.raises(BackendUnavailable):
            client.acquire(election, "x", TTL)
        assert time.monotonic() - start < 8


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("etcd://127.0.0.1:2379?color=blue", "unknown option 'color'"),
        ("etcd://127.0.0.1:2379?timeout=soon", "timeout"),
        ("etcd://127.0.0.1:2379?timeout=0", "timeout"),
        ("etcd://127.0.0.1:99999", "bad host"),
        ("etcd://127.0.0.1:2379,:2380", "bad host"),
        ("etcd://", "bad host"),
        ("etcd://127.0.0.1?ca_file=/etc/hostname", "etcds://"),
        ("etcds://127.0.0.1?cert_file=/etc/hostname", "go together"),
        ("etcds://127.0.0.1?ca_file=/no/such/ca.pem", "no such file"),
        ("etcd://root@127.0.0.1", "needs a password"),
        ("etcd://root:pw@127.0.0.1?user=root", "not both"),
        ("etcd://127.0.0.1?password_file=/etc/hostname", "needs a user"),
        ("etcd://root:pw@127.0.0.1?password_file=/etc/hostname", "not both"),
        ("redis://127.0.0.1", "expected scheme"),
    ],
)
def test_url_errors_are_one_line_config_errors(
    url: str, complaint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError) as caught:
        EtcdBackend.from_url(url)
    message = str(caught.value)
    assert complaint in message
    assert "\n" not in message
    assert "pw" not in message.replace("password", "")


def test_url_grammar() -> None:
    parsed = EtcdBackend.from_url(
        "etcd://10.0.0.1,10.0.0.2:2380,[::1]:2381//abs/prefix?timeout=250ms"
    )
    assert [(c.host, c.port) for c in parsed._clients] == [
        ("10.0.0.1", 2379),
        ("10.0.0.2", 2380),
        ("::1", 2381),
    ]
    assert parsed.path == "/abs/prefix"
    assert parsed.timeout == 0.25
    assert parsed._prefix("N") == b"/abs/prefix/N/"
    assert EtcdBackend.from_url("etcd://h")._prefix("N") == b"N/"


def test_unreachable_and_paused_raise_unavailable_within_the_timeout(
    make: list[EtcdBackend], election: str
) -> None:
    closed = backend(make, f"etcd://127.0.0.1:{free_port()},127.0.0.1:{free_port()}?timeout=1s")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="cannot reach etcd"):
        closed.acquire(election, "x", TTL)
    assert time.monotonic() - start < 3
    server = EtcdServer()
    server.start()
    try:
        ours = backend(make, f"{server.url()}?timeout=1s")
        alarms: list[str] = []
        ours.set_alarm(alarms.append)
        lease = ours.acquire(election, "x", 5)
        assert lease is not None
        watch = lease.handle.alarm_watch  # the leader's watch on its key is up
        assert wait_until(lambda: watch is not None and watch._sock is not None, 5)
        server.pause()
        for call in (lambda: ours.renew(lease), lambda: ours.leader(election)):
            start = time.monotonic()
            with pytest.raises(BackendUnavailable, match="did not answer"):
                call()
            assert time.monotonic() - start < 4
        server.resume()
        assert ours.renew(lease) is not None
        # A crash and restart of etcd keeps the lease (etcd restores it with a fresh TTL).
        assert alarms == []
        server.kill()
        assert wait_until(lambda: alarms, 5), "no alarm when etcd died under the leader"
        with pytest.raises(BackendUnavailable):
            ours.renew(lease)
        server.start()
        renewed = ours.renew(lease)
        assert renewed is not None
        assert renewed.token == lease.token
    finally:
        server.cleanup()


def test_credentials_for_an_etcd_without_auth_are_harmless(
    etcd: EtcdServer, make: list[EtcdBackend], election: str
) -> None:
    ours = backend(make, f"etcd://root:whatever@127.0.0.1:{etcd.client_port}")
    lease = ours.acquire(election, "x", TTL)
    assert lease is not None
    assert ours.renew(lease) is not None
    ours.release(lease)
