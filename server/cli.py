"""The ``dynascope`` command: start the service (embedded or as separate processes),
migrate, and submit and list runs from a terminal."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import httpx

from dynascope.server.settings import get_settings

TERMINAL = {"completed", "failed", "diverged", "cancelled"}
WORKER_RESTARTS = 5  # `up` replaces a worker that exits, this many times within the window
WORKER_RESTART_WINDOW_S = 60


@click.group()
def main() -> None:
    """dynascope: a training-dynamics observatory."""


@main.command()
def migrate() -> None:
    """Bring the configured database to the newest schema."""
    from dynascope.server.db.migrate import upgrade_database

    upgrade_database(get_settings().database_url)
    click.echo("database is up to date")


@main.command()
@click.option("--host", default=None, help="interface to bind (default 127.0.0.1)")
@click.option("--port", default=None, type=int, help="port (default 8000)")
@click.option("--migrate/--no-migrate", "run_migrations", default=True, show_default=True)
def api(host: str | None, port: int | None, run_migrations: bool) -> None:
    """Serve the API and the dashboard (no worker)."""
    settings = get_settings()
    if run_migrations:
        from dynascope.server.db.migrate import upgrade_database

        upgrade_database(settings.database_url)
    _serve(host or settings.host, port or settings.port)


def _serve(host: str, port: int) -> None:
    import uvicorn

    from dynascope.server.app import create_app

    # open event streams (the dashboard's) must not hold Ctrl-C for long
    uvicorn.run(create_app(), host=host, port=port, log_level="info", timeout_graceful_shutdown=2)


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def worker(loglevel: str) -> None:
    """Start a Celery worker that trains one run at a time (run several to scale out)."""
    from dynascope.server.queue import QUEUE
    from dynascope.worker.celery_app import app

    # solo pool: the run trains in the worker process itself, so a warm shutdown reaches it
    # and stops it cleanly; scale out with more worker processes, not threads.
    app.worker_main(["worker", "--pool=solo", f"--loglevel={loglevel}", "-Q", QUEUE])


@main.command()
@click.option("--host", default=None, help="interface to bind (default 127.0.0.1)")
@click.option("--port", default=None, type=int, help="port (default 8000)")
def up(host: str | None, port: int | None) -> None:
    """Start everything on the embedded default: migrate, one worker, API and dashboard.
    State lives under DYNASCOPE_HOME (default ~/.dynascope). Ctrl-C stops it all."""
    from dynascope.server.db.migrate import upgrade_database
    from dynascope.server.queue import declare_queue, make_celery

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    declare_queue(make_celery(settings))  # before API and worker race to create it
    host, port = host or settings.host, port or settings.port
    supervisor = _WorkerSupervisor()
    supervisor.start()
    click.echo(f"dynascope home: {settings.home}")
    click.echo(f"dashboard and API: http://{host}:{port}/  (API docs at /docs)")
    try:
        _serve(host, port)
    finally:
        click.echo("stopping the worker…")
        supervisor.stop()
    if supervisor.gave_up:
        raise click.ClickException(
            f"the worker exited {WORKER_RESTARTS + 1} times within {WORKER_RESTART_WINDOW_S} s; "
            "stopped (its output is above)"
        )


class _WorkerSupervisor:
    """`up`'s Celery worker, kept alive: a worker that exits on its own (killed, crashed) is
    replaced at once, so runs submitted afterwards are trained; the run it was training is
    failed by the heartbeat check ("worker lost"). More than ``WORKER_RESTARTS`` exits within
    ``WORKER_RESTART_WINDOW_S`` seconds means something is wrong with every worker: then `up`
    stops (SIGINT to itself, which uvicorn takes as Ctrl-C) and exits with an error."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = False
        self.gave_up = False
        self.process = self._spawn()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="worker-supervisor", daemon=True).start()

    @staticmethod
    def _spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "dynascope.server.cli", "worker"],
            start_new_session=True,  # Ctrl-C reaches only us; we stop the worker ourselves
            preexec_fn=_die_with_parent,
        )

    def _watch(self) -> None:
        exits: collections.deque[float] = collections.deque()
        while True:
            code = self.process.wait()  # reaps it: no zombie
            with self.lock:
                if self.stopping:
                    return
                now = time.monotonic()
                exits.append(now)
                while exits and exits[0] < now - WORKER_RESTART_WINDOW_S:
                    exits.popleft()
                if len(exits) > WORKER_RESTARTS:
                    self.gave_up = True
                    click.echo(f"the worker exited (code {code}) again; stopping", err=True)
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                click.echo(f"the worker exited (code {code}); starting a new one", err=True)
                self.process = self._spawn()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            process = self.process
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    """In the worker child of `up`: get SIGTERM if `up` itself dies, even by SIGKILL, so no
    orphan worker outlives it (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _api_url(url: str | None) -> str:
    """The API's base (``…/api/v1``) from the server's URL, given with or without it."""
    base = (url or get_settings().api_url).rstrip("/")
    return base if base.endswith("/api/v1") else base + "/api/v1"


def _request(
    method: str, url: str, *, invalid: str = "the request is invalid", **kwargs: Any
) -> Any:
    try:
        response = httpx.request(method, url, timeout=30, **kwargs)
    except httpx.HTTPError as error:
        raise click.ClickException(
            f"cannot reach the API at {url} ({error}); is `dynascope up` running?"
        ) from error
    if response.status_code == 422:
        lines = [
            f"  {item['field'] or '(spec)'}: {item['msg']}" for item in response.json()["detail"]
        ]
        raise click.ClickException(f"{invalid}:\n" + "\n".join(lines))
    if response.status_code >= 400:
        raise click.ClickException(f"{response.status_code}: {response.json().get('detail')}")
    return response.json() if response.content else None


@main.command()
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="follow the run with a progress bar until it ends")
@click.option("--url", default=None, help="API base URL (default from DYNASCOPE_API_URL)")
def submit(spec_file: Path, wait: bool, url: str | None) -> None:
    """Submit the run spec in SPEC_FILE (JSON)."""
    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as error:
        raise click.ClickException(f"{spec_file} is not valid JSON: {error}") from error
    base = _api_url(url)
    created = _request("POST", f"{base}/runs", json=spec, invalid="the spec is invalid")
    run_id = created["id"]
    click.echo(f"run {run_id} {created['status']}")
    if not wait:
        return
    run = _follow(base, run_id)
    _print_summary(run)
    if run["status"] != "completed":
        sys.exit(1)


def _follow(base: str, run_id: int) -> dict[str, Any]:
    run = _request("GET", f"{base}/runs/{run_id}")
    with click.progressbar(length=run["steps"], label=f"run {run_id}", show_pos=True) as bar:
        done = 0
        while True:
            bar.update(run["step"] - done)
            done = run["step"]
            if run["status"] in TERMINAL:
                return run
            time.sleep(0.5)
            run = _request("GET", f"{base}/runs/{run_id}")


def _print_summary(run: dict[str, Any]) -> None:
    click.echo(f"run {run['id']} {run['status']} at step {run['step']}/{run['steps']}")
    if run["duration_s"] is not None:
        click.echo(f"  duration: {run['duration_s']:.1f} s")
    for key, value in sorted(run["summary"].items()):
        click.echo(f"  {key}: {'n/a' if value is None else f'{value:.6g}'}")
    if run["error"]:
        click.echo(f"  error: {run['error']}")


@main.command()
@click.option(
    "--status",
    default=None,
    type=click.Choice(["queued", "running", *sorted(TERMINAL)]),
    help="only runs with this status",
)
@click.option("--limit", default=50, show_default=True)
@click.option("--url", default=None, help="API base URL (default from DYNASCOPE_API_URL)")
def runs(status: str | None, limit: int, url: str | None) -> None:
    """List runs, newest first."""
    params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
    page = _request("GET", f"{_api_url(url)}/runs", params=params)
    header = f"{'id':>5}  {'status':<10} {'step':>13}  {'train loss':>10}  {'test acc':>8}  name"
    click.echo(header)
    for run in page["data"]:
        loss = run["summary"].get("train/loss")
        accuracy = run["summary"].get("test/accuracy")
        click.echo(
            f"{run['id']:>5}  {run['status']:<10} {run['step']:>6}/{run['steps']:<6}  "
            f"{'' if loss is None else f'{loss:.4g}':>10}  "
            f"{'' if accuracy is None else f'{accuracy:.3f}':>8}  {run['name']}"
        )
    click.echo(f"{page['count']} runs")


if __name__ == "__main__":
    main()
