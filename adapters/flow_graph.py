"""Flow definitions drawn as graphs: Mermaid `flowchart` text and Graphviz dot. A node per
step (its name, kind and field), a start and an end node, and an edge for every way a run
can move, labelled with its condition (mode = x, field = value, else)."""

from __future__ import annotations

import json
from typing import Any

from ..domain.flow_definition import Edge, FlowDefinition, Step

START = "flow_start"  # node ids of our own: a step's name can be anything
END = "flow_end"


def step_label(step: Step) -> list[str]:
    """A step's node, line by line: its name, then its kind and field with the validator."""
    if step.kind == "confirm":
        return [step.name, "confirm"]
    kind = (step.validator.spec.get("type") if step.validator else None) or "text"
    extra = ", optional" if step.optional else ""
    return [step.name, f"ask {step.field} ({kind}{extra})"]


def condition(edge: Edge) -> str:
    """When a run takes this edge: "" (always), "mode = x", "field = value", "else"..."""
    if edge.otherwise:
        return "else"
    if edge.hook is not None:
        return f"hook {edge.hook}"
    rule = edge.rule
    if rule is None:
        return ""
    parts = [] if rule.mode is None else [f"mode = {rule.mode}"]
    if rule.field is not None and rule.contains is not None:
        parts.append(f"{rule.field} contains {_value(rule.contains)}")
    elif rule.field is not None and rule.equals is None:
        parts.append(f"{rule.field} skipped")
    elif rule.field is not None:
        parts.append(f"{rule.field} = {_value(rule.equals)}")
    return " and ".join(parts)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _ids(definition: FlowDefinition) -> dict[str | None, str]:
    """Node ids of our own (a step's name can be anything), None being the end."""
    return {None: END, **{step.name: f"step{i}" for i, step in enumerate(definition.steps)}}


def _edges(definition: FlowDefinition) -> list[tuple[str, str, str]]:
    """(from id, to id, label) for every edge, each once."""
    ids = _ids(definition)
    drawn: list[tuple[str, str, str]] = []
    for edge in definition.edges():
        source = START if edge.source is None else ids[edge.source]
        line = (source, ids[edge.target], condition(edge))
        if line not in drawn:
            drawn.append(line)
    return drawn


# -- Mermaid -------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """Text for inside a quoted Mermaid label: each character that Mermaid could read as
    syntax, a directive (%%), an entity (#, &), markup (<, >), markdown (`) or a style (:,
    ;) is written as its entity code (#35; for #), and so is anything unprintable and a
    space at either end (Mermaid would trim it)."""
    last = len(text) - 1
    return "".join(
        f"#{ord(c)};"
        if c in _MERMAID_SPECIAL or not c.isprintable() or (c == " " and i in (0, last))
        else c
        for i, c in enumerate(text)
    )


_MERMAID_SPECIAL = frozenset('"#&<>`%:;')


def to_mermaid(definition: FlowDefinition) -> str:
    """The flow as a Mermaid flowchart, top to bottom."""
    title = _mermaid_text(f"{definition.title or definition.name} v{definition.version}")
    lines = [
        f"%% {title}",
        "flowchart TD",
        f'    {START}(["start"])',
    ]
    ids = _ids(definition)
    for step in definition.steps:
        label = "<br/>".join(map(_mermaid_text, step_label(step)))
        opening, closing = ("{{", "}}") if step.kind == "confirm" else ("[", "]")
        lines.append(f'    {ids[step.name]}{opening}"{label}"{closing}')
    lines.append(f'    {END}(["end"])')
    for source, target, label in _edges(definition):
        arrow = f'-->|"{_mermaid_text(label)}"|' if label else "-->"
        lines.append(f"    {source} {arrow} {target}")
    return "\n".join(lines) + "\n"


# -- Graphviz dot --------------------------------------------------------------------------


def _dot_text(text: str) -> str:
    """A dot quoted string: backslashes (label escapes such as \\n), quotes and ampersands
    (entities such as &amp;) escaped, unprintable characters dropped."""
    kept = "".join(c for c in text if c.isprintable())
    escaped = kept.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
    return f'"{escaped}"'


def _dot_lines(lines: list[str]) -> str:
    return '"' + "\\n".join(_dot_text(line)[1:-1] for line in lines) + '"'


def to_dot(definition: FlowDefinition) -> str:
    """The flow as a Graphviz digraph, top to bottom."""
    title = f"{definition.title or definition.name} v{definition.version}"
    lines = [
        f"digraph {_dot_text(definition.name)} {{",
        f"  label={_dot_text(title)};",
        "  labelloc=t;",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f'  {START} [label="start", shape=circle];',
    ]
    ids = _ids(definition)
    for step in definition.steps:
        shape = ", shape=diamond" if step.kind == "confirm" else ""
        lines.append(f"  {ids[step.name]} [label={_dot_lines(step_label(step))}{shape}];")
    lines.append(f'  {END} [label="end", shape=doublecircle];')
    for source, target, label in _edges(definition):
        attributes = f" [label={_dot_text(label)}]" if label else ""
        lines.append(f"  {source} -> {target}{attributes};")
    lines.append("}")
    return "\n".join(lines) + "\n"


FORMATS = {"mermaid": to_mermaid, "dot": to_dot}


def draw(definition: FlowDefinition, format: str = "mermaid") -> str:
    """The flow drawn in a format: "mermaid" or "dot"."""
    if format not in FORMATS:
        raise ValueError(f"no graph format {format!r} (formats: {', '.join(FORMATS)})")
    return FORMATS[format](definition)
