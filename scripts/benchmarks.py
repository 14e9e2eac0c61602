"""The measurements behind `voxledger bench`: ours next to a reference, in the same run.

Each benchmark runs a few times against the same database and reports the median and the
spread of every figure, and the ratio of ours to the reference (the machine is shared and
noisy: ratios measured side by side mean more than absolute numbers).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psycopg
from eventsourcing.application import Application
from psycopg import sql
from psycopg.rows import tuple_row

from ..adapters.bootstrap import open_engine
from ..adapters.store.application import fold
from ..adapters.store.database import eventsourcing_settings
from ..domain.async_engine import AsyncEngine
from ..domain.conversation import Conversation
from ..projections.runner import PAGE_SIZE
from .project import open_runner

NOW = datetime(2026, 11, 21, 14, 2, tzinfo=UTC)


class Figure(msgspec.Struct):
    """A measured quantity: its median over the runs and the spread."""

    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, samples: list[float]) -> Figure:
        """Summarise repeated measurements."""
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


class Result(msgspec.Struct):
    """One benchmark: ours, the references, the ratios and the target."""

    name: str
    unit: str
    ours: dict[str, Figure]
    references: dict[str, Figure]
    ratios: dict[str, float]
    target: str
    met: bool
    notes: str = ""


class Setting(msgspec.Struct, frozen=True):
    """How big the runs are (`--quick` makes them small)."""

    runs: int
    single_commands: int
    concurrent_conversations: int
    concurrent_commands_each: int
    replay_events: int
    projection_conversations: int
    lag_seconds: float
    memory_conversations: int
    in_memory_commands: int


FULL = Setting(5, 2000, 64, 40, 10_000, 1_000, 5.0, 10_000, 200_000)
QUICK = Setting(3, 300, 64, 8, 10_000, 50, 1.0, 1_000, 50_000)


class Bench:
    """Runs the benchmarks in a schema of their own, dropped at the end."""

    def __init__(self, database_url: str, setting: Setting) -> None:
        self.url = database_url
        self.setting = setting
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> Bench:
        self.engine = open_engine(self.url, schema=self.schema)
        with self.connect() as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {}.raw_events (stream uuid, version bigint, topic text, "
                    "state bytea, position bigserial, PRIMARY KEY (stream, version))"
                ).format(sql.Identifier(self.schema))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    def connect(self) -> psycopg.Connection[Any]:
        """A plain autocommit connection."""
        return psycopg.connect(self.url, autocommit=True)

    def repeat(self, measure: Callable[[], dict[str, float]]) -> dict[str, Figure]:
        """Run one measurement several times; summarise each of its figures."""
        samples: dict[str, list[float]] = {}
        for _ in range(self.setting.runs):
            for key, value in measure().items():
                samples.setdefault(key, []).append(value)
        return {key: Figure.of(values) for key, values in samples.items()}

    # -- 1. one writer, one command per transaction -----------------------------------------

    def single_writer(self) -> Result:
        """Durable appends from one writer: Engine commands vs raw single-row commits."""
        n = self.setting.single_commands
        payload = msgspec.msgpack.encode({"content": "x" * 80, "role": "user"})

        def ours() -> dict[str, float]:
            cid = self.engine.start_conversation("bench")
            started = time.perf_counter()
            for i in range(n):
                self.engine.add_message(cid, "user", f"message {i}")
            return {"commands_per_s": n / (time.perf_counter() - started)}

        def raw() -> dict[str, float]:
            stream = uuid.uuid4()
            statement = sql.SQL(
                "INSERT INTO {}.raw_events (stream, version, topic, state) VALUES (%s, %s, %s, %s)"
            ).format(sql.Identifier(self.schema))
            with self.connect() as conn:
                started = time.perf_counter()
                for i in range(n):
                    conn.execute(statement, (stream, i, "t", payload), prepare=True)
                return {"commits_per_s": n / (time.perf_counter() - started)}

        mine, reference = self.repeat(ours), self.repeat(raw)
        ratio = mine["commands_per_s"].median / reference["commits_per_s"].median
        return Result(
            "single writer",
            "commands/s",
            mine,
            {"raw psycopg single-row commits": reference["commits_per_s"]},
            {"ours / raw": ratio},
            ">= 0.5x raw psycopg",
            ratio >= 0.5,
        )

    # -- 2. 64 concurrent conversations --------------------------------------------------------

    def concurrent(self) -> Result:
        """64 conversations at once through the AsyncEngine (group commit) vs raw psycopg
        with 8 connections, one row per transaction, and vs the library's defaults."""
        conversations = self.setting.concurrent_conversations
        each = self.setting.concurrent_commands_each
        total = conversations * each
        payload = msgspec.msgpack.encode({"content": "x" * 80, "role": "user"})

        def ours() -> dict[str, float]:
            ids = [self.engine.start_conversation("bench") for _ in range(conversations)]
            engine = AsyncEngine(self.engine, max_threads=conversations)
            batches_before = self.engine.store.commits

            async def talk(cid: uuid.UUID) -> None:
                for i in range(each):
                    await engine.add_message(cid, "user", f"message {i}")

            async def main() -> None:
                async with anyio.create_task_group() as tg:
                    for cid in ids:
                        tg.start_soon(talk, cid)

            started = time.perf_counter()
            anyio.run(main)
            elapsed = time.perf_counter() - started
            batches = self.engine.store.commits - batches_before
            return {"commands_per_s": total / elapsed, "commands_per_commit": total / batches}

        def raw() -> dict[str, float]:
            statement = sql.SQL(
                "INSERT INTO {}.raw_events (stream, version, topic, state) VALUES (%s, %s, %s, %s)"
            ).format(sql.Identifier(self.schema))

            def writer(streams: list[uuid.UUID]) -> None:
                with self.connect() as conn:
                    for i in range(each):
                        for stream in streams:
                            conn.execute(statement, (stream, i, "t", payload), prepare=True)

            streams = [uuid.uuid4() for _ in range(conversations)]
            threads = [threading.Thread(target=writer, args=(streams[k::8],)) for k in range(8)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {"commits_per_s": total / (time.perf_counter() - started)}

        def library() -> dict[str, float]:
            app = library_default_application(self.url, self.schema)
            try:
                ids = []
                for _ in range(conversations):
                    c = Conversation.start("bench", at=NOW)
                    app.save(c)
                    ids.append(c.id)

                def writer(streams: list[uuid.UUID]) -> None:
                    for i in range(each):
                        for stream in streams:
                            c = app.repository.get(stream)
                            c.add_message(uuid.uuid4().hex, "user", f"message {i}", at=NOW)
                            app.save(c)

                threads = [threading.Thread(target=writer, args=(ids[k::8],)) for k in range(8)]
                started = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return {"commands_per_s": total / (time.perf_counter() - started)}
            finally:
                app.close()

        mine, reference, lib = self.repeat(ours), self.repeat(raw), self.repeat(library)
        vs_raw = mine["commands_per_s"].median / reference["commits_per_s"].median
        vs_lib = mine["commands_per_s"].median / lib["commands_per_s"].median
        return Result(
            f"{conversations} concurrent conversations",
            "commands/s",
            mine,
            {
                "raw psycopg, 8 connections, single-row commits": reference["commits_per_s"],
                "eventsourcing defaults, 8 threads (get + save)": lib["commands_per_s"],
            },
            {"ours / raw": vs_raw, "ours / library default": vs_lib},
            ">= 1.0x raw psycopg (8 connections) and >= 5x the library's default",
            vs_raw >= 1.0 and vs_lib >= 5,
        )

    # -- 3. replay ---------------------------------------------------------------------------

    def replay(self) -> Result:
        """A 10,000-event conversation: our replay without snapshots, our load with
        snapshots, the library's default repository.get, and raw fetch+decode+fold."""
        n = self.setting.replay_events
        ours_id = build_long_conversation(self.engine.store.save, n)
        self.engine.store.flush_snapshots()
        app = library_default_application(self.url, self.schema)
        library_id = build_long_conversation(app.save, n)
        store = self.engine.store
        table = sql.SQL("{}.voxledger_events").format(sql.Identifier(self.schema))

        def ours() -> dict[str, float]:
            started = time.perf_counter()
            conversation = fold(None, store.stream(ours_id))
            no_snapshots = time.perf_counter() - started
            assert conversation is not None and conversation.version == n
            loads = []  # one load is a millisecond: the median of several says more
            for _ in range(9):
                store.forget_cached()
                started = time.perf_counter()
                store.load(ours_id)
                loads.append(time.perf_counter() - started)
            return {
                "replay_events_per_s": n / no_snapshots,
                "load_with_snapshots_ms": statistics.median(loads) * 1000,
            }

        def library() -> dict[str, float]:
            started = time.perf_counter()
            app.repository.get(library_id)
            return {"events_per_s": n / (time.perf_counter() - started)}

        def raw() -> dict[str, float]:
            decode = msgspec.msgpack.Decoder().decode
            statement = sql.SQL(
                "SELECT originator_version, topic, state FROM {} WHERE originator_id = %s "
                "ORDER BY originator_version"
            ).format(table)
            with self.connect() as conn, conn.cursor(row_factory=tuple_row) as cur:
                started = time.perf_counter()
                cur.execute(statement, (ours_id,), binary=True)
                state: dict[str, Any] = {}
                for version, _topic, data in cur.fetchall():
                    state.update(decode(data))
                    state["version"] = version
                return {"events_per_s": n / (time.perf_counter() - started)}

        try:
            mine, lib, reference = self.repeat(ours), self.repeat(library), self.repeat(raw)
        finally:
            app.close()
        replay = mine["replay_events_per_s"].median
        load_ms = mine["load_with_snapshots_ms"].median
        return Result(
            f"replay of a {n:,}-event conversation",
            "events/s",
            mine,
            {
                "eventsourcing default repository.get": lib["events_per_s"],
                "raw fetch + msgspec decode + fold": reference["events_per_s"],
            },
            {
                "ours / library default": replay / lib["events_per_s"].median,
                "ours / raw": replay / reference["events_per_s"].median,
            },
            ">= 250,000 events/s and >= 4x the library; load with snapshots < 2 ms",
            replay >= 250_000 and replay / lib["events_per_s"].median >= 4 and load_ms < 2,
        )

    # -- 4. projections -----------------------------------------------------------------------

    def projection(self) -> Result:
        """Catch-up of all three projections over a log of many conversations vs a raw
        batched upsert loop, and live lag while events arrive at a steady rate."""
        conversations, each = self.setting.projection_conversations, 200
        store = self.engine.store
        for _ in range(conversations):
            build_long_conversation(store.save, each)
        total = conversations * each
        schema = sql.Identifier(self.schema)

        def ours() -> dict[str, float]:
            with open_runner(store) as runner:
                runner.setup()
                with self.connect() as conn:
                    for p in runner.projections.values():
                        for table in runner.tables(p).values():
                            conn.execute(sql.SQL("TRUNCATE {}").format(table))
                    conn.execute(
                        sql.SQL("UPDATE {}.voxledger_tracking SET position = 0").format(schema)
                    )
                started = time.perf_counter()
                runner.catch_up()
                return {"catch_up_events_per_s": total / (time.perf_counter() - started)}

        def raw() -> dict[str, float]:
            with self.connect() as conn:
                conn.execute(
                    sql.SQL(
                        "DROP TABLE IF EXISTS {0}.raw_counts, {0}.raw_trail, {0}.raw_position; "
                        "CREATE TABLE {0}.raw_counts (stream uuid PRIMARY KEY, events int, "
                        "last_topic text); CREATE TABLE {0}.raw_position (position bigint); "
                        "CREATE TABLE {0}.raw_trail (position bigint PRIMARY KEY, stream uuid, "
                        "version bigint, topic text); INSERT INTO {0}.raw_position VALUES (0)"
                    ).format(schema)
                )
                # Pages as large as the runner's: neither side batches more than the other.
                read = sql.SQL(
                    "SELECT notification_id, originator_id, originator_version, topic "
                    "FROM {}.voxledger_events WHERE notification_id > %s "
                    "ORDER BY notification_id LIMIT %s"
                ).format(schema)
                trail = sql.SQL(
                    "INSERT INTO {}.raw_trail SELECT * FROM "
                    "unnest(%s::bigint[], %s::uuid[], %s::bigint[], %s::text[])"
                ).format(schema)
                upsert = sql.SQL(
                    "INSERT INTO {0}.raw_counts AS t SELECT s, n, l FROM "
                    "unnest(%s::uuid[], %s::int[], %s::text[]) AS u(s, n, l) "
                    "ON CONFLICT (stream) DO UPDATE SET events = t.events + excluded.events, "
                    "last_topic = excluded.last_topic"
                ).format(schema)
                advance = sql.SQL("UPDATE {}.raw_position SET position = %s").format(schema)
                position, started = 0, time.perf_counter()
                with conn.cursor(row_factory=tuple_row) as cur:
                    while rows := cur.execute(read, (position, PAGE_SIZE), binary=True).fetchall():
                        counts: dict[uuid.UUID, list[Any]] = {}
                        for _, stream, _, topic in rows:
                            counts.setdefault(stream, [0, topic])[0] += 1
                            counts[stream][1] = topic
                        with conn.transaction():
                            cur.execute(
                                trail,
                                [list(column) for column in zip(*rows, strict=True)],
                                binary=True,
                            )
                            cur.execute(
                                upsert,
                                (
                                    list(counts),
                                    [c[0] for c in counts.values()],
                                    [c[1] for c in counts.values()],
                                ),
                                binary=True,
                            )
                            position = rows[-1][0]
                            cur.execute(advance, (position,))
                return {"events_per_s": total / (time.perf_counter() - started)}

        mine, reference = self.repeat(ours), self.repeat(raw)
        lag = self.live_lag()
        ratio = mine["catch_up_events_per_s"].median / reference["events_per_s"].median
        mine.update(lag)
        return Result(
            f"projections over {total:,} events in {conversations:,} conversations",
            "events/s",
            mine,
            {
                "raw batched loop (no decoding): a row per event + per-stream upserts": reference[
                    "events_per_s"
                ]
            },
            {"ours / raw": ratio},
            ">= 0.5x the raw loop; live lag p99 < 50 ms at 2,000 events/s",
            ratio >= 0.5 and lag["live_lag_p99_ms"].median < 50,
            notes="lag: a `voxledger project run` process tails the log while a writer "
            "process appends at a steady rate from 4 threads; this one listens for the "
            "runner's announcements of the pages it commits",
        )

    def live_lag(self, rate: int = 2000, writers: int = 4) -> dict[str, Figure]:
        """Lag from commit to all three projections: a `project run` process tails the log
        while a writer process appends at a steady rate; this process only listens.

        The runner announces each page as its transaction commits (NOTIFY on the projected
        channel); an event's lag runs from its writer's commit returning to the arrival
        here of the first announcement by which every projection has reached it. Writing
        starts once the runner has projected an event written after it started, so that
        its start-up is not counted as lag."""
        seconds = self.setting.lag_seconds
        env = {**os.environ, "VOXLEDGER_DATABASE_URL": self.url, "VOXLEDGER_SCHEMA": self.schema}
        with open_runner(self.engine.store) as setup:
            setup.setup()  # the tracking table exists before anyone listens
            names, channel = list(setup.projections), setup.projected_channel
        seen: list[tuple[int, float]] = []  # (position every projection reached, when)
        listening, stop = threading.Event(), threading.Event()

        def listen() -> None:
            with self.connect() as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                listening.set()
                at = dict.fromkeys(names, 0)
                while not stop.is_set():
                    for note in conn.notifies(timeout=0.1):
                        received = time.time()
                        at.update(msgspec.json.decode(note.payload))
                        seen.append((min(at.values()), received))

        def reached() -> int:
            return seen[-1][0] if seen else 0

        listener = threading.Thread(target=listen)
        listener.start()
        runner = subprocess.Popen(
            [sys.executable, "-m", "voxledger.scripts.main", "project", "run", "--poll", "0.5"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            listening.wait(30)
            # Tailing: it has projected an event written after it started (and caught up).
            self.engine.start_conversation("bench")
            head, deadline = self.engine.store.head(), time.time() + 60
            while reached() < head and time.time() < deadline:
                time.sleep(0.05)
            out = subprocess.run(
                [sys.executable, "-c", _STEADY_WRITER, str(rate), str(writers), str(seconds)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            written = sorted(
                (int(p), float(t)) for p, t in (line.split() for line in out.splitlines())
            )
            deadline = time.time() + 30
            while reached() < written[-1][0] and time.time() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()
            listener.join()
            runner.terminate()
            runner.wait(timeout=30)
        lags, k = [], 0
        for position, at in written:
            while k < len(seen) and seen[k][0] < position:
                k += 1
            if k < len(seen):
                lags.append((max(seen[k][1], at) - at) * 1000)
        lags.sort()
        times = sorted(at for _, at in written)
        return {
            "live_lag_p50_ms": Figure.of([lags[len(lags) // 2]]),
            "live_lag_p95_ms": Figure.of([lags[int(len(lags) * 0.95)]]),
            "live_lag_p99_ms": Figure.of([lags[int(len(lags) * 0.99)]]),
            "live_lag_max_ms": Figure.of([lags[-1]]),
            "live_rate_events_per_s": Figure.of([len(times) / (times[-1] - times[0])]),
        }

    # -- 5. audio ----------------------------------------------------------------------------

    def audio(self) -> Result:
        """The voice adapter (segmenter + turn detector) vs webrtcvad alone, x real time."""
        from ..adapters.audio.bench import measure_accuracy, measure_segmenter_speed
        from ..domain.errors import BadInput

        pcm, rate, source = speech_for_benchmark()
        report = measure_segmenter_speed(pcm, rate, repeats=self.setting.runs)
        ours = Figure(**report["listener_x_realtime"], runs=self.setting.runs)
        vad = Figure(**report["vad_only_x_realtime"], runs=self.setting.runs)
        figures, references, accuracy = {"x_realtime": ours}, {"webrtcvad alone": vad}, []
        default_met = True
        noisy = noisy_speech_for_benchmark()
        if noisy:
            for backend in ("webrtcvad", "silero"):
                try:
                    found = measure_accuracy(noisy, backend)
                except BadInput:  # Silero VAD is an optional extra
                    accuracy.append(f"{backend}: not installed")
                    continue
                target = figures if backend == "webrtcvad" else references
                for key in ("worst_onset_ms", "earliest_end_ms", "latest_end_ms", "x_realtime"):
                    value = float(found[key])  # type: ignore[arg-type]
                    target[f"{backend} noisy {key}"] = Figure(value, value, value, 1)
                accuracy.append(f"{backend}: {found['files_met']}/{found['files']} files met")
                if backend == "webrtcvad":
                    default_met = found["files_met"] == found["files"]
        return Result(
            "audio adapter",
            "x real time (one core); onset/end errors in ms on held-out noisy speech",
            figures,
            references,
            {"ours / webrtcvad": ours.median / vad.median},
            ">= 2,000x real time; onsets within 60 ms, ends 50 ms early to 400 ms late",
            ours.median >= 2000 and default_met,
            notes=f"{report['audio_s']:.1f} s of {source}; noisy files: {'; '.join(accuracy)}",
        )

    # -- 6. in memory ------------------------------------------------------------------------

    def in_memory(self) -> Result:
        """Commands per second on one conversation with no store at all."""
        n = self.setting.in_memory_commands

        def ours() -> dict[str, float]:
            conversation = Conversation.start("bench", at=NOW)
            started = time.perf_counter()
            for i in range(n):
                if i % 5 == 0:
                    conversation.add_message(str(i), "user", "hello", at=NOW)
                else:
                    conversation.record_levels(-20.0, -12.0, 40.0, at=NOW)
            return {"commands_per_s": n / (time.perf_counter() - started)}

        mine = self.repeat(ours)
        claim = Figure(50_000, 50_000, 50_000, 1)
        ratio = mine["commands_per_s"].median / claim.median
        return Result(
            "in-memory commands on one conversation",
            "commands/s",
            mine,
            {"the in-memory reference's claim": claim},
            {"ours / claim": ratio},
            ">= 100,000 commands/s",
            mine["commands_per_s"].median >= 100_000,
            notes="mix: 1 message per 4 level readings",
        )

    # -- memory ------------------------------------------------------------------------------

    def memory(self) -> Result:
        """Resident memory of a process holding many idle conversations."""
        n = self.setting.memory_conversations
        before = rss_mb()
        for _ in range(n):
            cid = self.engine.start_conversation("bench")
            self.engine.add_message(cid, "user", "hello")
        after = rss_mb()
        figure = Figure(after, after, after, 1)
        return Result(
            f"memory with {n:,} idle conversations",
            "MB resident",
            {"rss_mb": figure},
            {"before": Figure(before, before, before, 1)},
            {},
            "< 500 MB",
            after < 500,
            notes=f"aggregate cache bound: {self.engine.store.cache_size} conversations",
        )


# Appends at a steady rate from several threads (group commit) and prints, per event, its
# log position and the wall time its commit returned. Run in a process of its own, so that
# neither the runner nor the watcher shares its interpreter.
_STEADY_WRITER = """
import sys, threading, time
from datetime import UTC, datetime
from voxledger.adapters.bootstrap import open_engine

rate, writers, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
out = []
with open_engine() as engine:
    ids = [engine.start_conversation("bench") for _ in range(writers)]
    started = time.perf_counter()

    def write(k):
        for i in range(int(rate * seconds / writers)):
            wait = started + (i * writers + k) / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            conversation = engine.store.load(ids[k], cached=True)
            conversation.record_levels(-20.0, -12.0, 40.0, at=datetime.now(UTC))
            out.append((engine.store.save(conversation), time.time()))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print("\\n".join(f"{p} {t}" for p, t in out))
"""


def library_default_application(url: str, schema: str) -> Application[Any]:
    """The eventsourcing library as configured by default (JSON, table lock, pipeline)."""

    class LibraryDefault(Application[Any]):
        name = "library_default"

    return LibraryDefault(
        env={"PERSISTENCE_MODULE": "eventsourcing.postgres", **eventsourcing_settings(url, schema)}
    )


def build_long_conversation(save: Callable[..., Any], n: int) -> uuid.UUID:
    """A voice conversation of n events (a message every sixth), saved 500 at a time."""
    conversation = Conversation.start("bench", at=NOW)
    for i in range(n - 1):
        if i % 6 == 0:
            conversation.add_message(f"m{i}", "user", f"message {i}", at=NOW)
        else:
            conversation.record_levels(-20.0, -12.0, 40.0, at=NOW)
        if len(conversation.pending_events) >= 500:
            save(conversation)
    save(conversation)
    return conversation.id


def speech_for_benchmark() -> tuple[bytes, int, str]:
    """The long speech fixture when running from a checkout, else a synthetic stand-in."""
    from ..adapters.audio.wav import read_wav

    fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "audio" / "long_16k.wav"
    if fixture.exists():
        audio = read_wav(fixture)
        return audio.pcm, audio.sample_rate, "real speech (tests/fixtures/audio/long_16k.wav)"
    import numpy as np

    rng = np.random.default_rng(7)
    seconds = np.arange(16000 * 60) / 16000
    bursts = (np.sin(2 * np.pi * 0.25 * seconds) > 0).astype(float)
    signal = bursts * rng.normal(0, 3000, seconds.size) * np.sin(2 * np.pi * 180 * seconds)
    return signal.astype("<i2").tobytes(), 16000, "synthetic voiced bursts (no fixture found)"


def noisy_speech_for_benchmark() -> list[tuple[str, Any, list[dict[str, float]]]]:
    """The held-out noisy fixtures with their truth, when running from a checkout."""
    import json

    from ..adapters.audio.wav import read_wav

    folder = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "audio"
    if not (folder / "truth.json").exists():
        return []
    truth = json.loads((folder / "truth.json").read_text())
    names = sorted(n for n in truth if n.startswith("heldout_"))
    return [(n, read_wav(folder / n), truth[n]) for n in names]


def rss_mb() -> float:
    """This process's resident memory in MB."""
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_all(database_url: str, setting: Setting, only: set[str] | None = None) -> list[Result]:
    """Every benchmark, in one run against one database."""
    names = ["single_writer", "concurrent", "replay", "projection", "audio", "in_memory", "memory"]
    results = []
    with Bench(database_url, setting) as bench:
        for name in names:
            if only and name not in only:
                continue
            results.append(getattr(bench, name)())
    return results
