"""The Engine's commands on the outbox: how each outbound message's delivery went (one save
per outcome, and a repeated outcome records nothing), and the notices the bot sends on its
own: a form expired, or is about to. A notice is worded by the function the composition
root gives the Engine (`notice`), and recorded in the same save as the expiry it tells of."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from .conversation import Conversation
from .conversation_values import DeliveryStatus, Outbound, OutboundKind, Role, Status
from .definition_commands import DefinitionCommands
from .errors import NotFound
from .flow import Flow, FlowStatus
from .flow_commands import expire_run
from .flow_definition import FlowDefinition
from .flow_reply import FlowReply


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """What a notice is to say: a form expired, or will expire at ``expires_at`` unless the
    user answers (a reminder); ``reply`` is where the form stands."""

    kind: str  # "expired" or "reminder"
    reply: FlowReply
    at: datetime  # when the notice is recorded
    expires_at: datetime | None = None


def own_notice(notice: Notice) -> str:
    """A notice in the flow's own words, with no channel's wording."""
    if notice.kind == "reminder":
        return notice.reply.prompt or str(notice.reply.status)
    return str(notice.reply.status)


class Pending(msgspec.Struct, frozen=True):
    """A conversation's outbound messages still to deliver, in order, and when the user
    last wrote (some channels only take free text for a while after that)."""

    conversation_id: UUID
    channel: str
    items: tuple[Outbound, ...]
    last_inbound_at: datetime | None


class Swept(msgspec.Struct, frozen=True):
    """What a sweep did: the runs expired, the runs reminded, the conversations ended."""

    expired: list[UUID]
    reminded: list[UUID]
    ended: list[UUID]


class OutboxCommands(DefinitionCommands):
    """Record how delivery went; expire and remind with a notice to the user."""

    notice: Callable[[Notice], str]
    end_idle_conversation: Callable[..., bool]  # the conversation commands' own

    # -- delivery ----------------------------------------------------------------------------

    def pending_outbound(self, conversation_id: UUID) -> Pending:
        """What the conversation still has to deliver, oldest first."""
        conversation = self._load(conversation_id, Conversation)
        last = next((m.at for m in reversed(conversation.messages) if m.role is Role.USER), None)
        return Pending(
            conversation.id, conversation.channel, tuple(conversation.outbox.values()), last
        )

    def record_delivered(
        self,
        conversation_id: UUID,
        item_id: str,
        platform_ids: Sequence[str] = (),
        *,
        complete: bool = True,
        at: datetime | None = None,
    ) -> bool:
        """The channel took the outbound message (with ``complete`` false: some of its
        parts); False if its delivery had already ended (nothing recorded)."""
        return self._outcome(
            conversation_id,
            item_id,
            lambda c, at: c.record_delivered(item_id, list(platform_ids), complete=complete, at=at),
            at,
        )

    def record_delivery_failure(
        self,
        conversation_id: UUID,
        item_id: str,
        reason: str,
        *,
        code: int | None = None,
        final: bool,
        at: datetime | None = None,
    ) -> bool:
        """An attempt failed, for good or to be retried; False if the delivery had already
        ended (nothing recorded)."""
        return self._outcome(
            conversation_id,
            item_id,
            lambda c, at: c.record_delivery_failure(item_id, reason, code, final=final, at=at),
            at,
        )

    def record_delivery_status(
        self,
        conversation_id: UUID,
        platform_id: str,
        status: DeliveryStatus | str,
        *,
        code: int | None = None,
        reason: str = "",
        at: datetime | None = None,
    ) -> bool:
        """The channel reported what became of a message it took; False (nothing recorded)
        if the message is not one of this conversation's, or the report is not news."""
        status = DeliveryStatus(status)
        at = self._now(at)
        done: list[bool] = []

        def work() -> list[Aggregate]:
            conversation = self._load(conversation_id, Conversation, cached=True)
            if not conversation.status_moves_on(platform_id, status):
                # A copy in memory may be behind another process's writes (the delivery
                # worker's, say): only a fresh read can say that the report is not news.
                conversation = self._load(conversation_id, Conversation)
            done[:] = [conversation.status_moves_on(platform_id, status)]
            if done[0]:
                conversation.record_delivery_status(platform_id, status, code, reason, at=at)
            return [conversation]

        self._transact(work)
        return done[0]

    def _outcome(
        self,
        conversation_id: UUID,
        item_id: str,
        record: Callable[[Conversation, datetime], None],
        at: datetime | None,
    ) -> bool:
        at = self._now(at)
        done: list[bool] = []

        def work() -> list[Aggregate]:
            conversation = self._load(conversation_id, Conversation, cached=True)
            if not conversation.is_pending(item_id):
                conversation = self._load(conversation_id, Conversation)  # as above
            done[:] = [conversation.is_pending(item_id)]
            if done[0]:
                record(conversation, at)
            return [conversation]

        self._transact(work)
        return done[0]

    # -- expiry and reminders ------------------------------------------------------------------

    def expire_and_notify(self, flow_id: UUID, *, at: datetime | None = None) -> bool:
        """Expire the run if it has been idle past its timeout, and in the same save queue a
        notice telling the user (when the conversation has somewhere to send it); True if
        it expired now."""
        at = self._now(at)
        expired: list[bool] = []

        def work() -> list[Aggregate]:
            flow = self._load(flow_id, Flow, cached=True)
            expired[:] = [flow.is_idle_at(at)]
            if not expired[0]:
                return [flow]
            conversation = self._load(flow.conversation_id, Conversation, cached=True)
            reply = expire_run(flow, conversation, at)
            notice = Notice(kind="expired", reply=reply, at=at)
            self._notify(conversation, f"expired:{flow.id}", notice, at)
            return [conversation, flow]

        self._transact(work)
        return expired[0]

    def remind(self, flow_id: UUID, *, at: datetime | None = None) -> bool:
        """Remind the user of an idle run once, when it is within its definition's
        ``remind_before_s`` of expiring; True if a reminder was queued now."""
        at = self._now(at)
        reminded: list[bool] = []

        def work() -> list[Aggregate]:
            reminded[:] = [False]
            flow = self._load(flow_id, Flow, cached=True)
            try:
                definition = self.definition(flow.definition, flow.definition_version)
            except NotFound:
                return [flow]  # a flow this process does not run: no words for it
            expires_at = _reminder_due(flow, definition, at)
            if expires_at is None:
                return [flow]
            conversation = self._load(flow.conversation_id, Conversation, cached=True)
            cause = f"reminder:{flow.id}:{flow.version}"  # once per stretch of idleness
            reply = FlowReply.of(flow, definition, accepted=True)
            notice = Notice(kind="reminder", reply=reply, at=at, expires_at=expires_at)
            reminded[:] = [self._notify(conversation, cause, notice, at)]
            return [conversation, flow]

        self._transact(work)
        return reminded[0]

    def sweep(
        self,
        now: datetime | None = None,
        *,
        expiring: Iterable[UUID] | None = None,
        reminding: Iterable[UUID] = (),
        conversation_idle_s: float | None = None,
        conversations: Iterable[UUID] | None = None,
    ) -> Swept:
        """Expire the runs idle past their timeout (telling their users), remind the users
        of runs about to expire, and, given a limit, end the conversations idle longer. The
        candidates come from a read model (every run and conversation in the store when
        not given); each one judges its own idleness."""
        now = self._now(now)
        runs = self.store.ids_of(Flow.Started) if expiring is None else expiring
        expired = [flow_id for flow_id in runs if self.expire_and_notify(flow_id, at=now)]
        reminded = [flow_id for flow_id in reminding if self.remind(flow_id, at=now)]
        ended: list[UUID] = []
        if conversation_idle_s is not None:
            if conversations is None:
                conversations = self.store.ids_of(Conversation.Started)
            ended = [
                conversation_id
                for conversation_id in conversations
                if self.end_idle_conversation(conversation_id, conversation_idle_s, at=now)
            ]
        return Swept(expired, reminded, ended)

    def _notify(self, conversation: Conversation, cause: str, notice: Notice, at: datetime) -> bool:
        """Queue a notice where the conversation's last outbound message went; False when
        it has nowhere to send one, has ended, or already had this one."""
        address = conversation.address
        if address is None or conversation.status is Status.ENDED or cause in conversation.notices:
            return False
        text = self.notice(notice)
        conversation.queue_outbound(cause, OutboundKind.NOTICE, address, text, cause=cause, at=at)
        return True


def _reminder_due(flow: Flow, definition: FlowDefinition, at: datetime) -> datetime | None:
    """When the run expires, if it is active and within its reminder time of that now."""
    timeout, before = flow.idle_timeout_s, definition.remind_before_s
    if flow.status is not FlowStatus.ACTIVE or timeout is None or before is None:
        return None
    expires_at = flow.modified_on + timedelta(seconds=timeout)
    if expires_at - timedelta(seconds=before) <= at < expires_at:
        return expires_at
    return None
