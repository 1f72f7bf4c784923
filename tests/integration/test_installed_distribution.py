"""The installed distribution works, not only the checkout: build the wheel, install it
into a fresh virtual environment, and run `dynascope up` from another directory — the
dashboard, the API and the migrations must come from the installed package."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import httpx
import pytest

from tests.integration.processes import (
    dynascope_process,
    environment,
    free_port,
    small_spec,
    wait_for_api,
    wait_for_run,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the dynascope wheel; its dependencies (torch and the rest,
    several GB to install again) are borrowed read-only from this environment through a
    .pth line, which does not bring along this environment's editable dynascope."""
    tmp = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp / "wheels"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    wheel = next((tmp / "wheels").glob("dynascope-*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    return env_dir


def test_wheel_ships_frontend_and_migrations(installed):
    python = installed / "bin" / "python"
    where = subprocess.run(
        [python, "-c", "import dynascope.frontend as f, dynascope.migrations as m; "
         "print(f.__file__); print(m.__file__)"],
        check=True, capture_output=True, text=True, cwd=installed,
    ).stdout.split()  # fmt: skip
    for path in where:
        assert str(installed) in path and str(ROOT) not in path
    frontend = Path(where[0]).parent
    migrations = Path(where[1]).parent
    assert (frontend / "index.html").is_file()
    assert (frontend / "vendor" / "plotly-cartesian.min.js").is_file()
    assert (frontend / "vendor" / "plotly-cartesian.LICENSE").is_file()
    assert (migrations / "alembic.ini").is_file() and (migrations / "env.py").is_file()
    assert list((migrations / "versions").glob("0001_*.py"))


def test_installed_up_serves_api_dashboard_and_trains(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    env = environment(home=str(tmp_path / "home"))
    log = tmp_path / "up.log"
    command = [str(installed / "bin" / "dynascope"), "up", "--port", str(port)]
    with dynascope_process([], env, log, command=command, cwd=elsewhere) as process:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base, process, log)
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "dynascope" in page.text
        for bundle in ("plotly.min.js", "plotly-cartesian.min.js"):
            assert httpx.get(f"{base}/vendor/{bundle}").status_code == 200
        run_id = httpx.post(f"{base}/api/v1/runs", json=small_spec(steps=20)).json()["id"]
        assert wait_for_run(base, run_id)["status"] == "completed"
    assert (tmp_path / "home" / "dynascope.sqlite").is_file()
