"""The deployment files (docker-compose.yml, Dockerfile) agree with the code they run.

No Docker engine is needed: the compose file is parsed and interpolated here the way Compose
does it, and every setting, URL and command in it is checked against the settings model, the
Postgres and Redis services and the click group. Where Compose v2 is on PATH, its own schema
validation (`config -q`, which needs no engine) runs as well.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from dynascope.server.cli import main
from dynascope.server.settings import Limits, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
WORKERS = ("worker", "worker-gpu")
APP_SERVICES = ("api", *WORKERS)

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """`value` with Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$` resolved
    against `env` (the shell environment Compose would see)."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", "-"):
            missing = current is None or (op == ":-" and current == "")
            return arg if missing else current
        if op is None:
            return current or ""
        raise AssertionError(f"interpolation {match.group(0)!r} is not handled by this test")

    return _VARIABLE.sub(substitute, value)


def _raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it with `env` in the shell (default: nothing set)."""
    return _interpolate(_raw_compose(), env or {})


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def _cli_context(argv: list[str]) -> click.Context:
    """The click context `argv` (starting with the `dynascope` console script) would run in;
    fails unless the subcommand exists and accepts every option given."""
    assert argv[0] == "dynascope", f"{argv} does not run the dynascope console script"
    assert len(argv) >= 2 and argv[1] in main.commands, f"{argv[1:2]} is not a dynascope command"
    command = main.commands[argv[1]]
    try:
        return command.make_context(argv[1], argv[2:])
    except click.ClickException as error:
        pytest.fail(f"`{shlex.join(argv)}` does not parse: {error.format_message()}")


def _env_names(model: type[BaseSettings]) -> set[str]:
    prefix = model.model_config.get("env_prefix", "")
    names = set()
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        names.add((alias if isinstance(alias, str) else prefix + name).upper())
    return names


def _published_ports(service: dict[str, Any]) -> list[dict[str, str]]:
    """Each published port as {host_ip, published, target}, from short or long syntax."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(
                {key: str(entry.get(key, "")) for key in ("host_ip", "published", "target")}
            )
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        parts = [""] * (3 - len(parts)) + parts
        ports.append(dict(zip(("host_ip", "published", "target"), parts, strict=True)))
    return ports


def test_the_expected_services_and_volumes_exist() -> None:
    compose = _compose()
    assert set(compose["services"]) >= {"postgres", "redis", "api", "worker", "worker-gpu"}
    assert {"postgres", "data"} <= set(compose["volumes"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:16")
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis"):
        assert compose["services"][name]["healthcheck"]["test"], name
    assert any(
        volume.startswith("postgres:") for volume in compose["services"]["postgres"]["volumes"]
    )


def test_every_dynascope_variable_is_a_setting_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = _env_names(Settings) | _env_names(Limits)
    raw_text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\bDYNASCOPE_[A-Z0-9_]+", raw_text))
    assert used, "the compose file configures nothing through DYNASCOPE_* variables"
    assert used <= allowed, f"not dynascope settings: {sorted(used - allowed)}"

    compose = _compose()
    assert "x-dynascope-env" in _raw_compose(), "no shared environment anchor"
    for name in APP_SERVICES:
        with monkeypatch.context() as patch:
            for key in [key for key in os.environ if key.startswith("DYNASCOPE_")]:
                patch.delenv(key)
            for key, value in _environment(compose["services"][name]).items():
                patch.setenv(key, value)
            settings = Settings()  # the service's environment validates
        assert settings.database_url.startswith("postgresql://"), name
        assert settings.broker_url.startswith("redis://"), name
        assert settings.device == ("cuda" if name == "worker-gpu" else "cpu"), name


def test_the_database_url_matches_the_postgres_service() -> None:
    for env in ({}, {"POSTGRES_PASSWORD": "s3cret-pw"}):
        compose = _compose(env)
        postgres = _environment(compose["services"]["postgres"])
        assert postgres["POSTGRES_PASSWORD"] == env.get("POSTGRES_PASSWORD", "dynascope")
        for name in APP_SERVICES:
            url = make_url(_environment(compose["services"][name])["DYNASCOPE_DATABASE_URL"])
            assert url.drivername in ("postgresql", "postgresql+psycopg"), name
            assert url.host == "postgres", name
            assert (url.port or 5432) == int(postgres.get("PGPORT", 5432)), name
            assert url.username == postgres["POSTGRES_USER"], name
            assert url.password == postgres["POSTGRES_PASSWORD"], name
            assert url.database == postgres.get("POSTGRES_DB", postgres["POSTGRES_USER"]), name


def test_the_broker_url_matches_the_redis_service() -> None:
    compose = _compose()
    assert "redis" in compose["services"]
    for name in APP_SERVICES:
        url = make_url(_environment(compose["services"][name])["DYNASCOPE_BROKER_URL"])
        assert url.drivername == "redis", name
        assert (url.host, url.port or 6379) == ("redis", 6379), name


def test_each_command_is_a_dynascope_subcommand_that_parses() -> None:
    services = _compose()["services"]
    api = _cli_context(_argv(services["api"]["command"]))
    assert api.command.name == "api"
    assert api.params["run_migrations"] is True, "the API must migrate the database on start"
    assert api.params["host"] == "0.0.0.0"
    assert _environment(services["api"])["DYNASCOPE_HOST"] == "0.0.0.0"
    for name in WORKERS:
        assert _cli_context(_argv(services[name]["command"])).command.name == "worker", name


def test_the_api_is_healthchecked_on_its_health_route_and_published_on_loopback() -> None:
    from dynascope.server.app import create_app

    api = _compose()["services"]["api"]
    port = str(_cli_context(_argv(api["command"])).params["port"])
    probe = " ".join(_argv(api["healthcheck"]["test"]))
    assert f":{port}/api/v1/health" in probe
    assert "/api/v1/health" in create_app().openapi()["paths"]

    published = _published_ports(api)
    assert published, "the API publishes no port"
    for entry in published:
        assert entry["host_ip"] == "127.0.0.1", f"{entry} is reachable beyond this host"
        assert entry["target"] == port


def test_the_api_and_workers_wait_for_healthy_dependencies() -> None:
    services = _compose()["services"]
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        expected = {"postgres", "redis"} | ({"api"} if name in WORKERS else set())
        for dependency in expected:
            condition = depends_on[dependency]["condition"]
            assert condition == "service_healthy", f"{name} -> {dependency}"
            assert services[dependency].get("healthcheck"), dependency


def test_the_workers_share_the_data_volume_and_scale_by_replicas() -> None:
    compose = _compose()
    for name in WORKERS:
        service = compose["services"][name]
        data_dir = _environment(service)["DYNASCOPE_DATA_DIR"]
        assert f"data:{data_dir}" in service["volumes"], name
        assert int(service["deploy"]["replicas"]) >= 1, name
    replicas = _compose({"WORKER_REPLICAS": "4"})["services"]["worker"]["deploy"]["replicas"]
    assert int(replicas) == 4


def test_the_gpu_worker_reserves_an_nvidia_gpu_behind_a_profile() -> None:
    services = _compose()["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert not services["worker"].get("profiles"), "the CPU worker must start by default"
    assert _environment(gpu)["DYNASCOPE_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _pip_installs(arguments: str) -> list[list[str]]:
    """The argument lists of each `pip install` in a RUN line."""
    return [
        tokens[tokens.index("install") + 1 :]
        for part in re.split(r"&&|;", arguments)
        if (tokens := shlex.split(part))[:2] in (["pip", "install"], ["pip3", "install"])
        or tokens[:4] == ["python", "-m", "pip", "install"]
    ]


def test_the_dockerfile_installs_torch_then_the_package_and_runs_as_a_user() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", instructions[0][1])

    args = dict(arguments.split("=", 1) for keyword, arguments in instructions if keyword == "ARG")
    copied_source = [
        arguments.split()[-1] for keyword, arguments in instructions if keyword == "COPY"
    ]
    torch_at = package_at = None
    for index, (keyword, arguments) in enumerate(instructions):
        if keyword != "RUN":
            continue
        for install in _pip_installs(arguments):
            names = [token for token in install if not token.startswith("-")]
            if any(name.startswith("torch") for name in names) and torch_at is None:
                torch_at = index
                pinned = _interpolate(next(n for n in names if n.startswith("torch")), args)
                version = pinned.removeprefix("torch==")
                requirement = next(
                    dependency
                    for dependency in tomllib.loads((ROOT / "pyproject.toml").read_text())[
                        "project"
                    ]["dependencies"]
                    if dependency.startswith("torch")
                )
                assert version in SpecifierSet(requirement.removeprefix("torch")), version
            if any(name in (".", *copied_source) for name in names) and package_at is None:
                package_at = index
    assert torch_at is not None, "the Dockerfile does not install torch"
    assert package_at is not None, "the Dockerfile does not install the package"
    assert torch_at < package_at, "torch must be installed before the package"
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu"), "the default image should be CPU-only"

    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image runs as root"

    entrypoint = [json.loads(a) for keyword, a in instructions if keyword == "ENTRYPOINT"]
    command = [json.loads(a) for keyword, a in instructions if keyword == "CMD"]
    assert command, "the Dockerfile has no CMD"
    argv = (entrypoint[-1] if entrypoint else []) + command[-1]
    _cli_context(argv)


def _compose_executable() -> list[str] | None:
    """`docker compose` (v2 plugin) or a standalone Compose v2, whichever answers."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for candidate in candidates:
        result = subprocess.run([*candidate, "version"], capture_output=True, text=True, timeout=60)
        if result.returncode == 0 and re.search(r"version v?[2-9]\.\d+", result.stdout):
            return candidate
    return None


def test_compose_itself_accepts_the_file() -> None:
    compose = _compose_executable()
    if compose is None:
        pytest.skip("Docker Compose v2 is not installed here")
    for profile in ([], ["--profile", "gpu"]):
        result = subprocess.run(
            [*compose, "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        output = result.stdout + result.stderr
        if re.search(r"Cannot connect to the Docker daemon|error during connect", output):
            pytest.skip(f"Compose wants a Docker engine here: {output.strip()}")
        # some wrappers lose the exit status, so output other than warnings is an error too
        problems = [line for line in output.splitlines() if line and "WARN" not in line]
        assert result.returncode == 0 and not problems, output
