"""`voxledger demo`: a scripted voice-and-chat conversation, stored for real, then shown."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .arguments import add_flow_options, flow_options
from .flows import print_flow
from .inspect import print_state
from .output import print_json, print_table, say, to_plain
from .query import print_funnel, print_metrics

if TYPE_CHECKING:
    from ..domain.engine import Engine


def register(commands: argparse._SubParsersAction) -> None:
    """Add the demo command."""
    demo = commands.add_parser(
        "demo",
        help="run a scripted voice-and-chat conversation and show what was stored",
        description="Runs a scripted conversation through the engine and prints it. "
        "Example: voxledger demo",
    )
    demo.add_argument("--json", action="store_true", help="print the final state as JSON")
    demo.add_argument(
        "--pause", type=float, default=0.0, metavar="S", help="seconds to wait between steps"
    )
    add_flow_options(demo)
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the script, printing each committed step."""
    from ..adapters.bootstrap import catch_up, open_services, resolve_database_url
    from ..adapters.debug.timetravel import state_document
    from ..domain.conversation import Conversation

    url = resolve_database_url(args.database_url)
    with open_services(url, **flow_options(args)) as services:
        engine = services.engine
        cid = engine.start_conversation("voice", "demo-caller", {"source": "voxledger demo"})
        if not args.json:
            say(f"conversation {cid}")
        steps, form = script(engine, cid)
        for label, step in steps:
            if args.pause:
                time.sleep(args.pause)
            step()
            if not args.json:
                say(f"  v{engine.get_conversation(cid).version:<3} {label}")
        state = engine.get_conversation(cid)
        report = engine.get_flow(form["id"])
        stored = services.store.count_events(Conversation.Started)
        # The embedded default keeps its read models in this process: bring them up to
        # the log's head, then read this run's rows from them.
        catch_up(services.store)
        row = services.projections.conversation(cid)
        metrics = services.projections.metrics()
        funnel = services.projections.funnel("intake")
    if args.json:
        print_json(
            {
                "conversation": state_document(state),
                "flow": to_plain(report),
                "conversations_stored": stored,
                "projections": {
                    "conversation": to_plain(row),
                    "metrics": to_plain(metrics),
                    "funnel": to_plain(funnel),
                },
            }
        )
        return 0
    from ..adapters.bootstrap import describe_database

    say()
    print_state(state)
    say()
    print_flow(report, None)
    say()
    say("from the projections (read models fed by the event log):")
    print_table(
        "current state",
        ["conversation", "status", "messages", "turns", "last activity"],
        [(row.conversation_id, row.status, row.message_count, row.turn_count, row.last_activity)],
    )
    print_metrics(metrics)
    print_funnel(funnel)
    say()
    say(f"events stored for this conversation: {state.version}")
    say(f"conversations stored: {stored}")
    say(f"data: {describe_database(args.database_url)}")
    say(f"inspect it:  voxledger show {cid}")
    say(f"             voxledger log {cid}")
    say(f"             voxledger flow {report.id}")
    return 0


def script(
    engine: Engine, cid: UUID
) -> tuple[list[tuple[str, Callable[[], Any]]], dict[str, UUID]]:
    """The steps of the demo call: connect, two voice turns (one cut off), a chat turn, end."""
    said: dict[str, str] = {}
    flow: dict[str, UUID] = {}

    def chat(text: str) -> Callable[[], None]:
        # A chat message that answers the form: the user's text, the answer and the bot's
        # reply are one atomic save.
        def answer() -> None:
            engine.answer(flow["id"], text, record_messages=True)

        return answer

    def begin_form() -> None:
        flow["id"] = engine.start_flow(cid, "intake", "interview").flow_id

    def message(key: str, role: str, content: str, **kw: Any) -> Callable[[], None]:
        def add() -> None:
            said[key] = engine.add_message(cid, role, content, **kw)

        return add

    return [
        ("connecting over webrtc", lambda: engine.begin_connecting(cid, "webrtc")),
        ("connected", lambda: engine.connect(cid, "webrtc", "rtc-7f3a", latency_ms=38.5)),
        ("listening", lambda: engine.listen(cid)),
        ("user starts speaking", lambda: engine.record_speech_started(cid)),
        (
            "user stops speaking (1.8 s)",
            lambda: engine.record_speech_ended(cid, 1.8, peak_dbfs=-9.5, mean_dbfs=-24.0),
        ),
        (
            "user message",
            message("u1", "user", "Hi, I'd like to report an audio visit.", audio_duration_s=1.8),
        ),
        ("turn 1 starts", lambda: engine.start_turn(cid, said["u1"])),
        ("assistant responds", lambda: engine.start_response(cid)),
        (
            "assistant message",
            message("a1", "assistant", "Sure. What is the audio number?", audio_duration_s=2.1),
        ),
        (
            "usage recorded",
            lambda: engine.record_usage(
                cid, tokens_in=412, tokens_out=38, cost=0.0021, audio_seconds=2.1
            ),
        ),
        ("turn 1 completes", lambda: engine.complete_turn(cid, said["a1"])),
        ("user speaks again", lambda: engine.record_speech_started(cid)),
        ("user stops (0.9 s)", lambda: engine.record_speech_ended(cid, 0.9, -12.0, -27.5)),
        ("user message", message("u2", "user", "It's number 1042.", audio_duration_s=0.9)),
        ("turn 2 starts", lambda: engine.start_turn(cid, said["u2"])),
        ("assistant responds", lambda: engine.start_response(cid)),
        (
            "assistant message (streaming)",
            message("a2", "assistant", "Thanks, and the date of the", complete=False),
        ),
        ("user barges in", lambda: engine.record_speech_started(cid)),
        ("turn 2 interrupted", lambda: engine.interrupt_turn(cid, "barge-in")),
        ("user stops (1.1 s)", lambda: engine.record_speech_ended(cid, 1.1, -10.0, -25.0)),
        ("silence detected (4 s)", lambda: engine.record_silence(cid, 4.0)),
        ("chat: the intake form starts (interview mode)", begin_form),
        ("chat: audio number 1042", chat("1042")),
        ("chat: date 31.02.2026 (rejected: no such date)", chat("31.02.2026")),
        ("chat: date 21.11.2026", chat("21.11.2026")),
        ("chat: employee", chat("Ivan Petrov")),
        ("chat: place", chat("Kazan Arena")),
        ("chat: building type 'business centre' (an office)", chat("business centre")),
        ("chat: zone", chat("north wing")),
        ("chat: client name", chat("OOO Romashka")),
        ("chat: /edit employee", lambda: engine.edit(flow["id"], "employee")),
        ("chat: employee corrected, back at the confirmation", chat("Anna Sidorova")),
        ("chat: yes (the form completes)", chat("yes")),
        (
            "context updated",
            lambda: engine.update_context(cid, {"audio_number": 1042, "report": str(flow["id"])}),
        ),
        (
            "traffic counted",
            lambda: engine.record_traffic(
                cid, messages_sent=3, messages_received=3, bytes_sent=48_200, bytes_received=61_900
            ),
        ),
        ("caller hangs up", lambda: engine.disconnect(cid, "caller hung up")),
        ("conversation ends", lambda: engine.end(cid, "demo finished")),
    ], flow
