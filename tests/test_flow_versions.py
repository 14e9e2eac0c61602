"""Versions of a flow definition are facts in the log: a version's content is recorded (once)
with the first run that starts on it, a run started under version 1 finishes under version 1
in a process that only has version 2, a changed file that keeps its version is refused
naming the file when a process loads it, and `voxledger flows versions NAME` lists them with
their runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.definition_history import content_hash, content_of
from voxledger.domain.engine import Engine
from voxledger.domain.errors import DefinitionError, NotFound
from voxledger.domain.flow import FlowStatus
from voxledger.domain.flow_definition import FlowDefinition

V1 = """
name: order
version: 1
steps:
  - name: item
    prompt: Which item?
    next: count
  - name: count
    prompt: How many {item}?
    validator: {type: integer, min: 1}
"""

V2 = """
name: order
version: 2
steps:
  - name: item
    prompt: What would you like?
    validator: {type: choice, options: [soup, cake]}
    next: when
  - name: when
    prompt: When for?
    validator: time
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    written = {}
    for name, text in (("v1", V1), ("v2", V2)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "order.yaml").write_text(text, encoding="utf-8")
        written[name] = str(folder / "order.yaml")
    return written


def engine_with(database_url: str, schema: str, clock, *flows: str, **extra) -> Engine:
    return open_engine(database_url, schema=schema, clock=clock, flows=list(flows), **extra)


def test_a_version_is_recorded_with_its_first_run_once_with_its_file(
    database_url, schema, clock, files
) -> None:
    with engine_with(database_url, schema, clock, files["v1"]) as engine:
        # Loading records nothing: a process that only reads never writes to the log.
        with pytest.raises(NotFound, match="no version of flow 'order' is recorded"):
            engine.definition_versions("order")
        head = engine.store.head()
        engine.start_flow(engine.start_conversation("test"), "order")
        # The conversation's start, then one save: FlowBegan, the run's Started, and the
        # history of 'order' begun with this version.
        assert engine.store.head() == head + 5
    for _ in range(2):  # more runs, in this process or another, record nothing more
        with engine_with(database_url, schema, clock, files["v1"]) as engine:
            engine.start_flow(engine.start_conversation("test"), "order")
            recorded = engine.definition_versions("order")
    (v1,) = recorded
    loaded = FlowDefinition.from_mapping(v1.data())
    assert (v1.version, v1.source) == (1, files["v1"])
    assert v1.content == content_of(loaded) and v1.content_hash == content_hash(v1.content)
    assert loaded.to_mapping()["steps"][1]["validator"] == {"type": "integer", "min": 1}


def test_a_run_started_under_v1_finishes_under_v1_in_a_process_that_loaded_only_v2(
    database_url, schema, clock, files
) -> None:
    with engine_with(database_url, schema, clock, files["v1"]) as first:
        cid = first.start_conversation("test")
        run = first.start_flow(cid, "order").flow_id
        first.answer(run, "tea")
    with engine_with(database_url, schema, clock, files["v2"]) as second:
        assert second.flows.all() == [("intake", (1,)), ("order", (2,))]
        asked = second.flow_prompt(run)
        assert asked.prompt == "How many tea?"  # v1's step, v1's template
        refused = second.answer(run, "lots")
        assert refused.reason == "Please send a whole number of at least 1."
        done = second.answer(run, "3")
        assert (done.status, done.data) == (FlowStatus.COMPLETED, {"item": "tea", "count": 3})
        # A new run in this process starts on the version it loaded.
        fresh = second.start_flow(second.start_conversation("test"), "order")
        assert (fresh.step, fresh.prompt) == ("item", "What would you like?")
        assert [v.version for v in second.definition_versions("order")] == [1, 2]


def test_a_changed_file_that_keeps_its_version_is_refused_naming_the_file(
    database_url, schema, clock, files, tmp_path: Path
) -> None:
    with engine_with(database_url, schema, clock, files["v1"]) as first:
        first.start_flow(first.start_conversation("test"), "order")
    changed = tmp_path / "changed.yaml"
    changed.write_text(V1.replace("Which item?", "Which item, please?"), encoding="utf-8")
    with pytest.raises(DefinitionError) as refused:
        engine_with(database_url, schema, clock, str(changed))
    (problem,) = refused.value.problems
    assert str(problem).startswith(
        f"{changed}: flow 'order' v1: differs from the v1 recorded in the log on 2026-11-21T14:00:0"
    )
    assert str(problem).endswith(
        f"(from {files['v1']}, hash {content_hash(content_of(load(files['v1'])))[:12]}); "
        "a changed definition needs a new version"
    )


def test_registering_versions_ahead_of_their_runs_is_all_or_nothing(
    database_url, schema, clock, files, tmp_path: Path
) -> None:
    with engine_with(database_url, schema, clock, files["v1"]) as engine:
        assert engine.register_definitions() == [("intake", 1), ("order", 1)]
        assert engine.register_definitions() == []
        changed = tmp_path / "changed.yaml"
        changed.write_text(V1.replace("How many", "How much"), encoding="utf-8")
        with pytest.raises(DefinitionError, match="differs from the v1"):
            engine.register_definitions([load(files["v2"]), load(str(changed))])
        assert [v.version for v in engine.definition_versions("order")] == [1]


def test_a_version_registered_in_code_is_recorded_when_its_first_run_starts(
    engine: Engine, files
) -> None:
    engine.flows.register(load(files["v2"]))
    with pytest.raises(NotFound, match="no version of flow 'order' is recorded"):
        engine.definition_versions("order")
    engine.start_flow(engine.start_conversation("test"), "order")
    (v2,) = engine.definition_versions("order")
    assert (v2.version, v2.source) == (2, "Python")


def test_a_stored_version_naming_code_this_process_lacks_says_which_code(
    database_url, schema, clock, tmp_path: Path
) -> None:
    code = tmp_path / "order_code.py"
    code.write_text("VALIDATORS = {'upper': lambda raw: raw.strip().upper()}\n", encoding="utf-8")
    coded = tmp_path / "coded.yaml"
    coded.write_text(V1.replace("next: count", "validator: {type: custom, name: upper}\n"
                                "    next: count"), encoding="utf-8")  # fmt: skip
    with engine_with(database_url, schema, clock, str(coded), code=[str(code)]) as engine:
        run = engine.start_flow(engine.start_conversation("test"), "order").flow_id
    with engine_with(database_url, schema, clock) as bare:
        with pytest.raises(DefinitionError) as refused:
            bare.answer(run, "tea")
        assert str(refused.value) == (
            "flow 'order' v1: not loaded here, and the version the log holds cannot be rebuilt "
            "in this process: no custom validator named 'upper' is registered; give this "
            "process the code it names (--code, $VOXLEDGER_CODE)"
        )
    with engine_with(database_url, schema, clock, code=[str(code)]) as coded_engine:
        assert coded_engine.answer(run, "tea").accepted
        assert coded_engine.get_flow(run).answers == {"item": "TEA"}


def test_flows_versions_lists_each_version_with_its_hash_source_and_runs(
    database_url, schema, clock, files, run
) -> None:
    with engine_with(database_url, schema, clock, files["v1"]) as first:
        for answers in (["tea", "2"], ["cake"]):
            reply = first.start_flow(first.start_conversation("test"), "order")
            for answer in answers:
                reply = first.answer(reply.flow_id, answer)
    with engine_with(database_url, schema, clock, files["v2"]) as second:
        second.cancel(second.start_flow(second.start_conversation("t"), "order").flow_id)
    v3 = Path(files["v2"]).parent / "order_v3.yaml"
    v3.write_text(V2.replace("version: 2", "version: 3"), encoding="utf-8")
    rows = run.json(schema, "flows", "versions", "order", "--flows", str(v3.parent))
    assert [(r["version"], r["source"], r["loaded"], r["in_log"]) for r in rows] == [
        (1, files["v1"], False, True),
        (2, files["v2"], True, True),
        (3, str(v3), True, False),  # loaded, not run yet: the log does not hold it
    ]
    assert [(r["runs"], r["active"], r["completed"], r["cancelled"]) for r in rows] == [
        (2, 1, 1, 0),
        (1, 0, 0, 1),
        (0, 0, 0, 0),
    ]
    assert rows[0]["content_hash"] == content_hash(content_of(load(files["v1"])))
    assert rows[2]["content_hash"] == content_hash(content_of(load(str(v3))))
    assert rows[2]["registered_at"] is None and rows[0]["registered_at"].startswith("2026-11-21")
    code, table = run(schema, "flows", "versions", "order")
    assert code == 0 and table.startswith("flow 'order': versions\n")


def load(path: str) -> FlowDefinition:
    from voxledger.adapters.flow_files import load_definition

    return load_definition(path)
