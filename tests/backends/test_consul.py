"""The consul:// backend beyond the contract suite: URL options, key layout, fencing tokens,
lock-delay, interop with the real ``consul lock`` binary, fenced claims and their ledger, the
alarm, ACL tokens, TLS and outages."""

from __future__ import annotations

import base64
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from leadercron.backends import from_url
from leadercron.backends.consul import LOCK_FLAGS, ConsulBackend
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError
from tests.conftest import BACKENDS, campaign, shared_server, wait_until, waiting
from tests.servers.base import Server, free_port
from tests.servers.consul import ConsulServer

pytestmark = pytest.mark.skipif("consul" not in BACKENDS, reason="consul not selected")

MASTER_TOKEN = "leadercron-master-0123456789"  # a test server's master token
DAY_MS = 86_400_000


@pytest.fixture
def server(servers: dict[str, Server]) -> ConsulServer:
    """The test session's shared Consul server (the contract suite uses it too)."""
    found = shared_server(servers, "consul")
    assert isinstance(found, ConsulServer)
    return found


@pytest.fixture
def make() -> Iterator[Callable[[str], ConsulBackend]]:
    made: list[ConsulBackend] = []

    def make(url: str) -> ConsulBackend:
        backend = from_url(url)
        assert isinstance(backend, ConsulBackend)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def election() -> str:
    return f"consul-test-{os.urandom(6).hex()}"


def with_options(url: str, **options: str) -> str:
    return url + "".join(f"&{key}={value}" for key, value in options.items())


def kv_entry(server: ConsulServer, key: str) -> dict[str, object] | None:
    found = server.api("GET", f"/v1/kv/{key}")
    return None if found is None else found[0]


def kv_tree(server: ConsulServer, prefix: str) -> dict[str, str]:
    """Every key under ``prefix`` with its value as text."""
    found = server.api("GET", f"/v1/kv/{prefix}?recurse") or []
    return {e["Key"]: base64.b64decode(e["Value"] or "").decode() for e in found}


def kv_put(server: ConsulServer, values: dict[str, str]) -> None:
    """Write raw values in one transaction (as another tool would)."""
    operations = [
        {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(value.encode()).decode()}}
        for key, value in values.items()
    ]
    server.api("PUT", "/v1/txn", operations)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- URL and options, offline ------------------------------------------------------------------


def test_url_grammar_and_defaults() -> None:
    plain = from_url("consul://consul.example")
    assert isinstance(plain, ConsulBackend)
    assert (plain.timeout, plain.lock_delay, plain.session_ttl_min) == (5.0, 15.0, 10.0)
    assert plain._where == "http://consul.example:8500"
    assert plain._key("nightly") == "nightly/.lock"

    tls = from_url(
        "consuls://10.0.0.7/team//jobs/?timeout=2s&lock_delay=0s&session_ttl_min=1s"
        "&dc=dc2&verify=false"
    )
    assert isinstance(tls, ConsulBackend)
    assert (tls.timeout, tls.lock_delay, tls.session_ttl_min) == (2.0, 0.0, 1.0)
    assert tls._where == "https://10.0.0.7:8501"
    assert tls._key("nightly") == "team/jobs/nightly/.lock"  # as `consul lock team/jobs/nightly`
    assert from_url("consul://[::1]:9500/p")._where == "http://[::1]:9500"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("consul://h?color=red", "unknown option 'color'"),
        ("consul://h?timeout=soon", "timeout"),
        ("consul://h?timeout=0s", "timeout must be greater than 0s"),
        ("consul://h?lock_delay=2m", "at most 60s"),
        ("consul://h?session_ttl_min=-1s", "session_ttl_min"),
        ("consul://h?timeout=1s&timeout=2s", "given twice"),
        ("consul://h?ca_file=/etc/hostname", "needs the consuls:// scheme"),
        ("consul://h?verify=false", "needs the consuls:// scheme"),
        ("consuls://h?verify=maybe", "verify"),
        ("consuls://h?ca_file=/no/such/ca.pem", "no such file"),
        ("consuls://h?key_file=/etc/hostname", "key_file needs cert_file"),
        ("consul://h?token=a&token_file=/etc/hostname", "not both"),
        ("consul://h?token_file=/no/such/token", "cannot read it"),
        ("consul://secret@h", "no user info"),
        ("consul://h:notaport", "invalid port"),
        ("consul:///just/a/path", "expected consul://host"),
        ("etcd://h", "scheme"),
    ],
)
def test_bad_urls_raise_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConsulBackend.from_url(url)


def test_token_sources_and_secrecy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-consul-env")
    monkeypatch.setenv("LEADERCRON_CONSUL_TOKEN", "from-leadercron-env")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    by_file = ConsulBackend.from_url(f"consul://h?token_file={token_file}")
    assert by_file._client.token == "from-file"
    in_url = ConsulBackend.from_url("consul://h/p?token=in-the-url&timeout=1s")
    assert in_url._client.token == "in-the-url"
    assert "in-the-url" not in in_url.url
    assert "in-the-url" not in repr(in_url)
    assert in_url.url == "consul://h/p?token=***&timeout=1s"
    assert ConsulBackend.from_url("consul://h")._client.token == "from-leadercron-env"
    monkeypatch.delenv("LEADERCRON_CONSUL_TOKEN")
    assert ConsulBackend.from_url("consul://h")._client.token == "from-consul-env"
    monkeypatch.delenv("CONSUL_HTTP_TOKEN")
    assert ConsulBackend.from_url("consul://h")._client.token is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        ConsulBackend.from_url(f"consul://h?token_file={tmp_path / 'empty'}")


def test_ledger_key_layout() -> None:
    """Beside the election's folder, never in it; job ids percent-encoded into one segment."""
    backend = ConsulBackend.from_url("consul://h/team//jobs/")
    assert backend._key("nightly") == "team/jobs/nightly/.lock"
    assert backend._ledger_folder("nightly") == "team/jobs/nightly.leadercron-ledger/"
    bare = ConsulBackend.from_url("consul://h")
    assert bare._ledger_folder("a/b") == "a/b.leadercron-ledger/"
    assert backend._job_segment("backup-1_x.y~") == "backup-1_x.y~"
    assert backend._job_segment("reports/daily") == "reports%2Fdaily"
    assert backend._job_segment("50% off") == "50%25%20off"
    # Never ".lock" (election "N.leadercron-ledger" would own that key), ".", or "..".
    assert backend._job_segment(".lock") == "%2Elock"
    assert backend._job_segment("..") == "%2E."


def test_validate_timing_needs_twice_session_ttl_min() -> None:
    default = ConsulBackend.from_url("consul://h")
    with pytest.raises(ConfigError, match="set ttl to at least 20s") as caught:
        default.validate_timing(ttl=15, renew_deadline=10, retry_period=2)
    assert "\n" not in str(caught.value)
    default.validate_timing(ttl=20, renew_deadline=10, retry_period=2)
    lowered = ConsulBackend.from_url("consul://h?session_ttl_min=1s")
    lowered.validate_timing(ttl=2, renew_deadline=1.5, retry_period=0.5)
    with pytest.raises(ConfigError, match="session_ttl_min"):
        lowered.validate_timing(ttl=1.5, renew_deadline=1, retry_period=0.5)


# -- against a real server ---------------------------------------------------------------------


def test_key_layout_session_and_leader(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    url = server.url().replace("/?", "/team/jobs?")
    backend = make(url)
    lease = backend.acquire(election, "alpha", 20.0)
    assert lease is not None
    key = f"team/jobs/{election}/.lock"
    entry = kv_entry(server, key)
    assert entry is not None
    assert entry["Flags"] == LOCK_FLAGS
    assert entry["Session"] == lease.handle
    assert entry["ModifyIndex"] == lease.token
    session = server.api("GET", f"/v1/session/info/{lease.handle}")[0]
    assert session["Name"] == "leadercron alpha"
    assert session["TTL"] == "10s"  # ttl/2
    assert session["Behavior"] == "release"
    assert session["LockDelay"] == 0
    info = backend.leader(election)
    assert info is not None
    assert (info.identity, info.token) == ("alpha", lease.token)
    assert backend.renew(lease) == lease

    backend.release(lease)
    entry = kv_entry(server, key)
    assert entry is not None
    assert not entry.get("Session")
    assert entry["Flags"] == LOCK_FLAGS  # the release keeps the key usable by consul lock
    assert server.api("GET", f"/v1/session/info/{lease.handle}") in (None, [])
    assert backend.leader(election) is None
    assert backend.renew(lease) is None


def test_fencing_token_is_the_acquisition_index_not_lock_index(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    """LockIndex counts acquisitions of one key and restarts at 1 when the key is deleted (as
    ``consul lock`` does on exit); the acquisition's ModifyIndex keeps increasing."""
    backend = make(server.url())
    key = f"{election}/.lock"
    tokens, lock_indexes = [], []
    for round_ in range(3):
        lease = backend.acquire(election, "alpha", 20.0)
        assert lease is not None
        entry = kv_entry(server, key)
        assert entry is not None
        tokens.append(lease.token)
        lock_indexes.append(entry["LockIndex"])
        backend.release(lease)
        if round_ == 1:
            server.api("DELETE", f"/v1/kv/{key}")
    assert lock_indexes == [1, 2, 1]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3


def test_silent_session_expires_within_ttl(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    """Session TTL ttl/2: Consul ends it about 2 x ttl/2 = ttl after the last renew."""
    holder, waiter = make(server.url()), make(server.url())
    ttl = 4.0
    lease = holder.acquire(election, "silent", ttl)
    assert lease is not None
    acquired_at = time.monotonic()
    taken = campaign(waiter, election, "waiter", ttl, timeout=4 * ttl)
    elapsed = time.monotonic() - acquired_at
    assert ttl / 2 <= elapsed < ttl + 2.0, f"silent holder expired after {elapsed:.2f}s"
    assert taken.token > lease.token


def test_lost_races_reuse_one_session(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    holder, other = make(server.url()), make(server.url())
    assert holder.acquire(election, "holder", 20.0) is not None
    name = f"leadercron other-{election}"
    for _ in range(5):
        assert other.acquire(election, f"other-{election}", 20.0) is None
    sessions = server.api("GET", "/v1/session/list")
    assert [s["Name"] for s in sessions].count(name) == 1


def test_renew_after_the_session_is_invalidated(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    backend = make(with_options(server.url(), dc="dc1"))  # the server's datacenter, by name
    lease = backend.acquire(election, "alpha", 20.0)
    assert lease is not None
    server.api("PUT", f"/v1/session/destroy/{lease.handle}")
    assert backend.renew(lease) is None
    assert backend.leader(election) is None


def test_wait_for_change_is_bounded_and_wakes_on_close(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    holder, waiter = make(server.url()), make(server.url())
    assert holder.acquire(election, "holder", 30.0) is not None
    start = time.monotonic()
    waiter.wait_for_change(election, 1.0)
    assert 0.9 <= time.monotonic() - start < 5.0

    returned = waiting(waiter, election, 30.0)
    time.sleep(0.3)
    assert not returned.is_set()
    closed_at = time.monotonic()
    waiter.close()
    assert returned.wait(5.0)
    assert time.monotonic() - closed_at < 1.0


def test_lock_delay_after_invalidation_but_not_after_release(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    url = server.url().replace("lock_delay=0s", "lock_delay=3s")
    holder, waiter = make(url), make(url)
    attempts = 0

    def counted_acquire(name: str, identity: str, ttl: float) -> object:
        nonlocal attempts
        attempts += 1
        return ConsulBackend.acquire(waiter, name, identity, ttl)

    waiter.acquire = counted_acquire  # type: ignore[assignment,method-assign]

    # A session invalidated while holding the key (as when it expires): lock-delay.
    lease = holder.acquire(election, "holder", 30.0)
    assert lease is not None
    server.api("PUT", f"/v1/session/destroy/{lease.handle}")
    invalidated_at = time.monotonic()
    assert waiter.acquire(election, "waiter", 30.0) is None  # free key, but lock-delay
    assert waiter.leader(election) is None
    taken = campaign(waiter, election, "waiter", 30.0, timeout=15)
    delayed = time.monotonic() - invalidated_at
    assert 2.5 <= delayed < 3.0 + 5.0, f"took over {delayed:.2f}s after invalidation"
    assert attempts <= 3 + 4, f"{attempts} acquires during a 3s lock-delay: polling too fast"
    assert taken.token > lease.token

    # A voluntary release: no lock-delay, the other candidate takes over at once.
    released_at = time.monotonic()
    waiter.release(taken)
    again = campaign(holder, election, "holder", 30.0, timeout=10)
    assert time.monotonic() - released_at < 1.5
    assert again.token > taken.token


# -- interop with the real `consul lock` ---------------------------------------------------------


def consul_lock(server: ConsulServer, prefix: str, command: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    return subprocess.Popen(
        ["consul", "lock", f"-http-addr={server.http_address}", prefix, command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_consul_lock_holds_then_leadercron_takes_over(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str, tmp_path: Path
) -> None:
    backend = make(server.url())
    before = backend.acquire(election, "leadercron", 30.0)
    assert before is not None
    backend.release(before)

    stop = tmp_path / "stop"
    proc = consul_lock(
        server, election, f"echo started; while [ ! -e {stop} ]; do sleep 0.05; done"
    )
    try:
        assert lines_of(proc).get(timeout=20) == "started"
        assert backend.acquire(election, "leadercron", 30.0) is None
        info = backend.leader(election)
        assert info is not None
        assert info.identity.startswith("Consul lock for")
        assert info.token is None
        woke = threading.Event()

        def wait() -> None:
            backend.wait_for_change(election, 30.0)
            woke.set()

        threading.Thread(target=wait, daemon=True).start()
        time.sleep(0.5)
        assert not woke.is_set(), "wait_for_change returned while consul lock held"
        stopped_at = time.monotonic()
        stop.touch()  # the command exits; consul lock releases and deletes the key
        assert woke.wait(10), "consul lock's release did not wake the waiter"
        lease = campaign(backend, election, "leadercron", 30.0, timeout=10)
        assert time.monotonic() - stopped_at < 5.0
        assert lease.token > before.token
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()


def test_leadercron_holds_then_consul_lock_runs(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    """With a URL path P, election N is `consul lock P/N`."""
    backend = make(server.url().replace("/?", "/interop/jobs?"))
    lease = backend.acquire(election, "leadercron", 30.0)
    assert lease is not None
    proc = consul_lock(server, f"interop/jobs/{election}", "echo started")
    try:
        lines = lines_of(proc)
        with pytest.raises(queue.Empty):
            lines.get(timeout=2.0)
        assert proc.poll() is None, "consul lock should wait, not fail"
        assert backend.renew(lease) is not None
        released_at = time.monotonic()
        backend.release(lease)
        assert lines.get(timeout=10) == "started"
        assert time.monotonic() - released_at < 3.0
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    # consul lock deleted the key on exit; the next term's token still increases.
    assert kv_entry(server, f"interop/jobs/{election}/.lock") is None
    again = backend.acquire(election, "leadercron", 30.0)
    assert again is not None
    assert again.token > lease.token


# -- fenced claims and the ledger ------------------------------------------------------------


def test_ledger_lives_beside_the_lock_and_survives_consul_lock(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    backend = make(server.url().replace("/?", "/claims?"))
    lease = backend.acquire(election, "leadercron", 30.0)
    assert lease is not None
    base = now_ms()
    odd = ["reports/daily", ".lock", "50% off", "ünïcode"]
    assert backend.claim(lease, "nightly", base)
    for job in odd:
        assert backend.claim(lease, job, base + 1)
    folder = f"claims/{election}.leadercron-ledger/"
    assert kv_tree(server, folder) == {
        f"{folder}nightly": str(base),
        f"{folder}reports%2Fdaily": str(base + 1),
        f"{folder}%2Elock": str(base + 1),
        f"{folder}50%25%20off": str(base + 1),
        f"{folder}%C3%BCn%C3%AFcode": str(base + 1),
    }
    assert list(kv_tree(server, f"claims/{election}/")) == [f"claims/{election}/.lock"]
    assert backend.ledger(election) == {"nightly": base, **dict.fromkeys(odd, base + 1)}
    backend.release(lease)

    # consul lock takes the election, runs, and deletes its key on exit: the ledger stays.
    proc = consul_lock(server, f"claims/{election}", "echo started")
    try:
        assert lines_of(proc).get(timeout=20) == "started"
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    assert kv_tree(server, f"claims/{election}/") == {}
    assert backend.ledger(election)["nightly"] == base
    again = backend.acquire(election, "leadercron", 30.0)
    assert again is not None
    assert again.token > lease.token
    assert not backend.claim(again, "nightly", base), "a claimed fire ran again"
    assert backend.claim(again, "nightly", base + 60_000)


def test_claims_of_a_term_the_server_ended_are_refused(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str, tmp_path: Path
) -> None:
    """A holder that stopped renewing still believes it leads: Consul refuses its claims once
    its session expired, while ``consul lock`` holds the election, and after it left."""
    deposed = make(server.url())
    lease = deposed.acquire(election, "deposed", 2.0)  # session TTL 1s, never renewed
    assert lease is not None
    base = now_ms()
    assert deposed.claim(lease, "job", base)
    assert wait_until(lambda: not (kv_entry(server, f"{election}/.lock") or {}).get("Session"), 15)
    assert not deposed.claim(lease, "job", base + 1_000)  # expired, nobody took over

    stop = tmp_path / "stop"
    proc = consul_lock(
        server, election, f"echo started; while [ ! -e {stop} ]; do sleep 0.05; done"
    )
    try:
        assert lines_of(proc).get(timeout=20) == "started"
        assert not deposed.claim(lease, "job", base + 2_000)  # consul lock holds
        assert not deposed.claim(lease, "never-claimed", base + 2_000)
        stop.touch()
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    assert not deposed.claim(lease, "job", base + 3_000)  # consul lock deleted the key
    assert deposed.ledger(election) == {"job": base}


def test_a_refused_claim_is_no_auth_error_whatever_the_election_is_called(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    """Consul's refusal quotes the key: "failed session check for key ..."."""
    backend = make(server.url())
    named = f"{election}-ACL-Permission denied"
    lease = backend.acquire(named, "holder", 30.0)
    assert lease is not None
    assert backend.claim(lease, "job", now_ms())
    backend.release(lease)
    assert not backend.claim(lease, "job", now_ms() + 1_000)


def test_a_claim_retries_its_compare_and_set_while_its_fire_is_newer(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    """Another claim of the same term lands between a claim's read and its transaction."""
    backend, other = make(server.url()), make(server.url())
    lease = backend.acquire(election, "holder", 30.0)
    assert lease is not None
    base = now_ms()
    assert backend.claim(lease, "job", base)
    real_txn = backend._txn
    sent: list[str] = []
    interloper: list[int] = []

    def racing_txn(operations: list[dict[str, object]], what: str) -> tuple[int, object]:
        if not sent and interloper:
            assert other.claim(lease, "job", interloper[0])
        sent.append(what)
        return real_txn(operations, what)

    backend._txn = racing_txn  # type: ignore[method-assign]
    interloper.append(base + 1_000)  # older than ours: our claim reads again and wins
    assert backend.claim(lease, "job", base + 2_000)
    assert len(sent) == 2
    assert backend.ledger(election) == {"job": base + 2_000}

    sent.clear()
    interloper[0] = base + 4_000  # newer than ours: our claim reads again and gives up
    assert not backend.claim(lease, "job", base + 3_000)
    assert len(sent) == 1
    assert backend.ledger(election) == {"job": base + 4_000}


def test_ledger_compaction_drops_marks_older_than_the_retention(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    url = server.url()
    folder = f"{election}.leadercron-ledger/"
    now = now_ms()
    stale = {f"{folder}stale-{i:02}": str(now - 8 * DAY_MS) for i in range(40)}
    kept = {f"{folder}recent": str(now - 6 * DAY_MS), f"{folder}notes": "not a mark"}
    kv_put(server, {**stale, **kept})
    first = make(url)
    lease = first.acquire(election, "first", 30.0)
    assert lease is not None

    # The first claim of an instance compacts, at most 32 entries per transaction...
    assert first.claim(lease, "job", now)
    assert len(set(kv_tree(server, folder)) & set(stale)) == 8
    # ...and the next one goes on while stale entries remain.
    assert first.claim(lease, "job", now + 1)
    assert set(kv_tree(server, folder)) == {f"{folder}job", *kept}
    # Then not again for an hour (a claim reads one key, not the whole ledger).
    late = f"{folder}stale-late"
    kv_put(server, {late: str(now - 8 * DAY_MS)})
    assert first.claim(lease, "job", now + 2)
    assert late in kv_tree(server, folder)
    assert first.ledger(election) == {
        "job": now + 2,
        "recent": now - 6 * DAY_MS,
        "stale-late": now - 8 * DAY_MS,
    }

    # A deposed term compacts nothing; the next leader's first claim does.
    first.release(lease)
    second = make(url)
    assert not second.claim(lease, "job", now + 3)
    assert late in kv_tree(server, folder)
    successor = second.acquire(election, "second", 30.0)
    assert successor is not None
    assert second.claim(successor, "job", now + 3)
    assert set(kv_tree(server, folder)) == {f"{folder}job", *kept}


def test_alarm_when_our_session_loses_the_key(
    server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    ours = make(server.url())
    alarms: list[str] = []
    ours.set_alarm(alarms.append)
    lease = ours.acquire(election, "alarmed", 30.0)
    assert lease is not None
    assert ours.renew(lease) is not None
    time.sleep(0.3)
    assert alarms == [], "renewing the session must not raise the alarm"

    server.api("PUT", f"/v1/session/destroy/{lease.handle}")  # as when it expires
    assert wait_until(lambda: alarms, 10), "no alarm after our session lost the key"
    assert "our session no longer holds it" in alarms[0]
    assert ours.renew(lease) is None
    # An orderly release raises no alarm.
    again = campaign(ours, election, "alarmed", 30.0, timeout=10)
    ours.release(again)
    time.sleep(0.5)
    assert len(alarms) == 1, alarms
    assert ours._guards == {}


# -- ACL tokens, TLS, outages (servers of their own) ------------------------------------------


@pytest.fixture
def acl_server() -> Iterator[ConsulServer]:
    server = ConsulServer(acl_token=MASTER_TOKEN)
    server.start()
    yield server
    server.cleanup()


def test_acl_token_right_and_wrong(
    acl_server: ConsulServer,
    make: Callable[[str], ConsulBackend],
    election: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("LEADERCRON_CONSUL_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(MASTER_TOKEN + "\n")
    good = make(with_options(acl_server.url(), token_file=str(token_file)))
    lease = good.acquire(election, "alpha", 20.0)
    assert lease is not None
    assert good.renew(lease) is not None
    assert good.leader(election) is not None
    good.release(lease)
    assert MASTER_TOKEN not in good.url + repr(good)

    monkeypatch.setenv("CONSUL_HTTP_TOKEN", MASTER_TOKEN)
    by_env = make(acl_server.url())
    assert by_env.leader(election) is None

    wrong_token = "not-the-token-42"
    for url in (
        with_options(acl_server.url(), token=wrong_token, timeout="10s"),
        acl_server.url() + "&timeout=10s",  # LEADERCRON_CONSUL_TOKEN wins over CONSUL_HTTP_TOKEN
    ):
        monkeypatch.setenv("LEADERCRON_CONSUL_TOKEN", wrong_token)
        wrong = make(url)
        assert wrong_token not in wrong.url + repr(wrong)
        calls: list[Callable[[], object]] = [
            partial(wrong.acquire, election, "beta", 20.0),
            partial(wrong.leader, election),
            partial(wrong.wait_for_change, election, 1.0),
        ]
        for call in calls:
            start = time.monotonic()
            with pytest.raises(BackendAuthError) as caught:
                call()
            assert time.monotonic() - start < 5.0
            assert wrong_token not in str(caught.value)

    monkeypatch.delenv("LEADERCRON_CONSUL_TOKEN")
    monkeypatch.delenv("CONSUL_HTTP_TOKEN")
    anonymous = make(acl_server.url())
    with pytest.raises(BackendAuthError):
        anonymous.acquire(election, "gamma", 20.0)


def test_claim_without_write_access_to_the_ledger_is_an_auth_error(
    acl_server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    """Consul reports a denied operation of a transaction like a failed check (409): the claim
    must raise, not pass it off as a lost term."""
    rules = (
        f'key_prefix "{election}/" {{ policy = "write" }}\nsession_prefix "" {{ policy = "write" }}'
    )
    acl_server.api("PUT", "/v1/acl/policy", {"Name": f"lock-only-{election}", "Rules": rules})
    token = acl_server.api(
        "PUT", "/v1/acl/token", {"Policies": [{"Name": f"lock-only-{election}"}]}
    )
    backend = make(with_options(acl_server.url(), token=token["SecretID"]))
    lease = backend.acquire(election, "alpha", 20.0)
    assert lease is not None
    with pytest.raises(BackendAuthError, match="Permission denied"):
        backend.claim(lease, "job", now_ms())
    assert backend.ledger(election) == {}  # a recursive read skips what the token may not read


@pytest.fixture
def tls_server() -> Iterator[ConsulServer]:
    server = ConsulServer(tls=True)
    server.start()
    yield server
    server.cleanup()


def test_tls_with_client_certificate(
    tls_server: ConsulServer, make: Callable[[str], ConsulBackend], election: str
) -> None:
    base = f"consuls://127.0.0.1:{tls_server.https_port}/?session_ttl_min=1s&lock_delay=0s"
    backend = make(
        with_options(
            base,
            ca_file=str(tls_server.ca_file),
            cert_file=str(tls_server.client_cert),
            key_file=str(tls_server.client_key),
        )
    )
    lease = backend.acquire(election, "alpha", 20.0)
    assert lease is not None
    info = backend.leader(election)
    assert info is not None
    assert info.identity == "alpha"
    backend.release(lease)
    assert backend.leader(election) is None

    no_client_cert = make(with_options(base, ca_file=str(tls_server.ca_file), timeout="3s"))
    with pytest.raises(BackendUnavailable):
        no_client_cert.leader(election)
    unknown_ca = make(
        with_options(
            base,
            cert_file=str(tls_server.client_cert),
            key_file=str(tls_server.client_key),
            timeout="3s",
        )
    )
    with pytest.raises(BackendUnavailable, match=r"(?i)certificate"):
        unknown_ca.leader(election)


def test_unreachable_and_paused_servers_raise_unavailable_within_the_timeout(
    make: Callable[[str], ConsulBackend], election: str
) -> None:
    closed = make(f"consul://127.0.0.1:{free_port()}?session_ttl_min=1s&timeout=1s")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        closed.acquire(election, "alpha", 2.0)
    assert time.monotonic() - start < 2.0

    server = ConsulServer()
    server.start()
    try:
        backend = make(with_options(server.url(), timeout="1s"))
        lease = backend.acquire(election, "alpha", 10.0)
        assert lease is not None
        server.pause()
        calls: list[Callable[[], object]] = [
            partial(backend.renew, lease),
            partial(backend.leader, election),
            partial(backend.wait_for_change, election, 30.0),
            partial(backend.claim, lease, "job", now_ms()),
            partial(backend.ledger, election),
            partial(backend.release, lease),
        ]
        for call in calls:
            start = time.monotonic()
            with pytest.raises(BackendUnavailable):
                call()
            assert time.monotonic() - start < 1.0 + 3.0
    finally:
        server.cleanup()
