"""`voxledger test FILE...`: scripted conversations played through the chat bot on a schema
made for the run and dropped afterwards; each failure shown with its difference, a summary
line, exit 1 on any failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]

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

FEEDBACK = """
name = "feedback"
version = 1
title = "Feedback"
modes = ["quick", "full"]
idle_timeout_s = 600

[[steps]]
name = "rating"
prompt = "How would you rate us, from 1 to 5?"
validator = { type = "integer", min = 1, max = 5 }
next = { when = [{ mode = "full", goto = "comment" }] }

[[steps]]
name = "comment"
prompt = "Anything you would like to tell us?"
"""

PASSING = """
flow: feedback
mode: full
cases:
  - name: a happy customer
    steps:
      - bot: How would you rate us, from 1 to 5?
      - user: 7
      - bot: {contains: [whole number, between 1 and 5]}
      - user: 4
      - bot: {regex: "^Anything .*\\\\?$"}
      - user: Great soup
      - bot: Thank you, all done. Your answers are saved.
    status: completed
    data: {rating: 4, comment: Great soup}
  - name: a quick one ends after the rating
    mode: quick
    steps:
      - user: "5"
    status: completed
    data: {rating: 5}
  - name: the menu offers the modes
    mode: null
    steps:
      - bot:
          contains: "Feedback: choose quick or full."
          choices: [quick, full]
  - name: a run left idle expires
    steps:
      - user: "3"
      - wait: 601
      - user: "Too late?"
      - bot: This form expired after a long pause. Send /start to begin again.
    status: expired
    data: {rating: 3}
"""

FAILING = """
flow: feedback
mode: full
cases:
  - name: the wording changed
    steps:
      - bot: How would you rate us?
  - name: the data is not what was meant
    steps:
      - user: "2"
      - user: Slow service
    data: {rating: 4, comment: Slow service}
  - name: still going
    steps:
      - user: "2"
    status: completed
  - name: no such text
    steps:
      - bot: {contains: stars}
  - name: passes
    steps:
      - bot: {regex: "1 to 5"}
"""


def voxledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VOXLEDGER, *args], env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "feedback.toml").write_text(FEEDBACK, encoding="utf-8")
    (tmp_path / "passing.test.yaml").write_text(PASSING, encoding="utf-8")
    (tmp_path / "failing.test.yaml").write_text(FAILING, encoding="utf-8")
    return tmp_path


def test_passing_cases_print_a_line_each_and_a_summary_and_exit_0(cli_env, files) -> None:
    done = voxledger(cli_env, "test", str(files / "passing.test.yaml"),
                     "--flows", str(files / "feedback.toml"))  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    name = files / "passing.test.yaml"
    assert done.stdout.splitlines() == [
        f"ok    {name}: a happy customer",
        f"ok    {name}: a quick one ends after the rating",
        f"ok    {name}: the menu offers the modes",
        f"ok    {name}: a run left idle expires",
        "4 cases in 1 file: 4 passed, 0 failed",
    ]


def test_each_failure_is_shown_with_its_difference_and_the_exit_code_is_1(cli_env, files) -> None:
    done = voxledger(cli_env, "test", str(files / "failing.test.yaml"),
                     str(files / "passing.test.yaml"),
                     "--flows", str(files / "feedback.toml"))  # fmt: skip
    assert done.returncode == 1, done.stderr
    name = files / "failing.test.yaml"
    assert done.stdout.splitlines()[:22] == [
        f"FAIL  {name}: the wording changed: step 1 (bot): the reply differs",
        "      --- expected",
        "      +++ got",
        "      @@ -1 +1 @@",
        "      -How would you rate us?",
        "      +How would you rate us, from 1 to 5?",
        f"FAIL  {name}: the data is not what was meant: the run's data: the data differs",
        "      --- expected",
        "      +++ got",
        "      @@ -1,4 +1,4 @@",
        "       {",
        '         "comment": "Slow service",',
        '      -  "rating": 4',
        '      +  "rating": 2',
        "       }",
        f"FAIL  {name}: still going: the run's status: expected completed, got active",
        f"FAIL  {name}: no such text: step 1 (bot): the reply does not contain 'stars'",
        "      got: How would you rate us, from 1 to 5?",
        f"ok    {name}: passes",
        f"ok    {files / 'passing.test.yaml'}: a happy customer",
        f"ok    {files / 'passing.test.yaml'}: a quick one ends after the rating",
        f"ok    {files / 'passing.test.yaml'}: the menu offers the modes",
    ]
    assert done.stdout.splitlines()[-1] == "9 cases in 2 files: 5 passed, 4 failed"


def test_json_output_names_each_case_and_its_failure(cli_env, files) -> None:
    done = voxledger(cli_env, "test", str(files / "failing.test.yaml"), "--json",
                     "--flows", str(files / "feedback.toml"))  # fmt: skip
    report = json.loads(done.stdout)
    assert report["passed"] is False
    assert [(c["case"], c["failure"] and c["failure"]["where"]) for c in report["cases"]] == [
        ("the wording changed", "step 1 (bot)"),
        ("the data is not what was meant", "the run's data"),
        ("still going", "the run's status"),
        ("no such text", "step 1 (bot)"),
        ("passes", None),
    ]


def test_a_toml_file_and_the_flows_own_code_work_too(cli_env, tmp_path: Path) -> None:
    (tmp_path / "colours.py").write_text(
        "VALIDATORS = {'colour': lambda raw: raw.strip().lower()}\n"
        "HOOKS = {'first_question': lambda mode, a: f'Which colour ({mode})?',\n"
        "         'route': lambda mode, a: 'why' if a['colour'] == 'red' else None}\n",
        encoding="utf-8",
    )
    (tmp_path / "palette.test.toml").write_text(
        """
[[cases]]
name = "red needs a reason"
flow = "palette"
mode = "bright"
status = "completed"
data = { colour = "red", why = "Warm" }
steps = [
  { bot = "Which colour (bright)?" },
  { user = "RED", bot = "Why red?" },
  { user = "Warm" },
  { bot = { contains = "red, then?" } },
  { user = "yes" },
]
""",
        encoding="utf-8",
    )
    (tmp_path / "palette.yaml").write_text(PALETTE, encoding="utf-8")
    done = voxledger(cli_env, "test", str(tmp_path / "palette.test.toml"),
                     "--flows", str(tmp_path / "palette.yaml"),
                     "--code", str(tmp_path / "colours.py"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("1 case in 1 file: 1 passed, 0 failed\n")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cases: [{name: a, flow: feedback, steps: [{usr: hi}]}]",
         "Object contains unknown field `usr` - at `$.cases[0].steps[0]`"),
        ("cases: [{name: a, flow: feedback, steps: [{user: hi, wait: 3}]}]",
         "case 'a': step 1: wait goes on a line of its own"),
        ("cases: [{name: a, steps: [{user: hi}]}]", "case 'a': which flow? (flow = NAME)"),
        ("cases: [{name: a, flow: f, steps: [{user: yes}]}]",
         "case 'a': user: True is a boolean: quote it"),
        ("cases: [{name: a, flow: f, steps: [{bot: {regex: '('}}]}]",
         "case 'a': step 1: bot: regex '(' is not a regular expression: missing ), "
         "unterminated subpattern at position 0"),
    ],
)  # fmt: skip
def test_a_malformed_test_file_is_refused_naming_the_file_and_the_place(
    cli_env, tmp_path: Path, text: str, problem: str
) -> None:
    (tmp_path / "bad.test.yaml").write_text(text, encoding="utf-8")
    done = voxledger(cli_env, "test", str(tmp_path / "bad.test.yaml"))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"voxledger: error: {tmp_path / 'bad.test.yaml'}: {problem}\n"


def test_the_run_uses_a_schema_of_its_own_and_drops_it(cli_env, files, database_url) -> None:
    def test_schemas() -> set[str]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'voxledger_test_%'"
            ).fetchall()
        return {row[0] for row in rows}

    before = test_schemas()
    done = voxledger(cli_env, "test", str(files / "passing.test.yaml"),
                     "--flows", str(files / "feedback.toml"))  # fmt: skip
    assert done.returncode == 0
    assert test_schemas() == before
    with psycopg.connect(database_url) as conn:  # the test's own schema was never touched
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (cli_env["VOXLEDGER_SCHEMA"],)
        ).fetchone()
    assert tables == (0,)
