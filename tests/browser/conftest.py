"""Browser tests: Playwright for Python driving Debian's Chromium (it cannot download its own
browsers here) against a real embedded instance (`dynascope up`: API, worker, SQLite).

Without /usr/bin/chromium (or without playwright) the tests skip, saying why; with
DYNASCOPE_REQUIRE_BROWSER=1 (as CI sets) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.processes import dynascope_process, environment, free_port, wait_for_api

CHROMIUM = Path("/usr/bin/chromium")
# Without these, Chromium tries to reach the network (updates, sync, field trials, QUIC)
# on machines that have none, and its GPU process fails in containers.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER = os.environ.get("DYNASCOPE_REQUIRE_BROWSER") == "1"
# Errors the browser logs for HTTP responses the dashboard handles on purpose (a 422 shown
# next to its field, a 404 shown as "not available").
EXPECTED_CONSOLE = ("Failed to load resource",)


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason}, and DYNASCOPE_REQUIRE_BROWSER=1 says browser tests must run")
    pytest.skip(reason)


def submit(base: str, spec: dict[str, Any]) -> int:
    """Submit a run to the API at ``base``; its id."""
    response = httpx.post(f"{base}/api/v1/runs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Iterator[str]:
    """The URL of a real embedded instance: API, dashboard and one worker."""
    home = tmp_path_factory.mktemp("dashboard-home")
    port = free_port()
    env = environment(home=str(home), flush_interval_s="0.2", heartbeat_interval_s="0.5")
    # The runs are tiny: one thread trains them fastest, and keeps them fast when other
    # processes load the machine (two spinning OpenMP threads on two busy cores crawl).
    env["OMP_NUM_THREADS"] = "1"
    log = home / "up.log"
    with dynascope_process(["up", "--port", str(port)], env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, process, log)
        yield base


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the tests put their screenshots (look at them; commit none)."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser, dashboard) -> Iterator[Any]:
    """A fresh laptop-sized page on the dashboard. The test fails on any JavaScript error;
    ``page.requests`` lists the URLs it asked for."""
    with dashboard_page(browser, dashboard) as page:
        yield page


@contextmanager
def dashboard_page(browser: Any, base: str) -> Iterator[Any]:
    """A fresh laptop-sized page on the dashboard at ``base``, as the ``page`` fixture's."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, base_url=base)
    page = context.new_page()
    errors: list[str] = []
    page.requests = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith(EXPECTED_CONSOLE)
            else None
        ),
    )
    page.on("request", lambda request: page.requests.append(request.url))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors
