"""The elector driving every backend: one leader, handover, and a paused or unreachable server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from leadercron.elector import Elector, State
from tests.conftest import BackendCase, wait_until


def timing(case: BackendCase) -> dict[str, float]:
    ttl = max(3.0, 2 * case.ttl)
    return {"ttl": ttl, "renew_deadline": ttl * 2 / 3, "retry_period": ttl / 6}


class Overlap:
    """Samples a set of electors and remembers whether two ever led at the same instant."""

    def __init__(self, electors: list[Elector]) -> None:
        self.electors = electors
        self.worst = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.worst = max(self.worst, sum(e.is_leader() for e in self.electors))
            time.sleep(0.002)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.worst


@pytest.fixture
def electors() -> Iterator[list[Elector]]:
    made: list[Elector] = []
    yield made
    for elector in made:
        elector.stop(release=True, timeout=10)
        elector.backend.close()


def start_electors(
    case: BackendCase, election: str, made: list[Elector], count: int, url: str | None = None
) -> list[Elector]:
    for i in range(count):
        elector = Elector(
            case.make(url), election=election, identity=f"replica-{i}", **timing(case)
        )
        elector.start()
        made.append(elector)
    return made


def leaders(electors: list[Elector]) -> list[Elector]:
    return [e for e in electors if e.is_leader()]


def test_one_leader_then_graceful_handover(
    backend_case: BackendCase, election: str, electors: list[Elector]
) -> None:
    start_electors(backend_case, election, electors, 3)
    overlap = Overlap(electors)
    assert wait_until(lambda: len(leaders(electors)) == 1, 30)
    time.sleep(timing(backend_case)["ttl"])  # several renew rounds
    assert len(leaders(electors)) == 1
    first = leaders(electors)[0]
    first_term = first.term()
    assert first_term is not None
    stopped_at = time.monotonic()
    first.stop(release=True, timeout=10)
    assert wait_until(lambda: len(leaders(electors)) == 1, 10, interval=0.002)
    handover = time.monotonic() - stopped_at
    second = leaders(electors)[0]
    assert second is not first
    second_term = second.term()
    assert second_term is not None
    assert second_term.token > first_term.token
    assert overlap.stop() <= 1, "two replicas led at the same instant"
    assert handover < 2.0, f"graceful handover took {handover:.3f}s"


def test_paused_server_stops_the_leader_within_its_renew_deadline(
    fresh_server_case: BackendCase, election: str, electors: list[Elector]
) -> None:
    case = fresh_server_case
    assert case.server is not None
    t = timing(case)
    start_electors(case, election, electors, 2)
    assert wait_until(lambda: len(leaders(electors)) == 1, 30)
    overlap = Overlap(electors)
    leader = leaders(electors)[0]
    # The leader renewed at most retry_period ago; pausing the server must end its dispatching
    # no later than renew_deadline after that last renew, even though its calls now hang.
    case.server.pause()
    paused_at = time.monotonic()
    try:
        assert wait_until(lambda: not leader.is_leader(), t["renew_deadline"] + 1.0, interval=0.005)
        stopped_after = time.monotonic() - paused_at
        assert stopped_after <= t["renew_deadline"] + 0.5, stopped_after
        time.sleep(t["ttl"] - t["renew_deadline"])
        assert leaders(electors) == []
    finally:
        case.server.resume()
    assert wait_until(lambda: len(leaders(electors)) == 1, 60)
    time.sleep(t["ttl"])
    assert len(leaders(electors)) == 1
    assert overlap.stop() <= 1, "two replicas led at the same instant"


def test_unreachable_backend_keeps_the_replica_retrying(
    backend_case: BackendCase, election: str, electors: list[Elector]
) -> None:
    from tests.contract.test_backend_contract import unreachable_url

    url = unreachable_url(backend_case)
    if url is None:
        pytest.skip(f"{backend_case.name} has no server to be unreachable")
    (elector,) = start_electors(backend_case, election, electors, 1, url=url)
    time.sleep(2.0)
    assert elector.state is State.FOLLOWER
    assert not elector.is_leader()
    assert elector._thread is not None
    assert elector._thread.is_alive()
    assert elector._failures >= 1
