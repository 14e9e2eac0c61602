"""What can be wrong with a flow definition, all found at once: names and fields, prompts
and their templates, branches (unknown modes and fields, values an answer never has),
and the shape of the flow (unreachable steps, dead ends). Pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from .errors import Problem, ValidationFailed
from .flow_actions import ENDINGS, Action
from .flow_steps import TEMPLATE, Branch, Edge, Next, Rule, Step
from .validators import Unbuildable, Validator, answer_text

Found = Iterator[tuple[str | None, str]]  # (the step, None for the flow; the reason)


class FlowDefinition(Protocol):
    """What the checks read of a flow definition (flow_definition.py's, which runs them
    when it is built)."""

    name: str
    version: int
    modes: tuple[str, ...]
    idle_timeout_s: float | None
    remind_before_s: float | None
    skip_words: tuple[str, ...]
    on_complete: tuple[Action, ...]
    on_cancel: tuple[Action, ...]
    on_expire: tuple[Action, ...]
    steps: tuple[Step, ...]

    @property
    def entry(self) -> Next:
        """How a run starts."""
        ...

    def edges(self) -> list[Edge]:
        """Every way a run can move."""
        ...

    def step(self, name: str) -> Step:
        """The step with this name."""
        ...


def problems_of(definition: FlowDefinition) -> list[Problem]:
    """Every problem of the definition: the flow's own first, then each step's in step
    order. An empty list: the definition is sound."""
    found = list(_flow_problems(definition))
    if definition.steps:
        shape = _Shape(definition)
        found += _step_problems(definition, shape)
        found += _branch_problems(definition, shape)
        found += _graph_problems(definition, shape)
    order: dict[str | None, int] = {None: 0}
    for index, step in enumerate(definition.steps, 1):
        order.setdefault(step.name, index)
    found.sort(key=lambda item: order.get(item[0], len(order)))
    return [
        Problem(reason=reason, flow=definition.name, version=definition.version, step=step)
        for step, reason in found
    ]


class _Shape:
    """The flow as a graph: which step leads where, what can come before what."""

    def __init__(self, definition: FlowDefinition) -> None:
        self.names = {step.name for step in definition.steps}
        self.asked_by: dict[str, str] = {}  # field -> the first step that asks it
        for step in definition.steps:
            if step.field:
                self.asked_by.setdefault(step.field, step.name)
        # An unknown target is reported as itself; for the shape it counts as an end.
        self.leads_to: dict[str, set[str | None]] = {name: set() for name in self.names}
        self.starts: set[str | None] = set()
        for edge in definition.edges():
            target = edge.target if edge.target in self.names else None
            (self.starts if edge.source is None else self.leads_to[edge.source]).add(target)
        self.reachable = self.reached_from(self.starts)
        self._after: dict[str, set[str]] = {}  # step -> the steps some path visits after it

    def reached_from(self, starts: set[str | None], without: str | None = None) -> set[str]:
        """The steps some path from these visits (not passing through `without`)."""
        reached: set[str] = set()
        todo = [name for name in starts if name is not None and name != without]
        while todo:
            name = todo.pop()
            if name not in reached:
                reached.add(name)
                todo.extend(n for n in self.leads_to[name] if n is not None and n != without)
        return reached

    def after(self, step: str) -> set[str]:
        """The steps some path visits after this one (itself too, in a cycle)."""
        if step not in self._after:
            self._after[step] = self.reached_from(self.leads_to[step])
        return self._after[step]

    def can_come_before(self, earlier: str, later: str) -> bool:
        """Whether a run can visit `earlier` and then, later on, `later`."""
        return earlier in self.reachable and later in self.after(earlier)

    def always_before(self, earlier: str, later: str) -> bool:
        """Whether every run that reaches `later` has visited `earlier` (or is at it)."""
        return later not in self.reached_from(self.starts, without=earlier)

    def finishing(self) -> set[str]:
        """The steps from which some path reaches the end: back from the end, step by step."""
        before: dict[str | None, list[str]] = {}
        for name, targets in self.leads_to.items():
            for target in targets:
                before.setdefault(target, []).append(name)
        finishing: set[str] = set()
        todo = list(before.get(None, []))
        while todo:
            name = todo.pop()
            if name not in finishing:
                finishing.add(name)
                todo.extend(before.get(name, []))
        return finishing


def _flow_problems(definition: FlowDefinition) -> Found:
    if not definition.name:
        yield None, "a flow needs a name"
    if definition.version < 1:
        yield None, f"version must be 1 or more, not {definition.version}"
    if not definition.steps:
        yield None, "it has no steps"
    for index, mode in enumerate(definition.modes):
        if mode in definition.modes[:index]:
            yield None, f"mode {mode!r} is listed twice"
    if definition.idle_timeout_s is not None and definition.idle_timeout_s <= 0:
        yield None, f"idle_timeout_s must be more than 0, not {definition.idle_timeout_s}"
    remind = definition.remind_before_s
    if remind is not None:
        if remind <= 0:
            yield None, f"remind_before_s must be more than 0, not {remind}"
        elif definition.idle_timeout_s is None:
            yield None, "remind_before_s needs idle_timeout_s: a run that never expires"
        elif remind >= definition.idle_timeout_s:
            yield (
                None,
                (
                    f"remind_before_s ({remind}) must be less than idle_timeout_s "
                    f"({definition.idle_timeout_s})"
                ),
            )
    if any(not word.strip() for word in definition.skip_words):
        yield None, "a skip word cannot be blank"
    if not definition.skip_words and any(step.optional for step in definition.steps):
        yield None, "optional steps need at least one skip word (skip_words)"
    for key in ENDINGS.values():
        actions: tuple[Action, ...] = getattr(definition, key)
        for index, action in enumerate(actions):
            if action in actions[:index]:
                yield None, f"action {action.name!r} is listed twice in {key}"
            elif action.function is None:
                yield None, f"no action named {action.name!r} is registered ({key})"


def _step_problems(definition: FlowDefinition, shape: _Shape) -> Found:
    names: set[str] = set()
    for step in definition.steps:
        name = step.name
        if name in names:
            yield name, "duplicate step name"
        names.add(name)
        if not name:
            yield name, "a step needs a name"
        if step.kind not in ("ask", "confirm"):
            yield name, f"unknown kind {step.kind!r} (ask or confirm)"
        if step.kind == "ask" and not step.field:
            yield name, "an ask step needs a field"
        if step.kind == "confirm":
            if step.field:
                yield name, "a confirm step collects no field"
            if step.next is not None:
                yield name, "a confirm step must be last on every path"
            if step.optional:
                yield name, "a confirm step cannot be optional"
        first = shape.asked_by.get(step.field or "")
        if step.field and first != name:
            yield name, f"duplicate field {step.field!r}, also asked by step {first!r}"
        if not step.prompt and step.prompt_hook is None:
            yield name, "it needs a prompt (or a prompt_hook)"
        if step.prompt_hook is not None and step.prompt_hook.function is None:
            yield name, f"no hook named {step.prompt_hook.name!r} is registered (prompt_hook)"
        if isinstance(step.validator, Unbuildable):
            yield name, step.validator.problem
        yield from ((name, reason) for reason in _template_problems(step, shape))


def _template_problems(step: Step, shape: _Shape) -> Iterator[str]:
    for match in TEMPLATE.finditer(step.prompt):
        field = match[1]
        if field is None:
            continue  # a literal brace
        asker = shape.asked_by.get(field)
        if asker is None:
            yield f"prompt names {{{field}}}, which is no field of this flow"
        elif step.name in shape.reachable and not shape.can_come_before(asker, step.name):
            yield f"prompt names {{{field}}}, but no step before this one asks it"


def _branch_problems(definition: FlowDefinition, shape: _Shape) -> Found:
    places: list[tuple[str | None, Next]] = [(None, definition.entry)]
    places += [(step.name, step.next) for step in definition.steps]
    for place, target in places:
        at = "start: " if place is None else ""
        if isinstance(target, Branch):
            for reason in _branch_form_problems(target):
                yield place, at + reason
            for rule in target.when:
                for reason in _case_problems(definition, shape, place, rule):
                    yield place, at + reason
    for edge in definition.edges():
        at = "start: " if edge.source is None else ""
        if edge.target is not None and edge.target not in shape.names:
            yield edge.source, f"{at}unknown next step {edge.target!r}"
        if edge.source is None and edge.target is None:
            yield None, "start: every case must lead to a step"


def _branch_form_problems(branch: Branch) -> Iterator[str]:
    if branch.hook is not None and branch.when:
        yield "a branch has cases (when) or a hook, not both"
    if branch.hook is None and not branch.when:
        yield "a branch needs cases (when) or a hook"
    if branch.hook is not None and branch.hook.function is None:
        yield f"no hook named {branch.hook.name!r} is registered"
    if branch.hook is not None and not branch.targets:
        yield "a hook branch lists the steps its hook may choose (targets)"
    if branch.hook is None and branch.targets:
        yield "targets are for a branch with a hook"


def _case_problems(
    definition: FlowDefinition, shape: _Shape, place: str | None, rule: Rule
) -> Iterator[str]:
    if rule.mode is None and rule.field is None:
        yield "a branch case needs a mode or a field"
    if rule.mode is not None and rule.mode not in definition.modes:
        known = ", ".join(definition.modes) or "none"
        yield f"unknown mode {rule.mode!r} in branch (modes: {known})"
    if rule.field is None:
        if rule.equals is not None or rule.contains is not None:
            yield "a branch case with equals or contains needs a field"
        return
    if rule.equals is not None and rule.contains is not None:
        yield f"branch on {rule.field!r}: a case has equals or contains, not both"
    asker = shape.asked_by.get(rule.field)
    if asker is None:
        yield f"branch on unknown field {rule.field!r}"
    elif place is None:
        yield f"branch on field {rule.field!r} at the start, before any answer"
    elif asker != place and not shape.can_come_before(asker, place):
        yield f"branch on field {rule.field!r}, which no step before this branch asks"
    else:
        yield from _value_problems(definition.step(asker), shape, place, rule)


def _value_problems(asker: Step, shape: _Shape, place: str, rule: Rule) -> Iterator[str]:
    """Whether the case can ever match: a value the field's validator gives."""
    validator = asker.validator
    assert validator is not None  # set when the step was built
    kind = validator.spec.get("type")
    on = f"branch on {rule.field!r}"
    if isinstance(validator, Unbuildable) or kind == "custom":
        return  # nothing known about its values
    if rule.contains is not None:
        options = validator.spec.get("options", {})
        if kind != "multiple_choice":
            yield f"{on}: contains is for a multiple_choice field, not a {kind} one"
        elif not isinstance(rule.contains, str) or rule.contains not in options:
            yield f"{on}: {rule.contains!r} is not one of its options ({', '.join(options)})"
    elif rule.equals is None:
        if not asker.optional and shape.always_before(asker.name, place):
            yield (
                f"{on}: a case with no equals matches a skipped answer, but step "
                f"{asker.name!r} is not optional and is always answered here"
            )
    elif not validator.can_give(rule.equals):
        yield (
            f"{on}: {rule.equals!r} is not a value its {kind} validator gives"
            f"{_hint(validator, rule.equals)}"
        )


def _hint(validator: Validator, value: Any) -> str:
    """What a value the validator never gives would become as an answer, if anything."""
    try:
        given = validator(answer_text(value))
    except ValidationFailed:
        options = validator.spec.get("options")
        return f" (options: {', '.join(options)})" if isinstance(options, Mapping) else ""
    return f" (the answer {answer_text(value)!r} is stored as {given!r})"


def _graph_problems(definition: FlowDefinition, shape: _Shape) -> Found:
    finishing = shape.finishing()
    for step in definition.steps:
        if step.name not in shape.reachable:
            yield step.name, "unreachable: no path from the start leads to it"
    for step in definition.steps:
        if step.name in finishing:
            continue
        if step.name in shape.after(step.name):
            yield step.name, "in a cycle with no exit: a dead end, no path from it reaches the end"
        else:
            yield step.name, "a dead end: every path from it runs into a cycle with no exit"
