"""`voxledger flows`, `voxledger flow ID` and `voxledger expire`: forms and their runs."""

from __future__ import annotations

import argparse

from ..adapters.bootstrap import open_engine
from ..domain.flow import FlowState
from ..domain.intake import builtin_registry
from .arguments import stream_id, timestamp
from .output import print_fields, print_json, print_table, say, to_plain


def register(commands: argparse._SubParsersAction) -> None:
    """Add the flow commands."""
    flows = commands.add_parser(
        "flows",
        help="flow definitions and their versions",
        description="List the flow definitions this engine knows. Example: voxledger flows --json",
    )
    flows.add_argument("--json", action="store_true", help="print JSON")
    flows.set_defaults(run=run_flows)

    flow = commands.add_parser(
        "flow",
        help="a flow run: status, current step, answers, rejected answers",
        description="Print one run of a flow. Example: voxledger flow 5b1c... --json",
    )
    flow.add_argument("flow_id", type=stream_id, metavar="FLOW_ID")
    flow.add_argument("--version", type=int, help="the run as it was at this version")
    flow.add_argument("--json", action="store_true", help="print JSON")
    flow.set_defaults(run=run_flow)

    expire = commands.add_parser(
        "expire",
        help="expire flows idle past their timeout (and idle conversations)",
        description="Record an expiry for every flow idle longer than its definition allows. "
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
    expire.set_defaults(run=run_expire)


def run_flows(args: argparse.Namespace) -> int:
    """List the definitions."""
    registry = builtin_registry()
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


def run_flow(args: argparse.Namespace) -> int:
    """Print one run."""
    with open_engine(args.database_url) as engine:
        state = engine.get_flow(args.flow_id, version=args.version)
        prompt = engine.flow_prompt(args.flow_id).prompt if state.is_active else None
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
    """Expire what is idle."""
    with open_engine(args.database_url) as engine:
        expired = engine.expire_idle(args.now, conversation_idle_s=args.conversations_idle)
    if args.json:
        print_json({"expired": [str(i) for i in expired]})
    else:
        say(f"expired: {len(expired)}")
        for item in expired:
            say(f"  {item}")
    return 0
