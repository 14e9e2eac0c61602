"""The voxledger exception family: every error a user of the engine can meet."""

from __future__ import annotations

import msgspec


class VoxledgerError(Exception):
    """Root of every error voxledger raises on purpose."""


class InvalidTransition(VoxledgerError):
    """A command is not allowed in the aggregate's current state; nothing was recorded."""


class ValidationFailed(VoxledgerError):
    """A value given to a command does not satisfy its rule; nothing was recorded."""


class NotFound(VoxledgerError):
    """No conversation, flow or definition has the given id or name."""


class Conflict(VoxledgerError):
    """A concurrent writer won every retry; the command was not recorded."""


class VersionMismatch(VoxledgerError):
    """A command expected its stream at another version than the one it is at (another
    write came first); nothing was recorded."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class FlowExpired(VoxledgerError):
    """The flow run expired after being idle; it takes no more commands."""


class BadInput(VoxledgerError):
    """Input that reached an adapter is malformed; it never becomes an event."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing wrong with a flow definition: the file, flow, version and step it is in
    (each where known) and the reason. Reads as `file: flow 'x' v1: step 'y': reason`."""

    reason: str
    flow: str | None = None
    version: int | None = None
    step: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        parts = [self.file] if self.file else []
        if self.flow is not None:
            version = "" if self.version is None else f" v{self.version}"
            parts.append(f"flow {self.flow!r}{version}")
        if self.step is not None:
            parts.append(f"step {self.step!r}")
        return ": ".join([*parts, self.reason])


class DefinitionError(VoxledgerError):
    """A flow definition is malformed: every problem found, each naming where it is (the
    file, flow and step) and the reason, one per line."""

    def __init__(self, *problems: Problem | str) -> None:
        self.problems = tuple(p if isinstance(p, Problem) else Problem(reason=p) for p in problems)
        super().__init__("\n".join(map(str, self.problems)))

    def in_file(self, file: str) -> DefinitionError:
        """The same problems, each naming the file they were found in."""
        return DefinitionError(
            *(msgspec.structs.replace(problem, file=file) for problem in self.problems)
        )


class CodeFailed(DefinitionError):
    """The user's code a flow definition names (a custom validator, a hook, an action)
    raised, or gave what it may not; the command that called it recorded nothing. Reads as
    one line naming the flow, the step and the code."""

    def where(self, flow: str, version: int, step: str | None) -> CodeFailed:
        """The same failure, naming the flow and step it happened in (where not named)."""
        return CodeFailed(
            *(
                msgspec.structs.replace(
                    problem,
                    flow=problem.flow if problem.flow is not None else flow,
                    version=problem.version if problem.flow is not None else version,
                    step=problem.step if problem.step is not None else step,
                )
                for problem in self.problems
            )
        )


def failure_text(error: BaseException) -> str:
    """An exception as one line: its type and its message, with no traceback."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class Unavailable(VoxledgerError):
    """The database cannot be reached; nothing was recorded and the command may be retried."""

    retryable = True
