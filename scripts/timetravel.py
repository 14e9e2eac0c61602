"""`voxledger at`, `diff` and `bisect`: a conversation or flow as it was, what changed, and
the first version at which something became true."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from .arguments import stream_id, timestamp
from .flows import print_flow
from .inspect import print_state
from .output import print_json, print_line, to_plain

if TYPE_CHECKING:
    from ..adapters.debug.diff import Change
    from ..adapters.debug.timetravel import Found, Point

BISECT_HELP = """\
Find the first version of a conversation (or flow) at which a condition on its state
holds. The search is binary over versions: it assumes the condition, once true, stays
true (monotone), and tests the last version first. --linear folds every event in order
and stops at the first version where it holds, monotone or not.

The condition language (no code is run; paths are checked against the state's fields):
  paths      status  usage.turns  connection.error_count  answers.city
             messages.length  messages.0.content  messages.-1.role  (.length counts)
             flow.step  flow.answers.city: the conversation's active (or latest) flow
             as it stood at that version's time (bisect a flow's id for its every step)
  values     "text" or 'text', 12, 0.5, true, false, null (a missing value is null)
  compare    == != < <= > >=  (ordering compares two numbers or two texts only)
  membership x in ["a", "b"]   "city" in flow.answers   x not in [...]
  combine    and, or, not, ( )  a bare path tests whether it is set / true"""


def register(commands: argparse._SubParsersAction) -> None:
    """Add the at, diff and bisect commands."""
    at = commands.add_parser(
        "at",
        help="the full state at a version or a time",
        description="Print the whole state as it was at a version or a moment, rebuilt "
        "from the nearest snapshot and the events after it.",
        epilog="examples:\n  voxledger at 3f2a... --version 120 --json\n"
        "  voxledger at 3f2a... --time 2026-11-21T14:05:00Z",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    at.add_argument("stream_id", type=stream_id, metavar="ID")
    when = at.add_mutually_exclusive_group(required=True)
    when.add_argument("--version", type=int, metavar="N", help="the state after event N")
    when.add_argument("--time", type=timestamp, metavar="TIME", help="the state at this moment")
    at.add_argument("--json", action="store_true", help="print JSON")
    at.set_defaults(run=run_at)

    changes = commands.add_parser(
        "diff",
        help="what changed between two versions or times",
        description="Print what changed from A to B, field by field: changed values as "
        "old -> new, added and removed list items and keys, nested fields by dotted path.",
        epilog="examples:\n  voxledger diff 3f2a... 41 42\n"
        "  voxledger diff 3f2a... 2026-11-21T14:00Z 2026-11-21T14:30Z --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    changes.add_argument("stream_id", type=stream_id, metavar="ID")
    changes.add_argument("a", type=point, metavar="A", help="a version number or an ISO time")
    changes.add_argument("b", type=point, metavar="B", help="a version number or an ISO time")
    changes.add_argument("--json", action="store_true", help="print JSON")
    changes.set_defaults(run=run_diff)

    bisect = commands.add_parser(
        "bisect",
        help="first version where a condition on the state holds",
        description=BISECT_HELP,
        epilog="examples:\n"
        "  voxledger bisect 3f2a... --where 'status == \"error\"'\n"
        "  voxledger bisect 3f2a... --where 'flow.step == \"city\"' --linear\n"
        "  voxledger bisect 3f2a... --where 'usage.interruptions >= 1 and status != \"ended\"'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bisect.add_argument("stream_id", type=stream_id, metavar="ID")
    bisect.add_argument("--where", required=True, metavar="EXPR", help="the condition")
    bisect.add_argument("--linear", action="store_true", help="scan every version in order")
    bisect.add_argument("--json", action="store_true", help="print JSON")
    bisect.set_defaults(run=run_bisect)


def point(text: str) -> Point:
    """A version number or an ISO 8601 time."""
    return int(text) if text.isdigit() else timestamp(text)


def run_at(args: argparse.Namespace) -> int:
    """Print the state then."""
    from ..adapters.bootstrap import open_store
    from ..adapters.debug.timetravel import TimeTravel, document
    from ..domain.conversation import ConversationState

    with open_store(args.database_url) as store:
        when = args.version if args.version is not None else args.time
        state = TimeTravel(store).state_at(args.stream_id, when)
    if args.json:
        print_json(document(state))
    elif isinstance(state, ConversationState):
        print_state(state)
    else:
        print_flow(state, None)
    return 0


def run_diff(args: argparse.Namespace) -> int:
    """Print the changes."""
    from ..adapters.bootstrap import open_store
    from ..adapters.debug.diff import diff
    from ..adapters.debug.timetravel import TimeTravel

    with open_store(args.database_url) as store:
        travel = TimeTravel(store)
        old, new = travel.state_at(args.stream_id, args.a), travel.state_at(args.stream_id, args.b)
    # Every event moves the version and the time: the heading says those once.
    found = [c for c in diff(old, new) if c.path not in ("version", "updated_at")]
    if args.json:
        print_json(
            {
                "id": old.id,
                "from": {"version": old.version, "time": old.updated_at},
                "to": {"version": new.version, "time": new.updated_at},
                "changes": [to_plain(c) for c in found],
            }
        )
        return 0
    print_line(
        f"{old.id}: version {old.version} ({_time(old.updated_at)}) -> "
        f"version {new.version} ({_time(new.updated_at)}): {len(found)} changes"
    )
    for change in found:
        print_line("  " + change_line(change))
    return 0


def run_bisect(args: argparse.Namespace) -> int:
    """Print where the condition first holds; exit 1 if it never does."""
    from ..adapters.bootstrap import open_store
    from ..adapters.debug.conditions import Condition
    from ..adapters.debug.timetravel import TimeTravel

    condition = Condition(args.where)
    with open_store(args.database_url) as store:
        found = TimeTravel(store).bisect(args.stream_id, condition, linear=args.linear)
    if args.json:
        print_json(to_plain(found))
    else:
        print_line(found_line(found))
    return 0 if found.version is not None else 1


def change_line(change: Change) -> str:
    """One change for people: `path: old -> new`, `+ path: new`, `- path: old`."""
    if change.kind == "added":
        return f"+ {change.path}: {_value(change.new)}"
    if change.kind == "removed":
        return f"- {change.path}: {_value(change.old)}"
    return f"{change.path}: {_value(change.old)} -> {_value(change.new)}"


def found_line(found: Found) -> str:
    """A bisect result for people."""
    if found.version is None:
        if found.mode == "binary":
            return (
                f"does not hold at the last version ({found.last_version}): {found.condition}; "
                "binary search assumes that once true it stays true (try --linear)"
            )
        return f"never holds in versions 1 to {found.last_version}: {found.condition}"
    assert found.at is not None
    return (
        f"first holds at version {found.version} ({_time(found.at)}, {found.event_type}): "
        f"{found.condition}  [{found.mode}, {found.tested} of {found.last_version} tested]"
    )


def _value(value: Any) -> str:
    return msgspec.json.encode(to_plain(value)).decode()  # compact: one change, one line


def _time(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")
