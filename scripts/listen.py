"""`voxledger listen FILE.wav`: stream a WAV file through the voice adapter into a conversation."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from ..adapters.audio.convert import CHANNELS, require_channel_choice
from ..adapters.audio.segmenter import VADS, SegmenterConfig, SpeechEnded
from ..adapters.audio.stream import stream_audio
from ..adapters.audio.turns import TurnConfig
from ..adapters.audio.wav import open_wav, stream_wav
from ..adapters.bootstrap import open_engine
from ..domain.async_engine import AsyncEngine
from ..domain.errors import BadInput
from .arguments import UsageError, stream_id, timestamp
from .output import print_json, print_table, say, to_plain

MAX_CHUNK_MS = 60_000
# Room left after the audio for the facts due once it ends (end of turn, silence timeout).
_AFTER_AUDIO = timedelta(days=1)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the listen command."""
    listen = commands.add_parser(
        "listen",
        help="stream a WAV file through voice activity detection into a conversation",
        description="Find the utterances in a WAV file (PCM 8-32 bit, float, mu-law or A-law, "
        "8 to 96 kHz; stereo with --channel) and record them as conversation events. "
        "Example: voxledger listen call.wav --channel left --aggressiveness 2",
    )
    listen.add_argument("file", type=Path, help="a WAV file")
    listen.add_argument("--conversation", type=stream_id, help="record into this one")
    listen.add_argument("--vad", choices=VADS, default="webrtcvad", help="speech detector")
    listen.add_argument("--aggressiveness", type=int, default=3, choices=range(4))
    listen.add_argument("--frame-ms", type=int, default=30, choices=(10, 20, 30))
    listen.add_argument("--chunk-ms", type=int, default=20, help="chunk size fed at a time")
    listen.add_argument("--end-of-turn-ms", type=int, default=700)
    listen.add_argument("--silence-timeout-ms", type=int, default=8000)
    listen.add_argument("--channel", choices=CHANNELS, help="which channel of a stereo file")
    listen.add_argument("--downmix", action="store_true", help="same as --channel mix")
    listen.add_argument("--realtime", action="store_true", help="feed at the audio's own pace")
    listen.add_argument("--started-at", type=timestamp, help="the stream's start time (ISO)")
    listen.add_argument("--json", action="store_true", help="print JSON")
    listen.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check every argument, then stream the file and print what was heard."""
    if not 1 <= args.chunk_ms <= MAX_CHUNK_MS:
        raise UsageError(f"--chunk-ms must be 1 to {MAX_CHUNK_MS} ms, got {args.chunk_ms}")
    for option in ("end_of_turn_ms", "silence_timeout_ms"):
        if getattr(args, option) <= 0:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} must be a whole number > 0, got {getattr(args, option)}")
    channel = "mix" if args.downmix and args.channel is None else args.channel
    if args.downmix and args.channel not in (None, "mix"):
        raise UsageError(f"--downmix mixes the channels; it contradicts --channel {args.channel}")
    with open_wav(args.file) as reader:
        try:
            require_channel_choice(reader.format, channel)
        except BadInput as exc:
            raise BadInput(f"{args.file.name}: {exc}") from None
        rate, pcm_chunks = stream_wav(reader, channel=channel, chunk_ms=args.chunk_ms, vad=args.vad)
        segmenter = SegmenterConfig(
            sample_rate=rate,
            frame_ms=args.frame_ms,
            aggressiveness=args.aggressiveness,
            vad=args.vad,
        )
        turns = TurnConfig(
            end_of_turn_ms=args.end_of_turn_ms, silence_timeout_ms=args.silence_timeout_ms
        )
        if args.started_at is not None:
            _require_room(args.started_at, reader.duration_s)
        with open_engine(args.database_url) as engine:
            started_at = args.started_at or engine.clock()
            cid = args.conversation or engine.start_conversation(
                "voice", args.file.name, {"source": "voxledger listen"}, at=started_at
            )
            facts = anyio.run(
                lambda: stream_audio(
                    AsyncEngine(engine),
                    cid,
                    _paced(pcm_chunks, args.chunk_ms if args.realtime else 0),
                    started_at=started_at,
                    segmenter=segmenter,
                    turns=turns,
                )
            )
    _print(args, cid, facts)
    return 0


def _require_room(started_at: datetime, duration_s: float | None) -> None:
    """The stream's clock must not run past the calendar's end while the audio plays."""
    latest = datetime.max.replace(tzinfo=UTC) - _AFTER_AUDIO
    if started_at.astimezone(UTC) > latest - timedelta(seconds=duration_s or 0):
        raise UsageError(
            f"--started-at {started_at.isoformat()} leaves no room for the audio "
            f"before the year 9999 ends"
        )


async def _paced(chunks: Iterator[bytes], pause_ms: int) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if pause_ms:
            await anyio.sleep(pause_ms / 1000)
        yield chunk


def _print(args: argparse.Namespace, cid: object, facts: list) -> None:
    utterances = [f.utterance for f in facts if isinstance(f, SpeechEnded)]
    if args.json:
        print_json(
            {
                "conversation_id": str(cid),
                "utterances": to_plain(utterances),
                "facts": [{"type": type(f).__name__, **to_plain(f)} for f in facts],
            }
        )
        return
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
