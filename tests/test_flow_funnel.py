"""Funnels per definition version from the metrics projection (runs that reached each step,
answers refused, runs abandoned there, the ways on runs took), drawn on the flow's graph by
`voxledger flows graph NAME --funnel`; a projection whose tables changed shape is made anew
from the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from voxledger.adapters.bootstrap import catch_up, open_engine, open_projections, open_runner
from voxledger.adapters.flow_graph import draw
from voxledger.domain.engine import Engine
from voxledger.projections.queries import FunnelEdge, FunnelStep

DELIVERY = """
name: delivery
version: 1
title: Delivery
steps:
  - name: size
    prompt: Small or large?
    validator: {type: choice, options: [small, large]}
    next:
      when:
        - {field: size, equals: large, goto: floor}
      else: address
  - name: floor
    prompt: Which floor?
    validator: {type: integer, min: 0, max: 99}
    next: address
  - name: address
    prompt: Where to?
    next: confirm
  - name: confirm
    kind: confirm
    prompt: Send it?
"""


@pytest.fixture
def delivery_file(tmp_path: Path) -> Path:
    (tmp_path / "delivery.yaml").write_text(DELIVERY, encoding="utf-8")
    (tmp_path / "delivery2.yaml").write_text(
        DELIVERY.replace("version: 1", "version: 2").replace("Where to?", "Address?"),
        encoding="utf-8",
    )
    return tmp_path


@pytest.fixture
def shop(database_url, schema, clock, delivery_file) -> Iterator[Engine]:
    with open_engine(database_url, schema=schema, clock=clock,
                     flows=[delivery_file / "delivery.yaml"]) as engine:  # fmt: skip
        yield engine


def play(engine: Engine, *answers: str, cancel: bool = False) -> None:
    reply = engine.start_flow(engine.start_conversation("test"), "delivery")
    for answer in answers:
        reply = engine.answer(reply.flow_id, answer)
    if cancel:
        engine.cancel(reply.flow_id, "gone")


def four_runs(engine: Engine) -> None:
    play(engine, "large", "3", "1 High St", "yes")  # completed through the floor
    play(engine, "small", "2 Low Rd", "yes")  # completed straight to the address
    play(engine, "huge", "large", "x", cancel=True)  # two refusals, cancelled at the floor
    play(engine, "small")  # still at the address


def test_the_funnel_of_a_version_counts_steps_refusals_abandonment_and_ways_on(shop) -> None:
    four_runs(shop)
    catch_up(shop.store)
    funnel = open_projections(shop.store).funnel("delivery", 1)
    assert (funnel.version, funnel.outcomes.started, funnel.outcomes.completed) == (1, 4, 2)
    assert funnel.steps == [
        FunnelStep("size", 4, 1, 0),
        FunnelStep("floor", 2, 1, 1),
        FunnelStep("address", 3, 0, 0),
        FunnelStep("confirm", 2, 0, 0),
    ]
    assert sorted(funnel.edges, key=repr) == sorted([
        FunnelEdge(None, "size", 4),
        FunnelEdge("size", "floor", 2),
        FunnelEdge("size", "address", 2),
        FunnelEdge("floor", "address", 1),
        FunnelEdge("address", "confirm", 2),
        FunnelEdge("confirm", None, 2),
    ], key=repr)  # fmt: skip


def test_each_version_has_its_own_funnel_and_all_of_them_add_up(
    shop, database_url, schema, clock, delivery_file
) -> None:
    four_runs(shop)
    with open_engine(database_url, schema=schema, clock=clock,
                     flows=[delivery_file / "delivery2.yaml"]) as second:  # fmt: skip
        play(second, "small", "Somewhere", "yes")
        catch_up(second.store)
        projections = open_projections(second.store)
        assert projections.funnel("delivery", 2).outcomes.completed == 1
        assert projections.funnel("delivery").outcomes.completed == 3
        assert [f.version for f in projections.funnel_by_version("delivery")] == [1, 2]
        by_step = {s.step: s.reached for s in projections.funnel("delivery").steps}
        assert by_step == {"size": 5, "floor": 2, "address": 4, "confirm": 3}


def test_the_graph_with_its_funnel_counts_on_each_node_and_edge(shop) -> None:
    four_runs(shop)
    catch_up(shop.store)
    funnel = open_projections(shop.store).funnel("delivery", 1)
    assert draw(shop.definition("delivery", 1), "mermaid", funnel) == (
        "%% Delivery v1#58; 4 runs, 2 completed (50#37;), 1 cancelled, 0 expired, 1 active\n"
        "flowchart TD\n"
        '    flow_start(["start<br/>4 runs"])\n'
        '    step0["size<br/>ask size (choice)<br/>reached 4 (100#37;)<br/>1 refused"]\n'
        '    step1["floor<br/>ask floor (integer)<br/>reached 2 (50#37;)<br/>'
        '1 refused, 1 abandoned"]\n'
        '    step2["address<br/>ask address (text)<br/>reached 3 (75#37;)"]\n'
        '    step3{{"confirm<br/>confirm<br/>reached 2 (50#37;)"}}\n'
        '    flow_end(["end<br/>2 completed (50#37;)"])\n'
        '    flow_abandoned(["abandoned<br/>1 cancelled, 0 expired"])\n'
        '    flow_start -->|"4 runs"| step0\n'
        '    step0 -->|"size = large#58; 2 runs"| step1\n'
        '    step0 -->|"else#58; 2 runs"| step2\n'
        '    step1 -->|"1 run"| step2\n'
        '    step2 -->|"2 runs"| step3\n'
        '    step3 -->|"2 runs"| flow_end\n'
        '    step1 -.->|"1"| flow_abandoned\n'
    )  # fmt: skip
    dot = draw(shop.definition("delivery", 1), "dot", funnel)
    assert '  step1 -> flow_abandoned [label="1", style=dashed];' in dot
    assert '  step0 -> step1 [label="size = large: 2 runs"];' in dot
    assert 'label="floor\\nask floor (integer)\\nreached 2 (50%)\\n1 refused, 1 abandoned"' in dot


def test_flows_graph_funnel_draws_a_version_from_the_log(shop, run, schema, delivery_file) -> None:
    four_runs(shop)
    code, drawn = run(schema, "flows", "graph", "delivery", "--funnel", "--version", "1",
                      "--format", "dot")  # fmt: skip
    assert code == 0
    assert drawn.startswith('digraph "delivery" {\n  label="Delivery v1: 4 runs, 2 completed')
    # Without the file, the version comes from the log; with no run of it, every count is 0.
    code, drawn = run(schema, "flows", "graph", "delivery", "--funnel", "--version", "1",
                      "--flows", str(delivery_file / "delivery2.yaml"))  # fmt: skip
    assert code == 0 and '"floor<br/>ask floor (integer)<br/>reached 2 (50#37;)' in drawn
    code, drawn = run(schema, "flows", "graph", "delivery", "--funnel",
                      "--flows", str(delivery_file / "delivery2.yaml"))  # fmt: skip
    assert code == 0 and drawn.startswith("%% Delivery v2#58; 0 runs, 0 completed, 0 cancelled")


def test_a_projection_whose_tables_have_an_older_shape_is_made_anew_from_the_log(
    shop, database_url, schema
) -> None:
    four_runs(shop)
    catch_up(shop.store)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The metrics tables as the first version made them: no note on their shape.
        conn.execute(sql.SQL("COMMENT ON TABLE {} IS NULL").format(
            sql.Identifier(schema, "metrics_hourly")))  # fmt: skip
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "metrics_flows")))
    with open_runner(shop.store) as runner:
        runner.setup()
        assert {s.name: s.position for s in runner.status()}["metrics"] == 0
        runner.catch_up()
    funnel = open_projections(shop.store).funnel("delivery", 1)
    assert (funnel.outcomes.started, funnel.outcomes.completed) == (4, 2)
