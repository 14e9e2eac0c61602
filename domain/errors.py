"""The voxledger exception family: every error a user of the engine can meet."""

from __future__ import annotations


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


class Expired(VoxledgerError):
    """The flow or conversation expired after being idle; it takes no more commands."""


class BadInput(VoxledgerError):
    """Input that reached an adapter is malformed; it never becomes an event."""


class DefinitionError(VoxledgerError):
    """A flow definition is malformed: names the step and the reason."""


class Unavailable(VoxledgerError):
    """The database cannot be reached; nothing was recorded and the command may be retried."""

    retryable = True
