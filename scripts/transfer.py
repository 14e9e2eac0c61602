"""`voxledger export` and `voxledger import`: a conversation with its flows, to a JSON lines
file and back into another database (to reproduce an incident on a laptop)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..domain.errors import BadInput
from .arguments import add_flow_options, flow_options, stream_id
from .output import print_json, print_line, print_raw_lines, to_plain


def register(commands: argparse._SubParsersAction) -> None:
    """Add the export and import commands."""
    export = commands.add_parser(
        "export",
        help="a conversation and its flows as JSON lines",
        description="Write a header line and every event of a conversation and its flows "
        "(stream, version, topic, time, the event in base64 msgpack and a readable copy). "
        "Personal data is written in plaintext (sealed again on import) unless --redact.",
        epilog="example:\n  voxledger export 3f2a... > incident.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("conversation_id", type=stream_id, metavar="ID")
    export.add_argument(
        "--redact", action="store_true", help="replace personal data with redactions"
    )
    export.set_defaults(run=run_export)

    load = commands.add_parser(
        "import",
        help="load an export into this database, all or nothing",
        description="Check every line of an export (JSON, known topics, versions from 1 "
        "without gaps, references, every event readable by this code, no id already in "
        "the database) and write it in one transaction with its snapshots. Nothing is "
        "written if anything is wrong.",
        epilog="examples:\n  voxledger import incident.jsonl\n"
        "  voxledger import --new-ids incident.jsonl   a copy under fresh ids",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("file", metavar="FILE", help="an export file, or - for stdin")
    load.add_argument(
        "--new-ids", action="store_true", help="give every stream a new id (references follow)"
    )
    load.add_argument("--json", action="store_true", help="print JSON")
    add_flow_options(load)
    load.set_defaults(run=run_import)


def run_export(args: argparse.Namespace) -> int:
    """Write the export to stdout as it is read."""
    from ..adapters.bootstrap import open_store
    from ..adapters.debug.history import History
    from ..adapters.debug.transfer import export_lines

    with open_store(args.database_url) as store:
        print_raw_lines(export_lines(History(store), args.conversation_id, redact=args.redact))
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Check and write an export."""
    from ..adapters.bootstrap import open_flows, open_store
    from ..adapters.debug.transfer import import_lines

    flows = open_flows(**flow_options(args))  # the definitions the file's flows must run
    try:
        # Opened here to turn a missing file into one clear line; the with below closes it.
        source = sys.stdin.buffer if args.file == "-" else Path(args.file).open("rb")  # noqa: SIM115
    except OSError as e:
        raise BadInput(f"cannot read {args.file}: {e.strerror}") from None
    with source, open_store(args.database_url) as store:
        imported = import_lines(store, source, flows, new_ids=args.new_ids)
    if args.json:
        print_json(to_plain(imported))
        return 0
    print_line(
        f"imported conversation {imported.streams[imported.conversation_id]}: "
        f"{len(imported.streams)} streams, {imported.events} events, "
        f"{imported.snapshots} snapshots"
    )
    for old, new in imported.streams.items():
        if old != new:
            print_line(f"  {old} -> {new}")
    return 0
