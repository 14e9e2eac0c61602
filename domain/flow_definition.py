"""Flow definitions: a multi-step form as versioned data, its steps, and how a run moves
through them. Pure: the Flow aggregate runs a definition; adapters load one from a file."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from .errors import CodeFailed, DefinitionError, NotFound, Problem, ValidationFailed
from .flow_actions import ENDINGS, Action, Actions
from .flow_checks import problems_of
from .flow_steps import (
    TEMPLATE,
    Branch,
    CustomValidators,
    DefinitionData,
    Edge,
    Hook,
    Hooks,
    Next,
    Step,
    run_hook,
)
from .validators import Unbuildable, Validator, build_validator


class FlowDefinition(DefinitionData, kw_only=True):
    """A versioned multi-step form: its steps in order and how a run moves through them.
    Checked when built, from data or in Python: a malformed one raises DefinitionError
    naming every problem found."""

    name: str
    version: int
    title: str = ""
    modes: tuple[str, ...] = ()
    start: Next = None  # None: the first listed step
    idle_timeout_s: float | None = None
    remind_before_s: float | None = None  # a reminder this long before an idle run expires
    skip_words: tuple[str, ...] = ("skip", "-")
    on_complete: tuple[Action, ...] = ()  # actions run once a run completes
    on_cancel: tuple[Action, ...] = ()
    on_expire: tuple[Action, ...] = ()
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        problems = problems_of(self)
        if problems:
            raise DefinitionError(*problems)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        custom_validators: CustomValidators | None = None,
        hooks: Hooks | None = None,
        actions: Actions | None = None,
    ) -> FlowDefinition:
        """Compiles a definition from data (parsed TOML, JSON or YAML). Custom validators,
        hooks and actions are plain functions, named in the data: `{"type": "custom",
        "name": ...}`, `prompt_hook = "name"`, `next = {hook = "name", targets = [...]}`,
        `on_complete = ["name"]`."""
        if not isinstance(data, Mapping):
            raise DefinitionError("a flow definition must be a table of keys and values")

        def build(type_: type, spec: Any) -> Any:
            if type_ is Validator and isinstance(spec, str | Mapping):
                spec = {"type": spec} if isinstance(spec, str) else spec
                try:
                    return build_validator(spec, custom_validators)
                except DefinitionError as error:
                    return Unbuildable(spec, str(error))  # reported with its step
            if type_ is Validator:
                raise ValueError(f"Expected a validator table or type name, got {spec!r}")
            if type_ is Hook and isinstance(spec, str):
                return Hook(spec, (hooks or {}).get(spec))
            if type_ is Action and isinstance(spec, str):
                return Action(spec, (actions or {}).get(spec))
            raise ValueError(f"Expected a {type_.__name__.lower()} name, got {spec!r}")

        try:
            return msgspec.convert(dict(data), cls, dec_hook=build)
        except msgspec.ValidationError as error:
            raise DefinitionError(*_shape_problems(cls, data, build, error)) from None

    def to_mapping(self) -> dict[str, Any]:
        """The definition as plain data (as JSON would hold it); `from_mapping` gives it
        back."""
        return _plain(msgspec.to_builtins(self, enc_hook=_spec_of))

    def actions_for(self, status: str) -> tuple[Action, ...]:
        """The actions to run once a run has ended with this status (completed,
        cancelled, expired); none for a run still active."""
        key = ENDINGS.get(str(status))
        return getattr(self, key) if key else ()

    def step(self, name: str) -> Step:
        """The step with this name."""
        for step in self.steps:
            if step.name == name:
                return step
        raise NotFound(f"flow {self.name!r} v{self.version} has no step {name!r}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the flow collects, in step order."""
        return tuple(step.field for step in self.steps if step.field)

    @property
    def entry(self) -> Next:
        """How a run starts: `start`, or else the first listed step."""
        return self.start if self.start is not None else self.steps[0].name

    def first_step(self, mode: str | None = None) -> str:
        """Where a run in `mode` starts."""
        self._check_mode(mode)
        try:
            first = _decide(self.entry, mode, {})
        except CodeFailed as failed:
            raise failed.where(self.name, self.version, None) from failed.__cause__
        if first is None:
            raise DefinitionError(f"flow {self.name!r} v{self.version}: the start chose no step")
        return first

    def next_step(self, current: str, mode: str | None, answers: Mapping[str, Any]) -> str | None:
        """The step after `current` for a run in `mode` with these answers (None: the run
        can complete)."""
        self._check_mode(mode)
        try:
            return _decide(self.step(current).next, mode, answers)
        except CodeFailed as failed:
            raise failed.where(self.name, self.version, current) from failed.__cause__

    def validate(self, step_name: str, raw: str) -> Any:
        """The normalised answer to a step, or ValidationFailed with a reason to show. A
        skip word answers an optional step with None (no answer)."""
        step = self.step(step_name)
        if step.optional and _words(raw) in {_words(word) for word in self.skip_words}:
            return None
        try:
            return step.validator(raw)  # type: ignore[misc]  # set when built
        except CodeFailed as failed:
            raise failed.where(self.name, self.version, step_name) from failed.__cause__
        except ValidationFailed as refused:
            if not step.optional:
                raise
            skip = self.skip_words[0]
            raise ValidationFailed(f"{refused} To leave it out, send {skip}.") from None

    def prompt(self, step_name: str, answers: Mapping[str, Any], mode: str | None = None) -> str:
        """What the step asks (its hook's text, or its prompt with `{field}` filled from the
        answers); the confirm step adds every answer so far, labelled, in step order."""
        step = self.step(step_name)
        if step.prompt_hook is not None:
            try:
                asked = run_hook(step.prompt_hook, mode, answers)
            except CodeFailed as failed:
                raise failed.where(self.name, self.version, step_name) from failed.__cause__
            if not isinstance(asked, str):
                raise CodeFailed(
                    Problem(
                        reason=f"prompt hook {step.prompt_hook.name!r} gave {asked!r}, not a text",
                        flow=self.name,
                        version=self.version,
                        step=step_name,
                    )
                )
        else:
            asked = TEMPLATE.sub(lambda m: _fill(m, answers), step.prompt)
        if step.kind != "confirm":
            return asked
        summary = [
            f"{s.title}: {show_answer(answers[s.field])}" for s in self.steps if s.field in answers
        ]
        return "\n".join([asked, "", *summary])

    def path(self, mode: str | None = None, answers: Mapping[str, Any] | None = None) -> list[str]:
        """The steps a run in `mode` with these answers would visit, each once, in order."""
        visited: list[str] = []
        step: str | None = self.first_step(mode)
        while step is not None and step not in visited:
            visited.append(step)
            step = self.next_step(step, mode, answers or {})
        return visited

    def edges(self) -> list[Edge]:
        """Every way a run can move, from the start and from each step, in step order."""
        found = _edges(None, self.entry) if self.steps else []
        for step in self.steps:
            found.extend(_edges(step.name, step.next))
        return found

    def _check_mode(self, mode: str | None) -> None:
        if mode is not None and mode not in self.modes:
            allowed = ", ".join(self.modes) or "none"
            raise ValidationFailed(f"flow {self.name!r} has no mode {mode!r} (modes: {allowed})")


def _edges(source: str | None, target: Next) -> list[Edge]:
    if not isinstance(target, Branch):
        return [Edge(source=source, target=target)]
    if target.hook is not None:
        chosen = [Edge(source=source, target=t, hook=target.hook.name) for t in target.targets]
    else:
        chosen = [Edge(source=source, target=rule.goto, rule=rule) for rule in target.when]
    return [*chosen, Edge(source=source, target=target.otherwise, otherwise=True)]


def _decide(target: Next, mode: str | None, answers: Mapping[str, Any]) -> str | None:
    return target.decide(mode, answers) if isinstance(target, Branch) else target


def _words(raw: str) -> str:
    return " ".join(raw.split()).casefold()


def show_answer(value: Any) -> str:
    """An answer as people read it: yes or no, several choices joined by commas, and a
    skipped optional step as "(skipped)"."""
    if value is None:
        return "(skipped)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _fill(match: re.Match[str], answers: Mapping[str, Any]) -> str:
    """One template: a brace, an answer, nothing for a skipped step, or itself if the
    field has no answer yet."""
    if match[1] is None:
        return match[0][0]
    if match[1] not in answers:
        return match[0]
    value = answers[match[1]]
    return "" if value is None else show_answer(value)


def _plain(value: Any) -> Any:
    """Data with every tuple a list, as JSON, TOML and YAML files hold sequences."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _spec_of(value: Any) -> Any:
    if isinstance(value, Validator):
        return value.spec
    if isinstance(value, Hook | Action):
        return value.name
    raise NotImplementedError


def _shape_problems(
    cls: type[FlowDefinition],
    data: Mapping[str, Any],
    build: Callable[[type, Any], Any],
    error: msgspec.ValidationError,
) -> list[Problem]:
    """Every step that does not have the shape of a step, and the first problem of the
    rest of the definition, each named (msgspec stops at the first it meets)."""
    name = data.get("name") if isinstance(data.get("name"), str) else None
    version = data.get("version") if type(data.get("version")) is int else None
    steps = data.get("steps")
    if not isinstance(steps, list):
        return [Problem(reason=str(error), flow=name, version=version)]
    problems = []
    try:
        msgspec.convert({**data, "steps": []}, cls, dec_hook=build)
    except msgspec.ValidationError as without_steps:
        problems.append(Problem(reason=str(without_steps), flow=name, version=version))
    except DefinitionError:
        pass  # no steps: only the shape is checked here
    for index, step in enumerate(steps):
        try:
            msgspec.convert(step, Step, dec_hook=build)
        except msgspec.ValidationError as wrong:
            named = step.get("name") if isinstance(step, Mapping) else None
            where = named if isinstance(named, str) else f"#{index + 1}"
            problems.append(Problem(reason=str(wrong), flow=name, version=version, step=where))
    return problems or [Problem(reason=str(error), flow=name, version=version)]


class FlowRegistry:
    """Every version of every flow definition this process runs, where each came from, and
    the code they may name (custom validators, hooks, actions). A run names the definition
    and version it started with and keeps using it after a newer version is registered."""

    def __init__(
        self,
        definitions: Iterable[FlowDefinition] = (),
        *,
        custom_validators: CustomValidators | None = None,
        hooks: Hooks | None = None,
        actions: Actions | None = None,
    ) -> None:
        self._versions: dict[str, dict[int, FlowDefinition]] = {}
        self._sources: dict[tuple[str, int], str] = {}
        self.custom_validators = dict(custom_validators or {})
        self.hooks = dict(hooks or {})
        self.actions = dict(actions or {})
        for definition in definitions:
            self.register(definition)

    def register(self, definition: FlowDefinition, source: str | None = None) -> None:
        """Adds a definition (``source``: the file it came from); the same name and version
        again must have the same content."""
        versions = self._versions.setdefault(definition.name, {})
        if versions.setdefault(definition.version, definition) != definition:
            first = self.source_of(definition.name, definition.version)
            raise DefinitionError(
                Problem(
                    reason=f"flow {definition.name!r} v{definition.version} is already"
                    f" registered with different content (from {first}); give the change a"
                    " new version",
                    file=source,
                )
            )
        self._sources.setdefault((definition.name, definition.version), source or "Python")

    def get(self, name: str, version: int | None = None) -> FlowDefinition:
        """The definition with this name and version (None: the latest)."""
        versions = self._versions.get(name, {})
        if version is None and versions:
            version = max(versions)
        if version in versions:
            return versions[version]
        wanted = f"{name!r}" if version is None else f"{name!r} v{version}"
        known = "; ".join(f"{n} v{', v'.join(map(str, vs))}" for n, vs in self.all())
        raise NotFound(f"no flow definition {wanted} (registered: {known or 'none'})")

    def latest(self, name: str) -> FlowDefinition:
        """The newest version of the named definition."""
        return self.get(name)

    def all(self) -> list[tuple[str, tuple[int, ...]]]:
        """Each definition's name with its registered versions, oldest first."""
        return [
            (name, tuple(sorted(versions))) for name, versions in sorted(self._versions.items())
        ]

    def definitions(self) -> list[FlowDefinition]:
        """Every registered definition, by name, oldest version first."""
        return [self._versions[name][v] for name, versions in self.all() for v in versions]

    def source_of(self, name: str, version: int) -> str:
        """Where a registered definition came from: its file, or "Python"."""
        return self._sources.get((name, version), "Python")

    def compile(self, data: Mapping[str, Any]) -> FlowDefinition:
        """A definition from data (as `to_mapping` gives it), with this registry's code."""
        return FlowDefinition.from_mapping(data, self.custom_validators, self.hooks, self.actions)
