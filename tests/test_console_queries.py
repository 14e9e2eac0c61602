"""The projection queries the operator console reads: conversation search with filters and
paging, hourly metrics, funnels per definition version, and the projections' lag."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import pytest
from builtin_flows import INTAKE_V1
from test_projections import random_workload

from voxledger.adapters.bootstrap import catch_up, open_projections
from voxledger.domain.engine import Engine
from voxledger.domain.errors import BadInput
from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.flow_steps import Step
from voxledger.domain.validators import integer, text
from voxledger.projections.queries import ConversationSearch, Projections, id_prefix_bounds

# A second version of the intake form: shorter, with a branch on an answer.
INTAKE_V2 = FlowDefinition(
    name="intake",
    version=2,
    title="Audio visit report (short)",
    steps=(
        Step.ask("audio_number", "Audio number?", integer(min=1, max=99999), "place"),
        Step.ask("place", "Which place?", text(max_length=200), "confirm"),
        Step.confirm("confirm", "Save it?"),
    ),
)


def projected(engine: Engine) -> Projections:
    catch_up(engine.store)
    return open_projections(engine.store)


def ids(rows: list[Any]) -> list[UUID]:
    return [r.conversation_id for r in rows]


@pytest.fixture
def crowd(engine: Engine, clock: Any) -> dict[str, UUID]:
    """Seven conversations on two channels, each active a minute after the one before."""
    made = {}
    for name, channel in [
        ("Alice Smith", "telegram"),
        ("alice_b", "whatsapp"),
        ("bob", "telegram"),
        ("Carol 100%", "voice"),
        ("dave", "voice"),
        ("erin", "telegram"),
        ("frank", "whatsapp"),
    ]:
        clock.now += timedelta(minutes=1)
        made[name] = engine.start_conversation(channel, name)
        engine.add_message(made[name], "user", "hello")
    engine.end(made["bob"], "done")
    return made


def test_search_finds_participants_by_any_part_in_any_case_most_recently_active_first(
    engine: Engine, crowd: dict[str, UUID]
) -> None:
    found = projected(engine).search_conversations(ConversationSearch(text="ALICE"))
    assert ids(found.rows) == [crowd["alice_b"], crowd["Alice Smith"]]
    assert (found.total, found.newer, found.older) == (2, False, False)


def test_search_by_the_start_of_an_id_finds_that_conversation(
    engine: Engine, crowd: dict[str, UUID]
) -> None:
    projections = projected(engine)
    for name, cid in crowd.items():
        for prefix in (str(cid)[:8], str(cid)[:13], str(cid).upper()):
            rows = projections.search_conversations(ConversationSearch(text=prefix)).rows
            assert cid in ids(rows), (name, prefix)
            assert all(str(r.conversation_id).startswith(prefix[:8].lower()) for r in rows)


def test_a_percent_or_underscore_typed_in_a_search_matches_only_itself(
    engine: Engine, crowd: dict[str, UUID]
) -> None:
    projections = projected(engine)
    percent = projections.search_conversations(ConversationSearch(text="100%"))
    assert ids(percent.rows) == [crowd["Carol 100%"]]
    underscore = projections.search_conversations(ConversationSearch(text="e_b"))
    assert ids(underscore.rows) == [crowd["alice_b"]]  # not "Alice Smith" nor "dave"


def test_filters_by_status_channel_and_time_of_activity_combine(
    engine: Engine, crowd: dict[str, UUID]
) -> None:
    projections = projected(engine)
    rows = projections.conversations(limit=100)
    by_id = {r.conversation_id: r for r in rows}

    def search(**given: Any) -> list[UUID]:
        return ids(projections.search_conversations(ConversationSearch(**given)).rows)

    assert search(status="ended") == [crowd["bob"]]
    assert search(channel="telegram", status="idle") == [crowd["erin"], crowd["Alice Smith"]]
    dave = by_id[crowd["dave"]]
    # Active at some moment in the window: begun by its end, last active after its start.
    window = search(active_from=dave.started_at, active_until=dave.last_activity)
    assert window == [crowd["bob"], crowd["dave"]]  # bob began before and ended after
    since = search(active_from=dave.started_at)
    assert set(since) == {crowd[n] for n in ("dave", "erin", "frank", "bob")}
    assert search(channel="fax") == []


def test_paging_forward_then_back_visits_every_match_once_in_order(
    engine: Engine, crowd: dict[str, UUID]
) -> None:
    projections = projected(engine)
    everyone = ids(projections.conversations(limit=100))
    search = ConversationSearch()
    pages = [projections.search_conversations(search, limit=3)]
    while pages[-1].older:
        last = pages[-1].rows[-1]
        after = (last.last_activity, last.conversation_id)
        pages.append(projections.search_conversations(search, limit=3, after=after))
    assert [len(p.rows) for p in pages] == [3, 3, 1]
    assert [p.newer for p in pages] == [False, True, True]
    assert [cid for p in pages for cid in ids(p.rows)] == everyone
    assert {p.total for p in pages} == {7}
    first = pages[1].rows[0]
    back = projections.search_conversations(
        search, limit=3, before=(first.last_activity, first.conversation_id)
    )
    assert ids(back.rows) == ids(pages[0].rows)
    assert (back.newer, back.older) == (False, True)


def test_a_page_of_no_size_or_a_huge_one_is_refused(engine: Engine) -> None:
    projections = projected(engine)
    for limit in (0, 1001):
        with pytest.raises(BadInput, match="a page holds 1 to 1000 conversations"):
            projections.search_conversations(ConversationSearch(), limit=limit)


def test_an_id_prefix_becomes_a_range_of_the_key_and_other_text_does_not() -> None:
    low, high = id_prefix_bounds("3F2A-9")  # type: ignore[misc]
    assert str(low) == "3f2a9000-0000-0000-0000-000000000000"
    assert str(high) == "3f2a9fff-ffff-ffff-ffff-ffffffffffff"
    assert id_prefix_bounds("alice") is None
    assert id_prefix_bounds("") is None
    assert id_prefix_bounds("0" * 33) is None


def test_hourly_series_adds_up_to_the_totals_of_the_same_range(engine: Engine, clock: Any) -> None:
    start = clock.now
    random_workload(engine, clock, seed=4, commands=400)
    projections = projected(engine)
    until = clock.now + timedelta(hours=1)
    series = projections.hourly(start, until)
    totals = projections.metrics(start, until)
    assert len(series) >= 2  # the workload spans several hours
    assert [h.hour for h in series] == sorted(h.hour for h in series)
    assert sum(h.messages for h in series) == totals.messages
    assert sum(h.turns for h in series) == totals.turns
    assert sum(h.interruptions for h in series) == totals.interruptions
    assert sum(h.silences for h in series) == totals.silences
    for hour in series:
        alone = projections.metrics(hour.hour, hour.hour + timedelta(hours=1))
        assert msgspec.structs.asdict(hour.response) == msgspec.structs.asdict(alone.response)
        assert hour.conversations == alone.conversations


def test_metrics_until_leaves_out_the_hours_that_begin_then(engine: Engine, clock: Any) -> None:
    start = clock.now
    cid = engine.start_conversation("voice")
    engine.add_message(cid, "user", "one")
    clock.now += timedelta(hours=2)
    engine.add_message(cid, "user", "two")
    projections = projected(engine)
    assert projections.metrics(start).messages == 2
    assert projections.metrics(start, start + timedelta(hours=1)).messages == 1
    assert projections.metrics(None, start + timedelta(hours=3)).messages == 2


def test_an_hourly_series_longer_than_a_month_or_backwards_is_refused(
    engine: Engine, clock: Any
) -> None:
    projections = projected(engine)
    with pytest.raises(BadInput, match="at most 31 days"):
        projections.hourly(clock.now, clock.now + timedelta(days=32))
    with pytest.raises(BadInput, match="must come after its start"):
        projections.hourly(clock.now, clock.now - timedelta(hours=2))


def test_funnels_per_version_add_up_to_the_metrics_funnel_of_every_version(
    engine: Engine, clock: Any
) -> None:
    random_workload(engine, clock, seed=7, commands=500)  # version 1 runs
    engine.flows.register(INTAKE_V2)
    runs = []
    for i, answers in enumerate([["12", "Arena", "yes"], ["x", "5", "Hall"], ["9"], []]):
        cid = engine.start_conversation("telegram", f"v2-{i}")
        reply = engine.start_flow(cid, "intake")
        for answer in answers:
            reply = engine.answer(reply.flow_id, answer)
        runs.append(reply.flow_id)
    engine.cancel(runs[2], "left")
    projections = projected(engine)

    funnels = projections.funnel_by_version("intake")
    overall = projections.funnel("intake")
    assert [f.version for f in funnels] == [1, 2]
    for field in ("started", "completed", "cancelled", "expired"):
        assert sum(getattr(f.outcomes, field) for f in funnels) == getattr(overall.outcomes, field)
    summed: dict[str, list[int]] = {}
    for f in funnels:
        for s in f.steps:
            counts = summed.setdefault(s.step, [0, 0, 0])
            for i, n in enumerate((s.reached, s.rejected, s.abandoned)):
                counts[i] += n
    assert summed == {s.step: [s.reached, s.rejected, s.abandoned] for s in overall.steps}

    v2 = funnels[1]
    assert (v2.outcomes.started, v2.outcomes.completed, v2.outcomes.cancelled) == (4, 1, 1)
    assert v2.active == 2
    steps = {s.step: (s.reached, s.rejected, s.abandoned) for s in v2.steps}
    assert steps == {
        "audio_number": (4, 1, 0),  # "x" refused
        "place": (3, 0, 1),  # the third run was cancelled there
        "confirm": (2, 0, 0),
    }
    assert [s.step for s in v2.steps] == ["audio_number", "place", "confirm"]
    assert {s.step for s in funnels[0].steps} <= {s.name for s in INTAKE_V1.steps}


def test_a_definition_never_run_has_no_funnels(engine: Engine) -> None:
    assert projected(engine).funnel_by_version("nope") == []


def test_lag_counts_the_events_each_projection_has_not_applied_yet(engine: Engine) -> None:
    projections = open_projections(engine.store)
    assert projections.lag() == []  # no projection worker has run here yet
    cid = engine.start_conversation("voice")
    catch_up(engine.store)
    engine.add_message(cid, "user", "one")
    engine.add_message(cid, "user", "two")
    lag = projections.lag()
    assert [(x.name, x.position, x.head, x.behind) for x in lag] == [
        ("audit", 1, 3, 2),
        ("current", 1, 3, 2),
        ("delivery", 1, 3, 2),
        ("metrics", 1, 3, 2),
        ("outbox", 1, 3, 2),
    ]
    assert all(x.idle_s is not None and x.idle_s >= 0 for x in lag)
    catch_up(engine.store)
    assert {x.behind for x in projections.lag()} == {0}
