"""The benchmarks page says what the last recorded run measured (no timing here)."""

from __future__ import annotations

import json
import re

from benchmarks import report
from tests.conftest import ROOT

DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "docs" / "benchmarks" / "results.json"


def test_every_table_row_comes_from_the_recorded_results() -> None:
    results = json.loads(RESULTS.read_text())
    doc = DOC.read_text()
    rows = [line for line in report.tables(results).splitlines() if line.startswith("|")]
    assert len(rows) > 40
    missing = [row for row in rows if row not in doc]
    assert not missing, "docs/benchmarks.md differs from results.json:\n" + "\n".join(missing)


def test_the_run_covers_what_the_page_promises() -> None:
    results = json.loads(RESULTS.read_text())
    backends = results["backends"]
    assert set(backends) >= {"file", "etcd", "zookeeper", "consul", "redis", "postgres"}
    for name, backend in backends.items():
        ours = backend["impls"]["leadercron"]
        assert len(ours["graceful"]) >= 30, name
        assert len(ours["crash"]) >= 5, name
    peers = {impl for backend in backends.values() for impl in backend["impls"]}
    assert peers >= {"etcdctl elect", "consul lock", "redis-py Lock"}
    assert any(impl.startswith("tooz") for impl in peers)
    assert results["herd"]


def test_every_plot_the_page_shows_exists() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", DOC.read_text())
    assert len(images) >= 5
    for image in images:
        path = DOC.parent / image
        assert path.is_file(), image
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
