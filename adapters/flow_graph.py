"""Flow definitions drawn as graphs: Mermaid `flowchart` text and Graphviz dot. A node per
step (its name, kind and field), a start and an end node, and an edge for every way a run
can move, labelled with its condition (mode = x, field = value, else).

With a funnel (the metrics projection's counts of one version's runs), every node also says
how many runs reached it and how many answers were refused and runs abandoned there, every
edge how many runs took it (the cases that lead to the same step then share one edge), and
a dashed edge leads from each step where runs were abandoned to an `abandoned` node."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..domain.flow_definition import FlowDefinition
from ..domain.flow_steps import Edge, Step
from ..projections.queries import Funnel

START = "flow_start"  # node ids of our own: a step's name can be anything
END = "flow_end"
ABANDONED = "flow_abandoned"


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


class Drawing(NamedTuple):
    """What a format draws: the title, each node's lines (by id, in order: start, steps,
    end, and `abandoned` when runs were), the edges (from, to, label, dashed)."""

    title: str
    nodes: dict[str, list[str]]
    edges: list[tuple[str, str, str, bool]]


def _confirm_ids(definition: FlowDefinition) -> set[str]:
    ids = _ids(definition)
    return {ids[step.name] for step in definition.steps if step.kind == "confirm"}


def _share(count: int, of: int) -> str:
    return f" ({round(100 * count / of)}%)" if of else ""


def _drawing(definition: FlowDefinition, funnel: Funnel | None) -> Drawing:
    """The graph's parts, with the funnel's counts when one is given."""
    title = f"{definition.title or definition.name} v{definition.version}"
    ids = _ids(definition)
    nodes = {START: ["start"], **{ids[s.name]: step_label(s) for s in definition.steps}}
    nodes[END] = ["end"]
    if funnel is None:
        return Drawing(title, nodes, [(u, v, label, False) for u, v, label in _edges(definition)])
    o = funnel.outcomes
    active = o.started - o.completed - o.cancelled - o.expired
    title += (
        f": {o.started} runs, {o.completed} completed{_share(o.completed, o.started)},"
        f" {o.cancelled} cancelled, {o.expired} expired, {active} active"
    )
    nodes[START].append(f"{o.started} runs")
    nodes[END].append(f"{o.completed} completed{_share(o.completed, o.started)}")
    counted = {step.step: step for step in funnel.steps}
    abandoned: list[tuple[str, int]] = []
    for step in definition.steps:
        counts = counted.get(step.name)
        reached = counts.reached if counts else 0
        lines = [f"reached {reached}{_share(reached, o.started)}"]
        others = []
        if counts and counts.rejected:
            others.append(f"{counts.rejected} refused")
        if counts and counts.abandoned:
            others.append(f"{counts.abandoned} abandoned")
            abandoned.append((ids[step.name], counts.abandoned))
        nodes[ids[step.name]] += lines + ([", ".join(others)] if others else [])
    taken = {(START if e.source is None else ids[e.source], ids[e.target]): e.runs
             for e in funnel.edges if e.source in ids or e.source is None
             if e.target in ids}  # fmt: skip
    # The cases that lead to the same step share one edge: the runs are counted per edge.
    labels: dict[tuple[str, str], list[str]] = {}
    for u, v, label in _edges(definition):
        labels.setdefault((u, v), []).append(label)
    edges = []
    for (u, v), conditions in labels.items():
        runs = taken.get((u, v), 0)
        said = " or ".join(c for c in conditions if c)
        count = f"{runs} run{'s' * (runs != 1)}"
        edges.append((u, v, f"{said}: {count}" if said else count, False))
    if abandoned:
        nodes[ABANDONED] = ["abandoned", f"{o.cancelled} cancelled, {o.expired} expired"]
        edges += [(u, ABANDONED, str(n), True) for u, n in abandoned]
    return Drawing(title, nodes, edges)


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


def to_mermaid(definition: FlowDefinition, funnel: Funnel | None = None) -> str:
    """The flow as a Mermaid flowchart, top to bottom (with the funnel's counts)."""
    drawing = _drawing(definition, funnel)
    lines = [f"%% {_mermaid_text(drawing.title)}", "flowchart TD"]
    confirm = _confirm_ids(definition)
    for node, label_lines in drawing.nodes.items():
        label = "<br/>".join(map(_mermaid_text, label_lines))
        if node in (START, END, ABANDONED):
            opening, closing = "([", "])"
        elif node in confirm:
            opening, closing = "{{", "}}"
        else:
            opening, closing = "[", "]"
        lines.append(f'    {node}{opening}"{label}"{closing}')
    for source, target, label, dashed in drawing.edges:
        arrow = "-.->" if dashed else "-->"
        labelled = f'{arrow}|"{_mermaid_text(label)}"|' if label else arrow
        lines.append(f"    {source} {labelled} {target}")
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


def to_dot(definition: FlowDefinition, funnel: Funnel | None = None) -> str:
    """The flow as a Graphviz digraph, top to bottom (with the funnel's counts)."""
    drawing = _drawing(definition, funnel)
    lines = [
        f"digraph {_dot_text(definition.name)} {{",
        f"  label={_dot_text(drawing.title)};",
        "  labelloc=t;",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    shapes = {START: ", shape=circle", END: ", shape=doublecircle", ABANDONED: ", shape=octagon"}
    shapes.update(dict.fromkeys(_confirm_ids(definition), ", shape=diamond"))
    for node, label_lines in drawing.nodes.items():
        label = _dot_text(label_lines[0]) if len(label_lines) == 1 else _dot_lines(label_lines)
        lines.append(f"  {node} [label={label}{shapes.get(node, '')}];")
    for source, target, label, dashed in drawing.edges:
        attributes = [f"label={_dot_text(label)}"] if label else []
        attributes += ["style=dashed"] if dashed else []
        listed = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"  {source} -> {target}{listed};")
    lines.append("}")
    return "\n".join(lines) + "\n"


FORMATS = {"mermaid": to_mermaid, "dot": to_dot}


def draw(definition: FlowDefinition, format: str = "mermaid", funnel: Funnel | None = None) -> str:
    """The flow drawn in a format: "mermaid" or "dot"; with a funnel, its counts on the
    nodes and edges."""
    if format not in FORMATS:
        raise ValueError(f"no graph format {format!r} (formats: {', '.join(FORMATS)})")
    return FORMATS[format](definition, funnel)
