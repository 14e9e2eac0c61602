"""A flow definition drawn as a graph: its steps in layers from the start down to the end,
an edge for each way on (a branch's cases labelled), and each step's funnel counts.

The layout is the simple layered kind: edges that lead back (a cycle with an exit) are
set aside, every step sits one layer below the deepest step that leads to it, steps within
a layer are ordered by where the steps that lead to them stand, and edges that skip layers
or lead back run beside the steps instead of through them.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import msgspec

from ...domain.flow_definition import FlowDefinition
from ...projections.queries import FunnelStep
from ..flow_graph import condition, step_label

START, END = "\x00start", "\x00end"  # cannot clash with a step's name
LANE = "\x00lane"  # a long edge's stand-in in a layer it crosses
LANE_W = 14
NODE_H = 62
GAP_Y = 34
GAP_X = 28
MARGIN = 16
SIDE = 34  # how far left of the steps a backward edge runs
CHAR_W = 7.4  # the width of a character of the step's name at the graph's font size


class Node(msgspec.Struct, frozen=True):
    """A step (or the start or the end) placed on the drawing, with its counts."""

    name: str
    label: str
    kind: str  # start, ask, confirm, end
    x: float
    y: float
    w: float
    h: float
    lines: list[tuple[str, str]]  # under the name: (style, text)
    share: float  # of the runs started that got here: 0..1
    abandoned: int
    title: str


class Edge(msgspec.Struct, frozen=True):
    """A way from one step to the next: its path on the drawing and its label."""

    source: str
    target: str
    d: str
    label: str
    label_x: float
    label_y: float
    anchor: str  # where the label stands against its point: start, middle, end
    back: bool


class Drawing(msgspec.Struct, frozen=True):
    """A laid out flow graph, ready to be written as SVG."""

    width: float
    height: float
    nodes: list[Node]
    edges: list[Edge]
    description: str


def edges_of(definition: FlowDefinition) -> list[tuple[str, str, str]]:
    """Every way on in a definition, one per pair of steps: (from, to, label), the start
    and the end included; labelled as `voxledger flows graph` labels them, the cases that
    lead to the same step joined with "or"."""
    labels: dict[tuple[str, str], list[str]] = {}
    for edge in definition.edges():
        source = START if edge.source is None else edge.source
        target = END if edge.target is None else edge.target
        found = labels.setdefault((source, target), [])
        if condition(edge) not in found:
            found.append(condition(edge))
    return [(u, v, " or ".join(x for x in found if x)) for (u, v), found in labels.items()]


def draw(
    definition: FlowDefinition, funnel: Iterable[FunnelStep] = (), started: int = 0,
    completed: int = 0,
) -> Drawing:  # fmt: skip
    """The definition laid out in layers, each step labelled with the funnel's counts (the
    runs that reached it, answers refused there, runs abandoned there)."""
    counts = {s.step: s for s in funnel}
    steps = {step.name: step for step in definition.steps}
    names = [START, *steps, END]
    edges = edges_of(definition)
    back = _back_edges(names, edges)
    forward = [(u, v) for u, v, _ in edges if (u, v) not in back]
    layer = _layers(names, forward)
    # An edge that skips layers passes through a narrow stand-in in each layer it crosses,
    # which is ordered and placed like a step: the edge then runs beside the steps.
    lanes: dict[tuple[str, str], list[str]] = {}
    links: list[tuple[str, str]] = []
    for u, v in forward:
        chain = [u]
        for depth in range(layer[u] + 1, layer[v]):
            lane = f"{LANE}{len(layer)}"
            layer[lane] = depth
            chain.append(lane)
        lanes[(u, v)] = chain[1:]
        chain.append(v)
        links.extend(pairwise(chain))
    order = _order([*names, *(n for n in layer if n.startswith(LANE))], layer, links)

    widths = {n: LANE_W if n.startswith(LANE) else _width(n, steps) for n in layer}
    depth = max(layer.values()) + 1
    row_width = {i: sum(widths[n] for n in order[i]) + GAP_X * (len(order[i]) - 1)
                 for i in range(depth)}  # fmt: skip
    inner = max(row_width.values())
    nodes: dict[str, Node] = {}
    centres: dict[str, float] = {}
    for i in range(depth):
        x = MARGIN + SIDE + (inner - row_width[i]) / 2
        for name in order[i]:
            centres[name] = x + widths[name] / 2
            if not name.startswith(LANE):
                nodes[name] = _node(name, steps, counts, started, completed, x, i, widths[name])
            x += widths[name] + GAP_X
    width = inner + 2 * (MARGIN + SIDE)
    height = depth * NODE_H + (depth - 1) * GAP_Y + 2 * MARGIN
    drawn = [
        _back(nodes[u], nodes[v], label)
        if (u, v) in back
        else _down(nodes[u], nodes[v], label, [(centres[n], layer[n]) for n in lanes[(u, v)]])
        for u, v, label in edges
    ]
    return Drawing(width, height, list(nodes.values()), drawn, _describe(definition, edges))


def _back_edges(names: list[str], edges: list[tuple[str, str, str]]) -> set[tuple[str, str]]:
    """The edges that close a cycle, found by a depth-first walk from the start."""
    leads = {n: [v for u, v, _ in edges if u == n] for n in names}
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    for root in names:
        if root in state:
            continue
        stack = [(root, iter(leads[root]))]
        state[root] = 1
        while stack:
            node, rest = stack[-1]
            nxt = next(rest, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(leads[nxt])))
    return back


def _layers(names: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node one layer below the deepest node that leads to it; the end below all."""
    layer = dict.fromkeys(names, 0)
    for _ in names:  # longest paths in a graph without cycles settle within len(names) passes
        changed = False
        for u, v in edges:
            if layer[v] < layer[u] + 1:
                layer[v] = layer[u] + 1
                changed = True
        if not changed:
            break
    layer[END] = max(layer[n] for n in names if n != END) + 1
    return layer


def _order(
    names: list[str], layer: dict[str, int], edges: list[tuple[str, str]]
) -> dict[int, list[str]]:
    """The nodes of each layer, left to right: by the mean place of the nodes leading to
    them (ties in the definition's order)."""
    rows: dict[int, list[str]] = {}
    for name in names:
        rows.setdefault(layer[name], []).append(name)
    place: dict[str, float] = {}
    for i in sorted(rows):

        def key(name: str) -> tuple[float, int]:
            above = [place[u] for u, v in edges if v == name and u in place]
            return (sum(above) / len(above) if above else 0.0, names.index(name))

        rows[i].sort(key=key)
        for position, name in enumerate(rows[i]):
            place[name] = position - (len(rows[i]) - 1) / 2
    return rows


def _width(name: str, steps: dict[str, Any]) -> float:
    if name in (START, END):
        return 170.0
    return max(200.0, len(name) * CHAR_W + 32)


def _node(
    name: str,
    steps: dict[str, Any],
    counts: dict[str, FunnelStep],
    started: int,
    completed: int,
    x: float,
    row: int,
    w: float,
) -> Node:
    y = MARGIN + row * (NODE_H + GAP_Y)
    if name == START:
        return Node(name, "start", "start", x, y, w, NODE_H, [("detail", f"{started:,} runs")],
                    1.0 if started else 0.0, 0, f"start: {started} runs")  # fmt: skip
    if name == END:
        share = completed / started if started else 0.0
        lines = [("detail", f"{completed:,} runs · {share:.0%}")]
        return Node(name, "completed", "end", x, y, w, NODE_H, lines, share, 0,
                    f"completed: {completed} runs")  # fmt: skip
    step = steps[name]
    found = counts.get(name) or FunnelStep(name, 0, 0, 0)
    share = found.reached / started if started else 0.0
    lines = [("detail", f"{found.reached:,} reached · {share:.0%}")]
    trouble = [
        (style, text)
        for style, text in (
            ("refused", f"{found.rejected:,} refused" if found.rejected else ""),
            ("abandoned", f"{found.abandoned:,} abandoned" if found.abandoned else ""),
        )
        if text
    ]
    if trouble:
        lines.append((trouble[-1][0], " · ".join(text for _, text in trouble)))
    title = f"{name}: {step_label(step)[1]}; reached by {found.reached}; "
    title += f"{found.rejected} answers refused; "
    return Node(
        name=name,
        label=name,
        kind=step.kind,
        x=x,
        y=y,
        w=w,
        h=NODE_H,
        lines=lines,
        share=share,
        abandoned=found.abandoned,
        title=title + f"{found.abandoned} abandoned here",
    )


def _row_top(row: int) -> float:
    return MARGIN + row * (NODE_H + GAP_Y)


def _down(u: Node, v: Node, label: str, lanes: list[tuple[float, int]]) -> Edge:
    """An edge down to a later layer: out of the bottom of ``u``, through the lanes it
    was given in the layers between, into the top of ``v``; S-curves between layers."""
    points = [(u.x + u.w / 2, u.y + u.h)]
    for x, row in lanes:
        points += [(x, _row_top(row)), (x, _row_top(row) + NODE_H)]
    points.append((v.x + v.w / 2, v.y))
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for (x1, y1), (x2, y2) in zip(points[::2], points[1::2], strict=True):
        middle = (y1 + y2) / 2
        if (x1, y1) != points[0]:
            d += f" L{x1:.1f},{y1:.1f}"
        d += f" C{x1:.1f},{middle:.1f} {x2:.1f},{middle:.1f} {x2:.1f},{y2:.1f}"
    (x1, y1), (x2, y2) = points[0], points[1]
    return Edge(u.label, v.label, d, label, (x1 + x2) / 2, (y1 + y2) / 2, "middle", False)


def _back(u: Node, v: Node, label: str) -> Edge:
    """An edge that leads back up: out of the left of ``u``, up beside the steps, into
    the left of ``v``; drawn dashed."""
    sx, sy, tx, ty = u.x, u.y + u.h / 2, v.x, v.y + v.h / 2
    side = MARGIN + SIDE / 3
    d = (f"M{sx:.1f},{sy:.1f} C{side:.1f},{sy:.1f} {side:.1f},{sy:.1f} {side:.1f},"
         f"{sy - 20:.1f} L{side:.1f},{ty + 20:.1f} C{side:.1f},{ty:.1f} {side:.1f},{ty:.1f} "
         f"{tx:.1f},{ty:.1f}")  # fmt: skip
    return Edge(u.label, v.label, d, label, side + 4, (sy + ty) / 2, "start", True)


def _describe(definition: FlowDefinition, edges: list[tuple[str, str, str]]) -> str:
    """The graph in words, for screen readers."""

    def name(n: str) -> str:
        return {START: "the start", END: "the end"}.get(n, n)

    ways = [f"{name(u)} to {name(v)}" + (f" when {w}" if w else "") for u, v, w in edges]
    return f"{definition.name} v{definition.version}: " + "; ".join(ways)
