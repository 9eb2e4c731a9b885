"""Metrics: names, labels and values; the Prometheus rules and the Grafana dashboard that use them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from leadercron import __version__
from leadercron.backends.memory import MemoryBackend
from leadercron.elector import Elector
from leadercron.metrics import METRIC_NAMES, Metrics
from leadercron.term import Term
from tests.conftest import ROOT, wait_until
from tests.fakes import ControlledBackend, FakeClock

ALERTS = ROOT / "ops" / "prometheus" / "alerts.yaml"
ALERTS_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yaml"
DASHBOARD = ROOT / "ops" / "grafana" / "leadercron-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

LABELS = {"election": "e", "identity": "a"}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, keyed by name and label set."""
    text = metrics.exposition().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    key = (name, frozenset({**LABELS, **labels}.items()))
    return samples(metrics)[key]


def term(token: int, started_at: datetime | None = None) -> Term:
    return Term(
        election="e",
        identity="a",
        token=token,
        started_at=started_at or datetime.now(UTC),
        _holds=lambda _t: True,
    )


@pytest.fixture
def elector() -> Iterator[Elector]:
    backend = MemoryBackend(uuid.uuid4().hex)
    elector = Elector(
        backend, election="e", identity="a", ttl=3.0, renew_deadline=2.0, retry_period=0.5
    )
    yield elector
    elector.stop(timeout=5)
    backend.close()


@pytest.fixture
def metrics(elector: Elector) -> Metrics:
    m = Metrics(elector, jobs=["report"], process_collectors=False)
    elector.subscribe(m)
    return m


def test_every_metric_is_exported_before_anything_happens(metrics: Metrics) -> None:
    names = {name for name, _ in samples(metrics)}
    for name in METRIC_NAMES:
        if name in (
            "leadercron_job_last_success_timestamp_seconds",  # only after a success
        ):
            continue
        assert any(n == name or n.startswith(name + "_") for n in names), name
    assert value(metrics, "leadercron_is_leader") == 0
    assert value(metrics, "leadercron_term") == 0
    assert value(metrics, "leadercron_backend_up") == 0
    assert value(metrics, "leadercron_lease_remaining_seconds") == 0
    assert value(metrics, "leadercron_leader_transitions_total") == 0
    for result in ("success", "failure"):
        assert value(metrics, "leadercron_lease_renewals_total", result=result) == 0
    # Configured jobs have their counters at zero from the start (so increase() sees the first).
    for outcome in ("success", "error", "skipped"):
        assert value(metrics, "leadercron_job_runs_total", job="report", outcome=outcome) == 0
    assert value(metrics, "leadercron_fires_missed_total", job="report") == 0
    assert value(metrics, "leadercron_claims_rejected_total", job="report") == 0


def test_build_info_names_version_and_backend_kind(metrics: Metrics) -> None:
    key = (
        "leadercron_build_info",
        frozenset({"version": __version__, "backend": "memory"}.items()),
    )
    assert samples(metrics)[key] == 1


def test_a_dedicated_registry_per_instance(elector: Elector) -> None:
    # Two instances in one process (two services, tests) must not collide.
    first = Metrics(elector)
    second = Metrics(elector)
    assert first.registry is not second.registry
    names = {name for name, _ in samples(first)}
    assert "process_cpu_seconds_total" in names or "python_info" in names


def test_leadership_gauges_are_computed_at_scrape(elector: Elector, metrics: Metrics) -> None:
    elector.start()
    assert wait_until(elector.is_leader, 5)
    # Listeners hear of the election just after it takes effect.
    assert wait_until(lambda: metrics.local_deadline is not None, 5)
    assert value(metrics, "leadercron_is_leader") == 1
    assert value(metrics, "leadercron_term") == 1
    assert 0 < value(metrics, "leadercron_lease_remaining_seconds") <= 2.0
    assert value(metrics, "leadercron_leader_transitions_total") == 1
    assert value(metrics, "leadercron_backend_up") == 1
    assert metrics.backend_answered
    assert value(metrics, "leadercron_campaign_duration_seconds_count") == 1
    assert wait_until(
        lambda: value(metrics, "leadercron_lease_renewals_total", result="success") >= 1, 5
    )
    elector.stop(timeout=5)
    assert value(metrics, "leadercron_is_leader") == 0
    assert value(metrics, "leadercron_term") == 0
    assert value(metrics, "leadercron_lease_remaining_seconds") == 0
    assert metrics.local_deadline is None


def test_renewals_count_by_result_and_time_the_call(metrics: Metrics) -> None:
    metrics.renewed(term(1), True, 0.004)
    metrics.renewed(term(1), True, 0.002)
    metrics.renewed(term(1), False, 2.0)
    assert value(metrics, "leadercron_lease_renewals_total", result="success") == 2
    assert value(metrics, "leadercron_lease_renewals_total", result="failure") == 1
    assert value(metrics, "leadercron_lease_renew_duration_seconds_count") == 3
    assert value(metrics, "leadercron_lease_renew_duration_seconds_sum") == pytest.approx(2.006)
    assert value(metrics, "leadercron_lease_renew_duration_seconds_bucket", le="0.005") == 2


def test_backend_up_follows_health_and_readiness_latches(metrics: Metrics) -> None:
    assert not metrics.backend_answered
    assert metrics.backend_up_now is None
    metrics.backend_health(True)
    assert value(metrics, "leadercron_backend_up") == 1
    metrics.backend_health(False)
    assert value(metrics, "leadercron_backend_up") == 0
    assert metrics.backend_up_now is False
    assert metrics.backend_answered  # answered once: ready for good


def test_campaign_duration_runs_from_start_or_loss_to_election() -> None:
    clock = FakeClock()
    backend = ControlledBackend(clock, uuid.uuid4().hex)
    elector = Elector(backend, election="e", identity="a", clock=clock)
    m = Metrics(elector, process_collectors=False)
    m.campaigning()
    clock.advance(7.0)
    m.elected(term(1))
    assert value(m, "leadercron_campaign_duration_seconds_sum") == pytest.approx(7.0)
    assert value(m, "leadercron_leader_transitions_total") == 1
    m.lost(term(1), "renew deadline passed")
    clock.advance(0.25)
    m.elected(term(2))
    assert value(m, "leadercron_campaign_duration_seconds_count") == 2
    assert value(m, "leadercron_campaign_duration_seconds_sum") == pytest.approx(7.25)
    assert value(m, "leadercron_campaign_duration_seconds_bucket", le="0.25") == 1
    assert value(m, "leadercron_leader_transitions_total") == 2


def test_local_deadline_tracks_the_electors() -> None:
    clock = FakeClock()
    backend = ControlledBackend(clock, uuid.uuid4().hex)
    elector = Elector(backend, election="e", identity="a", clock=clock)
    m = Metrics(elector, process_collectors=False)
    assert m.local_deadline is None
    m.elected(term(1))  # not started: remaining() is 0, so the deadline is now
    assert m.local_deadline == clock.monotonic()
    clock.advance(3.0)
    m.renewed(term(1), True, 0.5)  # sent 0.5s ago: deadline = sent + renew_deadline
    assert m.local_deadline == pytest.approx(clock.monotonic() - 0.5 + 10.0)
    before = m.local_deadline
    m.renewed(term(1), False, 0.5)
    assert m.local_deadline == before  # a failure never extends it
    m.lost(term(1), "x")
    assert m.local_deadline is None


def test_job_outcomes_durations_and_last_success(metrics: Metrics) -> None:
    metrics._wall = lambda: 1_800_000_000.0
    metrics.observe_job("report", "success", 1.5)
    metrics.observe_job("report", "success", 0.5)
    metrics.observe_job("report", "error", 2.0)
    metrics.observe_job("report", "skipped", 0.0)
    metrics.observe_job("added-later", "success", 0.1)
    metrics.observe_job("report", "bogus", 0.0)  # ignored, no new label value
    job = {"job": "report"}
    assert value(metrics, "leadercron_job_runs_total", **job, outcome="success") == 2
    assert value(metrics, "leadercron_job_runs_total", **job, outcome="error") == 1
    assert value(metrics, "leadercron_job_runs_total", **job, outcome="skipped") == 1
    assert value(metrics, "leadercron_job_duration_seconds_count", **job) == 3  # not the skip
    assert value(metrics, "leadercron_job_duration_seconds_sum", **job) == pytest.approx(4.0)
    assert value(metrics, "leadercron_job_last_success_timestamp_seconds", **job) == 1.8e9
    assert value(metrics, "leadercron_job_runs_total", job="added-later", outcome="success") == 1
    assert value(metrics, "leadercron_job_runs_total", job="added-later", outcome="error") == 0
    outcomes = {
        dict(labels).get("outcome")
        for name, labels in samples(metrics)
        if name == "leadercron_job_runs_total"
    }
    assert outcomes == {"success", "error", "skipped"}


def test_claims_rejected_counter(metrics: Metrics) -> None:
    metrics.claim_rejected("report")
    assert value(metrics, "leadercron_claims_rejected_total", job="report") == 1


def test_outcomes_map_onto_the_job_series(elector: Elector) -> None:
    m = Metrics(elector, jobs=["report"], process_collectors=False)
    m.observe_job("report", "missed", 0.0)  # late past its grace time while leading
    assert value(m, "leadercron_fires_missed_total", job="report") == 1
    m.observe_job("report", "skipped", 0.0)  # not leading at that instant
    assert value(m, "leadercron_job_runs_total", job="report", outcome="skipped") == 1
    m.observe_job("report", "rejected", 0.0)  # the backend refused the fenced claim
    assert value(m, "leadercron_job_runs_total", job="report", outcome="skipped") == 2
    assert value(m, "leadercron_claims_rejected_total", job="report") == 1
    assert value(m, "leadercron_fires_missed_total", job="report") == 1


def test_callbacks_do_not_block_under_concurrent_scrapes(metrics: Metrics) -> None:
    import threading

    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            metrics.exposition()

    threads = [threading.Thread(target=scrape) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(2000):
            metrics.observe_job(f"job-{i % 7}", "success", 0.001)
            metrics.renewed(term(1), i % 2 == 0, 0.001)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert value(metrics, "leadercron_lease_renewals_total", result="success") == 1000


# -- the Prometheus rules and the Grafana dashboard ------------------------------------------------


def exported_series(tmp_path: Path) -> dict[str, set[str]]:
    """Sample name -> label names, from a Metrics instance with every kind of event recorded."""
    backend = MemoryBackend(uuid.uuid4().hex)
    elector = Elector(backend, election="e", identity="a")
    m = Metrics(elector, jobs=["report"], process_collectors=False)
    m.elected(term(1))
    m.renewed(term(1), True, 0.01)
    m.observe_job("report", "success", 0.1)
    m.observe_job("report", "missed", 0.0)
    m.claim_rejected("report")
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


SELECTOR = re.compile(r"\b(leadercron_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def check_query(query: str, series: dict[str, set[str]]) -> list[str]:
    """Problems with one PromQL query: unknown leadercron metrics or labels it relies on."""
    problems = []
    used = SELECTOR.findall(query)
    labels_in_use: set[str] = set()
    for name, matchers in used:
        if name not in series:
            problems.append(f"unknown metric {name!r} in {query!r}")
            continue
        for label in MATCHER.findall(matchers or ""):
            if label[0] not in series[name]:
                problems.append(f"{name} has no label {label[0]!r} (in {query!r})")
        labels_in_use |= series[name]
    for clause in BY_CLAUSE.findall(query):
        for label in (part.strip() for part in clause.split(",")):
            if label and used and label not in labels_in_use:
                problems.append(f"grouping by unknown label {label!r} in {query!r}")
    return problems


def dashboard_queries(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            wanted = key in ("expr", "definition") or (
                key == "query" and "leadercron_" in str(item)
            )
            if wanted and isinstance(item, str):
                yield item
            else:
                yield from dashboard_queries(item)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def test_dashboard_is_valid_json_and_queries_existing_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "leadercron"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    for wanted in ("Leader timeline", "Leader transitions", "Renew latency", "Renew results"):
        assert wanted in titles
    assert any("Job outcomes" in t for t in titles)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    series = exported_series(tmp_path)
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert SELECTOR.search(target["expr"]), target["expr"]
    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= len(panels)
    problems = [p for q in queries for p in check_query(q, series)]
    assert not problems, "\n".join(problems)
    # Every metric this package exports is on the dashboard.
    shown = {name for q in queries for name, _ in SELECTOR.findall(q)}
    for name in METRIC_NAMES:
        if name == "leadercron_build_info":
            continue
        assert any(s == name or s.startswith(name + "_") for s in shown), name


def test_alert_rules_query_existing_metrics(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) >= {
        "LeadercronNoLeader",
        "LeadercronMultipleLeaders",
        "LeadercronLeadershipFlapping",
        "LeadercronLeaseRenewFailures",
        "LeadercronJobFailures",
        "LeadercronMissedFires",
    }
    series = exported_series(tmp_path)
    problems = [p for rule in alerts.values() for p in check_query(rule["expr"], series)]
    assert not problems, "\n".join(problems)
    # The promtool unit tests show each alert both firing and not firing.
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert firing == set(alerts)
    assert quiet == set(alerts)


def test_every_runbook_link_has_a_section() -> None:
    import unicodedata

    doc = (ROOT / "docs" / "operations.md").read_text()
    anchors = set()
    for line in doc.splitlines():
        if line.startswith("#"):
            title = unicodedata.normalize("NFKC", line.lstrip("#").strip().lower())
            anchors.add(re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-"))
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            path, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert path == "docs/operations.md"
            assert anchor in anchors, f"{rule['alert']}: no section #{anchor}"
    # The metric reference documents every metric.
    for name in METRIC_NAMES:
        assert f"`{name}`" in doc, name


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alerts() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(ALERTS_TEST)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
