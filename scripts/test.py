"""`voxledger test FILE...`: play scripted conversations against the flows, as a CI step."""

from __future__ import annotations

import argparse

from .arguments import add_flow_options, flow_options
from .output import print_json, print_line, to_plain


def register(commands: argparse._SubParsersAction) -> None:
    """Add the test command."""
    test = commands.add_parser(
        "test",
        help="play scripted conversations (YAML or TOML) against the flows",
        description="Play each case of the conversation test files through the chat bot, on "
        "a schema made for the run and dropped afterwards: what the user says, what the bot "
        "must answer, how the run must end. Every failure is shown with the difference; the "
        "exit code is 1 if any case failed. The format: docs/flows.md. "
        "Example: voxledger test tests/*.test.yaml --flows flows/ --code shop_code.py",
    )
    test.add_argument("files", nargs="+", metavar="FILE", help="a .yaml, .yml or .toml file")
    test.add_argument("--json", action="store_true", help="print JSON")
    add_flow_options(test)
    test.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Play every case; a line each, the differences of those that failed, a summary."""
    from ..adapters.bootstrap import play_conversation_tests

    outcomes = []
    for outcome in play_conversation_tests(args.files, args.database_url, **flow_options(args)):
        outcomes.append(outcome)
        if args.json:
            continue
        if outcome.failure is None:
            print_line(f"ok    {outcome.file}: {outcome.case}")
            continue
        failure = outcome.failure
        print_line(f"FAIL  {outcome.file}: {outcome.case}: {failure.where}: {failure.reason}")
        for line in failure.diff.splitlines():
            print_line(f"      {line}")
    failed = sum(not o.passed for o in outcomes)
    files = len(set(args.files))
    summary = (
        f"{len(outcomes)} case{'s' * (len(outcomes) != 1)} in {files} file{'s' * (files != 1)}:"
        f" {len(outcomes) - failed} passed, {failed} failed"
    )
    if args.json:
        print_json({"cases": [to_plain(o) for o in outcomes], "passed": not failed})
    else:
        print_line(summary)
    return 1 if failed else 0
