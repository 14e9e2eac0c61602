"""`voxledger erase`: crypto-shred a conversation's personal data (a right-to-erasure request).

The keys that seal its message content, context and flow answers are deleted; the events stay,
with "[erased]" where the content was, so history, replay and metrics keep working. The chat
directory's row that led from the chat to it is deleted (the chat's next message starts a
new conversation), and the projections that copy content (current state, audit) are then
rebuilt from the log.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .arguments import stream_id
from .output import fail, print_json, print_table, say

if TYPE_CHECKING:
    from ..adapters.store.event_store import EventStore

# The projections whose rows copy personal data out of the events.
HOLDING_CONTENT = ("current", "audit")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the erase command."""
    erase = commands.add_parser(
        "erase",
        help="erase a conversation's personal data for good",
        description="Delete the keys that seal a conversation's and its flows' personal data "
        "(message content, context, answers), delete their snapshots, and rebuild the "
        "projections that hold content. Events, versions, statuses and metrics remain; the "
        "content reads as [erased] everywhere. Cannot be undone. "
        "Example: voxledger erase 3f2a... --yes",
    )
    erase.add_argument("conversation_id", type=stream_id, metavar="ID")
    erase.add_argument("--yes", action="store_true", help="really erase (required)")
    erase.add_argument("--json", action="store_true", help="print JSON")
    erase.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Erase, redact the projections, print the streams erased."""
    if not args.yes:
        fail(f"erasing {args.conversation_id} cannot be undone; run again with --yes")
        return 1
    from ..adapters.bootstrap import erase_conversation, open_store

    with open_store(args.database_url) as store:
        streams = erase_conversation(store, args.conversation_id)
        rebuilt = redact_projections(store)
    if args.json:
        print_json({"conversation_id": args.conversation_id, "erased": streams, "rebuilt": rebuilt})
        return 0
    rows = [(s, "conversation" if s == args.conversation_id else "flow") for s in streams]
    print_table(f"erased {args.conversation_id}", ["stream", "kind"], rows)
    say(f"projections rebuilt without the content: {', '.join(rebuilt) or 'none'}")
    return 0


def redact_projections(store: EventStore) -> list[str]:
    """Rebuild the projections that copy personal data, so their rows read the erased
    streams as the events now do; returns their names."""
    from ..adapters.bootstrap import open_runner

    with open_runner(store) as runner:
        names = [name for name in HOLDING_CONTENT if name in runner.projections]
        for name in names:
            runner.rebuild(name)
    return names
