"""`voxledger show ID` and `voxledger log ID`: a conversation's state and its events."""

from __future__ import annotations

import argparse
from uuid import UUID

from ..adapters.bootstrap import open_engine
from ..domain.conversation import ConversationState
from ..domain.errors import BadInput
from .output import print_fields, print_json, print_table, summarise, to_plain


def register(commands: argparse._SubParsersAction) -> None:
    """Add the show and log commands."""
    show = commands.add_parser(
        "show",
        help="a conversation's current state (or at a version)",
        description="Print a conversation's state. Example: voxledger show 3f2a... --json",
    )
    show.add_argument("conversation_id", type=conversation_id)
    show.add_argument("--version", type=int, help="the state as it was at this version")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=run_show)

    log = commands.add_parser(
        "log",
        help="a conversation's events, oldest first",
        description="Print every event of a conversation. Example: voxledger log 3f2a... --json",
    )
    log.add_argument("conversation_id", type=conversation_id)
    log.add_argument("--json", action="store_true", help="print JSON")
    log.set_defaults(run=run_log)


def conversation_id(text: str) -> UUID:
    """Parse a conversation id."""
    try:
        return UUID(text)
    except ValueError:
        raise BadInput(f"{text!r} is not a conversation id (a UUID)") from None


def run_show(args: argparse.Namespace) -> int:
    """Print the state."""
    with open_engine(args.database_url) as engine:
        state = engine.get_conversation(args.conversation_id, version=args.version)
    if args.json:
        print_json(state_document(state))
    else:
        print_state(state)
    return 0


def run_log(args: argparse.Namespace) -> int:
    """Print the events."""
    with open_engine(args.database_url) as engine:
        history = engine.history(args.conversation_id)
    if args.json:
        print_json([to_plain(entry) for entry in history])
    else:
        print_table(
            f"conversation {args.conversation_id}: {len(history)} events",
            ["version", "time", "type", "summary"],
            (
                (
                    h.version,
                    h.timestamp.isoformat(timespec="milliseconds"),
                    h.type,
                    summarise(h.data),
                )
                for h in history
            ),
        )
    return 0


def state_document(state: ConversationState) -> dict:
    """The state as JSON, with the derived facts included."""
    document = to_plain(state)
    document["is_active"] = state.is_active
    document["current_turn_active"] = state.current_turn_active
    document["usage"]["response_time_ms_avg"] = state.usage.response_time_ms_avg
    return document


def print_state(state: ConversationState) -> None:
    """The state for people."""
    u, k, a = state.usage, state.connection, state.audio
    print_fields(
        f"conversation {state.id}",
        [
            ("status", f"{state.status} ({'active' if state.is_active else 'inactive'})"),
            ("version", state.version),
            ("channel", state.channel),
            ("participant", state.participant),
            ("started", state.started_at.isoformat()),
            ("updated", state.updated_at.isoformat()),
            (
                "connection",
                f"{k.provider or '-'} {k.connection_id or ''} latency={k.latency_ms} ms "
                f"errors={k.error_count} reconnects={k.reconnect_count}",
            ),
            (
                "audio",
                f"listening={a.listening} playing={a.playing} speech={a.speech_active} "
                f"in={a.input_level_db} dB",
            ),
            ("turns", f"{u.turns} completed, {u.interruptions} interrupted"),
            ("response time ms", _response_times(state)),
            ("messages", u.messages),
            ("silences", u.silences),
            ("audio seconds", round(u.audio_seconds, 2)),
            ("tokens in/out", f"{u.tokens_in}/{u.tokens_out}"),
            ("estimated cost", f"{u.cost:.4f}"),
            ("context", to_plain(state.context) or "-"),
        ],
    )
    if state.messages:
        print_table(
            "messages",
            ["#", "role", "content", "flags"],
            (
                (
                    i + 1,
                    m.role,
                    m.content,
                    ("" if m.complete else "incomplete ")
                    + ("interrupted" if m.interrupted else ""),
                )
                for i, m in enumerate(state.messages)
            ),
        )


def _response_times(state: ConversationState) -> str:
    u = state.usage
    if not u.turns:
        return "-"
    return (
        f"avg {u.response_time_ms_avg:.0f}, min {u.response_time_ms_min:.0f}, "
        f"max {u.response_time_ms_max:.0f}"
    )
