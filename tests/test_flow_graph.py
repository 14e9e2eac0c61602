"""Specifications of drawing a flow: Mermaid flowchart and Graphviz dot, checked by the real
parsers (Graphviz's `dot`, and Mermaid's own parser under Node.js), with names that are
hard to quote."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from voxledger.adapters.flow_files import load_definition
from voxledger.adapters.flow_graph import END, START, condition, draw, step_label
from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.intake import INTAKE_V1

FLOWS = Path(__file__).parent / "fixtures" / "flows"
MERMAID = Path(__file__).parent / "mermaid"

ODD_NAMES = [
    'say "hi" <b>&amp;</b>',
    "end",
    "back\\slash\\n and \\",
    "#35; not an entity; %% not a comment",
    "pipes | and -->|arrows|",
    "{braces} [brackets] (parens) `ticks`",
    "style a fill:#f00;",
    "  spaced  out  ",
    "ünïcödé ✓ 名前",
    "tab\there",
]


def odd_flow(names: list[str], seed: int = 0) -> FlowDefinition:
    """A flow whose step names, fields, modes and branch values are hard to quote."""
    pick = random.Random(seed)
    options = [f"{name} option" for name in names[:3]]
    steps = [
        {
            "name": name,
            "field": f"{name} field",
            "prompt": "?",
            "validator": {"type": "choice", "options": options},
            "optional": pick.random() < 0.3,
            "next": {
                "when": [
                    {"field": f"{name} field", "equals": pick.choice(options), "goto": after},
                    {"mode": 'odd "mode" <&>', "goto": after},
                ],
                "else": after,
            },
        }
        for name, after in zip(names, [*names[1:], "the confirm 'step'"], strict=True)
    ]
    steps.append({"name": "the confirm 'step'", "kind": "confirm", "prompt": "OK?"})
    return FlowDefinition.from_mapping(
        {
            "name": f'odd "flow" {seed} <\\>',
            "version": 2,
            "title": 'Odd: "names" %%{init: {}}%% \\',
            "modes": ['odd "mode" <&>', "plain"],
            "steps": steps,
        }
    )


def expected(definition: FlowDefinition, printable_only: bool = False):
    """The nodes (by id) and edges a parser should read back: our labels, character for
    character."""
    ids = {None: END, **{s.name: f"step{i}" for i, s in enumerate(definition.steps)}}
    clean = (lambda t: "".join(c for c in t if c.isprintable())) if printable_only else str
    nodes = {START: ["start"], END: ["end"]}
    nodes.update({ids[s.name]: [clean(line) for line in step_label(s)] for s in definition.steps})
    edges = []
    for edge in definition.edges():
        line = (START if edge.source is None else ids[edge.source], ids[edge.target],
                clean(condition(edge)))  # fmt: skip
        if line not in edges:
            edges.append(line)
    return nodes, edges


# --- what the drawing says --------------------------------------------------------------------


def test_the_intake_flow_as_mermaid_has_a_node_per_step_and_labelled_branches() -> None:
    assert draw(INTAKE_V1, "mermaid").splitlines() == [
        "%% Audio visit report v1",
        "flowchart TD",
        '    flow_start(["start"])',
        '    step0["audio_number<br/>ask audio_number (integer)"]',
        '    step1["date<br/>ask date (date)"]',
        '    step2["employee<br/>ask employee (text)"]',
        '    step3["place<br/>ask place (text)"]',
        '    step4["building_type<br/>ask building_type (choice)"]',
        '    step5["zone<br/>ask zone (text)"]',
        '    step6["city<br/>ask city (text)"]',
        '    step7["client_name<br/>ask client_name (text)"]',
        '    step8{{"confirm<br/>confirm"}}',
        '    flow_end(["end"])',
        "    flow_start --> step0",
        "    step0 --> step1",
        "    step1 --> step2",
        "    step2 --> step3",
        "    step3 --> step4",
        "    step4 --> step5",
        '    step5 -->|"mode = design"| step6',
        '    step5 -->|"else"| step7',
        "    step6 --> step8",
        "    step7 --> step8",
        "    step8 --> flow_end",
    ]


def test_edges_are_labelled_with_their_conditions() -> None:
    survey = load_definition(FLOWS / "survey.yaml")
    labels = {(e.source, e.target): condition(e) for e in survey.edges()}
    assert labels[(None, "visits")] == "mode = long"
    assert labels[(None, "rating")] == "else"
    assert labels[("rating", "complaint")] in ("rating = 1", "rating = 2")
    assert labels[("contact_ok", "email")] == "contact_ok = true"
    assert labels[("contact_ok", None)] == "else"
    assert labels[("visits", "rating")] == ""
    assert step_label(survey.step("callback")) == [
        "callback", "ask callback_at (datetime, optional)",
    ]  # fmt: skip


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="no graph format 'png'"):
        draw(INTAKE_V1, "png")


# --- Graphviz reads it back -------------------------------------------------------------------


def dot_reads(text: str) -> tuple[dict[str, list[str]], list[tuple[str, str, str]]]:
    """Render with Graphviz and read the drawn texts back from its SVG."""
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    svg = subprocess.run(
        ["dot", "-Tsvg"], input=text.encode(), capture_output=True, check=True, timeout=60
    ).stdout
    ns = {"svg": "http://www.w3.org/2000/svg"}
    root = ElementTree.fromstring(svg)

    def texts(group) -> list[str]:
        return [(t.text or "").replace("\xa0", " ") for t in group.iterfind(".//svg:text", ns)]

    nodes, edges = {}, []
    for group in root.iterfind(".//svg:g", ns):
        title = group.findtext("svg:title", namespaces=ns)
        if group.get("class") == "node":
            nodes[title] = texts(group)
        elif group.get("class") == "edge":
            source, target = title.split("->")
            edges.append((source, target, "\n".join(texts(group))))
    return nodes, edges


def test_dot_output_is_read_back_by_graphviz_exactly() -> None:
    for definition in (INTAKE_V1, load_definition(FLOWS / "survey.yaml")):
        assert dot_reads(draw(definition, "dot")) == expected(definition)


def test_dot_output_quotes_names_that_are_hard_to_quote() -> None:
    for seed in range(8):
        names = random.Random(seed).sample(ODD_NAMES, k=5)
        definition = odd_flow(names, seed)
        nodes, edges = dot_reads(draw(definition, "dot"))
        want_nodes, want_edges = expected(definition, printable_only=True)
        assert (nodes, edges) == (want_nodes, want_edges)


# --- Mermaid reads it back --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mermaid_parser() -> Path:
    """Mermaid's own parser (the npm package, run by Node.js), installed once."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed")
    if not (MERMAID / "node_modules" / "mermaid").exists():
        subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=MERMAID,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return MERMAID / "parse.mjs"


def mermaid_reads(parser: Path, texts: list[str]) -> list[dict]:
    done = subprocess.run(
        ["node", str(parser)],
        input=json.dumps(texts).encode(),
        capture_output=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout)


def as_mermaid_reads(definition: FlowDefinition) -> dict:
    nodes, edges = expected(definition)
    return {
        "type": "flowchart-v2",
        "nodes": {k: "<br>".join(v) for k, v in nodes.items()},
        "edges": [list(edge) for edge in edges],
    }


def test_mermaid_output_is_read_back_by_mermaid_exactly(mermaid_parser: Path) -> None:
    definitions = [INTAKE_V1, load_definition(FLOWS / "survey.yaml")]
    definitions += [odd_flow(random.Random(s).sample(ODD_NAMES, k=5), s) for s in range(12)]
    definitions.append(odd_flow(ODD_NAMES, 99))
    read = mermaid_reads(mermaid_parser, [draw(d, "mermaid") for d in definitions])
    assert read == [as_mermaid_reads(d) for d in definitions]


def test_the_mermaid_check_itself_refuses_a_broken_diagram(mermaid_parser: Path) -> None:
    broken = draw(INTAKE_V1, "mermaid").replace('step0["audio_number', 'step0["audio"_number')
    (result,) = mermaid_reads(mermaid_parser, [broken])
    assert "error" in result
