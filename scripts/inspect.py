"""`voxledger show`, `log` and `watch`: a conversation's state, its events, its live events."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from ..domain.errors import BadInput
from .arguments import stream_id, timestamp
from .output import (
    fail,
    print_fields,
    print_json,
    print_json_array,
    print_json_line,
    print_line,
    print_table,
    summarise,
    to_plain,
)

if TYPE_CHECKING:
    from ..domain.conversation import ConversationState
    from ..domain.events import LoggedEvent


def register(commands: argparse._SubParsersAction) -> None:
    """Add the show and log commands."""
    show = commands.add_parser(
        "show",
        help="a conversation's current state (or at a version)",
        description="Print a conversation's state. Example: voxledger show 3f2a... --json",
    )
    show.add_argument("conversation_id", type=stream_id)
    show.add_argument("--version", type=int, help="the state as it was at this version")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=run_show)

    log = commands.add_parser(
        "log",
        help="events of a conversation and its flows, oldest first",
        description="Print the events of a conversation and of the flows it began, merged in "
        "time order, as they are read (any length streams). Filters combine.",
        epilog="examples:\n"
        "  voxledger log 3f2a... --type MessageAdded,TurnCompleted --since 2026-11-21T14:00Z\n"
        "  voxledger log 3f2a... --flow 5b1c... --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    log.add_argument("conversation_id", type=stream_id, metavar="ID")
    log.add_argument(
        "--type",
        action="append",
        metavar="TYPE",
        help="only events of these types (repeat it, or a comma list)",
    )
    log.add_argument("--since", type=timestamp, metavar="TIME", help="only events at or after it")
    log.add_argument("--until", type=timestamp, metavar="TIME", help="only events at or before it")
    log.add_argument("--flow", type=stream_id, metavar="FLOW_ID", help="only this flow's")
    log.add_argument("--json", action="store_true", help="a JSON array, written as it is read")
    log.set_defaults(run=run_log)

    watch = commands.add_parser(
        "watch",
        help="follow a conversation's events live",
        description="Print a conversation's (and its flows') new events as they are appended, "
        "woken by the database's notification on every append (and reading every 0.2 s).",
        epilog="example:\n  voxledger watch 3f2a... --until-ended --timeout 600 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("conversation_id", type=stream_id, metavar="ID")
    watch.add_argument("--from-start", action="store_true", help="first print what is recorded")
    watch.add_argument(
        "--until-ended", action="store_true", help="stop once it ends (exit 1 on --timeout)"
    )
    watch.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this long")
    watch.add_argument("--json", action="store_true", help="print JSON lines")
    watch.set_defaults(run=run_watch)


def run_show(args: argparse.Namespace) -> int:
    """Print the state."""
    from ..adapters.bootstrap import open_engine
    from ..adapters.debug.timetravel import state_document

    with open_engine(args.database_url) as engine:
        state = engine.get_conversation(args.conversation_id, version=args.version)
    if args.json:
        print_json(state_document(state))
    else:
        print_state(state)
    return 0


def run_log(args: argparse.Namespace) -> int:
    """Print the events as they are read."""
    from ..adapters.bootstrap import open_store
    from ..adapters.debug.history import History, topics_of

    types = [t.strip() for given in args.type or () for t in given.split(",") if t.strip()]
    with open_store(args.database_url) as store:
        history = History(store)
        streams = history.streams_of(args.conversation_id)
        if args.flow is not None:
            if args.flow not in streams:
                raise BadInput(f"{args.flow} is not a flow of {args.conversation_id}")
            streams = [args.flow]
        # Per stream, the time bounds become version bounds (a binary search each), so
        # the read starts and stops where the window does.
        after = upto = None
        if args.since:
            after = {s: history.version_at(s, args.since, before=True) for s in streams}
        if args.until:
            upto = {s: history.version_at(s, args.until) for s in streams}
        recorded = history.merged(
            streams, after=after, upto=upto, topics=topics_of(types) if types else None
        )
        if args.json:
            print_json_array(log_entry(r, full=True) for r in recorded)
        else:
            for r in recorded:
                print_line(log_line(log_entry(r, full=False)))
    return 0


def run_watch(args: argparse.Namespace) -> int:
    """Follow the events until the conversation ends or time runs out."""
    from ..adapters.bootstrap import open_store
    from ..adapters.debug.history import History

    endings = ending_events()
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    with open_store(args.database_url) as store:
        history = History(store)
        watched = args.conversation_id
        streams = history.streams_of(watched)
        after = {s: 0 if args.from_start else history.last_version(s) for s in streams}
        last = history.event(watched, history.last_version(watched))
        if args.until_ended and not args.from_start and isinstance(last, endings):
            return 0
        follow = history.follow(
            watched,
            after=after,
            until=lambda: deadline is not None and time.monotonic() >= deadline,
        )
        for r in follow:
            entry = log_entry(r, full=args.json)
            if args.json:
                print_json_line(entry)
            else:
                print_line(log_line(entry))
            ended = r.event.originator_id == watched and isinstance(r.event, endings)
            if args.until_ended and ended:
                return 0
    if args.until_ended:
        fail(f"{watched} had not ended after {args.timeout:g} s")
        return 1
    return 0


def ending_events() -> tuple[type, ...]:
    """The events after which a conversation or a flow takes no more commands."""
    from ..domain.conversation import Conversation
    from ..domain.flow import Flow

    return (Conversation.Ended, Flow.Completed, Flow.Cancelled, Flow.Expired)


def log_entry(recorded: LoggedEvent, *, full: bool) -> dict[str, Any]:
    """One event as the log shows it; ``full`` adds its data (for JSON)."""
    from ..domain.events import event_data, stream_type

    event = recorded.event
    data = event_data(event)
    entry = {
        "time": event.timestamp,
        "stream": event.originator_id,
        "stream_type": stream_type(event),
        "version": event.originator_version,
        "type": type(event).__name__,
        "summary": summarise(data),
    }
    if full:
        entry["position"] = recorded.position
        entry["data"] = to_plain(data)
    return entry


def log_line(entry: dict[str, Any]) -> str:
    """One event on one line for people."""
    stream = entry["stream_type"]
    if stream == "flow":
        stream = f"flow {str(entry['stream'])[:8]}"
    time_text = entry["time"].isoformat(timespec="milliseconds")
    return (
        f"{time_text}  {stream:<13} v{entry['version']:<6} {entry['type']:<20} {entry['summary']}"
    )


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
