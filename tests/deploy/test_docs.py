"""The documentation site: ``mkdocs build --strict`` passes, and no page is left out of the nav.

The build runs the real MkDocs with mkdocs-material and mkdocstrings (the API reference is
rendered from the docstrings), with link and anchor validation turned into errors by
``mkdocs.yml``. The Helm values reference in ``docs/kubernetes.md`` is checked against the chart's
``values.yaml`` and ``values.schema.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("mkdocs", reason="mkdocs is not installed (the docs extra)")
pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (the docs extra)")

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CHART = ROOT / "helm" / "leadercron"

BACKENDS = ("file", "memory", "etcd", "zookeeper", "consul", "redis", "kubernetes", "postgres")
REFERENCE = (
    "leadercron",
    "scheduler",
    "elector",
    "term",
    "locks",
    "perjob",
    "backends-base",
    "config",
    "errors",
    "metrics",
    "http",
)


def _config() -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert isinstance(config, dict)
    return config


def _nav_pages(nav: Any) -> Iterator[str]:
    """Every page path in a MkDocs nav (strings, titled entries and sections)."""
    if isinstance(nav, str):
        if "://" not in nav:
            yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_pages(value)


def _doc_pages() -> set[str]:
    """Every Markdown page under docs/ that MkDocs builds: not in dot or ``_`` directories, and
    not matched by ``exclude_docs`` in mkdocs.yml (its entries here are ``/``-anchored paths)."""
    excluded = [line.strip() for line in _config().get("exclude_docs", "").splitlines()]
    pages = set()
    for path in DOCS.rglob("*.md"):
        relative = path.relative_to(DOCS)
        if any(part.startswith((".", "_")) for part in relative.parts[:-1]):
            continue
        if any(("/" + relative.as_posix()).startswith(entry) for entry in excluded if entry):
            continue
        pages.add(relative.as_posix())
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    problems = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + (
        "\n".join(problems) or result.stderr[-4000:]
    )
    return out


def test_build_is_strict_clean(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "404.html").is_file()


@pytest.mark.parametrize("page", ["quickstart", "concepts", "configuration", "kubernetes"])
def test_guide_pages_built(site: Path, page: str) -> None:
    assert (site / page / "index.html").is_file()


@pytest.mark.parametrize("page", ["operations", "comparison", "benchmarks", "fencing", "modes"])
def test_more_pages_built(site: Path, page: str) -> None:
    assert (site / page / "index.html").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_pages_built(site: Path, backend: str) -> None:
    assert (site / "backends" / backend / "index.html").is_file()
    assert (site / "backends" / "index.html").is_file()


@pytest.mark.parametrize("module", REFERENCE)
def test_reference_pages_render_docstrings(site: Path, module: str) -> None:
    page = site / "reference" / module / "index.html"
    assert page.is_file()
    html = page.read_text()
    # mkdocstrings rendered objects (not just the page title), and no reST role leaked through.
    assert 'class="doc doc-' in html
    assert not re.search(r":(class|meth|func|attr|exc|mod|data):`", html), module


def test_reference_links_resolve(site: Path) -> None:
    html = (site / "reference" / "elector" / "index.html").read_text()
    # :class:`State` and :meth:`Backend.acquire` in the docstrings became links.
    assert 'href="#leadercron.elector.State"' in html
    assert 'href="../backends-base/#leadercron.backends.base.Backend.acquire"' in html


def test_every_page_is_in_the_nav() -> None:
    nav = set(_nav_pages(_config()["nav"]))
    pages = _doc_pages()
    assert not pages - nav, f"pages missing from the nav in mkdocs.yml: {sorted(pages - nav)}"
    assert not nav - pages, f"nav entries without a page: {sorted(nav - pages)}"


def test_nav_covers_every_backend_and_module() -> None:
    nav = set(_nav_pages(_config()["nav"]))
    assert {f"backends/{name}.md" for name in BACKENDS} <= nav
    assert {f"reference/{name}.md" for name in REFERENCE} <= nav


def test_public_names_are_all_listed() -> None:
    import leadercron

    text = (DOCS / "reference" / "leadercron.md").read_text()
    listed = set(re.findall(r"^\| \[?`([^`]+)`", text, flags=re.MULTILINE))
    assert listed == set(leadercron.__all__)


def _leaf_paths(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaf_paths(child, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


def _in_schema(schema: dict[str, Any], path: str) -> bool:
    node = schema
    for part in path.split("."):
        properties = node.get("properties", {})
        if part not in properties:
            return False
        node = properties[part]
    return True


def test_helm_values_reference_matches_the_chart() -> None:
    text = (DOCS / "kubernetes.md").read_text()
    section = text.split("## Helm values reference", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    unknown = sorted(key for key in documented if not _in_schema(schema, key))
    assert not unknown, f"documented values that the chart does not have: {unknown}"

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1))

    missing = sorted(path for path in _leaf_paths(values) if not covered(path))
    assert not missing, f"values.yaml keys missing from docs/kubernetes.md: {missing}"
