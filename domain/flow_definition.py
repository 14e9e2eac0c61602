"""Flow definitions: a multi-step form as versioned data, its steps, and how a run moves
through them. Pure: the Flow aggregate runs a definition; adapters load one from a file."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from .errors import DefinitionError, NotFound, Problem, ValidationFailed
from .validators import Unbuildable, Validator, build_validator, text, yes_no

# A pure function of a run's mode and its answers so far: a step's prompt, or the name of
# the next step (None: the branch's `else`).
HookFunction = Callable[[str | None, Mapping[str, Any]], Any]
CustomValidators = Mapping[str, Callable[[str], Any]]
Hooks = Mapping[str, HookFunction]

# `{field}` fills in an answer; `{{` and `}}` are a literal brace.
TEMPLATE = re.compile(r"\{\{|\}\}|\{(\w+)\}")


class Hook:
    """A named hook: code that computes a step's prompt or its next step from the run's
    mode and answers. Known in data by its name; hooks compare by name."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function: HookFunction | None) -> None:
        self.name = name
        self.function = function  # None: no hook of this name is registered (a problem)

    def __call__(self, mode: str | None, answers: Mapping[str, Any]) -> Any:
        if self.function is None:
            raise DefinitionError(f"no hook named {self.name!r} is registered")
        # A hook reads the answers; it cannot change the run's.
        return self.function(mode, MappingProxyType(dict(answers)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hook) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Hook({self.name!r})"


class _Data(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Immutable definition data, converted from and to plain mappings. Subclasses take
    keyword arguments only (`kw_only` applies per class)."""


class Rule(_Data, kw_only=True):
    """One case of a branch: go to `goto` when the run's mode is `mode` and/or the answer to
    `field` equals `equals` (or, for several choices, `contains` that one). A field case
    with neither matches a field with no answer (a skipped optional step). A goto of None
    means the flow can complete."""

    mode: str | None = None
    field: str | None = None
    equals: Any = None
    contains: Any = None
    goto: str | None

    def matches(self, mode: str | None, answers: Mapping[str, Any]) -> bool:
        """Whether this case applies to a run in `mode` with these answers."""
        if self.mode is not None and self.mode != mode:
            return False
        if self.field is None:
            return True
        answer = answers.get(self.field)
        if self.contains is not None:
            return isinstance(answer, list | tuple) and self.contains in answer
        return answer == self.equals


class Branch(_Data, kw_only=True):
    """Chooses the next step: the goto of the first matching case in `when`, or the step a
    `hook` names (one of its `targets`); else `otherwise` (None: the end)."""

    when: tuple[Rule, ...] = ()
    hook: Hook | None = None
    targets: tuple[str, ...] = ()
    otherwise: str | None = msgspec.field(default=None, name="else")

    def decide(self, mode: str | None, answers: Mapping[str, Any]) -> str | None:
        """The next step's name for a run in `mode` with these answers (None: the end)."""
        if self.hook is None:
            return next(
                (rule.goto for rule in self.when if rule.matches(mode, answers)), self.otherwise
            )
        chosen = _run_hook(self.hook, mode, answers)
        if chosen is None:
            return self.otherwise
        if chosen not in self.targets:
            raise DefinitionError(
                f"hook {self.hook.name!r} chose {chosen!r}, which is not one of its targets"
                f" ({', '.join(self.targets)})"
            )
        return chosen


Next = str | Branch | None


class Step(_Data, kw_only=True):
    """One step of a flow. An ask step shows its prompt and validates the answer into its
    field (named like the step unless given); the confirm step shows every answer and
    takes a yes or a no. An optional ask step takes a skip word as "no answer" (None)."""

    name: str
    field: str | None = None
    prompt: str = ""
    prompt_hook: Hook | None = None  # computes the prompt instead of `prompt`
    validator: Validator | None = None  # None: text for an ask step, yes_no for confirm
    kind: Literal["ask", "confirm"] = "ask"
    optional: bool = False
    next: Next = None
    label: str | None = None  # the field's name in the confirm summary

    def __post_init__(self) -> None:
        if self.validator is None:
            default = yes_no() if self.kind == "confirm" else text()
            msgspec.structs.force_setattr(self, "validator", default)
        if self.field is None and self.kind == "ask":
            msgspec.structs.force_setattr(self, "field", self.name)

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
        optional: bool = False,
        prompt_hook: Hook | None = None,
    ) -> Step:
        """An ask step; its field is named like the step unless given."""
        return cls(
            name=name,
            field=field or name,
            prompt=prompt,
            prompt_hook=prompt_hook,
            validator=validator,
            optional=optional,
            next=next,
            label=label,
        )

    @classmethod
    def confirm(cls, name: str, prompt: str, *, prompt_hook: Hook | None = None) -> Step:
        """The confirm step: last on every path, answered yes or no."""
        return cls(name=name, prompt=prompt, prompt_hook=prompt_hook, kind="confirm")

    @property
    def title(self) -> str:
        """How the confirm summary labels this step's answer."""
        return self.label or (self.field or self.name).replace("_", " ").capitalize()


class Edge(msgspec.Struct, frozen=True, kw_only=True):
    """One way a run can move: from a step (None: the start) to a step (None: the end),
    always, on a branch case, when a hook chooses it, or as the branch's `else`."""

    source: str | None
    target: str | None
    rule: Rule | None = None
    hook: str | None = None
    otherwise: bool = False


class FlowDefinition(_Data, kw_only=True):
    """A versioned multi-step form: its steps in order and how a run moves through them.
    Checked when built, from data or in Python: a malformed one raises DefinitionError
    naming every problem found."""

    name: str
    version: int
    title: str = ""
    modes: tuple[str, ...] = ()
    start: Next = None  # None: the first listed step
    idle_timeout_s: float | None = None
    skip_words: tuple[str, ...] = ("skip", "-")
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        from .flow_checks import problems_of  # the checks read definitions: imported late

        problems = problems_of(self)
        if problems:
            raise DefinitionError(*problems)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        custom_validators: CustomValidators | None = None,
        hooks: Hooks | None = None,
    ) -> FlowDefinition:
        """Compiles a definition from data (parsed TOML, JSON or YAML). Custom validators
        and hooks are plain functions, named in the data: `{"type": "custom", "name": ...}`,
        `prompt_hook = "name"`, `next = {hook = "name", targets = [...]}`."""
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
            raise ValueError(f"Expected a hook name, got {spec!r}")

        try:
            return msgspec.convert(dict(data), cls, dec_hook=build)
        except msgspec.ValidationError as error:
            raise DefinitionError(*_shape_problems(cls, data, build, error)) from None

    def to_mapping(self) -> dict[str, Any]:
        """The definition as plain data (as JSON would hold it); `from_mapping` gives it
        back."""
        return _plain(msgspec.to_builtins(self, enc_hook=_spec_of))

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
        first = _decide(self.entry, mode, {})
        if first is None:
            raise DefinitionError(f"flow {self.name!r} v{self.version}: the start chose no step")
        return first

    def next_step(self, current: str, mode: str | None, answers: Mapping[str, Any]) -> str | None:
        """The step after `current` for a run in `mode` with these answers (None: the run
        can complete)."""
        self._check_mode(mode)
        return _decide(self.step(current).next, mode, answers)

    def validate(self, step_name: str, raw: str) -> Any:
        """The normalised answer to a step, or ValidationFailed with a reason to show. A
        skip word answers an optional step with None (no answer)."""
        step = self.step(step_name)
        if step.optional and _words(raw) in {_words(word) for word in self.skip_words}:
            return None
        try:
            return step.validator(raw)  # type: ignore[misc]  # set when built
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
            asked = _run_hook(step.prompt_hook, mode, answers)
            if not isinstance(asked, str):
                raise DefinitionError(
                    f"prompt hook {step.prompt_hook.name!r} gave {asked!r}, not a text"
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


def _run_hook(hook: Hook, mode: str | None, answers: Mapping[str, Any]) -> Any:
    """A hook's result; whatever goes wrong in it is a problem of the definition."""
    try:
        return hook(mode, answers)
    except DefinitionError:
        raise
    except Exception as error:  # user code: any failure is reported, never a traceback
        raise DefinitionError(
            f"hook {hook.name!r} failed: {type(error).__name__}: {error}"
        ) from error


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
    if isinstance(value, Hook):
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
