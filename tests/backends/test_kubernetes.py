"""The kubernetes backend against the in-repo fake API server, through the real kubernetes client.

client-go LeaseLock compatibility (the fields as written, a Go-written Lease blocking and then
taken over by observed expiry), the 409 race, release semantics, watch wake-ups, fenced claims
in the ledger annotation, auth and TLS, URL errors, and an unreachable or paused API server.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from leadercron.backends import Lease, from_url
from leadercron.backends import kubernetes as kube_backend
from leadercron.backends.base import LEDGER_RETENTION
from leadercron.backends.kubernetes import (
    LEDGER_ANNOTATION,
    TERM_ANNOTATION,
    KubernetesBackend,
)
from leadercron.errors import BackendAuthError, BackendUnavailable, ConfigError
from leadercron.term import format_time
from tests.conftest import campaign, wait_until, waiting
from tests.servers.fake_kube import FakeKubeServer

Make = Callable[..., KubernetesBackend]
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
CLIENT_GO_FIELDS = {
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeKubeServer]:
    srv = FakeKubeServer()
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeKubeServer]]:
    """A factory of servers of the test's own (to pause, or with a token, TLS, short history)."""
    made: list[FakeKubeServer] = []

    def start(**kwargs: Any) -> FakeKubeServer:
        srv = FakeKubeServer(**kwargs)
        srv.start()
        made.append(srv)
        return srv

    yield start
    for srv in made:
        srv.cleanup()


@pytest.fixture
def make(server: FakeKubeServer) -> Iterator[Make]:
    made: list[KubernetesBackend] = []

    def _make(url: str | None = None) -> KubernetesBackend:
        backend = from_url(url or server.url())
        assert isinstance(backend, KubernetesBackend)
        made.append(backend)
        return backend

    yield _make
    for backend in made:
        backend.close()


def raw_get(server: FakeKubeServer, name: str) -> dict[str, Any]:
    status, lease = server.request("GET", server.lease_path(name))
    assert status == 200, lease
    assert isinstance(lease, dict)
    return lease


def raw_put(server: FakeKubeServer, lease: dict[str, Any]) -> dict[str, Any]:
    status, written = server.request("PUT", server.lease_path(lease["metadata"]["name"]), lease)
    assert status == 200, written
    assert isinstance(written, dict)
    return written


def _go_now() -> datetime:
    """``time.Now()`` as client-go writes it. This Python client drops a zero fraction of a
    second, which the API server would refuse as a MicroTime, so avoid exactly zero."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond or 1)


def typed_api(server: FakeKubeServer) -> Any:
    """The official client's generated Lease API, configured from the server's kubeconfig."""
    new_client: Any = kube_config.new_client_from_config
    return kube_client.CoordinationV1Api(new_client(config_file=str(server.kubeconfig)))


class GoElector:
    """Writes a Lease the way client-go's LeaderElector does, through the typed Python client."""

    def __init__(self, server: FakeKubeServer, election: str, identity: str, duration: int):
        self.api = typed_api(server)
        self.election = election
        self.identity = identity
        self.duration = duration

    def create(self, renew_time: datetime, transitions: int = 0) -> None:
        spec = kube_client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.duration,
            acquire_time=renew_time,
            renew_time=renew_time,
            lease_transitions=transitions,
        )
        body = kube_client.V1Lease(metadata=kube_client.V1ObjectMeta(name=self.election), spec=spec)
        self.api.create_namespaced_lease("default", body)

    def renew(self) -> None:
        lease = self.api.read_namespaced_lease(self.election, "default")
        lease.spec.renew_time = _go_now()
        self.api.replace_namespaced_lease(self.election, "default", lease)

    def take_over(self) -> None:
        """client-go's takeover of an expired Lease: holder changes, transitions + 1."""
        lease = self.api.read_namespaced_lease(self.election, "default")
        now = _go_now()
        lease.spec.holder_identity = self.identity
        lease.spec.lease_duration_seconds = self.duration
        lease.spec.acquire_time = now
        lease.spec.renew_time = now
        lease.spec.lease_transitions = (lease.spec.lease_transitions or 0) + 1
        self.api.replace_namespaced_lease(self.election, "default", lease)


# -- the Lease as client-go sees it -----------------------------------------------------------


def test_lease_fields_are_client_go_leaselock_fields(
    server: FakeKubeServer, make: Make, election: str
) -> None:
    backend = make()
    lease = backend.acquire(election, "pod-a", 2.3)
    assert lease is not None
    assert lease.ttl == 3.0, "leaseDurationSeconds is whole seconds, rounded up"
    raw = raw_get(server, election)
    assert raw["apiVersion"] == "coordination.k8s.io/v1"
    assert raw["kind"] == "Lease"
    spec = raw["spec"]
    assert set(spec) == CLIENT_GO_FIELDS
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 3
    assert spec["leaseTransitions"] == lease.token == 0
    assert spec["acquireTime"] == spec["renewTime"]
    assert MICRO_TIME.match(spec["renewTime"]), spec["renewTime"]
    written = datetime.strptime(spec["renewTime"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert abs(written - datetime.now(UTC)) < timedelta(minutes=1)
    assert raw["metadata"]["annotations"][TERM_ANNOTATION] == "0"

    # The official client's model reads it back (the Go types, generated).
    typed = typed_api(server).read_namespaced_lease(election, "default")
    assert typed.spec.holder_identity == "pod-a"
    assert typed.spec.renew_time.tzinfo is not None

    time.sleep(0.01)
    assert backend.renew(lease) is lease
    renewed = raw_get(server, election)
    assert renewed["spec"]["acquireTime"] == spec["acquireTime"]
    assert renewed["spec"]["renewTime"] > spec["renewTime"]
    assert renewed["spec"]["leaseTransitions"] == 0
    assert int(renewed["metadata"]["resourceVersion"]) > int(raw["metadata"]["resourceVersion"])

    backend.release(lease)
    released = raw_get(server, election)["spec"]
    # What client-go's ReleaseOnCancel writes.
    assert released["holderIdentity"] == ""
    assert released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 0
    assert released["acquireTime"] == released["renewTime"] > renewed["spec"]["renewTime"]
    assert backend.leader(election) is None
    # Released means free at once: nobody waits for the old duration.
    successor = make().acquire(election, "pod-b", 2)
    assert successor is not None
    assert successor.token == 1


def test_a_go_holder_blocks_acquire_whatever_its_renew_time_says(
    server: FakeKubeServer, make: Make, election: str
) -> None:
    go = GoElector(server, election, "go-pod", duration=3)
    # A renewTime an hour old on this host's wall clock: skew must not make it look expired.
    go.create(datetime.now(UTC).replace(microsecond=500000) - timedelta(hours=1), transitions=4)
    backend = make()
    assert backend.acquire(election, "py-pod", 3) is None
    info = backend.leader(election)
    assert info is not None
    assert info.identity == "go-pod"
    assert info.token is None, "a client-go holder keeps no fencing token"
    # While the Go holder renews, the Lease stays its own past its duration.
    start = time.monotonic()
    while time.monotonic() - start < 4.5:
        go.renew()
        assert backend.acquire(election, "py-pod", 3) is None
        time.sleep(0.3)
    # It goes silent: taken over once unchanged for leaseDurationSeconds on *our* clock.
    silent = time.monotonic()
    lease = campaign(backend, election, "py-pod", 3, timeout=15)
    waited = time.monotonic() - silent
    assert 2.5 <= waited < 3 + 5, waited
    assert lease.token == 5, "leaseTransitions + 1"
    spec = raw_get(server, election)["spec"]
    assert spec["holderIdentity"] == "py-pod"
    assert spec["leaseTransitions"] == 5


def test_a_go_takeover_ends_our_term_and_keeps_the_ledger(
    server: FakeKubeServer, make: Make, election: str
) -> None:
    backend = make()
    lease = backend.acquire(election, "py-pod", 2)
    assert lease is not None
    fire = int(time.time() * 1000)
    assert backend.claim(lease, "job", fire)
    GoElector(server, election, "go-pod", duration=2).take_over()
    assert backend.claim(lease, "job", fire + 1000) is False
    assert backend.renew(lease) is None
    # client-go replaced the spec only: our ledger annotation survived.
    assert backend.ledger(election) == {"job": fire}
    info = backend.leader(election)
    assert info is not None
    assert info.identity == "go-pod"
    assert info.token is None


def test_a_record_with_our_identity_written_elsewhere_is_not_taken_early(
    server: FakeKubeServer, make: Make, election: str
) -> None:
    # client-go would take it at once (same identity = itself); leadercron waits for expiry,
    # because one identity may run twice by mistake and the other may still be alive.
    GoElector(server, election, "same-pod", duration=30).create(
        datetime.now(UTC).replace(microsecond=250000)
    )
    assert make().acquire(election, "same-pod", 30) is None


# -- races and release ------------------------------------------------------------------------


def _read_together(backends: list[KubernetesBackend], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every backend's GET wait for the others' before anyone writes."""
    barrier = threading.Barrier(len(backends))
    for backend in backends:
        original = backend._get

        def together(election: str, original: Any = original) -> Any:
            lease = original(election)
            barrier.wait(timeout=10)
            return lease

        monkeypatch.setattr(backend, "_get", together)


@pytest.mark.parametrize("existing", [False, True], ids=["create", "replace"])
def test_two_candidates_that_read_the_same_version_have_one_winner(
    server: FakeKubeServer,
    make: Make,
    election: str,
    monkeypatch: pytest.MonkeyPatch,
    existing: bool,
) -> None:
    if existing:
        first = make()
        old = first.acquire(election, "old", 2)
        assert old is not None
        first.release(old)
    a, b = make(), make()
    _read_together([a, b], monkeypatch)
    before = server.stats()
    results: dict[str, Lease | None] = {}
    threads = [
        threading.Thread(target=lambda c=c, n=n: results.update({n: c.acquire(election, n, 30)}))
        for c, n in ((a, "a"), (b, "b"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    monkeypatch.undo()
    winners = [lease for lease in results.values() if lease is not None]
    assert len(results) == 2
    assert len(winners) == 1, results
    conflicts = server.stats() - before
    assert conflicts["PUT 409" if existing else "POST 409"] == 1
    info = a.leader(election)
    assert info is not None
    assert info.identity == winners[0].identity
    assert info.token == winners[0].token == (1 if existing else 0)


def test_renew_rides_over_a_conflict_with_another_writer(
    server: FakeKubeServer, make: Make, election: str
) -> None:
    backend = make()
    lease = backend.acquire(election, "holder", 5)
    assert lease is not None
    # Somebody annotates the Lease (kubectl annotate): our cached version is stale.
    raw = raw_get(server, election)
    raw["metadata"].setdefault("annotations", {})["team"] = "infra"
    raw_put(server, raw)
    before = server.stats()
    assert backend.renew(lease) is lease
    delta = server.stats() - before
    assert delta["PUT 409"] == 1, delta
    assert delta["PUT 200"] == 1, delta
    assert raw_get(server, election)["metadata"]["annotations"]["team"] == "infra"


def test_release_is_compare_and_clear(server: FakeKubeServer, make: Make, election: str) -> None:
    first, second = make(), make()
    old = first.acquire(election, "first", 2)
    assert old is not None
    first.release(old)
    first.release(old)
    new = second.acquire(election, "second", 30)
    assert new is not None
    before = raw_get(server, election)
    first.release(old)  # late: must not clear the successor
    after = raw_get(server, election)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["holderIdentity"] == "second"
    assert first.claim(old, "job", int(time.time() * 1000)) is False


def test_an_acquire_that_timed_out_but_landed_is_adopted(
    servers: Callable[..., FakeKubeServer], election: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = servers()
    backend = from_url(srv.url() + "&timeout=1s")
    assert isinstance(backend, KubernetesBackend)
    try:
        original = backend._get

        def get_then_pause(name: str) -> Any:
            lease = original(name)
            srv.pause()  # the PUT that follows reaches the kernel, not the server
            return lease

        monkeypatch.setattr(backend, "_get", get_then_pause)
        with pytest.raises(BackendUnavailable):
            backend.acquire(election, "me", 30)
        monkeypatch.undo()
        srv.resume()
        # The server applies the PUT it found waiting: the Lease is ours, nobody was told.
        assert wait_until(lambda: srv.request("GET", srv.lease_path(election))[0] == 200, 10)
        start = time.monotonic()
        lease = backend.acquire(election, "me", 30)
        assert lease is not None, "a landed acquire must be adopted, not waited out for 30s"
        assert time.monotonic() - start < 5
        assert lease.token == 0
        assert backend.renew(lease) is lease
    finally:
        srv.resume()
        backend.close()


# -- waiting ----------------------------------------------------------------------------------


def test_a_watch_wakes_the_follower_on_release_without_polling(
    server: FakeKubeServer, make: Make, election: str
) -> None:
    holder, follower = make(), make()
    lease = holder.acquire(election, "holder", 30)
    assert lease is not None
    assert follower.acquire(election, "follower", 30) is None
    before = server.stats()
    returned = waiting(follower, election, 30)
    for _ in range(3):  # renewals only push the expiry on: the follower keeps waiting
        time.sleep(0.2)
        assert holder.renew(lease) is lease
    time.sleep(0.2)
    assert not returned.is_set(), "wait_for_change returned while the holder still held"
    released_at = time.monotonic()
    holder.release(lease)
    assert returned.wait(5)
    assert time.monotonic() - released_at < 2.0
    delta = server.stats() - before
    assert delta["WATCH"] == 1, delta  # one watch carried three renewals and the release
    assert delta["GET 200"] == 0, delta  # it watches from the version its acquire read
    assert follower.acquire(election, "follower", 30) is not None


def test_a_wait_ends_at_the_silent_holders_observed_expiry(make: Make, election: str) -> None:
    holder, follower = make(), make()
    assert holder.acquire(election, "holder", 2) is not None
    assert follower.acquire(election, "follower", 2) is None
    start = time.monotonic()
    follower.wait_for_change(election, 30)
    waited = time.monotonic() - start
    assert 1.0 <= waited < 4.0, waited
    assert follower.acquire(election, "follower", 2) is not None


def test_a_wait_returns_on_a_too_old_resource_version(
    servers: Callable[..., FakeKubeServer], election: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = servers(history=3)
    holder, follower = from_url(srv.url()), from_url(srv.url())
    assert isinstance(follower, KubernetesBackend)
    try:
        assert holder.acquire(election, "holder", 30) is not None
        original = follower._get

        def get_then_busy(name: str) -> Any:
            lease = original(name)
            for i in range(5):  # enough writes elsewhere to push our version out of history
                srv.request("POST", srv.lease_path("x").rsplit("/", 1)[0],
                            {"metadata": {"name": f"busy-{i}-{election}"}, "spec": {}})  # fmt: skip
            return lease

        monkeypatch.setattr(follower, "_get", get_then_busy)
        start = time.monotonic()
        follower.wait_for_change(election, 30)  # 410 Expired: a spurious return, no error
        assert time.monotonic() - start < 5
    finally:
        holder.close()
        follower.close()


def test_close_ends_a_wait_at_once(make: Make, election: str) -> None:
    holder, follower = make(), make()
    assert holder.acquire(election, "holder", 30) is not None
    returned = waiting(follower, election, 30)
    time.sleep(0.3)
    assert not returned.is_set()
    follower.close()
    assert returned.wait(2.0)


# -- fenced claims ----------------------------------------------------------------------------


def test_claims_live_in_the_ledger_annotation(
    server: FakeKubeServer, make: Make, election: str
) -> None:
    backend = make()
    lease = backend.acquire(election, "holder", 5)
    assert lease is not None
    now = int(time.time() * 1000)
    stale = now - int(LEDGER_RETENTION * 1000) - 1
    raw = raw_get(server, election)
    raw["metadata"]["annotations"][LEDGER_ANNOTATION] = json.dumps({"gone": stale})
    raw_put(server, raw)
    assert backend.claim(lease, "job", now)
    annotation = raw_get(server, election)["metadata"]["annotations"][LEDGER_ANNOTATION]
    assert json.loads(annotation) == {"job": now}, "marks older than the retention are dropped"
    spec_before = raw_get(server, election)["spec"]
    assert backend.claim(lease, "job", now + 1)
    assert raw_get(server, election)["spec"] == spec_before, "a claim does not renew the lease"
    raw = raw_get(server, election)
    raw["metadata"]["annotations"][LEDGER_ANNOTATION] = "not json"
    raw_put(server, raw)
    with pytest.raises(BackendUnavailable, match="ledger"):
        backend.claim(lease, "job", now + 2)


# -- credentials, TLS, errors -----------------------------------------------------------------


def test_bearer_token_over_tls_and_auth_failures(
    servers: Callable[..., FakeKubeServer], election: str
) -> None:
    srv = servers(token="s3cr3t-token", tls=True)
    good = from_url(srv.url())
    follower = from_url(srv.url())
    try:
        lease = good.acquire(election, "holder", 30)
        assert lease is not None
        assert good.renew(lease) is lease
        returned = waiting(follower, election, 30)
        time.sleep(0.2)
        good.release(lease)
        assert returned.wait(5)
        assert "s3cr3t" not in good.url
        assert "s3cr3t" not in repr(good)
    finally:
        good.close()
        follower.close()
    for name, token in (("no-token", None), ("wrong-token", "guess")):
        path = srv.write_kubeconfig(name, token=token)
        bad = from_url(f"kubernetes://default/?kubeconfig={path}")
        try:
            with pytest.raises(BackendAuthError, match="401"):
                bad.acquire(election, "intruder", 30)
            with pytest.raises(BackendAuthError):
                bad.leader(election)
            with pytest.raises(BackendAuthError):
                bad.wait_for_change(election, 1)
        finally:
            bad.close()


def test_unreachable_and_paused_api_server(
    servers: Callable[..., FakeKubeServer], election: str
) -> None:
    srv = servers()
    closed = from_url(srv.unreachable_url())
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        closed.acquire(election, "x", 2)
    with pytest.raises(BackendUnavailable):
        closed.wait_for_change(election, 2)
    assert time.monotonic() - start < 5
    closed.close()

    backend = from_url(srv.url() + "&timeout=1s")
    try:
        lease = backend.acquire(election, "x", 5)
        assert lease is not None
        srv.pause()
        for call in (
            lambda: backend.renew(lease),
            lambda: backend.leader(election),
            lambda: backend.wait_for_change(election, 30),
        ):
            start = time.monotonic()
            with pytest.raises(BackendUnavailable):
                call()
            assert time.monotonic() - start < 4, "every request is bounded by timeout="
    finally:
        srv.resume()
        backend.close()


def test_in_cluster_service_account(
    servers: Callable[..., FakeKubeServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    election: str,
) -> None:
    """The default mode: the pod's namespace, token and CA, as the kubelet mounts them."""
    from kubernetes.config import incluster_config

    srv = servers(token="service-account-token", tls=True)
    token = tmp_path / "token"
    token.write_text("service-account-token")
    namespace = tmp_path / "namespace"
    namespace.write_text("default\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(srv.ca_file))
    monkeypatch.setattr(kube_backend, "NAMESPACE_FILE", str(namespace))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(srv.port))
    backend = from_url("kubernetes:///")
    try:
        assert isinstance(backend, KubernetesBackend)
        assert backend.namespace == "default"
        lease = backend.acquire(election, "pod-0", 5)
        assert lease is not None
        assert raw_get(srv, election)["spec"]["holderIdentity"] == "pod-0"
    finally:
        backend.close()


def test_in_cluster_config_outside_a_pod_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, election: str
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    backend = from_url("kubernetes://default/")  # in-cluster: loaded lazily, so this works
    with pytest.raises(BackendUnavailable, match="in-cluster"):
        backend.acquire(election, "x", 2)


def test_election_names_must_be_lease_names(make: Make) -> None:
    backend = make()
    for bad in ("Nightly", "under_score", "-dash", "a" * 254):
        with pytest.raises(ConfigError, match="DNS-1123"):
            backend.acquire(bad, "x", 2)
    with pytest.raises(ConfigError):
        backend.wait_for_change("Nightly", 1)


def test_validate_timing_wants_a_second_of_margin(make: Make) -> None:
    backend = make()
    backend.validate_timing(ttl=15, renew_deadline=10, retry_period=2)
    backend.validate_timing(ttl=2.5, renew_deadline=2, retry_period=0.5)  # 3 s lease
    backend.validate_timing(ttl=4, renew_deadline=8 / 3, retry_period=2 / 3)
    for ttl, deadline in ((2, 1.5), (0.5, 0.3), (10, 9.5)):
        with pytest.raises(ConfigError, match="renew_deadline"):
            backend.validate_timing(ttl=ttl, renew_deadline=deadline, retry_period=0.1)


# -- URL grammar ------------------------------------------------------------------------------


def _kubeconfig(path: Path, server: str = "http://127.0.0.1:1") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [
            {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "dev-ns"}},
            {"name": "bare", "context": {"cluster": "c", "user": "u"}},
        ],
        "current-context": "dev",
    }
    path.write_text(json.dumps(config))
    return path


def test_url_grammar_and_namespace_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _kubeconfig(tmp_path / "kubeconfig")
    pod_ns = tmp_path / "namespace"
    monkeypatch.setattr(kube_backend, "NAMESPACE_FILE", str(pod_ns))

    def parsed(url: str) -> KubernetesBackend:
        backend = KubernetesBackend.from_url(url)
        backend.close()
        return backend

    b = parsed("kubernetes://team-a/")
    assert (b.namespace, b.kubeconfig, b.context, b.timeout) == ("team-a", None, None, 5.0)
    assert parsed("kubernetes://team-a").namespace == "team-a"
    assert parsed("kubernetes:///?timeout=750ms").timeout == 0.75
    assert parsed("kubernetes:///").namespace == "default"
    pod_ns.write_text("pod-ns\n")
    assert parsed("kubernetes:///").namespace == "pod-ns"
    b = parsed(f"kubernetes:///?kubeconfig={config}")
    assert (b.namespace, b.kubeconfig) == ("dev-ns", str(config))
    assert parsed(f"kubernetes:///?kubeconfig={config}&context=bare").namespace == "pod-ns"
    assert parsed(f"kubernetes://mine/?kubeconfig={config}").namespace == "mine"
    # The server is never contacted by from_url: the kubeconfig points at a closed port.


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kubernetes://Team/", "not a namespace name"),
        ("kubernetes://user:pw@ns/", "not a namespace name"),
        ("kubernetes://ns:6443/", "not a namespace name"),
        ("kubernetes://ns/leases", "nothing after the namespace"),
        ("kubernetes://ns/?bogus=1", "unknown option 'bogus'"),
        ("kubernetes://ns/?timeout=soon", "timeout"),
        ("kubernetes://ns/?timeout=0", "greater than 0"),
        ("kubernetes://ns/?context=dev", "context= needs kubeconfig="),
        ("kubernetes://ns/?kubeconfig=", "need a value"),
        ("kubernetes://ns/?kubeconfig=/nonexistent/kubeconfig", "is not a file"),
        ("kubernetes://ns/?kubeconfig={config}&context=prod", "has no context 'prod'"),
        ("kubernetes://ns/?kubeconfig={garbage}", "garbage"),
    ],
)
def test_url_errors(tmp_path: Path, url: str, message: str) -> None:
    config = _kubeconfig(tmp_path / "kubeconfig")
    garbage = tmp_path / "garbage"
    garbage.write_text("- just\n- a list\n")
    url = url.format(config=config, garbage=garbage)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        from_url(url)
    assert ":pw@" not in str(info.value)


# -- the fake API server itself ---------------------------------------------------------------


def test_the_fake_answers_like_the_api_server(server: FakeKubeServer, election: str) -> None:
    collection = server.lease_path(election).rsplit("/", 1)[0]
    now = format_time(datetime.now(UTC))
    spec = {"holderIdentity": "x", "leaseDurationSeconds": 5, "renewTime": now}
    status, created = server.request(
        "POST", collection, {"metadata": {"name": election}, "spec": spec}
    )
    assert status == 201
    version = created["metadata"]["resourceVersion"]

    def expect(code: int, reason: str, method: str, path: str, body: Any = None) -> None:
        got, answer = server.request(method, path, body)
        assert got == code, answer
        assert answer["kind"] == "Status"
        assert answer["status"] == "Failure"
        assert (answer["code"], answer["reason"]) == (code, reason), answer

    path = server.lease_path(election)
    expect(409, "AlreadyExists", "POST", collection, {"metadata": {"name": election}})
    expect(404, "NotFound", "GET", server.lease_path("missing-" + election))
    body: dict[str, Any] = {"metadata": {"name": election}, "spec": spec}
    expect(422, "Invalid", "PUT", path, body)  # no resourceVersion
    body["metadata"]["resourceVersion"] = str(int(version) - 1)
    expect(409, "Conflict", "PUT", path, body)
    body["metadata"]["resourceVersion"] = version
    for bad_spec, code, reason in (
        ({"renewTime": "2024-01-01T00:00:00Z"}, 400, "BadRequest"),
        ({"renewTime": "2024-01-01T00:00:00.12Z"}, 400, "BadRequest"),
        ({"leaseDurationSeconds": "5"}, 400, "BadRequest"),
        ({"leaseDurationSeconds": 0}, 422, "Invalid"),
        ({"leaseTransitions": -1}, 422, "Invalid"),
    ):
        expect(code, reason, "PUT", path, {**body, "spec": {**spec, **bad_spec}})
    expect(400, "BadRequest", "PUT", path, {**body, "metadata": {"name": "other"}})
    expect(405, "MethodNotAllowed", "PATCH", path, {})
    # The real client reads those Status objects as ApiExceptions.
    with pytest.raises(kube_client.ApiException) as info:
        typed_api(server).read_namespaced_lease("missing-" + election, "default")
    assert info.value.status == 404
    status, listed = server.request("GET", f"{collection}?fieldSelector=metadata.name={election}")
    assert status == 200
    assert listed["kind"] == "LeaseList"
    assert [item["metadata"]["name"] for item in listed["items"]] == [election]
    assert int(listed["metadata"]["resourceVersion"]) >= int(version)
    status, _ = server.request("DELETE", path)
    assert status == 200
    expect(404, "NotFound", "DELETE", path)


def test_the_fake_keeps_its_store_across_a_restart(
    servers: Callable[..., FakeKubeServer], election: str
) -> None:
    srv = servers()
    backend = from_url(srv.url())
    try:
        lease = backend.acquire(election, "holder", 30)
        assert lease is not None
        before = raw_get(srv, election)
        srv.restart()
        after = raw_get(srv, election)
        assert after == before
        assert backend.renew(lease) is lease
        assert int(raw_get(srv, election)["metadata"]["resourceVersion"]) > int(
            before["metadata"]["resourceVersion"]
        )
    finally:
        backend.close()
