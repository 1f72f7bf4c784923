"""Start dynascope's real processes (API, workers, the embedded all-in-one) for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "diverged", "cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without DYNASCOPE_* settings, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DYNASCOPE_")}
    env.update({f"DYNASCOPE_{key.upper()}": value for key, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def dynascope_process(
    args: list[str],
    env: dict[str, str],
    log: Path,
    *,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``dynascope ARGS`` (or ``command``) as a child process in its own session; killed
    (with its children) on exit if still alive. Output goes to ``log``."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command or [sys.executable, "-m", "dynascope.server.cli", *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # let `up` stop its worker
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def processes_with_setting(name: str, value: str) -> list[int]:
    """Pids of live processes whose environment has ``name=value`` (from /proc)."""
    wanted = f"{name}={value}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


def wait_for_api(base: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"API at {base} not healthy after {timeout} s:\n{log.read_text()}")


def wait_for_run(
    base: str, run_id: int, statuses: set[str] = TERMINAL, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{base}/api/v1/runs/{run_id}", timeout=5).json()
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} still {run['status']} after {timeout} s")


def small_spec(**changes: Any) -> dict[str, Any]:
    """A run that trains in about a second: a tiny MLP on digits."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "model": {"name": "mlp", "widths": [32], "activation": "tanh"},
        "data": {"name": "digits", "batch_size": 64},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "steps": 60,
        "probes": {"every": 10, "batch_size": 256},
    }
    spec.update(changes)
    return spec
