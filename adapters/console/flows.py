"""The console's flow pages: every flow definition with how its runs ended, and one
definition drawn as a graph with its funnel, version by version."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from ...domain.errors import NotFound
from ...projections.queries import FlowOutcomes, FunnelStep, VersionFunnel
from .context import ConsoleContext, chosen_zone
from .graph import draw
from .rendering import page


@get("/flows", sync_to_thread=True, include_in_schema=False)
def flow_list(
    request: Request[Any, Any, Any], console: NamedDependency[ConsoleContext]
) -> Response:
    """Each flow definition: its versions, and its runs' outcomes (metrics projection)."""
    sources = console.sources
    registry = sources.flows
    outcomes = {o.definition: o for o in sources.projections.metrics().flows}
    registered = dict(registry.all())
    rows = []
    for name in sorted(set(registered) | set(outcomes)):
        o = outcomes.get(name) or FlowOutcomes(name, 0, 0, 0, 0)
        rows.append(
            {
                "name": name,
                "title": registry.get(name).title if name in registered else "",
                "versions": registered.get(name, ()),
                "outcomes": o,
                "active": o.started - o.completed - o.cancelled - o.expired,
            }
        )
    return page(
        request,
        "flows.html",
        title="Flows",
        nav="flows",
        zone=chosen_zone(request),
        lag=sources.projections.lag(),
        rows=rows,
    )


@get("/flows/{name:str}", sync_to_thread=True, include_in_schema=False)
def flow_page(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    name: Annotated[str, PathParameter(max_length=200)],
    version: Annotated[int | None, QueryParameter(ge=1)] = None,
) -> Response:
    """One definition version's graph with its funnel: runs that reached each step, answers
    refused there, runs abandoned there, and the completion rate."""
    sources = console.sources
    registry = sources.flows
    registered = dict(registry.all()).get(name, ())
    funnels = {f.version: f for f in sources.projections.funnel_by_version(name)}
    versions = sorted(set(registered) | set(funnels))
    if not versions:
        raise NotFound(f"no flow definition {name!r} is loaded and no run of one is recorded")
    version = version or max(versions)
    if version not in versions:
        raise NotFound(f"flow {name!r} has no version {version} (versions: {_listed(versions)})")
    funnel = funnels.get(version)
    definition = registry.get(name, version) if version in registered else None
    started = funnel.outcomes.started if funnel else 0
    completed = funnel.outcomes.completed if funnel else 0
    steps = _steps(definition, funnel)
    drawing = draw(definition, steps, started, completed) if definition else None
    try:
        overall = sources.projections.funnel(name)
    except NotFound:
        overall = None
    return page(
        request,
        "flow.html",
        title=f"Flow {name}",
        nav="flows",
        zone=chosen_zone(request),
        lag=sources.projections.lag(),
        name=name,
        version=version,
        versions=versions,
        registered=registered,
        definition=definition,
        funnel=funnel,
        funnels=[funnels[v] for v in sorted(funnels)],
        steps=steps,
        drawing=drawing,
        overall=overall,
    )


def _steps(definition: Any, funnel: VersionFunnel | None) -> list[FunnelStep]:
    """The funnel's steps in the definition's order, steps no run reached included; steps
    the definition no longer has (a run of another shape) after them."""
    counted = {s.step: s for s in funnel.steps} if funnel else {}
    if definition is None:
        return list(counted.values())
    ordered = [counted.pop(s.name, FunnelStep(s.name, 0, 0, 0)) for s in definition.steps]
    return ordered + list(counted.values())


def _listed(versions: list[int]) -> str:
    return ", ".join(map(str, versions))
