"""`voxledger flows validate | schema | graph`, and user flows (`--flows`, `--code`,
$VOXLEDGER_FLOWS) in `flows`, `chat` and `serve`, each run as a real process."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.flow_schema import flow_schema

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]
FLOWS = Path(__file__).parent / "fixtures" / "flows"
PROBLEM_LINE = re.compile(r"^(?P<file>[^:]+): flow '[^']+'( v\d+)?: (step '[^']+': )?.+$")

HOOKS = """
def first_question(mode, answers):
    return f"Hello! Which colour ({mode})?"

def route(mode, answers):
    return "why" if answers["colour"] == "red" else None

VALIDATORS = {"colour": lambda raw: raw.strip().lower()}
HOOKS = {"first_question": first_question, "route": route}
"""

PALETTE = """
name: palette
version: 1
modes: [bright]
steps:
  - name: colour
    prompt_hook: first_question
    validator: {type: custom, name: colour}
    next: {hook: route, targets: [why], else: confirm}
  - name: why
    prompt: "Why {colour}?"
    next: confirm
  - name: confirm
    kind: confirm
    prompt: "{colour}, then?"
"""


def voxledger(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VOXLEDGER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def plain_env() -> dict[str, str]:
    """An environment with no user flows or code in it."""
    return {k: v for k, v in os.environ.items() if k not in ("VOXLEDGER_FLOWS", "VOXLEDGER_CODE")}


def test_validate_prints_ok_and_exits_0_for_sound_files(plain_env, tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(HOOKS)
    (tmp_path / "palette.yaml").write_text(PALETTE)
    done = voxledger(
        plain_env, "flows", "validate", str(FLOWS / "survey.yaml"), str(tmp_path),
        "--code", str(tmp_path / "hooks.py"),
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "OK: 2 file(s), 2 flow definition(s): survey v3, palette v1\n"


def test_validate_prints_every_problem_on_a_line_of_its_own_and_exits_1(plain_env) -> None:
    done = voxledger(
        plain_env, "flows", "validate", str(FLOWS / "wrong"), str(FLOWS / "unsound"),
        str(FLOWS / "broken.toml"), str(FLOWS / "delivery.json"),
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 4 + 8 + 1 + 1
    assert all(PROBLEM_LINE.match(line) or ": cannot parse: " in line for line in lines), lines
    delivery = FLOWS / "delivery.json"
    assert (
        f"{delivery}: flow 'delivery' v2: step 'phone': no custom validator named 'phone' is "
        "registered" in lines
    )
    assert (
        f"{FLOWS / 'unsound' / 'problems.toml'}: flow 'unsound' v1: step 'loop': in a cycle with"
        " no exit: a dead end, no path from it reaches the end" in lines
    )
    assert done.stderr == "voxledger: error: 14 problems in 7 file(s)\n"


def test_validate_as_json_names_file_flow_version_step_and_reason(plain_env) -> None:
    done = voxledger(plain_env, "flows", "validate", str(FLOWS / "unsound"), "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["definitions"] == []
    assert report["problems"][0] == {
        "reason": "prompt names {nickname}, which is no field of this flow",
        "flow": "unsound",
        "version": 1,
        "step": "size",
        "file": str(FLOWS / "unsound" / "problems.toml"),
    }


def test_schema_prints_the_json_schema(plain_env) -> None:
    done = voxledger(plain_env, "flows", "schema")
    assert done.returncode == 0 and json.loads(done.stdout) == flow_schema()


def test_graph_draws_a_loaded_flow_in_either_format(plain_env) -> None:
    survey = ["--flows", str(FLOWS / "survey.yaml")]
    mermaid = voxledger(plain_env, "flows", "graph", "survey", *survey)
    assert mermaid.returncode == 0 and mermaid.stdout.splitlines()[1] == "flowchart TD"
    dot = voxledger(plain_env, "flows", "graph", "survey", "--format", "dot", *survey)
    assert dot.returncode == 0 and dot.stdout.startswith('digraph "survey" {')
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg"], input=dot.stdout, text=True, check=True, timeout=60,
                       capture_output=True)  # fmt: skip


def test_graph_of_an_unknown_flow_or_version_is_one_clear_error(plain_env) -> None:
    done = voxledger(plain_env, "flows", "graph", "intake", "--version", "7")
    assert done.returncode == 1
    assert done.stderr == (
        "voxledger: error: no flow definition 'intake' v7 (registered: intake v1)\n"
    )


def test_flows_lists_user_flows_from_the_option_or_the_environment(
    plain_env, tmp_path: Path
) -> None:
    listed = voxledger(plain_env, "flows", "--flows", str(FLOWS / "survey.yaml"), "--json")
    assert [f["name"] for f in json.loads(listed.stdout)] == ["intake", "survey"]
    (tmp_path / "hooks.py").write_text(HOOKS)
    (tmp_path / "palette.yaml").write_text(PALETTE)
    paths = [str(tmp_path / "palette.yaml"), str(FLOWS / "survey.yaml")]
    env = {
        **plain_env,
        "VOXLEDGER_FLOWS": os.pathsep.join(paths),
        "VOXLEDGER_CODE": str(tmp_path / "hooks.py"),
    }
    listed = voxledger(env, "flows", "--json")
    assert [f["name"] for f in json.loads(listed.stdout)] == ["intake", "palette", "survey"]


def test_a_broken_user_flow_stops_a_command_with_every_problem(plain_env) -> None:
    done = voxledger(plain_env, "flows", "--flows", str(FLOWS / "unsound"))
    assert done.returncode == 1
    assert done.stderr.startswith("voxledger: error: ")
    assert done.stderr.count("\n") == 8 and "Traceback" not in done.stderr


def test_chat_runs_a_user_flow_with_its_hooks(cli_env, tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(HOOKS)
    (tmp_path / "palette.yaml").write_text(PALETTE)
    done = voxledger(
        cli_env, "chat", "--flows", str(tmp_path / "palette.yaml"), "--code",
        str(tmp_path / "hooks.py"), "--flow", "palette", "--chat-id", "cli-user",
        stdin="bright\n RED \nIt is warm\nyes\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = [line.removeprefix("bot: ") for line in done.stdout.splitlines()]
    assert "Hello! Which colour (bright)?" in said
    assert "Why red?" in said and "red, then?" in said
    assert said[-1] == "Thank you, all done. Your answers are saved."


def test_chat_refuses_an_unknown_flow_naming_the_registered_ones(cli_env) -> None:
    done = voxledger(cli_env, "chat", "--flow", "survey", stdin="")
    assert done.returncode == 1
    assert done.stderr == (
        "voxledger: error: no flow definition 'survey' (registered: intake v1)\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def survey_server(cli_env, tmp_path: Path) -> Iterator[str]:
    """`voxledger serve --flow survey` with the survey loaded through $VOXLEDGER_FLOWS."""
    port = free_port()
    env = {**cli_env, "VOXLEDGER_API_TOKEN": "t0ken", "VOXLEDGER_FLOWS": str(FLOWS / "survey.yaml")}
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [*VOXLEDGER, "serve", "--port", str(port), "--flow", "survey"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def test_serve_runs_a_user_flow_named_with_flow(survey_server: str) -> None:
    auth = {"Authorization": "Bearer t0ken"}
    with httpx.Client(base_url=survey_server, headers=auth, timeout=30) as client:
        started = client.post("/v1/conversations", json={"chat_id": "s1"})
        cid = started.json()["conversation_id"]

        def say(text: str) -> str:
            reply = client.post(f"/v1/conversations/{cid}/messages", json={"text": text})
            assert reply.status_code == 200, reply.text
            return reply.json()["text"]

        assert "choose short or long" in say("/start")
        assert say("short") == "How would you rate us, from 1 to 5?"
        assert say("6") == (
            "Please send a whole number between 1 and 5.\nHow would you rate us, from 1 to 5?"
        )
        assert say("4") == "What did you like? (food, service, prices)"


def test_flow_shows_a_run_whose_definition_names_code_it_was_not_given(
    cli_env, database_url, schema, clock, tmp_path: Path
) -> None:
    (tmp_path / "hooks.py").write_text(HOOKS)
    (tmp_path / "palette.yaml").write_text(PALETTE)
    code = {"code": [str(tmp_path / "hooks.py")]}
    flows = [str(tmp_path / "palette.yaml")]
    with open_engine(database_url, schema=schema, clock=clock, flows=flows, **code) as engine:
        run = engine.start_flow(engine.start_conversation("test"), "palette", "bright").flow_id
    shown = voxledger(cli_env, "flow", str(run), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["prompt"] is None
    assert shown.stderr == (
        "voxledger: note: flow 'palette' v1: not loaded here, and the version the log holds "
        "cannot be rebuilt in this process: no hook named 'first_question' is registered "
        "(prompt_hook); no custom validator named 'colour' is registered; no hook named 'route' is "
        "registered; give this process the code it names (--code, $VOXLEDGER_CODE); its "
        "prompt is not shown\n"
    )
    given = voxledger(cli_env, "flow", str(run), "--json", "--code", str(tmp_path / "hooks.py"))
    assert json.loads(given.stdout)["prompt"] == "Hello! Which colour (bright)?"


def test_flow_and_expire_work_on_runs_of_user_flows(cli_env, database_url, schema, clock) -> None:
    survey = str(FLOWS / "survey.yaml")
    with open_engine(database_url, schema=schema, clock=clock, flows=[survey]) as engine:
        cid = engine.start_conversation("test")
        run = engine.start_flow(cid, "survey", "short").flow_id
    shown = voxledger(cli_env, "flow", str(run), "--json", "--flows", survey)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["prompt"] == "How would you rate us, from 1 to 5?"
    # Without the file, the run's version comes from the log, where its start recorded it.
    unloaded = voxledger(cli_env, "flow", str(run), "--json")
    assert (unloaded.returncode, unloaded.stderr) == (0, "")
    assert json.loads(unloaded.stdout)["prompt"] == "How would you rate us, from 1 to 5?"
    # Expiring a run needs no definition: an idle run of any flow expires.
    later = (clock.now + timedelta(days=1)).isoformat()
    expired = voxledger(cli_env, "expire", "--now", later, "--json")
    assert json.loads(expired.stdout) == {"expired": [str(run)]}
