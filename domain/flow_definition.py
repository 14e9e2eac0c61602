"""Flow definitions: a multi-step form as versioned data, its steps, and how a run moves
through them. Pure: the Flow aggregate runs a definition; adapters load one from a file."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import msgspec

from .errors import DefinitionError, NotFound, ValidationFailed
from .validators import Validator, build_validator, text, yes_no


class _Data(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Immutable definition data, converted from and to plain mappings. Subclasses take
    keyword arguments only (`kw_only` applies per class)."""


class Rule(_Data, kw_only=True):
    """One case of a branch: go to `goto` when the run's mode is `mode` and/or the answer to
    `field` equals `equals`. A goto of None means the flow can complete."""

    mode: str | None = None
    field: str | None = None
    equals: Any = None
    goto: str | None

    def matches(self, mode: str | None, answers: Mapping[str, Any]) -> bool:
        """Whether this case applies to a run in `mode` with these answers."""
        return (self.mode is None or self.mode == mode) and (
            self.field is None or answers.get(self.field) == self.equals
        )


class Branch(_Data, kw_only=True):
    """Chooses the next step: the goto of the first matching rule, else `otherwise`."""

    when: tuple[Rule, ...]
    otherwise: str | None = msgspec.field(default=None, name="else")

    def decide(self, mode: str | None, answers: Mapping[str, Any]) -> str | None:
        """The next step's name for a run in `mode` with these answers (None: the end)."""
        return next(
            (rule.goto for rule in self.when if rule.matches(mode, answers)), self.otherwise
        )


Next = str | Branch | None


class Step(_Data, kw_only=True):
    """One step of a flow. An ask step shows its prompt and validates the answer into its
    field; the confirm step shows every answer and takes a yes or a no."""

    name: str
    field: str | None = None
    prompt: str
    validator: Validator | None = None  # None: text for an ask step, yes_no for confirm
    kind: Literal["ask", "confirm"] = "ask"
    next: Next = None
    label: str | None = None  # the field's name in the confirm summary

    def __post_init__(self) -> None:
        if self.validator is None:
            default = yes_no() if self.kind == "confirm" else text()
            msgspec.structs.force_setattr(self, "validator", default)

    @classmethod
    def ask(
        cls,
        name: str,
        prompt: str,
        validator: Validator,
        next: Next = None,
        *,
        field: str | None = None,
        label: str | None = None,
    ) -> Step:
        """An ask step; its field is named like the step unless given."""
        return cls(
            name=name,
            field=field or name,
            prompt=prompt,
            validator=validator,
            next=next,
            label=label,
        )

    @classmethod
    def confirm(cls, name: str, prompt: str) -> Step:
        """The confirm step: last on every path, answered yes or no."""
        return cls(name=name, prompt=prompt, kind="confirm")

    @property
    def title(self) -> str:
        """How the confirm summary labels this step's answer."""
        return self.label or (self.field or self.name).replace("_", " ").capitalize()


class FlowDefinition(_Data, kw_only=True):
    """A versioned multi-step form: its steps in order and how a run moves through them.
    Checked when built, from data or in Python: a malformed one raises DefinitionError."""

    name: str
    version: int
    title: str = ""
    modes: tuple[str, ...] = ()
    start: Next = None  # None: the first listed step
    idle_timeout_s: float | None = None
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        for problem in self._problems():
            raise DefinitionError(f"flow {self.name!r} v{self.version}: {problem}")

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        custom_validators: Mapping[str, Callable[[str], Any]] | None = None,
    ) -> FlowDefinition:
        """Compiles a definition from data (parsed TOML or JSON); custom validators are
        plain functions, named in the data as `{"type": "custom", "name": ...}`."""
        if not isinstance(data, Mapping):
            raise DefinitionError("a flow definition must be a table of keys and values")

        def build(type_: type, spec: Any) -> Validator:
            if type_ is Validator and isinstance(spec, Mapping):
                try:
                    return build_validator(spec, custom_validators)
                except DefinitionError as error:
                    raise ValueError(str(error)) from None
            raise NotImplementedError

        try:
            return msgspec.convert(dict(data), cls, dec_hook=build)
        except msgspec.ValidationError as error:
            problem = _name_the_step(error, data)
            raise DefinitionError(f"flow {data.get('name')!r}: {problem}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The definition as plain data; `from_mapping` gives it back."""
        return msgspec.to_builtins(self, enc_hook=_spec_of)

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

    def first_step(self, mode: str | None = None) -> str:
        """Where a run in `mode` starts."""
        self._check_mode(mode)
        first = _decide(self.start if self.start is not None else self.steps[0].name, mode, {})
        assert first is not None  # checked when built
        return first

    def next_step(self, current: str, mode: str | None, answers: Mapping[str, Any]) -> str | None:
        """The step after `current` for a run in `mode` with these answers (None: the run
        can complete)."""
        self._check_mode(mode)
        return _decide(self.step(current).next, mode, answers)

    def validate(self, step_name: str, raw: str) -> Any:
        """The normalised answer to a step, or ValidationFailed with a reason to show."""
        return self.step(step_name).validator(raw)  # type: ignore[misc]  # set when built

    def prompt(self, step_name: str, answers: Mapping[str, Any]) -> str:
        """What the step asks, with `{field}` filled from the answers; the confirm step adds
        every answer so far, labelled, in step order."""
        step = self.step(step_name)
        asked = re.sub(r"\{(\w+)\}", lambda m: _show(answers.get(m[1], m[0])), step.prompt)
        if step.kind != "confirm":
            return asked
        summary = [
            f"{s.title}: {_show(answers[s.field])}" for s in self.steps if s.field in answers
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

    def _check_mode(self, mode: str | None) -> None:
        if mode is not None and mode not in self.modes:
            allowed = ", ".join(self.modes) or "none"
            raise ValidationFailed(f"flow {self.name!r} has no mode {mode!r} (modes: {allowed})")

    def _problems(self) -> Iterator[str]:
        """What is wrong with the definition, most basic first."""
        if self.version < 1:
            yield f"version must be 1 or more, not {self.version}"
        if not self.steps:
            yield "it has no steps"
        names: set[str] = set()
        collected: dict[str, str] = {}  # field -> the step that asks it
        for step in self.steps:
            where = f"step {step.name!r}"
            if step.name in names:
                yield f"{where}: duplicate step name"
            names.add(step.name)
            if step.kind not in ("ask", "confirm"):
                yield f"{where}: unknown kind {step.kind!r} (ask or confirm)"
            if step.kind == "ask" and not step.field:
                yield f"{where}: an ask step needs a field"
            if step.kind == "confirm" and step.field:
                yield f"{where}: a confirm step collects no field"
            if step.kind == "confirm" and step.next is not None:
                yield f"{where}: a confirm step must be last on every path"
            if step.field in collected:
                yield (
                    f"{where}: duplicate field {step.field!r}, also asked by step "
                    f"{collected[step.field]!r}"
                )
            if step.field:
                collected[step.field] = step.name

        start = self.start if self.start is not None else self.steps[0].name
        if None in _targets(start):
            yield "start: every case must lead to a step"
        for where, target in [
            ("start", start),
            *((f"step {s.name!r}", s.next) for s in self.steps),
        ]:
            for rule in target.when if isinstance(target, Branch) else ():
                if rule.mode is None and rule.field is None:
                    yield f"{where}: a branch case needs a mode or a field"
                if rule.mode is not None and rule.mode not in self.modes:
                    yield (
                        f"{where}: unknown mode {rule.mode!r} in branch "
                        f"(modes: {', '.join(self.modes) or 'none'})"
                    )
                if rule.field is not None and rule.field not in collected:
                    yield f"{where}: branch on unknown field {rule.field!r}"
            for goto in _targets(target):
                if goto is not None and goto not in names:
                    yield f"{where}: unknown next step {goto!r}"

        leads_to = {step.name: _targets(step.next) for step in self.steps}
        reachable = _reachable(_targets(start), leads_to)
        finishing = _finishing(leads_to)
        for step in self.steps:
            if step.name not in reachable:
                yield f"step {step.name!r}: unreachable"
        for step in self.steps:
            if step.name not in finishing:
                yield f"step {step.name!r}: in a cycle with no exit (no path from it ends)"


def _targets(target: Next) -> list[str | None]:
    if isinstance(target, Branch):
        return [*(rule.goto for rule in target.when), target.otherwise]
    return [target]


def _reachable(starts: list[str | None], leads_to: Mapping[str, list[str | None]]) -> set[str]:
    """The steps some path from the start visits."""
    reachable: set[str] = set()
    todo = [goto for goto in starts if goto is not None]
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(goto for goto in leads_to[name] if goto is not None)
    return reachable


def _finishing(leads_to: Mapping[str, list[str | None]]) -> set[str]:
    """The steps from which some path reaches the end."""
    finishing: set[str] = set()
    while True:
        more = {
            name
            for name, gotos in leads_to.items()
            if any(goto is None or goto in finishing for goto in gotos)
        }
        if more == finishing:
            return finishing
        finishing = more


def _decide(target: Next, mode: str | None, answers: Mapping[str, Any]) -> str | None:
    return target.decide(mode, answers) if isinstance(target, Branch) else target


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _spec_of(value: Any) -> Any:
    if isinstance(value, Validator):
        return value.spec
    raise NotImplementedError


def _name_the_step(error: msgspec.ValidationError, data: Mapping[str, Any]) -> str:
    """msgspec names the step by its index; say its name too."""
    message = str(error)
    match = re.search(r"\$\.steps\[(\d+)\]", message)
    if not match:
        return message
    step = data["steps"][int(match[1])]
    name = step.get("name") if isinstance(step, Mapping) else None
    return f"step {name or match[1]!r}: {message}"


class FlowRegistry:
    """Every version of every flow definition. A run names the definition and version it
    started with and keeps using it after a newer version is registered."""

    def __init__(self, definitions: Iterable[FlowDefinition] = ()) -> None:
        self._versions: dict[str, dict[int, FlowDefinition]] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: FlowDefinition) -> None:
        """Adds a definition; the same name and version again must have the same content."""
        versions = self._versions.setdefault(definition.name, {})
        if versions.setdefault(definition.version, definition) != definition:
            raise DefinitionError(
                f"flow {definition.name!r} v{definition.version} is already registered with"
                " different content; give the change a new version"
            )

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
