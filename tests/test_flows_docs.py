"""docs/flows.md cannot drift: every example in it loads (or fails exactly as the page says),
the TOML and YAML versions of the complete example are one flow, the run and the drawing it
shows are what the engine and `flows graph` give, its conversation tests pass (or fail
exactly as the page shows), its action runs, and every key of the format is described."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from voxledger.adapters.bootstrap import open_actions, open_engine
from voxledger.adapters.flow_files import check_files
from voxledger.adapters.flow_graph import draw
from voxledger.domain.engine import Engine
from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.flow_schema import VALIDATOR_TYPES, flow_schema

PAGE = Path(__file__).resolve().parent.parent / "docs" / "flows.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PARSERS = {"toml": tomllib.loads, "yaml": yaml.safe_load, "json": json.loads}


def blocks() -> list[tuple[str, str]]:
    """Every fenced block of the page: (its info string, its text)."""
    return [(m[1].strip(), m[2]) for m in FENCE.finditer(PAGE.read_text(encoding="utf-8"))]


def user_code() -> dict:
    """What the page's Python blocks define (its custom validators and hooks)."""
    namespace: dict = {}
    for info, text in blocks():
        if info == "python":
            exec(compile(text, str(PAGE), "exec"), namespace)  # the page's own example code
    return namespace


def examples() -> list[FlowDefinition]:
    """Every complete flow on the page, compiled with the page's code."""
    code = user_code()
    return [
        FlowDefinition.from_mapping(
            PARSERS[info](text), code["VALIDATORS"], code["HOOKS"], code["ACTIONS"]
        )
        for info, text in blocks()
        if info in PARSERS
    ]


def repair(kind: str) -> FlowDefinition:
    (text,) = [t for i, t in blocks() if i == kind and t.startswith(f"# repair.{kind}")]
    return FlowDefinition.from_mapping(PARSERS[kind](text))


def test_the_page_has_complete_examples_in_toml_and_yaml() -> None:
    kinds = [info for info, _ in blocks() if info in PARSERS]
    assert kinds.count("toml") >= 3 and kinds.count("yaml") >= 1


def test_every_complete_example_on_the_page_loads() -> None:
    names = [definition.name for definition in examples()]
    assert names == ["feedback", "order_help", "repair_request", "repair_request"]


def test_every_fragment_on_the_page_is_well_formed() -> None:
    fragments = [(i, t) for i, t in blocks() if i.endswith(" fragment")]
    assert {i.split()[0] for i, _ in fragments} == {"toml", "yaml", "python"}
    for info, text in fragments:
        kind = info.split()[0]
        if kind == "python":
            compile(text, str(PAGE), "exec")
        else:
            # A TOML fragment may repeat a key to show alternatives: read each line alone.
            pieces = text.splitlines() if kind == "toml" else [text]
            for piece in pieces:
                assert PARSERS[kind](piece) is not None


def test_the_toml_and_yaml_complete_examples_are_the_same_flow() -> None:
    assert repair("toml") == repair("yaml")


def test_the_broken_example_gives_exactly_the_problems_the_page_shows(tmp_path: Path) -> None:
    found = blocks()
    index = next(i for i, (info, _) in enumerate(found) if info == "toml broken")
    (tmp_path / "broken.toml").write_text(found[index][1], encoding="utf-8")
    _, problems = check_files([tmp_path / "broken.toml"])
    shown = found[index + 1][1].splitlines()
    assert [str(p).replace(str(tmp_path) + "/", "") for p in problems] == shown


def test_the_drawing_on_the_page_is_what_flows_graph_draws() -> None:
    (drawn,) = [t for i, t in blocks() if i == "text" and t.startswith("%% Repair request")]
    assert draw(repair("toml"), "mermaid") == drawn


@pytest.fixture
def repairs(database_url: str, schema: str, clock) -> Iterator[Engine]:
    with open_engine(database_url, schema=schema, clock=clock, flows=[repair("yaml")]) as e:
        yield e


def test_the_run_on_the_page_stores_and_shows_what_the_page_says(repairs: Engine) -> None:
    cid = repairs.start_conversation("docs")
    reply = repairs.start_flow(cid, "repair_request", "home")
    for answer in ("Leak", "bathroom and kitchen", "yes", "3", "none", "21.11.2026 9:30",
                   "5pm", "Me@Example.com", "07911 123456"):  # fmt: skip
        reply = repairs.answer(reply.flow_id, answer)
        assert reply.accepted, (answer, reply.reason)
    (summary,) = [t for i, t in blocks() if i == "text" and t.startswith("Send this plumbing")]
    assert reply.prompt + "\n" == summary
    assert repairs.get_flow(reply.flow_id).answers == {
        "problem": "plumbing", "rooms": ["kitchen", "bathroom"], "water_off": True,
        "urgency": 3, "budget": None, "visit_at": "2026-11-21T09:30:00+00:00",
        "leave_by": "17:00", "email": "Me@example.com", "phone": "+447911123456",
    }  # fmt: skip


def test_the_hooks_example_runs_as_the_page_describes() -> None:
    order_help = next(d for d in examples() if d.name == "order_help")
    assert order_help.prompt("order", {}, "return") == "Which order is it about?"
    assert order_help.validate("order", " a-1234 ") == "A-1234"
    assert order_help.next_step("order", "return", {"order": "A-1234"}) == "reason"
    assert order_help.next_step("order", "question", {"order": "A-1234"}) == "question"


def keys_of_the_format() -> Iterator[str]:
    definitions = flow_schema()["$defs"]
    for struct in ("FlowDefinition", "Step", "Branch", "Rule"):
        yield from definitions[struct]["properties"]
    for _, options, _ in VALIDATOR_TYPES.values():
        yield from options


def test_every_key_and_every_validator_type_of_the_format_is_on_the_page() -> None:
    page = PAGE.read_text(encoding="utf-8")
    missing = {key for key in keys_of_the_format() if f"`{key}`" not in page}
    assert missing == set()
    sections = set(re.findall(r"^### `(\w+)`$", page, re.MULTILINE))
    assert sections == set(VALIDATOR_TYPES)


def test_every_complete_example_on_the_page_passes_the_json_schema() -> None:
    checker = jsonschema.Draft202012Validator(flow_schema())
    for info, text in blocks():
        if info in PARSERS:
            assert list(checker.iter_errors(PARSERS[info](text))) == []


def test_the_conversation_tests_on_the_page_pass_against_its_first_flow(
    cli_env, tmp_path: Path
) -> None:
    found = blocks()
    (tmp_path / "feedback.toml").write_text(found[0][1], encoding="utf-8")
    tests = [t for i, t in found if i.endswith(" test") and "changed" not in t.split("\n")[0]]
    assert len(tests) == 2
    (tmp_path / "feedback.test.yaml").write_text(tests[0], encoding="utf-8")
    (tmp_path / "feedback.test.toml").write_text(tests[1], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "test", "feedback.test.yaml",
         "feedback.test.toml", "--flows", "feedback.toml"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert done.stdout.splitlines()[-1] == "4 cases in 2 files: 4 passed, 0 failed"


def test_the_failing_conversation_test_reports_exactly_what_the_page_shows(
    cli_env, tmp_path: Path
) -> None:
    found = blocks()
    (tmp_path / "feedback.toml").write_text(found[0][1], encoding="utf-8")
    index = next(i for i, (info, t) in enumerate(found) if t.startswith("# changed.test.yaml"))
    (tmp_path / "changed.test.yaml").write_text(found[index][1], encoding="utf-8")
    shown = next(t for info, t in found[index:] if info == "text")
    done = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "test", "changed.test.yaml",
         "--flows", "feedback.toml"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout == shown


def test_the_action_on_the_page_runs_once_when_a_run_completes(
    database_url, schema, clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the page's action writes orders.jsonl where it runs
    code = user_code()
    order_help = next(d for d in examples() if d.name == "order_help")
    with open_engine(database_url, schema=schema, clock=clock, flows=[order_help],
                     custom_validators=code["VALIDATORS"], hooks=code["HOOKS"],
                     actions=code["ACTIONS"]) as engine:  # fmt: skip
        reply = engine.start_flow(engine.start_conversation("docs"), "order_help", "return")
        for answer in ("a-1234", "Too small", "yes"):
            reply = engine.answer(reply.flow_id, answer)
        assert open_actions(engine).catch_up().succeeded == 1
        assert open_actions(engine).catch_up().attempts == 0
        (line,) = (tmp_path / "orders.jsonl").read_text().splitlines()
        assert json.loads(line) == {
            "key": f"{reply.flow_id}/send_order",
            "flow": "order_help",
            "data": {"order": "A-1234", "reason": "Too small"},
        }
        assert engine.get_flow(reply.flow_id).actions["send_order"].outcome == "succeeded"
