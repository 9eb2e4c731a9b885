"""The HTTP listener: /metrics, /healthz, /readyz, /leader and /status, on the memory backend."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from leadercron.backends.base import LeaderInfo
from leadercron.config import build
from leadercron.elector import Elector, Listener, State
from leadercron.errors import ConfigError
from leadercron.http import HttpServer, LeaderLookup, parse_listen
from leadercron.metrics import Metrics
from leadercron.service import Service
from leadercron.term import Term
from tests.conftest import wait_until
from tests.fakes import ControlledBackend, FakeClock

PROMTOOL = shutil.which("promtool")


class Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, *, method: str = "GET", accept: str | None = None) -> Response:
    request = urllib.request.Request(url, method=method)
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.headers, error.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config(store: str, identity: str, tmp_path: Path, listen: str | None = None) -> Any:
    return build(
        {
            "election": {
                "name": "ops",
                "backend": f"memory://{store}",
                "identity": identity,
                "ttl": "3s",
                "renew_deadline": "2s",
                "retry_period": "500ms",
            },
            "scheduler": {"grace_period": "2s"},
            "http": {"listen": listen},
            "jobs": [
                {
                    "id": "record",
                    "interval": "200ms",
                    "func": "tests.jobs:record",
                    "args": [str(tmp_path / f"{identity}.txt")],
                },
                {"id": "fails", "interval": "200ms", "func": "tests.jobs:fail"},
                {
                    "id": "secretive",
                    "interval": "1h",
                    "func": "tests.jobs:record",
                    "args": [str(tmp_path / "x.txt")],
                    "kwargs": {"seconds": 0},
                },
            ],
        }
    )


class Services:
    """Starts services with an HTTP listener each and stops them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.store = uuid.uuid4().hex
        self.started: list[Service] = []

    def start(self, identity: str) -> tuple[Service, str]:
        for _ in range(5):  # the free port may be taken between probing and binding
            config = make_config(self.store, identity, self.tmp, f"127.0.0.1:{free_port()}")
            service = Service(config)
            try:
                service.start()
            except ConfigError:
                continue
            self.started.append(service)
            assert service.http is not None
            return service, service.http.url
        raise AssertionError("no free port")

    def stop_all(self) -> None:
        for service in reversed(self.started):
            service.shutdown()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    s = Services(tmp_path)
    yield s
    s.stop_all()


def is_leader_sample(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "leadercron_is_leader":
            return float(family.samples[0].value)
    raise AssertionError("no leadercron_is_leader in the exposition")


# -- a running service -------------------------------------------------------------------------


def test_endpoints_of_a_leader_and_a_follower(services: Services) -> None:
    leader, leader_url = services.start("r1")
    assert wait_until(leader.elector.is_leader, 10)
    _, follower_url = services.start("r2")
    assert wait_until(lambda: get(follower_url + "/readyz").status == 200, 10)

    for url in (leader_url, follower_url):
        assert get(url + "/healthz").status == 200
        assert get(url + "/healthz").text == "ok\n"
        assert get(url + "/readyz").status == 200

    assert get(leader_url + "/leader").status == 200
    assert get(leader_url + "/leader").text == "leader\n"
    assert get(follower_url + "/leader").status == 503
    assert is_leader_sample(get(leader_url + "/metrics").text) == 1
    assert is_leader_sample(get(follower_url + "/metrics").text) == 0

    # A few runs happen on the leader, so that /status has outcomes to show.
    assert wait_until(lambda: "record" in leader.leader_scheduler.outcomes, 10)
    assert wait_until(lambda: "fails" in leader.leader_scheduler.outcomes, 10)
    status = get(leader_url + "/status").json()
    assert status["identity"] == "r1"
    assert status["election"] == "ops"
    assert status["backend"] == {"kind": "memory", "url": f"memory://{services.store}"}
    assert status["state"] == "leader"
    assert status["role"] == "leader"
    assert status["is_leader"] is True
    assert status["term"] == 1
    assert status["leader"] == {"identity": "r1", "term": 1}
    assert status["leader_error"] is None
    assert status["backend_up"] is True
    assert status["ready"] is True
    assert datetime.fromisoformat(status["leader_since"])
    assert datetime.fromisoformat(status["last_renew"])
    assert 0 < status["lease_remaining_seconds"] <= 2
    assert status["timing"] == {"ttl": 3.0, "renew_deadline": 2.0, "retry_period": 0.5}
    jobs = {job["id"]: job for job in status["jobs"]}
    assert set(jobs) == {"record", "fails", "secretive"}
    assert jobs["record"]["last_outcome"] in ("success", "skipped")
    assert jobs["fails"]["last_outcome"] in ("error", "skipped")
    assert jobs["secretive"]["last_outcome"] is None
    for job in jobs.values():
        assert datetime.fromisoformat(job["next_fire_time"]) > datetime.fromisoformat(
            "2000-01-01T00:00:00+00:00"
        )

    status = get(follower_url + "/status").json()
    assert status["identity"] == "r2"
    assert status["role"] == "follower"
    assert status["state"] == "follower"
    assert status["is_leader"] is False
    assert status["term"] is None
    assert status["leader_since"] is None
    assert status["leader"] == {"identity": "r1", "term": 1}
    # A follower's scheduler is paused, yet its next fire times are current.
    fire = datetime.fromisoformat(
        {job["id"]: job for job in status["jobs"]}["record"]["next_fire_time"]
    )
    assert abs(fire.timestamp() - time.time()) < 5


def test_status_holds_no_job_arguments(services: Services) -> None:
    _, url = services.start("r1")
    body = get(url + "/status").text
    assert "x.txt" not in body
    assert "seconds" not in body or "lease_remaining_seconds" in body
    assert "kwargs" not in body
    assert "args" not in body


def test_metrics_exposition_formats_and_other_paths(services: Services) -> None:
    service, url = services.start("r1")
    assert wait_until(service.elector.is_leader, 10)
    text = get(url + "/metrics")
    assert text.status == 200
    assert text.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "leadercron_is_leader{" in text.text
    openmetrics = get(url + "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    assert get(url + "/metrics?debug=1").status == 200
    head = get(url + "/leader", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert get(url + "/nope").status == 404
    assert get(url + "/").status == 200
    assert get(url + "/", method="POST").status == 501


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_real_exposition(services: Services) -> None:
    assert PROMTOOL is not None
    service, url = services.start("r1")
    assert wait_until(service.elector.is_leader, 10)
    # Let runs, failures and renewals happen, so that every kind of series is present.
    assert wait_until(lambda: "fails" in service.leader_scheduler.outcomes, 10)
    assert wait_until(lambda: "success" in get(url + "/metrics").text, 10)
    exposition = get(url + "/metrics").body
    assert b"leadercron_job_duration_seconds_bucket" in exposition
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_endpoints_in_per_job_mode(tmp_path: Path) -> None:
    store = uuid.uuid4().hex
    started: list[Service] = []
    try:
        for identity in ("p1", "p2"):
            config = make_config(store, identity, tmp_path, f"127.0.0.1:{free_port()}")
            data = config.model_dump()
            data["mode"] = "per-job"
            data["scheduler"]["lock_ttl"] = 0.15
            data["jobs"][0]["args"] = [str(tmp_path / "runs.txt"), 0.1]
            service = Service(build(data))
            service.start()
            started.append(service)
        urls = [service.http.url for service in started if service.http is not None]
        assert wait_until(lambda: all(get(u + "/readyz").status == 200 for u in urls), 10)
        for url in urls:
            assert get(url + "/healthz").status == 200
            leader = get(url + "/leader")
            assert leader.status == 404
            assert "per-job mode" in leader.text
        # Both replicas run fires (each fire on one of them) and count what they skipped.
        runs = tmp_path / "runs.txt"
        assert wait_until(lambda: runs.exists() and len(runs.read_text().splitlines()) >= 6, 15)
        status = get(urls[0] + "/status").json()
        assert status["mode"] == "per-job"
        assert status["state"] == "running"
        assert status["lock_ttl"]["record"] == 0.15
        assert {job["id"] for job in status["jobs"]} == {"record", "fails", "secretive"}
        assert "leader" not in status
        assert wait_until(
            lambda: any(get(u + "/status").json()["locks_held"] for u in urls for _ in range(3)),
            10,
            interval=0.0,
        )
        texts = [get(url + "/metrics").text for url in urls]
        skips = sum(
            sample.value
            for text in texts
            for family in text_string_to_metric_families(text)
            if family.name == "leadercron_lock_skips"
            for sample in family.samples
            if sample.name == "leadercron_lock_skips_total"
        )
        assert skips >= 1
        assert all("leadercron_is_leader" not in text for text in texts)
        assert all("leadercron_locks_held{" in text for text in texts)
        if PROMTOOL is not None:
            result = subprocess.run(
                [PROMTOOL, "check", "metrics"],
                input=get(urls[0] + "/metrics").body,
                capture_output=True,
                check=False,
                timeout=60,
            )
            assert result.returncode == 0, (result.stdout + result.stderr).decode()
        started[0].leader_scheduler.shutdown(0.5)
        health = get(urls[0] + "/healthz")
        assert health.status == 503
        assert "not dispatching" in health.text
    finally:
        for service in started:
            service.shutdown()


def test_no_listener_unless_configured(tmp_path: Path) -> None:
    for listen in (None, "", "  "):
        service = Service(make_config(uuid.uuid4().hex, "r1", tmp_path, listen))
        assert service.http is None


def test_a_taken_port_is_a_one_line_config_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        service = Service(make_config(uuid.uuid4().hex, "r1", tmp_path, f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match=r"^http.listen: cannot listen on '127.0.0.1:\d+'"):
            service.start()
    # Nothing was started.
    assert service.elector.state is State.FOLLOWER
    assert service.elector._thread is None


def test_shutdown_closes_the_listener(tmp_path: Path) -> None:
    services = Services(tmp_path)
    service, url = services.start("r1")
    assert get(url + "/healthz").status in (200, 503)
    service.shutdown()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=5)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "host:", "host:port", "host:70000"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(listen)


# -- fake clock: readiness, liveness and a hung backend ----------------------------------------


TTL, DEADLINE, RETRY = 15.0, 10.0, 2.0


class Blocker(Listener):
    """A listener that breaks the contract: it blocks the elector on a failed renew."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def renewed(self, term: Term, ok: bool, seconds: float) -> None:
        if not ok:
            self.entered.set()
            self.release.wait(30)


class HangingLeaderBackend(ControlledBackend):
    """``leader()`` blocks while ``leader_hangs`` is set."""

    def __init__(self, clock: FakeClock, store: str) -> None:
        super().__init__(clock, store)
        self.leader_hangs = threading.Event()
        self.leader_calls = 0

    def leader(self, election: str) -> LeaderInfo | None:
        self.leader_calls += 1
        while self.leader_hangs.is_set():
            if self.unhang.wait(0.01):
                break
        return super().leader(election)


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.backend = HangingLeaderBackend(self.clock, uuid.uuid4().hex)
        self.elector = Elector(
            self.backend,
            election="e",
            identity="a",
            ttl=TTL,
            renew_deadline=DEADLINE,
            retry_period=RETRY,
            clock=self.clock,
        )
        self.metrics = Metrics(self.elector, process_collectors=False)
        self.elector.subscribe(self.metrics)
        self.http = HttpServer(
            "127.0.0.1:0", elector=self.elector, metrics=self.metrics, leader_timeout=0.2
        )
        self.http.start()
        self.url = self.http.url

    def get(self, path: str) -> Response:
        return get(self.url + path)

    def close(self) -> None:
        self.backend.hang.clear()
        self.backend.leader_hangs.clear()
        self.backend.close()
        self.elector.stop(release=False, timeout=5)
        self.http.stop()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def advance_until(clock: FakeClock, predicate: Callable[[], bool], step: float = 0.5) -> None:
    moved = 0.0
    while not predicate():
        assert moved <= 60, "condition never became true"
        clock.advance(step)
        moved += step
        wait_until(predicate, timeout=0.05)


def test_not_ready_until_the_backend_answers(harness: Harness) -> None:
    harness.backend.fail = True
    assert harness.get("/healthz").status == 503  # the elector loop is not running yet
    harness.elector.start()
    advance_until(harness.clock, lambda: harness.backend.calls.count("acquire") >= 2, step=1.0)
    ready = harness.get("/readyz")
    assert ready.status == 503
    assert "not answered" in ready.text
    assert harness.get("/healthz").status == 200  # alive, just not ready
    assert harness.get("/leader").status == 503
    assert harness.get("/status").json()["ready"] is False
    harness.backend.fail = False
    advance_until(harness.clock, harness.elector.is_leader, step=1.0)
    assert harness.get("/readyz").status == 200
    assert harness.get("/leader").status == 200
    # The backend failing again later does not make the replica unready.
    harness.backend.fail = True
    advance_until(harness.clock, lambda: harness.metrics.backend_up_now is False, step=0.5)
    assert harness.get("/readyz").status == 200


def test_healthz_fails_for_a_leader_stuck_past_its_deadline(harness: Harness) -> None:
    blocker = Blocker()
    harness.elector.subscribe(blocker)
    harness.elector.start()
    assert wait_until(lambda: harness.metrics.local_deadline is not None, 5)
    deadline = harness.metrics.local_deadline
    assert deadline is not None
    assert harness.get("/healthz").status == 200
    # The backend's renew hangs; at the deadline the elector gives up on it and reports a failed
    # renew, and a listener that blocks keeps the elector thread from stepping down.
    harness.backend.hang.set()
    advance_until(harness.clock, harness.backend.entered.is_set)
    harness.clock.now = deadline
    assert wait_until(blocker.entered.is_set, 5)
    assert harness.elector.state is State.LEADER
    assert not harness.elector.is_leader()
    assert harness.get("/leader").status == 503
    # Past the deadline, but within the tolerance: still live.
    assert harness.http.stuck_timeout == TTL - DEADLINE
    harness.clock.now = deadline + harness.http.stuck_timeout - 0.5
    assert harness.get("/healthz").status == 200
    # Stuck longer than that: unhealthy.
    harness.clock.now = deadline + harness.http.stuck_timeout + 0.5
    health = harness.get("/healthz")
    assert health.status == 503
    assert "still leader" in health.text
    status = harness.get("/status").json()
    assert status["state"] == "leader"
    assert status["is_leader"] is False
    assert status["last_renew"] is not None
    # Unblocked, the elector steps down (and campaigns again, for a new term): healthy.
    harness.backend.hang.clear()
    harness.backend.unhang.set()
    blocker.release.set()
    assert wait_until(lambda: harness.metrics.local_deadline != deadline, 5)
    assert harness.get("/healthz").status == 200
    term = harness.elector.term()
    assert harness.elector.state is not State.LEADER or (term is not None and term.token == 2)


class BlocksOnElection(Listener):
    """A listener that blocks the elector as soon as it is elected (before the metrics hear)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def elected(self, term: Term) -> None:
        self.entered.set()
        self.release.wait(30)


def test_healthz_sees_a_leader_stuck_in_any_listener() -> None:
    clock = FakeClock()
    backend = ControlledBackend(clock, uuid.uuid4().hex)
    elector = Elector(backend, election="e", identity="a", clock=clock)
    blocker = BlocksOnElection()
    elector.subscribe(blocker)  # before the metrics: they never hear of the term
    metrics = Metrics(elector, process_collectors=False)
    elector.subscribe(metrics)
    http = HttpServer("127.0.0.1:0", elector=elector, metrics=metrics)
    http.start()
    try:
        elector.start()
        assert wait_until(blocker.entered.is_set, 5)
        assert metrics.local_deadline is None
        assert get(http.url + "/healthz").status == 200
        clock.advance(DEADLINE + http.stuck_timeout + 0.5)
        assert elector.state is State.LEADER
        assert get(http.url + "/healthz").status == 503
        assert get(http.url + "/leader").status == 503
    finally:
        blocker.release.set()
        backend.close()
        elector.stop(release=False, timeout=5)
        http.stop()


def test_healthz_fails_when_the_elector_loop_ends(harness: Harness) -> None:
    harness.elector.start()
    assert wait_until(harness.elector.is_leader, 5)
    assert harness.get("/healthz").status == 200
    harness.elector.stop(timeout=5)
    health = harness.get("/healthz")
    assert health.status == 503
    assert "not running" in health.text
    assert harness.get("/leader").status == 503


def test_status_answers_while_the_backend_hangs(harness: Harness) -> None:
    harness.elector.start()
    assert wait_until(harness.elector.is_leader, 5)
    first = harness.get("/status").json()
    assert first["leader"] == {"identity": "a", "term": 1}
    assert first["leader_stale"] is False
    harness.backend.leader_hangs.set()
    time.sleep(1.1)  # let the cached answer age (max_age is 1s)
    calls = harness.backend.leader_calls
    started = time.monotonic()
    answers = [harness.get("/status").json() for _ in range(3)]
    assert time.monotonic() - started < 5  # 3 x leader_timeout (0.2s), plus overhead
    for answer in answers:
        assert answer["leader"] == {"identity": "a", "term": 1}  # the last answer, kept
        assert answer["leader_stale"] is True
        assert "did not answer" in answer["leader_error"]
    assert harness.backend.leader_calls == calls + 1  # one lookup in flight, not one per request
    assert harness.get("/healthz").status == 200
    harness.backend.leader_hangs.clear()
    assert wait_until(lambda: harness.get("/status").json()["leader_error"] is None, 5)


def test_leader_lookup_caches_and_reports_errors() -> None:
    clock = FakeClock()
    backend = ControlledBackend(clock, uuid.uuid4().hex)
    now = [0.0]
    lookup = LeaderLookup(backend, "e", timeout=1.0, max_age=1.0, clock=lambda: now[0])
    answer = lookup.get()
    assert answer.info is None
    assert answer.error is None
    assert answer.stale is False
    assert answer.checked_at is not None
    lease = backend.acquire("e", "a", 15.0)
    assert lease is not None
    assert lookup.get().info is None  # cached for max_age
    now[0] = 1.5
    assert lookup.get().info == LeaderInfo("a", 1)

    class Broken(ControlledBackend):
        def leader(self, election: str) -> LeaderInfo | None:
            raise RuntimeError("boom")

    broken = LeaderLookup(Broken(clock, uuid.uuid4().hex), "e", timeout=1.0)
    answer = broken.get()
    assert answer.info is None
    assert answer.stale is True
    assert answer.error == "RuntimeError: boom"
