"""The Engine's commands on a flow run: one short method each. A run and its conversation
are saved together, and a run found idle past its timeout is expired instead of acting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from .commands import check_values
from .conversation import Conversation
from .conversation_values import Role
from .definition_commands import DefinitionCommands
from .errors import FlowExpired
from .flow import Flow, FlowStatus
from .flow_definition import FlowDefinition, FlowRegistry
from .flow_reply import FlowReply

Act = Callable[[Flow, FlowDefinition, datetime], Any]


class FlowCommands(DefinitionCommands):
    """Start a form in a conversation, then answer, edit, undo, confirm, cancel or expire it."""

    flows: FlowRegistry
    phrase: Callable[[FlowReply], str]  # a reply as the message recorded for it

    def start_flow(
        self,
        conversation_id: UUID,
        definition: str,
        mode: str | None = None,
        *,
        version: int | None = None,
        flow_id: UUID | None = None,
        at: datetime | None = None,
    ) -> FlowReply:
        """Start a form in a conversation (the latest definition version unless given).
        The log records the version's content with the run's start, unless it holds it."""
        chosen = self.flows.get(definition, version)
        at = self._now(at)
        flow_id = flow_id or uuid4()
        started: list[FlowReply] = []

        def work() -> list[Aggregate]:
            conversation = self._load(conversation_id, Conversation, cached=True)
            flow = Flow.begin(conversation_id, chosen, mode, at=at, flow_id=flow_id)
            conversation.begin_flow(flow.id, chosen.name, at=at)
            # Asked here, before the save: a prompt hook that fails records nothing.
            started[:] = [FlowReply.of(flow, chosen, accepted=True)]
            return [conversation, flow, *self._recording(chosen, at)]

        self._transact(work)
        self.recorded_versions.add((chosen.name, chosen.version))
        return started[0]

    def answer(
        self,
        flow_id: UUID,
        text: str,
        *,
        message_id: str | None = None,
        record_messages: bool = False,
        expected_step: str | None = None,
        at: datetime | None = None,
    ) -> FlowReply:
        """Answer the current step. With ``record_messages`` the user's text and the reply
        (as `phrase` words it) are added to the conversation in the same atomic save as the
        answer; with ``expected_step`` the answer is refused if the run has left that step."""
        self._check_content(text)
        return self._flow_command(
            flow_id,
            lambda flow, definition, at: flow.answer(
                definition, text, expected_step=expected_step, at=at
            ),
            at=at,
            said=(message_id or uuid4().hex, text) if record_messages else None,
        )

    def edit(self, flow_id: UUID, field: str, *, at: datetime | None = None) -> FlowReply:
        """Ask a field again; the run returns where it was afterwards."""
        check_values(field)
        return self._flow_command(flow_id, lambda f, d, at: f.edit(d, field, at=at), at=at)

    def undo(self, flow_id: UUID, *, at: datetime | None = None) -> FlowReply:
        """Withdraw the last accepted answer and ask its step again."""
        return self._flow_command(flow_id, lambda f, d, at: f.undo(d, at=at), at=at)

    def confirm(self, flow_id: UUID, *, at: datetime | None = None) -> FlowReply:
        """Confirm the summary: the run completes."""
        return self._flow_command(flow_id, lambda f, d, at: f.confirm(d, at=at), at=at)

    def cancel(self, flow_id: UUID, reason: str = "", *, at: datetime | None = None) -> FlowReply:
        """Give up the run where it is."""
        check_values(reason)
        return self._flow_command(flow_id, lambda f, d, at: f.cancel(reason, at=at), at=at)

    def expire_flow(self, flow_id: UUID, *, at: datetime | None = None) -> bool:
        """Expire the run if it has been idle past its timeout (the run judges that itself;
        no definition needed); True if it expired now."""
        at = self._now(at)
        expired: list[bool] = []

        def work() -> list[Aggregate]:
            flow = self._load(flow_id, Flow, cached=True)
            expired[:] = [flow.is_idle_at(at)]
            if not expired[0]:
                return [flow]  # nothing to record
            conversation = self._load(flow.conversation_id, Conversation, cached=True)
            expire_run(flow, conversation, at)
            return [conversation, flow]

        self._transact(work)
        return expired[0]

    def _flow_command(
        self, flow_id: UUID, act: Act, *, at: datetime | None, said: tuple[str, str] | None = None
    ) -> FlowReply:
        """Run one command on a flow and its conversation, saved together. A run found idle
        past its timeout is expired instead, and the command refused with FlowExpired."""
        at = self._now(at)
        outcome: list[FlowReply | None] = []

        def work() -> list[Aggregate]:
            flow = self._load(flow_id, Flow, cached=True)
            conversation = self._load(flow.conversation_id, Conversation, cached=True)
            if flow.is_idle_at(at):  # expiring needs no definition: any run can expire
                expire_run(flow, conversation, at)
                outcome[:] = [None]
                return [conversation, flow]
            definition = self._definition_of(flow)
            if said is not None:
                conversation.add_message(said[0], Role.USER, said[1], at=at)
            accepted = act(flow, definition, at) is not False
            if flow.status is not FlowStatus.ACTIVE:
                conversation.finish_flow(flow.id, flow.status, at=at)
            reply = FlowReply.of(flow, definition, accepted=accepted)
            if said is not None:
                text = self.phrase(reply)
                conversation.add_message(f"{said[0]}:reply", Role.ASSISTANT, text, at=at)
            outcome[:] = [reply]
            return [conversation, flow]

        self._transact(work)
        if outcome[0] is None:
            raise FlowExpired(f"flow {flow_id} expired after being idle; start it again")
        return outcome[0]

    def _definition_of(self, flow: Flow) -> FlowDefinition:
        return self.definition(flow.definition, flow.definition_version)


def expire_run(flow: Flow, conversation: Conversation, at: datetime) -> FlowReply:
    """The run expires, and its conversation is free for another; the run's last reply."""
    flow.expire(at=at)
    conversation.finish_flow(flow.id, FlowStatus.EXPIRED, at=at)
    return FlowReply(
        flow_id=flow.id,
        accepted=True,
        status=FlowStatus.EXPIRED,
        step=None,
        prompt=None,
        answered=tuple(flow.answers),
    )
