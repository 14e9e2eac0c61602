"""The parts of a flow definition: its steps, the branches that choose the next step, the
hooks (the user's code) they may call, and the edges between steps. Plain data, checked as
a whole by flow_checks.py and run by flow_definition.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from .errors import CodeFailed, DefinitionError, failure_text
from .validators import Validator, text, yes_no

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


class DefinitionData(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Immutable definition data, converted from and to plain mappings. Subclasses take
    keyword arguments only (`kw_only` applies per class)."""


class Rule(DefinitionData, kw_only=True):
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


class Branch(DefinitionData, kw_only=True):
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
        chosen = run_hook(self.hook, mode, answers)
        if chosen is None:
            return self.otherwise
        if chosen not in self.targets:
            raise CodeFailed(
                f"hook {self.hook.name!r} chose {chosen!r}, which is not one of its targets"
                f" ({', '.join(self.targets)})"
            )
        return chosen


Next = str | Branch | None


class Step(DefinitionData, kw_only=True):
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


def run_hook(hook: Hook, mode: str | None, answers: Mapping[str, Any]) -> Any:
    """A hook's result; whatever goes wrong in it is reported as CodeFailed, one line."""
    try:
        return hook(mode, answers)
    except DefinitionError:
        raise
    except Exception as error:  # user code: any failure is reported, never a traceback
        raise CodeFailed(f"hook {hook.name!r} failed: {failure_text(error)}") from error
