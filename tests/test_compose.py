"""docker-compose.yml cannot run here (no Docker engine), so it is checked as data: every
voxledger service runs a command the CLI accepts, on the database the URL names."""

from __future__ import annotations

from pathlib import Path

import psycopg.conninfo
import yaml

from voxledger.scripts.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def voxledger_services() -> dict[str, dict]:
    return {
        name: service
        for name, service in COMPOSE["services"].items()
        if service.get("command", [None])[0] == "voxledger"
    }


def test_compose_runs_postgres_an_engine_and_a_projection_worker() -> None:
    services = COMPOSE["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert int(services["postgres"]["image"].split(":")[1]) >= 14
    commands = {name: s["command"][1:3] for name, s in voxledger_services().items()}
    assert commands == {"engine": ["serve", "--host"], "projector": ["project", "run"]}


def test_every_voxledger_service_command_parses_with_the_real_command_line() -> None:
    parser = build_parser()
    for name, service in voxledger_services().items():
        args = parser.parse_args(service["command"][1:])
        assert callable(args.run), name


def test_every_voxledger_service_names_the_compose_database_and_waits_for_it() -> None:
    db = COMPOSE["services"]["postgres"]["environment"]
    for name, service in voxledger_services().items():
        url = service["environment"]["VOXLEDGER_DATABASE_URL"]
        parts = psycopg.conninfo.conninfo_to_dict(url.replace("${POSTGRES_PASSWORD}", "x"))
        assert parts["host"] == "postgres", name
        assert parts["user"] == db["POSTGRES_USER"] and parts["dbname"] == db["POSTGRES_DB"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["build"] == "."


def test_no_secret_is_written_into_the_compose_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for service in COMPOSE["services"].values():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in ("PASSWORD", "TOKEN", "SECRET")):
                assert str(value).startswith("${"), key
    assert "${POSTGRES_PASSWORD:?" in text


def test_the_image_installs_every_package_folder() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in ("domain", "projections", "adapters", "scripts"):
        assert f"COPY {folder} {folder}" in dockerfile
