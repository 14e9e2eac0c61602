"""The command line answers every bad input with one line and an exit code that says what
kind of failure it was: 1 refused, 2 usage, 3 database unreachable; never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from voxledger.domain.engine import Engine

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]


def voxledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOXLEDGER, *args], env=env, capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("voxledger: error: ")
    return result.stderr


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["conversations", "--limit", "-1"], "--limit"),
        (["conversations", "--limit", "many"], "--limit"),
        (["metrics", "--since", "99999999999999999999d"], "before the year 1"),
        (["metrics", "--since", "9999-12-31T23:59:59-14:00"], "outside the years"),
        (["metrics", "--since", "0001-01-01T00:00:00+14:00"], "outside the years"),
        (["--database-url", "notaurl", "conversations"], "PostgreSQL URL"),
        (["show", "not-a-uuid"], "not a conversation id"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    cli_env: dict[str, str], arguments: list[str], says: str
) -> None:
    result = voxledger(cli_env, *arguments)
    assert result.returncode == 2
    assert says in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_exits_3(cli_env: dict[str, str]) -> None:
    result = voxledger(
        cli_env, "--database-url", "postgresql://nobody@127.0.0.1:1/none", "conversations"
    )
    assert result.returncode == 3
    assert "database unavailable" in one_line(result)


def test_an_unwritable_home_for_the_embedded_server_is_one_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.write_text("a file where a folder should be")
    env = {**cli_env, "VOXLEDGER_HOME": str(home)}
    env.pop("VOXLEDGER_DATABASE_URL")
    result = voxledger(env, "conversations")
    assert result.returncode == 1
    assert "VOXLEDGER_HOME" in one_line(result)


@pytest.mark.parametrize(
    "where",
    ["(" * 5000 + "version > 1" + ")" * 5000, "version > " + "9" * 5000, "not " * 5000 + "true"],
)
def test_bisect_refuses_conditions_beyond_reason_in_one_line(
    cli_env: dict[str, str], engine: Engine, where: str
) -> None:
    cid = engine.start_conversation("chat")
    engine.add_message(cid, "user", "hello")
    result = voxledger(cli_env, "bisect", str(cid), "--where", where)
    assert result.returncode == 1
    assert "bad condition" in one_line(result)


def test_the_readme_documents_the_exit_codes() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for code, meaning in (("1", "refused"), ("2", "usage"), ("3", "unreachable")):
        assert f"`{code}` {meaning}" in readme
