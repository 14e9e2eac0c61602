"""`voxledger flows` (list, validate, schema, graph), `voxledger flow ID` and `voxledger
expire`: forms, their definitions and their runs."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING

from ..domain.errors import DefinitionError, NotFound
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
        help="flow definitions: list, validate, schema, graph, versions",
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
    graph.add_argument(
        "--version",
        type=int,
        help="this version (default: the latest loaded); with --funnel, one no longer loaded "
        "is read from the log",
    )
    graph.add_argument(
        "--format", choices=("mermaid", "dot"), default="mermaid", help="default: mermaid"
    )
    graph.add_argument(
        "--funnel",
        action="store_true",
        help="add the runs of this version from the metrics projection: how many reached "
        "each step and took each edge, answers refused and runs abandoned where",
    )
    add_flow_options(graph)
    graph.set_defaults(run=run_graph)

    versions = actions.add_parser(
        "versions",
        help="the versions of a flow recorded in the log, and the runs of each",
        description="List every version of a flow definition the log holds: its content "
        "hash, when and from which file it was first registered, whether this process has "
        "it loaded, and its runs (metrics projection). Example: voxledger flows versions intake",
    )
    versions.add_argument("name", metavar="NAME", help="a flow's name")
    versions.add_argument("--json", action="store_true", help="print JSON")
    add_flow_options(versions)
    versions.set_defaults(run=run_versions)

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
    definitions, problems = check_files(args.paths, code.validators, code.hooks, code.actions)
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
    """Draw one definition; with --funnel, with its runs' counts."""
    from ..adapters.bootstrap import catch_up, open_engine, open_flows, open_projections
    from ..adapters.flow_graph import draw
    from ..projections.queries import FlowOutcomes, Funnel

    registry = open_flows(**flow_options(args))
    try:
        definition = registry.get(args.name, args.version)
    except NotFound:
        if args.version is None or not args.funnel:
            raise
        definition = None  # a version only the log holds: read there with the funnel
    if definition is not None and not args.funnel:
        print_line(draw(definition, args.format).rstrip("\n"))  # no database needed
        return 0
    with open_engine(args.database_url, flows=registry) as engine:
        definition = engine.definition(args.name, args.version)
        funnel = None
        if args.funnel:
            catch_up(engine.store)
            try:
                funnel = open_projections(engine.store).funnel(args.name, definition.version)
            except NotFound as none:
                warn(f"{none}: every count is 0")
                none_yet = FlowOutcomes(args.name, 0, 0, 0, 0)
                funnel = Funnel(args.name, none_yet, [], definition.version)
    print_line(draw(definition, args.format, funnel).rstrip("\n"))
    return 0


def run_versions(args: argparse.Namespace) -> int:
    """List the versions the log holds and those loaded here, with their runs."""
    from ..adapters.bootstrap import catch_up, open_engine, open_projections
    from ..domain.definition_history import content_hash, content_of
    from ..projections.queries import FlowOutcomes

    with open_engine(args.database_url, **flow_options(args)) as engine:
        try:
            recorded = {v.version: v for v in engine.definition_versions(args.name)}
        except NotFound:
            recorded = {}
        loaded = {
            v: engine.flows.get(args.name, v) for v in dict(engine.flows.all()).get(args.name, ())
        }
        if not recorded and not loaded:
            raise NotFound(f"flow {args.name!r} is neither loaded here nor recorded in the log")
        catch_up(engine.store)
        runs = {f.version: f for f in open_projections(engine.store).funnel_by_version(args.name)}
        sources = {v: engine.flows.source_of(args.name, v) for v in loaded}
    rows = []
    for version in sorted(set(recorded) | set(loaded)):
        logged = recorded.get(version)
        funnel = runs.get(version)
        o = funnel.outcomes if funnel else FlowOutcomes(args.name, 0, 0, 0, 0)
        rows.append(
            {
                "version": version,
                "content_hash": logged.content_hash
                if logged
                else content_hash(content_of(loaded[version])),
                "in_log": logged is not None,
                "registered_at": logged.registered_at if logged else None,
                "source": logged.source if logged else sources[version],
                "loaded": version in loaded,
                "runs": o.started,
                "active": funnel.active if funnel else 0,
                "completed": o.completed,
                "cancelled": o.cancelled,
                "expired": o.expired,
            }
        )
    if args.json:
        print_json(rows)
        return 0
    print_table(
        f"flow {args.name!r}: versions",
        ["version", "hash", "in the log since", "from", "loaded here", "runs", "active",
         "completed", "cancelled", "expired"],
        (
            (
                r["version"],
                r["content_hash"][:12],
                r["registered_at"].isoformat(timespec="seconds")
                if r["registered_at"]
                else "not yet (its first run records it)",
                r["source"],
                "yes" if r["loaded"] else "no",
                r["runs"],
                r["active"],
                r["completed"],
                r["cancelled"],
                r["expired"],
            )
            for r in rows
        ),
    )  # fmt: skip
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
            except (NotFound, DefinitionError) as missing:  # readable without its definition
                warn(f"{missing}; its prompt is not shown")
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
    if state.actions:
        print_table(
            "actions",
            ["action", "attempt", "outcome", "error"],
            (
                (a.action, a.attempt, f"{a.outcome}{' (final)' if a.final else ''}", a.error)
                for a in state.actions.values()
            ),
        )
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
