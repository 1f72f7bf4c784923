"""`dynascope up`'s worker supervisor: replaces a worker that exits, gives up on one that
keeps exiting, and stops the one it has."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from dynascope.server import cli


def _spawning(code: str, spawned: list[subprocess.Popen[bytes]]):
    def spawn() -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-c", code])
        spawned.append(process)
        return process

    return staticmethod(spawn)


def test_a_worker_that_keeps_exiting_makes_up_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[subprocess.Popen[bytes]] = []
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(cli._WorkerSupervisor, "_spawn", _spawning("raise SystemExit(3)", spawned))
    monkeypatch.setattr(cli.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    supervisor = cli._WorkerSupervisor()
    supervisor.start()
    deadline = time.monotonic() + 60
    while not signals and time.monotonic() < deadline:
        time.sleep(0.05)
    assert signals == [(cli.os.getpid(), signal.SIGINT)]  # uvicorn's Ctrl-C: `up` stops
    assert supervisor.gave_up
    assert len(spawned) == cli.WORKER_RESTARTS + 1
    assert all(process.returncode == 3 for process in spawned)  # every one reaped


def test_a_worker_is_replaced_once_and_stopped_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[subprocess.Popen[bytes]] = []
    monkeypatch.setattr(
        cli._WorkerSupervisor, "_spawn", _spawning("import time; time.sleep(60)", spawned)
    )
    supervisor = cli._WorkerSupervisor()
    supervisor.start()
    spawned[0].kill()
    deadline = time.monotonic() + 30
    while len(spawned) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(spawned) == 2 and spawned[0].wait(timeout=5) == -signal.SIGKILL
    supervisor.stop()
    assert spawned[1].wait(timeout=5) == -signal.SIGTERM
    time.sleep(0.3)
    assert len(spawned) == 2 and not supervisor.gave_up  # stopping is not an exit to replace
