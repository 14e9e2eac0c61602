"""The operator console's parts on their own: signed sessions, where a form may come from
and lead to, times in a zone, a state laid out for a page, flow graphs and hourly charts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from builtin_flows import INTAKE_V1
from hypothesis import given
from hypothesis import strategies as st

from voxledger.adapters.console.auth import safe_next
from voxledger.adapters.console.charts import bars, hours_between, lines
from voxledger.adapters.console.conversations import typed_moment
from voxledger.adapters.console.graph import END, START, draw, edges_of
from voxledger.adapters.console.rendering import format_time, marked_erased, zone_named
from voxledger.adapters.console.session import Sessions, same_origin
from voxledger.adapters.console.state_view import Group, Leaf, Table, layout
from voxledger.domain.errors import BadInput
from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.flow_steps import Branch, Rule, Step
from voxledger.domain.validators import text
from voxledger.projections.queries import FunnelStep

T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


# -- sessions -----------------------------------------------------------------------------------


def test_a_session_is_valid_until_its_lifetime_ends_and_never_holds_the_token() -> None:
    clock = Clock()
    sessions = Sessions("s3cret-token", clock, lifetime=timedelta(hours=12))
    value = sessions.issue()
    assert "s3cret-token" not in value
    assert sessions.valid(value)
    clock.now += timedelta(hours=11, minutes=59)
    assert sessions.valid(value)
    clock.now += timedelta(minutes=1)
    assert not sessions.valid(value)


def test_a_session_altered_signed_by_another_token_or_from_the_future_is_refused() -> None:
    clock = Clock()
    sessions = Sessions("s3cret-token", clock)
    value = sessions.issue()
    begun, ends, nonce, mac = value.split(".")
    stretched = f"{begun}.{int(ends) + 86_400}.{nonce}.{mac}"
    assert not sessions.valid(stretched)
    assert not Sessions("another-token", clock).valid(value)
    for junk in ("", "x", "...", "1.2.3.4", value + "x", value.replace(".", "", 1)):
        assert not sessions.valid(junk)
    clock.now -= timedelta(hours=1)  # issued by a clock an hour ahead of this one
    assert not sessions.valid(value)


def test_without_a_token_nobody_can_sign_in() -> None:
    sessions = Sessions(None, Clock())
    assert not sessions.enabled
    assert not sessions.token_matches("")
    assert not sessions.valid("1.2.3.4")


def test_only_the_token_itself_matches() -> None:
    sessions = Sessions("s3cret-token", Clock())
    assert sessions.token_matches("s3cret-token")
    for guess in ("", "s3cret", "s3cret-token ", "S3CRET-TOKEN", "s3cret-token-and-more"):
        assert not sessions.token_matches(guess)


@pytest.mark.parametrize(
    ("origin", "referer", "same"),
    [
        ("http://127.0.0.1:8080", None, True),
        ("http://127.0.0.1:8080/", None, True),
        ("http://evil.example", None, False),
        ("http://127.0.0.1:8081", None, False),
        ("https://127.0.0.1:8080", None, False),
        ("null", "http://127.0.0.1:8080/console/login", True),
        (None, "http://127.0.0.1:8080/console/login?next=x", True),
        (None, "http://evil.example/console/login", False),
        (None, None, False),
        ("null", None, False),
    ],
)
def test_a_form_counts_as_sent_from_the_console_only_from_its_own_origin(
    origin: str | None, referer: str | None, same: bool
) -> None:
    assert same_origin(origin, referer, "http://127.0.0.1:8080") is same


@pytest.mark.parametrize(
    ("asked", "goes"),
    [
        ("/console/conversations?q=alice", "/console/conversations?q=alice"),
        ("/console/metrics", "/console/metrics"),
        (None, "/console/conversations"),
        ("https://evil.example/console/x", "/console/conversations"),
        ("//evil.example/console/x", "/console/conversations"),
        ("/\\evil.example", "/console/conversations"),
        ("/elsewhere", "/console/conversations"),
        ("/console/login", "/console/conversations"),
        ("javascript:alert(1)", "/console/conversations"),
    ],
)
def test_after_signing_in_the_browser_goes_only_to_a_console_page(
    asked: str | None, goes: str
) -> None:
    assert safe_next(asked) == goes


# -- times ---------------------------------------------------------------------------------------


def test_times_are_written_in_the_chosen_zone_in_each_format() -> None:
    at = datetime(2026, 11, 21, 23, 45, 6, 789_000, tzinfo=UTC)
    kolkata = ZoneInfo("Asia/Kolkata")
    assert format_time(at, kolkata, "full") == "2026-11-22 05:15:06"
    assert format_time(at, kolkata, "precise") == "2026-11-22 05:15:06.789"
    assert format_time(at, kolkata, "stamp") == "11-22 05:15:06.789"
    assert format_time(at, None, "hour") == "11-21 23:45"
    assert format_time(at, None, "clock") == "23:45"


def test_a_zone_is_known_by_its_iana_name_and_nothing_else_is_opened() -> None:
    assert zone_named("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert zone_named("utc") is UTC
    assert zone_named(None) is None and zone_named("") is None
    for bad in ("Mars/Olympus", "../../../etc/passwd", "/etc/localtime", "Europe/"):
        with pytest.raises(BadInput, match="unknown time zone"):
            zone_named(bad)


def test_a_time_typed_in_a_form_is_read_in_the_operators_zone_unless_it_names_one() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert typed_moment("2026-11-21T14:05", berlin, "from") == datetime(
        2026, 11, 21, 13, 5, tzinfo=UTC
    )
    assert typed_moment("2026-11-21T14:05:00Z", berlin, "from") == datetime(
        2026, 11, 21, 14, 5, tzinfo=UTC
    )
    assert typed_moment("", berlin, "from") is None
    with pytest.raises(BadInput, match="to: 'yesterday' is not a time"):
        typed_moment("yesterday", berlin, "to")


def test_erased_content_is_marked_and_other_text_is_escaped() -> None:
    marked = marked_erased('user said [erased] <b>"hi"</b>')
    assert str(marked) == (
        'user said <span class="erased">[erased]</span> &lt;b&gt;&#34;hi&#34;&lt;/b&gt;'
    )


# -- a state laid out for a page -----------------------------------------------------------------


def rebuilt(node: Any) -> Any:
    """The document a layout shows, read back from its nodes as a page shows them."""
    if isinstance(node, Leaf):
        if node.kind == "null":
            return None
        if node.kind in ("num", "bool", "json"):
            return json.loads(node.text)
        return node.text
    if isinstance(node, Table):
        return [
            {c: rebuilt(cell) for c, cell in zip(node.columns, row, strict=True) if cell}
            for row in node.rows
        ]
    assert isinstance(node, Group)
    if node.listed:
        return [rebuilt(child) for child in node.items]
    return {child.name: rebuilt(child) for child in node.items}


def test_the_layout_puts_plain_facts_first_and_names_every_value_by_its_path() -> None:
    document = {
        "id": "3f2a",
        "usage": {"turns": 2, "cost": 0.5},
        "messages": [
            {"role": "user", "content": "[erased]", "at": "2026-11-21T14:00:01Z"},
            {"role": "assistant", "content": "hi\nthere", "at": "2026-11-21T14:00:02.5Z"},
        ],
        "status": "ended",
        "context": {},
        "active_flow_id": None,
        "is_active": False,
    }
    shown = layout(document)
    assert [n.name for n in shown.items] == [
        "id", "status", "context", "active_flow_id", "is_active", "usage", "messages",
    ]  # fmt: skip
    table = shown.items[-1]
    assert isinstance(table, Table) and table.columns == ["role", "content", "at"]
    erased, moment = table.rows[0][1], table.rows[1][2]
    assert (erased.path, erased.kind) == ("messages.0.content", "erased")
    assert moment.kind == "time" and moment.at == datetime(2026, 11, 21, 14, 0, 2, 500_000, UTC)
    assert shown.items[2].kind == "json" and shown.items[2].text == "{}"
    assert rebuilt(shown) == document


def test_a_long_list_of_records_shows_its_last_rows_under_their_own_places() -> None:
    document = {"messages": [{"n": i, "text": f"m{i}"} for i in range(250)], "tags": [1, 2]}
    shown = layout(document, rows=100)
    (table, tags) = shown.items
    assert isinstance(table, Table) and (table.total, table.first) == (250, 150)
    assert len(table.rows) == 100
    assert table.rows[0][0].path == "messages.150.n" and table.rows[-1][1].text == "m249"
    assert isinstance(tags, Group) and [leaf.text for leaf in tags.items] == ["1", "2"]
    assert layout(document).items[0].rows[0][0].path == "messages.0.n"  # no limit: all


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(min_size=1), json_values, max_size=6))
def test_whatever_a_document_holds_its_layout_shows_all_of_it(document: dict[str, Any]) -> None:
    document = json.loads(json.dumps(document))
    assert rebuilt(layout(document)) == document


# -- flow graphs ---------------------------------------------------------------------------------


def test_the_intake_graph_has_an_edge_per_way_on_with_its_branch_labelled() -> None:
    edges = edges_of(INTAKE_V1)
    assert (START, "audio_number", "") in edges
    assert ("zone", "city", "mode = design") in edges
    assert ("zone", "client_name", "else") in edges
    assert ("confirm", END, "") in edges
    assert len(edges) == 1 + 7 + 2 + 1  # start, seven plain steps, the branch, confirm


def test_the_intake_graph_has_each_step_below_the_steps_leading_to_it() -> None:
    funnel = [FunnelStep("audio_number", 10, 2, 1), FunnelStep("zone", 4, 0, 0)]
    drawing = draw(INTAKE_V1, funnel, started=10, completed=3)
    at = {n.name: n for n in drawing.nodes}
    column = ["audio_number", "date", "employee", "place", "building_type", "zone"]
    assert [at[s].y for s in column] == sorted(at[s].y for s in column)
    assert at["city"].y == at["client_name"].y > at["zone"].y
    assert at["confirm"].y > at["city"].y and at[END].y > at["confirm"].y
    assert at["city"].x + at["city"].w <= at["client_name"].x  # side by side, not on top
    for n in drawing.nodes:
        assert n.x >= 0 and n.x + n.w <= drawing.width and n.y + n.h <= drawing.height
    assert at["audio_number"].lines == [
        ("detail", "10 reached · 100%"),
        ("abandoned", "2 refused · 1 abandoned"),
    ]
    assert at["zone"].share == pytest.approx(0.4)
    assert at[END].lines == [("detail", "3 runs · 30%")]


def test_a_step_that_leads_back_is_drawn_as_a_backward_edge() -> None:
    looping = FlowDefinition(
        name="loop",
        version=1,
        steps=(
            Step.ask("first", "First?", text(), "second"),
            Step(
                name="second",
                field="second",
                prompt="Second?",
                next=Branch(
                    when=(Rule(field="second", equals="again", goto="first"),),
                    otherwise="confirm",
                ),
            ),
            Step.confirm("confirm", "Save?"),
        ),
    )
    drawing = draw(looping)
    back = [e for e in drawing.edges if e.back]
    assert [(e.source, e.target, e.label) for e in back] == [("second", "first", "second = again")]
    at = {n.name: n for n in drawing.nodes}
    assert at["first"].y < at["second"].y < at["confirm"].y


# -- charts --------------------------------------------------------------------------------------


def test_bars_are_as_tall_as_their_share_of_the_axis_and_empty_hours_have_none() -> None:
    hours = hours_between(T0, T0 + timedelta(hours=4))
    chart = bars("Messages", "messages", hours, [10, 0, 5, 20], None)
    assert len(chart.bars) == 3
    heights = [b.h for b in chart.bars]
    assert heights[0] == pytest.approx(heights[2] / 2) and heights[1] == pytest.approx(
        heights[0] / 2
    )
    assert chart.y_ticks[-1].text == "20" and not chart.empty
    assert "11-21 14:00: 10 messages" in chart.bars[0].title


def test_a_line_breaks_where_an_hour_has_no_value() -> None:
    hours = hours_between(T0, T0 + timedelta(hours=5))
    chart = lines("Response", "ms", hours, {"p50": [100, None, 300, 250, None]}, None)
    (line,) = chart.lines
    assert line.d.count("M") == 2 and line.d.count("L") == 1
    assert len(line.points) == 3


def test_a_month_of_hours_gets_at_most_a_dozen_labels() -> None:
    hours = hours_between(T0, T0 + timedelta(days=31))
    chart = bars("Messages", "messages", hours, [0] * len(hours), ZoneInfo("Asia/Kolkata"))
    assert len(hours) == 744 and 1 <= len(chart.x_ticks) <= 13
    assert chart.empty and chart.x_ticks[0].text == "11-21 19:30"
