"""`voxledger listen FILE.wav`: stream a WAV file through the voice adapter into a conversation."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from ..adapters.audio.segmenter import SegmenterConfig, SpeechEnded
from ..adapters.audio.stream import stream_audio
from ..adapters.audio.turns import TurnConfig
from ..adapters.audio.wav import read_wav
from ..adapters.bootstrap import open_engine
from ..domain.async_engine import AsyncEngine
from .arguments import stream_id, timestamp
from .output import print_json, print_table, say, to_plain


def register(commands: argparse._SubParsersAction) -> None:
    """Add the listen command."""
    listen = commands.add_parser(
        "listen",
        help="stream a WAV file through voice activity detection into a conversation",
        description="Find the utterances in a 16-bit mono WAV (8/16/32/48 kHz) and record them "
        "as conversation events. Example: voxledger listen call.wav --aggressiveness 2",
    )
    listen.add_argument("file", type=Path, help="a 16-bit PCM WAV file")
    listen.add_argument("--conversation", type=stream_id, help="record into this one")
    listen.add_argument("--aggressiveness", type=int, default=3, choices=range(4))
    listen.add_argument("--frame-ms", type=int, default=30, choices=(10, 20, 30))
    listen.add_argument("--chunk-ms", type=int, default=20, help="chunk size fed at a time")
    listen.add_argument("--end-of-turn-ms", type=int, default=700)
    listen.add_argument("--silence-timeout-ms", type=int, default=8000)
    listen.add_argument("--downmix", action="store_true", help="accept stereo, averaging it")
    listen.add_argument("--realtime", action="store_true", help="feed at the audio's own pace")
    listen.add_argument("--started-at", type=timestamp, help="the stream's start time (ISO)")
    listen.add_argument("--json", action="store_true", help="print JSON")
    listen.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Stream the file and print what was heard."""
    audio = read_wav(args.file, downmix=args.downmix)
    segmenter = SegmenterConfig(
        sample_rate=audio.sample_rate, frame_ms=args.frame_ms, aggressiveness=args.aggressiveness
    )
    turns = TurnConfig(
        end_of_turn_ms=args.end_of_turn_ms, silence_timeout_ms=args.silence_timeout_ms
    )
    chunk_bytes = audio.sample_rate * args.chunk_ms // 1000 * 2

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(audio.pcm), chunk_bytes):
            if args.realtime:
                await anyio.sleep(args.chunk_ms / 1000)
            yield audio.pcm[offset : offset + chunk_bytes]

    with open_engine(args.database_url) as engine:
        started_at = args.started_at or engine.clock()
        cid = args.conversation or engine.start_conversation(
            "voice", args.file.name, {"source": "voxledger listen"}, at=started_at
        )
        facts = anyio.run(
            lambda: stream_audio(
                AsyncEngine(engine),
                cid,
                chunks(),
                started_at=started_at,
                segmenter=segmenter,
                turns=turns,
            )
        )
    utterances = [f.utterance for f in facts if isinstance(f, SpeechEnded)]
    if args.json:
        print_json(
            {
                "conversation_id": str(cid),
                "utterances": to_plain(utterances),
                "facts": [{"type": type(f).__name__, **to_plain(f)} for f in facts],
            }
        )
        return 0
    print_table(
        f"{len(utterances)} utterances in {args.file.name} -> conversation {cid}",
        ["#", "start s", "end s", "duration s", "peak dBFS", "mean dBFS"],
        (
            (
                i + 1,
                f"{u.start_s:.2f}",
                f"{u.end_s:.2f}",
                f"{u.duration_s:.2f}",
                f"{u.peak_dbfs:.1f}",
                f"{u.mean_dbfs:.1f}",
            )
            for i, u in enumerate(utterances)
        ),
    )
    other = [
        type(f).__name__ for f in facts if type(f).__name__ not in ("SpeechStarted", "SpeechEnded")
    ]
    say(f"turn facts: {', '.join(other) or 'none'}")
    say(f"inspect it: voxledger log {cid}")
    return 0
