"""`voxledger replay`: rebuild conversations and flows from their events with this code,
and with --verify check the stored snapshots and current-state rows against them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import msgspec

from ..domain.errors import BadInput
from .arguments import stream_id
from .output import print_json, print_line, to_plain

if TYPE_CHECKING:
    from ..adapters.debug.replay import Difference, Tally


def register(commands: argparse._SubParsersAction) -> None:
    """Add the replay command."""
    replay = commands.add_parser(
        "replay",
        help="rebuild from events; check snapshots and rows",
        description="Rebuild a conversation and its flows (or, with --all, every stream) "
        "from their events with the code installed now: every event must decode (upcasters "
        "included) and apply. With --verify, also compare each stored snapshot with the "
        "state folded up to its version, and each current-state projection row with the "
        "state at the last event the projection applied. Each difference names the event "
        "after which it appears. Exit 1 if there is any.",
        epilog="examples:\n  voxledger replay 3f2a... --verify\n  voxledger replay --all --verify",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("stream_id", nargs="?", type=stream_id, metavar="ID")
    replay.add_argument("--all", action="store_true", help="every conversation and flow")
    replay.add_argument("--verify", action="store_true", help="compare snapshots and rows too")
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.set_defaults(run=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """Replay, print every difference and a summary; exit 1 on any difference."""
    if args.all == (args.stream_id is not None):
        raise BadInput("give a conversation id or --all, not both")
    from ..adapters.bootstrap import open_store
    from ..adapters.debug.history import History
    from ..adapters.debug.replay import Replayer

    differences: list[Difference] = []
    with open_store(args.database_url) as store:
        replayer = Replayer(store)
        streams = replayer.all_streams() if args.all else History(store).streams_of(args.stream_id)
        for stream_id in streams:
            for difference in replayer.check(stream_id, verify=args.verify):
                if args.json:
                    differences.append(difference)
                else:
                    print_line(difference_line(difference))
        tally = replayer.tally
    if args.json:
        print_json({**to_plain(tally), "differences": [to_plain(d) for d in differences]})
    else:
        print_line(summary_line(tally, verify=args.verify))
    return 1 if tally.differences else 0


def difference_line(d: Difference) -> str:
    """One difference for people."""
    where = f"{d.stream_type} {d.stream_id}"
    after = f"after v{d.version} {d.event_type}" if d.event_type else f"at v{d.version}"
    if d.source == "events":
        return f"{where}: event v{d.version} {d.event_type or ''} cannot be replayed: {d.replayed}"
    if d.path == "(row)" or not d.path:
        return f"{where}: {d.source} {after}: events say {_v(d.replayed)}, stored {_v(d.stored)}"
    return (
        f"{where}: {d.source} {after}: {d.path}: events say {_v(d.replayed)}, "
        f"{d.source} says {_v(d.stored)}"
    )


def summary_line(tally: Tally, *, verify: bool) -> str:
    """The totals, and whether anything differed."""
    line = f"replayed {tally.streams} streams, {tally.events} events"
    if verify:
        line += f"; compared {tally.snapshots} snapshots, {tally.rows} projection rows"
        if not tally.projection:
            line += " (no current-state projection in this schema)"
    count = tally.differences
    verdict = f"{count} difference{'' if count == 1 else 's'}" if count else "no differences"
    return f"{line}: {verdict}"


def _v(value: object) -> str:
    return "nothing" if value is None else msgspec.json.encode(to_plain(value)).decode()
