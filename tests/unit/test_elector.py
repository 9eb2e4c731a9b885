"""The elector's state machine on a fake clock."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from leadercron.elector import Elector, Listener, State, validate_timing
from leadercron.errors import ConfigError
from leadercron.term import Term
from tests.conftest import wait_until
from tests.fakes import ControlledBackend, FakeClock

TTL, DEADLINE, RETRY = 15.0, 10.0, 2.0


class Recorder(Listener):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []

    def elected(self, term: Term) -> None:
        self.events.append(("elected", term.token, ""))

    def suspended(self, term: Term, reason: str) -> None:
        self.events.append(("suspended", term.token, reason))

    def resumed(self, term: Term) -> None:
        self.events.append(("resumed", term.token, ""))

    def lost(self, term: Term, reason: str) -> None:
        self.events.append(("lost", term.token, reason))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> str:
    return uuid.uuid4().hex


class Harness:
    def __init__(self, clock: FakeClock, store: str) -> None:
        self.clock = clock
        self.store = store
        self.electors: list[Elector] = []

    def elector(self, identity: str) -> tuple[Elector, ControlledBackend, Recorder]:
        backend = ControlledBackend(self.clock, self.store)
        elector = Elector(
            backend,
            election="e",
            identity=identity,
            ttl=TTL,
            renew_deadline=DEADLINE,
            retry_period=RETRY,
            clock=self.clock,
        )
        recorder = Recorder()
        elector.subscribe(recorder)
        self.electors.append(elector)
        return elector, backend, recorder

    def stop_all(self) -> None:
        for elector in self.electors:
            elector.backend.close()
            elector.stop(release=False, timeout=5)


@pytest.fixture
def harness(clock: FakeClock, store: str) -> Iterator[Harness]:
    h = Harness(clock, store)
    yield h
    h.stop_all()


def advance_until(
    clock: FakeClock, predicate: object, step: float = 0.5, limit: float = 60
) -> None:
    """Advance fake time in steps, giving the elector thread real time to react, until true."""
    assert callable(predicate)
    moved = 0.0
    while not predicate():
        assert moved <= limit, "condition never became true"
        clock.advance(step)
        moved += step
        wait_until(predicate, timeout=0.05)


@pytest.mark.parametrize(
    ("ttl", "deadline", "retry", "message"),
    [
        (10, 10, 2, "ttl (10s) must be greater than renew_deadline (10s)"),
        (5, 10, 2, "ttl (5s) must be greater than renew_deadline (10s)"),
        (15, 2, 2, "renew_deadline (2s) must be greater than retry_period (2s)"),
        (15, 10, 0, "retry_period must be > 0"),
    ],
)
def test_inconsistent_timing_is_a_config_error(
    ttl: float, deadline: float, retry: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_timing(ttl, deadline, retry)


def test_defaults_are_kubernetes_defaults(clock: FakeClock, store: str) -> None:
    elector = Elector(ControlledBackend(clock, store), election="e", identity="a", clock=clock)
    assert (elector.ttl, elector.renew_deadline, elector.retry_period) == (15.0, 10.0, 2.0)


def test_first_candidate_leads_and_second_follows(harness: Harness) -> None:
    a, _, rec_a = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    assert a.state is State.LEADER
    term = a.term()
    assert term is not None
    assert term.identity == "a"
    assert term.token == 1
    assert term.held
    assert rec_a.kinds() == ["elected"]
    b, _, rec_b = harness.elector("b")
    b.start()
    assert wait_until(lambda: b.backend.calls.count("acquire") >= 1, 5)  # type: ignore[attr-defined]
    assert not b.is_leader()
    assert b.state is State.FOLLOWER
    assert rec_b.events == []


def test_renewals_keep_leadership_past_the_deadline(harness: Harness, clock: FakeClock) -> None:
    a, backend, _ = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    for _ in range(20):  # 20 x 1s = twice the renew deadline
        clock.advance(1.0)
        wait_until(lambda: False, 0.02)
    assert wait_until(lambda: backend.calls.count("renew") >= 8, 5)
    assert a.is_leader()
    assert a.remaining() > DEADLINE - RETRY - 1.5


def test_hung_renew_stops_dispatch_at_the_deadline(harness: Harness, clock: FakeClock) -> None:
    a, backend, rec = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    elected_at = clock.monotonic()
    backend.hang.set()
    advance_until(clock, backend.entered.is_set, step=0.5)
    # The renew call hangs. Just before the deadline the replica still leads ...
    clock.now = elected_at + DEADLINE - 0.01
    assert a.is_leader()
    # ... and at the deadline it stops, without waiting for the hung call.
    clock.now = elected_at + DEADLINE
    assert not a.is_leader()
    assert a.term() is None
    assert wait_until(lambda: "lost" in rec.kinds(), 5)
    assert "renew deadline" in rec.events[-1][2]
    assert backend.calls[-1] in ("renew", "release")
    # The release (hanging too) is given up after a retry period; the elector campaigns again.
    clock.advance(RETRY + 0.1)
    assert wait_until(lambda: a.state is State.FOLLOWER, 5)
    # A late answer from the hung renew never brings leadership back.
    backend.hang.clear()
    backend.unhang.set()
    wait_until(lambda: False, 0.2)
    assert not a.is_leader() or (a.term() is not None and a.term().token > 1)  # type: ignore[union-attr]


def test_failed_renews_retry_then_step_down(harness: Harness, clock: FakeClock) -> None:
    a, backend, rec = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    backend.fail = True
    advance_until(clock, lambda: "lost" in rec.kinds(), step=0.25, limit=DEADLINE + 5)
    renews = backend.calls.count("renew")
    # One attempt per retry period within the deadline: 10s / 2s -> 4 or 5 attempts.
    assert 4 <= renews <= 6, backend.calls
    assert "renew deadline" in rec.events[-1][2]
    assert not a.is_leader()


def test_lost_lease_steps_down_at_once(harness: Harness, clock: FakeClock) -> None:
    a, backend, rec = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    # Another party takes the election behind our back (e.g. after a partition).
    store = backend.inner._store
    with store.lock:
        store.records["e"].owner = -1
    advance_until(clock, lambda: "lost" in rec.kinds(), step=0.5)
    assert "lease lost" in rec.events[-1][2]
    assert not a.is_leader()


def test_stop_releases_and_hands_over(harness: Harness, clock: FakeClock) -> None:
    a, backend_a, rec_a = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    b, _, rec_b = harness.elector("b")
    b.start()
    wait_until(lambda: False, 0.1)
    a.stop(release=True, timeout=5)
    assert a.state is State.STOPPED
    assert "release" in backend_a.calls
    assert rec_a.events[-1][0] == "lost"
    assert rec_a.events[-1][2] == "shutdown"
    advance_until(clock, b.is_leader, step=0.01, limit=0.5)  # well before any expiry
    term = b.term()
    assert term is not None
    assert term.token == 2
    assert rec_b.kinds() == ["elected"]


def test_stop_without_release_leaves_the_lease(harness: Harness) -> None:
    a, backend, _ = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    a.stop(release=False, timeout=5)
    assert "release" not in backend.calls
    info = backend.leader("e")
    assert info is not None
    assert info.identity == "a"


def test_alarm_suspends_dispatch_until_a_renew_confirms(harness: Harness) -> None:
    a, backend, rec = harness.elector("a")
    a.start()
    assert wait_until(a.is_leader, 5)
    renews = backend.calls.count("renew")
    backend._alarm("connection suspended")
    assert not a.is_leader()  # at once, before any renew
    assert wait_until(lambda: "resumed" in rec.kinds(), 5)
    assert backend.calls.count("renew") > renews
    assert rec.kinds() == ["elected", "suspended", "resumed"]
    assert rec.events[1][2] == "connection suspended"
    assert a.is_leader()


def test_unreachable_backend_at_start_is_retried(harness: Harness, clock: FakeClock) -> None:
    a, backend, _ = harness.elector("a")
    backend.fail = True
    a.start()
    advance_until(clock, lambda: backend.calls.count("acquire") >= 3, step=1.0)
    assert a.state is State.FOLLOWER
    assert not a.is_leader()
    backend.fail = False
    advance_until(clock, a.is_leader, step=1.0, limit=TTL * 2)


def test_backoff_grows_but_is_capped(clock: FakeClock, store: str) -> None:
    elector = Elector(ControlledBackend(clock, store), election="e", identity="a", clock=clock)
    delays = []
    for failures in range(1, 10):
        elector._failures = failures
        delays.append(elector._backoff())
    assert delays[0] <= RETRY * 1.2
    assert delays[2] >= RETRY * 4 * 0.8
    assert max(delays) <= TTL * 1.2


def test_acquire_answered_after_the_deadline_is_given_back(
    harness: Harness, clock: FakeClock
) -> None:
    a, backend, rec = harness.elector("a")
    backend.hang.set()
    a.start()
    assert wait_until(backend.entered.is_set, 5)
    clock.advance(DEADLINE + 0.1)  # the elector gives up on the hung acquire
    wait_until(lambda: False, 0.1)
    backend.hang.clear()
    backend.unhang.set()  # the abandoned acquire now succeeds, too late
    assert wait_until(lambda: "release" in backend.calls, 5)
    assert rec.events == [] or rec.events[0][1] > 1


def test_every_transition_logs_one_line(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="leadercron.elector")
    a, _, _ = harness.elector("replica-a")
    a.start()
    assert wait_until(a.is_leader, 5)
    a.stop(timeout=5)
    lines = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert [line.split(" election")[0] for line in lines] == [
        "follower -> leader",
        "leader -> stepping-down",
        "stepping-down -> stopped",
    ]
    for line in lines:
        assert "election=e" in line
        assert "identity=replica-a" in line
        assert "term=1" in line
        assert "reason=" in line
