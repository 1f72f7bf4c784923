"""The notice that no worker is running (frontend/worker_notice.js), against an API started
alone (`dynascope api`): runs submitted there stay queued, and the runs page and a queued
run's page say why; once a worker starts against the same home, the notice goes, while a run
still waits in the queue (the worker is busy with another)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) every test, saying why
    expect = None

from tests.browser.conftest import dashboard_page, submit
from tests.integration.processes import (
    dynascope_process,
    environment,
    free_port,
    small_spec,
    wait_for_api,
    wait_for_run,
)

pytestmark = pytest.mark.integration

# The runs page reads /health again when a run leaves the queue, and at each reconnection of
# its event stream (every 15 s): allow for a worker stamping its presence just after that.
NOTICE_GOES_S = 25


class LoneApi(NamedTuple):
    base: str
    env: dict[str, str]
    home: Path


@pytest.fixture(scope="module")
def lone_api(tmp_path_factory) -> Iterator[LoneApi]:
    """An API and dashboard with no worker (`dynascope api`), on its own home."""
    home = tmp_path_factory.mktemp("lone-api-home")
    port = free_port()
    env = environment(home=str(home), flush_interval_s="0.2", heartbeat_interval_s="0.5")
    env["OMP_NUM_THREADS"] = "1"  # for the worker started later against the same home
    log = home / "api.log"
    with dynascope_process(["api", "--port", str(port)], env, log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, process, log)
        yield LoneApi(base, env, home)


def test_no_worker_notice_until_a_worker_starts(browser, lone_api, screenshots):
    base = lone_api.base
    assert httpx.get(f"{base}/api/v1/health").json()["workers"]["alive"] == 0
    # the first trains long enough for the second to wait in the queue behind it
    probes = {"every": 1000, "batch_size": 256}
    long = submit(base, small_spec(name="long", steps=100_000, probes=probes))
    waiting = submit(base, small_spec(name="waiting", steps=10))

    with dashboard_page(browser, base) as page:
        notice = page.locator("#no-worker")
        page.goto("/#/runs")
        expect(page.locator(f'#runs-table tr[data-run-id="{waiting}"] .status')).to_have_text(
            "queued"
        )
        expect(notice).to_be_visible()
        expect(notice).to_have_text(
            "No worker is running: 2 queued runs wait until one starts"
            " (dynascope worker, or dynascope up for everything on one machine)."
        )
        # above the table
        assert page.evaluate(
            "() => Boolean(document.querySelector('#no-worker').compareDocumentPosition("
            "document.querySelector('#runs-table')) & Node.DOCUMENT_POSITION_FOLLOWING)"
        )
        page.screenshot(path=screenshots / "runs-no-worker.png")

        page.goto(f"/#/runs/{waiting}")
        expect(page.locator(".run-head .status")).to_have_text("queued")
        near_status = page.locator(".run-head + #no-worker")
        expect(near_status).to_be_visible()
        expect(near_status).to_contain_text("No worker is running: this run waits in the queue")
        page.screenshot(path=screenshots / "run-no-worker.png")

        page.goto("/#/runs")
        expect(notice).to_be_visible()
        log = lone_api.home / "worker.log"
        with dynascope_process(["worker"], lone_api.env, log):
            # the notice goes live, while the second run still waits behind the first
            expect(notice).to_be_hidden(timeout=NOTICE_GOES_S * 1000)
            row = page.locator(f'#runs-table tr[data-run-id="{long}"]')
            expect(row.locator(".status")).to_have_text("running")
            status = httpx.get(f"{base}/api/v1/runs/{waiting}").json()["status"]
            assert status == "queued", status
            expect(notice).to_have_attribute("data-workers-alive", "1")
            page.goto(f"/#/runs/{waiting}")
            expect(page.locator(".run-head .status")).to_have_text("queued")
            expect(notice).to_have_attribute("data-workers-alive", "1")  # read on this page
            expect(notice).to_be_hidden()
            for run_id in (waiting, long):
                httpx.post(f"{base}/api/v1/runs/{run_id}/cancel")
            assert wait_for_run(base, long)["status"] == "cancelled"
