"""The `metrics` projection: per conversation and hour, and per flow definition and step.

Sums are kept as integers (microseconds, millionths of a currency unit): integer addition
gives the same totals whatever the page boundaries, where float sums would differ in the
last bits between a live run and a rebuild. Response times also go into a histogram with
fixed log-spaced bounds, from which percentiles are read by interpolation.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from ..domain.conversation import Conversation
from ..domain.events import stream_type
from ..domain.flow import Flow
from .batch import upsert
from .projection import Page, StreamCache, Tables, continued

C = Conversation

# Upper bounds (ms) of the response-time buckets: ten per decade from 10 ms to 100 s. Bucket
# 0 holds times under 10 ms, bucket i times in [BOUNDS_MS[i-1], BOUNDS_MS[i]), the last one
# times of 100 s or more. Changing them needs a rebuild of this projection.
BOUNDS_MS: tuple[float, ...] = tuple(round(10 ** (i / 10), 3) for i in range(10, 51))
BUCKETS = len(BOUNDS_MS) + 1

DDL = (
    """CREATE TABLE {metrics_hourly} (
        conversation_id uuid NOT NULL,
        hour timestamptz NOT NULL,
        turns integer NOT NULL,
        messages integer NOT NULL,
        interruptions integer NOT NULL,
        silences integer NOT NULL,
        response_us_sum bigint NOT NULL,
        response_us_min bigint,
        response_us_max bigint,
        response_histogram integer[] NOT NULL,
        tokens_in bigint NOT NULL,
        tokens_out bigint NOT NULL,
        audio_us bigint NOT NULL,
        cost_micros bigint NOT NULL,
        PRIMARY KEY (conversation_id, hour))""",
    "CREATE INDEX ON {metrics_hourly} (hour)",
    """CREATE TABLE {metrics_flows} (
        definition text NOT NULL,
        version integer NOT NULL,
        hour timestamptz NOT NULL,
        started integer NOT NULL,
        completed integer NOT NULL,
        cancelled integer NOT NULL,
        expired integer NOT NULL,
        PRIMARY KEY (definition, version, hour))""",
    """CREATE TABLE {metrics_flow_steps} (
        definition text NOT NULL,
        version integer NOT NULL,
        step text NOT NULL,
        reached integer NOT NULL,
        depth_sum bigint NOT NULL,
        rejected integer NOT NULL,
        abandoned integer NOT NULL,
        PRIMARY KEY (definition, version, step))""",
    # The ways on each run took, once per run: from a step ('' for the start) to the next
    # ('' for the end). A step's name is never empty, so '' cannot be a step.
    """CREATE TABLE {metrics_flow_edges} (
        definition text NOT NULL,
        version integer NOT NULL,
        source text NOT NULL,
        target text NOT NULL,
        runs integer NOT NULL,
        PRIMARY KEY (definition, version, source, target))""",
    # Per running flow: its definition and version (later events do not name them), the
    # steps it has reached and the ways on it took (each counts once per run, however often
    # an edit or an undo repeats it), and the step it stands at. Gone when the run ends.
    """CREATE TABLE {metrics_flow_runs} (
        flow_id uuid PRIMARY KEY,
        definition text NOT NULL,
        version integer NOT NULL,
        reached jsonb NOT NULL,
        taken jsonb NOT NULL,
        step text)""",
)

HOURLY_TYPES = (
    "uuid", "timestamptz", "int4", "int4", "int4", "int4", "int8", "int8", "int8", "int4[]",
    "int8", "int8", "int8", "int8",
)  # fmt: skip
HOURLY_CONFLICT = """ON CONFLICT (conversation_id, hour) DO UPDATE SET
    turns = t.turns + excluded.turns,
    messages = t.messages + excluded.messages,
    interruptions = t.interruptions + excluded.interruptions,
    silences = t.silences + excluded.silences,
    response_us_sum = t.response_us_sum + excluded.response_us_sum,
    response_us_min = least(t.response_us_min, excluded.response_us_min),
    response_us_max = greatest(t.response_us_max, excluded.response_us_max),
    response_histogram = (
        SELECT array_agg(a + b ORDER BY i)
        FROM unnest(t.response_histogram, excluded.response_histogram)
             WITH ORDINALITY AS x(a, b, i)),
    tokens_in = t.tokens_in + excluded.tokens_in,
    tokens_out = t.tokens_out + excluded.tokens_out,
    audio_us = t.audio_us + excluded.audio_us,
    cost_micros = t.cost_micros + excluded.cost_micros"""

FLOWS_TYPES = ("text", "int4", "timestamptz", "int4", "int4", "int4", "int4")
FLOWS_CONFLICT = """ON CONFLICT (definition, version, hour) DO UPDATE SET
    started = t.started + excluded.started,
    completed = t.completed + excluded.completed,
    cancelled = t.cancelled + excluded.cancelled,
    expired = t.expired + excluded.expired"""

STEPS_TYPES = ("text", "int4", "text", "int4", "int8", "int4", "int4")
STEPS_CONFLICT = """ON CONFLICT (definition, version, step) DO UPDATE SET
    reached = t.reached + excluded.reached,
    depth_sum = t.depth_sum + excluded.depth_sum,
    rejected = t.rejected + excluded.rejected,
    abandoned = t.abandoned + excluded.abandoned"""

EDGES_TYPES = ("text", "int4", "text", "text", "int4")
EDGES_CONFLICT = """ON CONFLICT (definition, version, source, target) DO UPDATE SET
    runs = t.runs + excluded.runs"""

RUNS_TYPES = ("uuid", "text", "int4", "jsonb", "jsonb", "text")
RUNS_CONFLICT = """ON CONFLICT (flow_id) DO UPDATE SET
    reached = excluded.reached, taken = excluded.taken, step = excluded.step"""

# The start's and the end's name in metrics_flow_edges.
EDGE_END = ""


def micros(value: float) -> int:
    """A quantity in millionths of its unit, rounded once per event."""
    return round(value * 1_000_000)


def bucket(ms: float) -> int:
    """The histogram bucket of a response time in milliseconds."""
    return bisect_right(BOUNDS_MS, ms)


def percentile(histogram: Sequence[int], q: float, low_ms: float, high_ms: float) -> float | None:
    """The q-quantile (0..1) of the times in the histogram, interpolated linearly inside
    its bucket; the observed minimum and maximum bound the outer buckets."""
    total = sum(histogram)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = max(BOUNDS_MS[i - 1] if i else low_ms, low_ms)
            upper = min(BOUNDS_MS[i] if i < len(BOUNDS_MS) else high_ms, high_ms)
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return high_ms


@dataclass(slots=True)
class HourTotals:
    """One conversation's counters for one hour, as one page adds to them."""

    turns: int = 0
    messages: int = 0
    interruptions: int = 0
    silences: int = 0
    response_us_sum: int = 0
    response_us_min: int | None = None
    response_us_max: int | None = None
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    tokens_in: int = 0
    tokens_out: int = 0
    audio_us: int = 0
    cost_micros: int = 0

    def add(self, e: Any) -> None:
        """Count one conversation event."""
        kind = type(e)
        if kind is C.MessageAdded:
            self.messages += 1
        elif kind is C.TurnCompleted:
            us = micros(e.duration_ms / 1000)
            self.turns += 1
            self.response_us_sum += us
            low, high = self.response_us_min, self.response_us_max
            self.response_us_min = us if low is None else min(low, us)
            self.response_us_max = us if high is None else max(high, us)
            self.histogram[bucket(e.duration_ms)] += 1
        elif kind is C.TurnInterrupted:
            self.interruptions += 1
        elif kind is C.SilenceDetected:
            self.silences += 1
        elif kind is C.SpeechEnded:
            self.audio_us += micros(e.duration_s)
        elif kind is C.UsageRecorded:
            self.tokens_in += e.tokens_in
            self.tokens_out += e.tokens_out
            self.cost_micros += micros(e.cost)
            self.audio_us += micros(e.audio_seconds)

    def values(self) -> tuple[Any, ...]:
        """The counters in the order of the table's columns."""
        return (
            self.turns,
            self.messages,
            self.interruptions,
            self.silences,
            self.response_us_sum,
            self.response_us_min,
            self.response_us_max,
            self.histogram,
            self.tokens_in,
            self.tokens_out,
            self.audio_us,
            self.cost_micros,
        )


COUNTED = frozenset(
    {
        C.MessageAdded,
        C.TurnCompleted,
        C.TurnInterrupted,
        C.SilenceDetected,
        C.SpeechEnded,
        C.UsageRecorded,
    }
)
# Where a run's end counts in metrics_flows: started, completed, cancelled, expired.
_FLOW_OUTCOME = {Flow.Started: 0, Flow.Completed: 1, Flow.Cancelled: 2, Flow.Expired: 3}


@dataclass(slots=True)
class RunTrack:
    """What the funnel keeps of a running flow between its events."""

    definition: str
    version: int
    reached: list[str]  # the steps it reached, in order, each once
    taken: list[str]  # the ways on it took, "source>target", each once
    step: str | None  # where it stands


class FlowTotals:
    """What one page adds to the flow counters of each definition version: outcomes per
    hour, and per step and per way on between steps."""

    def __init__(self, runs: dict[UUID, RunTrack]) -> None:
        self.runs = runs
        # (definition, version, hour) -> started, completed, cancelled, expired
        self.outcomes: dict[tuple[str, int, int], list[int]] = {}
        # (definition, version, step) -> reached, depth, rejected, abandoned
        self.steps: dict[tuple[str, int, str], list[int]] = {}
        self.edges: dict[tuple[str, int, str, str], int] = {}  # -> runs that took it
        self.finished: set[UUID] = set()
        self.touched: set[UUID] = set()

    def add(self, e: Any) -> None:
        """Count one flow event."""
        kind = type(e)
        if kind is Flow.Started:
            self.runs[e.originator_id] = RunTrack(e.definition, e.definition_version, [], [], None)
        run = self.runs.get(e.originator_id)
        if run is None:
            return
        self.touched.add(e.originator_id)
        if kind in _FLOW_OUTCOME:
            key = (run.definition, run.version, _hour(e.timestamp))
            self.outcomes.setdefault(key, [0, 0, 0, 0])[_FLOW_OUTCOME[kind]] += 1
        if kind is Flow.Started:
            self._move(run, EDGE_END, e.step)
        elif kind is Flow.AnswerAccepted:
            self._move(run, e.step, e.next_step)
        elif kind is Flow.FieldEdited:  # back where the edit began: no way on of the flow
            self._reach(run, e.next_step)
        elif kind is Flow.EditRequested or kind is Flow.AnswerWithdrawn:
            self._reach(run, e.step)
        elif kind is Flow.AnswerRejected:
            self._step(run, e.step)[2] += 1
        elif kind is Flow.Completed:
            if run.step is not None:  # confirmed: from the confirm step to the end
                self._move(run, run.step, None)
            self.finished.add(e.originator_id)
        elif kind is Flow.Cancelled or kind is Flow.Expired:
            if e.step is not None:
                self._step(run, e.step)[3] += 1
            self.finished.add(e.originator_id)

    def _move(self, run: RunTrack, source: str, target: str | None) -> None:
        """The run went on from ``source`` to ``target`` (None: the end)."""
        edge = f"{source}>{target or EDGE_END}"
        if edge not in run.taken:
            run.taken.append(edge)
            key = (run.definition, run.version, source, target or EDGE_END)
            self.edges[key] = self.edges.get(key, 0) + 1
        self._reach(run, target)

    def _reach(self, run: RunTrack, step: str | None) -> None:
        run.step = step
        if step is not None and step not in run.reached:
            counts = self._step(run, step)
            counts[0] += 1
            counts[1] += len(run.reached)  # how deep into the run: orders the funnel's steps
            run.reached.append(step)

    def _step(self, run: RunTrack, step: str) -> list[int]:
        return self.steps.setdefault((run.definition, run.version, step), [0, 0, 0, 0])


class Metrics:
    """Counters, response times, usage and cost per conversation and hour; flow outcomes,
    rejections and abandonment per definition and step."""

    name = "metrics"
    # 2: flow counters per definition version, and the ways on between steps.
    version = 2
    tables = (
        "metrics_hourly",
        "metrics_flows",
        "metrics_flow_steps",
        "metrics_flow_edges",
        "metrics_flow_runs",
    )

    def __init__(self) -> None:
        self._runs: StreamCache[RunTrack] = StreamCache()

    def create(self, cur: psycopg.Cursor[Any], t: Tables) -> None:
        """Create the tables."""
        for statement in DDL:
            cur.execute(sql.SQL(statement).format(**t))

    def forget(self) -> None:
        """Drop the runs kept in memory."""
        self._runs.clear()

    def apply(self, cur: psycopg.Cursor[Any], t: Tables, page: Page) -> None:
        """Add up the page in memory, then add it to the stored counters."""
        hours: dict[tuple[UUID, int], HourTotals] = {}
        flow_events = [e.event for e in page if stream_type(e.event) == "flow"]
        flows = FlowTotals(
            self._runs.get(continued(flow_events), lambda ids: _load_runs(cur, t, ids))
        )
        for entry in page:
            e = entry.event
            if type(e) in COUNTED:
                key = (e.originator_id, _hour(e.timestamp))
                totals = hours.get(key)
                if totals is None:
                    totals = hours[key] = HourTotals()
                totals.add(e)
        for e in flow_events:
            flows.add(e)
        if hours:
            rows = ((cid, _time(hour), *h.values()) for (cid, hour), h in hours.items())
            upsert(cur, t["metrics_hourly"], HOURLY_TYPES, rows, HOURLY_CONFLICT)
        if flows.outcomes:
            rows = ((d, v, _time(h), *counts) for (d, v, h), counts in flows.outcomes.items())
            upsert(cur, t["metrics_flows"], FLOWS_TYPES, rows, FLOWS_CONFLICT)
        if flows.steps:
            rows = ((*key, *counts) for key, counts in flows.steps.items())
            upsert(cur, t["metrics_flow_steps"], STEPS_TYPES, rows, STEPS_CONFLICT)
        if flows.edges:
            rows = ((*key, runs) for key, runs in flows.edges.items())
            upsert(cur, t["metrics_flow_edges"], EDGES_TYPES, rows, EDGES_CONFLICT)
        running = [flows.runs[f] for f in flows.touched if f not in flows.finished]
        if running:
            ids = [f for f in flows.touched if f not in flows.finished]
            rows = (
                (f, r.definition, r.version, r.reached, r.taken, r.step)
                for f, r in zip(ids, running, strict=True)
            )
            upsert(cur, t["metrics_flow_runs"], RUNS_TYPES, rows, RUNS_CONFLICT)
        if flows.finished:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE flow_id = ANY(%b)").format(t["metrics_flow_runs"]),
                (list(flows.finished),),
            )
            for flow_id in flows.finished:
                del flows.runs[flow_id]
        self._runs.trim()


def _load_runs(cur: psycopg.Cursor[Any], t: Tables, ids: list[UUID]) -> dict[UUID, RunTrack]:
    cur.execute(
        sql.SQL(
            "SELECT flow_id, definition, version, reached, taken, step FROM {} "
            "WHERE flow_id = ANY(%b)"
        ).format(t["metrics_flow_runs"]),
        (ids,),
    )
    return {
        flow_id: RunTrack(definition, version, list(reached), list(taken), step)
        for flow_id, definition, version, reached, taken, step in cur
    }


def _hour(at: datetime) -> int:
    """Hours since the epoch: the bucket of an event's time (UTC hours)."""
    return int(at.timestamp()) // 3600


def _time(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)
