"""`voxledger flows` (list, validate, schema, graph), `voxledger flow ID` and `voxledger
expire`: forms, their definitions and their runs."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING

from ..domain.errors import NotFound
from .arguments import add_flow_options, flow_options, stream_id, timestamp
from .output import (
    fail,
    print_fields,
    print_json,
    print_line,
    print_table,
    say,
    to_plain,
    warn,
)

if TYPE_CHECKING:
    from ..domain.flow import FlowState


def register(commands: argparse._SubParsersAction) -> None:
    """Add the flow commands."""
    flows = commands.add_parser(
        "flows",
        help="flow definitions: list, validate, schema, graph",
        description="List the flow definitions this engine knows (the built-in ones and "
        "those --flows or $VOXLEDGER_FLOWS name), check definition files, print their JSON "
        "Schema, or draw one. The format: docs/flows.md. "
        "Examples: voxledger flows --flows my_flows/ --json; "
        "voxledger flows validate my_flows/; voxledger flows graph intake --format dot",
    )
    flows.add_argument("--json", action="store_true", help="print JSON")
    add_flow_options(flows)
    flows.set_defaults(run=run_flows)
    actions = flows.add_subparsers(dest="action", metavar="ACTION")

    validate = actions.add_parser(
        "validate",
        help="check definition files and folders; name every problem",
        description="Check flow definition files (.toml, .json, .yaml, .yml) and folders of "
        "them. Prints every problem as `file: flow 'x' v1: step 'y': reason` and exits 1 on "
        "any; else prints one OK line. Example: voxledger flows validate flows/ extra.yaml",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="a file or a folder")
    validate.add_argument("--json", action="store_true", help="print JSON")
    validate.add_argument(
        "--code",
        action="append",
        metavar="MODULE",
        default=argparse.SUPPRESS,
        help="a .py file or module whose VALIDATORS and HOOKS the flows name; repeatable "
        "(default: $VOXLEDGER_CODE)",
    )
    validate.set_defaults(run=run_validate)

    schema = actions.add_parser(
        "schema",
        help="print the JSON Schema of flow definition files",
        description="Print the JSON Schema (draft 2020-12) of a flow definition file, for "
        "editors to check TOML, JSON and YAML flows. "
        "Example: voxledger flows schema > flow.schema.json",
    )
    schema.set_defaults(run=run_schema)

    graph = actions.add_parser(
        "graph",
        help="draw a flow as a Mermaid flowchart or a Graphviz digraph",
        description="Draw a flow: a node per step (its field and kind), start and end, and "
        "an edge per way a run can move, labelled with its condition. "
        "Example: voxledger flows graph intake --format dot | dot -Tsvg > intake.svg",
    )
    graph.add_argument("name", metavar="NAME", help="a built-in or loaded flow")
    graph.add_argument("--version", type=int, help="this version (default: the latest)")
    graph.add_argument(
        "--format", choices=("mermaid", "dot"), default="mermaid", help="default: mermaid"
    )
    add_flow_options(graph)
    graph.set_defaults(run=run_graph)

    flow = commands.add_parser(
        "flow",
        help="a flow run: status, current step, answers, rejected answers",
        description="Print one run of a flow. Example: voxledger flow 5b1c... --json",
    )
    flow.add_argument("flow_id", type=stream_id, metavar="FLOW_ID")
    flow.add_argument("--version", type=int, help="the run as it was at this version")
    flow.add_argument("--json", action="store_true", help="print JSON")
    add_flow_options(flow)
    flow.set_defaults(run=run_flow)

    expire = commands.add_parser(
        "expire",
        help="expire idle flows (telling their users) and idle conversations; remind",
        description="Record an expiry for every flow idle longer than its definition allows "
        "(the current-state projection, caught up first, says which are due), with a notice "
        "to the chat user in the same save; queue a reminder (once) for the flows within "
        "their definition's remind_before_s of expiring. Run it every minute or so. "
        "Example: voxledger expire --conversations-idle 86400",
    )
    expire.add_argument("--now", type=timestamp, help="the time to judge idleness at (ISO 8601)")
    expire.add_argument(
        "--conversations-idle",
        type=float,
        metavar="SECONDS",
        help="also end conversations idle longer than this",
    )
    expire.add_argument("--json", action="store_true", help="print JSON")
    add_flow_options(expire)
    expire.set_defaults(run=run_expire)


def run_flows(args: argparse.Namespace) -> int:
    """List the definitions."""
    from ..adapters.bootstrap import open_flows

    registry = open_flows(**flow_options(args))
    rows = [
        {
            "name": name,
            "versions": list(versions),
            "title": registry.get(name).title,
            "modes": list(registry.get(name).modes),
            "steps": [s.name for s in registry.get(name).steps],
            "idle_timeout_s": registry.get(name).idle_timeout_s,
        }
        for name, versions in registry.all()
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(
            "flow definitions",
            ["name", "versions", "title", "modes", "steps", "idle timeout s"],
            (
                (
                    r["name"],
                    ", ".join(map(str, r["versions"])),
                    r["title"],
                    ", ".join(r["modes"]),
                    " > ".join(r["steps"]),
                    r["idle_timeout_s"],
                )
                for r in rows
            ),
        )
    return 0


def run_validate(args: argparse.Namespace) -> int:
    """Check the files; every problem on a line of its own, exit 1 on any."""
    from ..adapters.bootstrap import flow_code
    from ..adapters.flow_files import check_files, definition_files

    code = flow_code(getattr(args, "code", None))
    files = definition_files(args.paths)
    definitions, problems = check_files(args.paths, code.validators, code.hooks)
    if args.json:
        print_json(
            {
                "ok": not problems,
                "files": [str(f) for f in files],
                "definitions": [{"name": d.name, "version": d.version} for d in definitions],
                "problems": [to_plain(p) for p in problems],
            }
        )
    else:
        for problem in problems:
            print_line(str(problem))
    if problems:
        if not args.json:
            fail(f"{len(problems)} problem{'s' * (len(problems) != 1)} in {len(files)} file(s)")
        return 1
    if not args.json:
        named = ", ".join(f"{d.name} v{d.version}" for d in definitions)
        print_line(f"OK: {len(files)} file(s), {len(definitions)} flow definition(s): {named}")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema."""
    from ..domain.flow_schema import flow_schema

    print_json(flow_schema())
    return 0


def run_graph(args: argparse.Namespace) -> int:
    """Draw one definition."""
    from ..adapters.bootstrap import open_flows
    from ..adapters.flow_graph import draw

    definition = open_flows(**flow_options(args)).get(args.name, args.version)
    print_line(draw(definition, args.format).rstrip("\n"))
    return 0


def run_flow(args: argparse.Namespace) -> int:
    """Print one run."""
    from ..adapters.bootstrap import open_engine

    with open_engine(args.database_url, **flow_options(args)) as engine:
        state = engine.get_flow(args.flow_id, version=args.version)
        prompt = None
        if state.is_active:
            try:
                prompt = engine.flow_prompt(args.flow_id).prompt
            except NotFound as missing:  # the run is readable without its definition
                warn(f"{missing}: its prompt is not shown; load it with --flows")
    if args.json:
        document = to_plain(state)
        document["expires_at"] = to_plain(state.expires_at)
        document["prompt"] = prompt
        print_json(document)
    else:
        print_flow(state, prompt)
    return 0


def print_flow(state: FlowState, prompt: str | None) -> None:
    """One run for people."""
    print_fields(
        f"flow {state.id}",
        [
            ("definition", f"{state.definition} v{state.definition_version}"),
            ("mode", state.mode),
            ("status", state.status),
            ("current step", state.step),
            ("editing (returns to)", state.editing),
            ("conversation", state.conversation_id),
            ("version", state.version),
            ("updated", state.updated_at.isoformat()),
            ("expires", state.expires_at.isoformat() if state.expires_at else None),
            ("asks now", prompt),
        ],
    )
    print_table("answers", ["field", "value"], state.answers.items())
    if state.rejections:
        print_table(
            "rejected answers",
            ["step", "answer", "reason", "at"],
            ((r.step, r.raw, r.reason, r.at.isoformat()) for r in state.rejections),
        )


def run_expire(args: argparse.Namespace) -> int:
    """Expire what is idle, telling the users whose forms expired, and remind those whose
    forms are about to (once): the current-state projection, caught up first, says what is
    due, and each of those judges its own idleness (the sweep costs what is due, not what
    exists)."""
    from ..adapters.bootstrap import catch_up, open_engine, open_projections

    with open_engine(args.database_url, **flow_options(args)) as engine:
        catch_up(engine.store)
        due = open_projections(engine.store)
        now = args.now or engine.clock()
        idle_s = args.conversations_idle
        conversations = None
        if idle_s is not None:
            since = now - timedelta(seconds=idle_s)
            conversations = [row.conversation_id for row in due.idle_conversations(since)]
        flows = [row.flow_id for row in due.due_flows(now)]
        ahead = max(
            (
                engine.flows.get(name, version).remind_before_s or 0.0
                for name, versions in engine.flows.all()
                for version in versions
            ),
            default=0.0,
        )
        reminding = []
        if ahead:
            soon = due.due_flows(now + timedelta(seconds=ahead))
            reminding = [row.flow_id for row in soon if row.flow_id not in set(flows)]
        swept = engine.sweep(
            now,
            expiring=flows,
            reminding=reminding,
            conversation_idle_s=idle_s,
            conversations=conversations,
        )
    expired = [*swept.expired, *swept.ended]
    if args.json:
        document = {"expired": [str(i) for i in expired]}
        if swept.reminded:  # only then: scripts reading the runs expired see what they did
            document["reminded"] = [str(i) for i in swept.reminded]
        print_json(document)
    else:
        say(f"expired: {len(expired)}")
        for item in expired:
            say(f"  {item}")
        if swept.reminded:
            say(f"reminded: {len(swept.reminded)}")
            for item in swept.reminded:
                say(f"  {item}")
    return 0
