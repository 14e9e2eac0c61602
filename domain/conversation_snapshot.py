"""A conversation's snapshot: its whole state at one version, stored every so many events so
that a long conversation loads from the snapshot and the few events after it."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.utils import register_topic, resolve_topic

from .conversation_values import ConversationState


class ConversationSnapshot(Aggregate.Snapshot):
    """A conversation's whole state at one version, so long streams load fast."""

    TOPIC = "voxledger:Conversation.Snapshot"
    PERSONAL = ("state",)  # the whole state: messages, context, participant
    state: ConversationState  # type: ignore[assignment]

    @classmethod
    def take(cls, aggregate: Any) -> ConversationSnapshot:  # type: ignore[override]
        """Snapshot the conversation as it is now."""
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=aggregate.modified_on,
            topic=cls.TOPIC,
            state=aggregate.state(),
        )

    def mutate(self, _: None) -> Any:  # type: ignore[override]
        """Rebuild the conversation from the snapshot."""
        # The aggregate's module imports this one: its class is found by its topic (this
        # one's, less ".Snapshot"), as the library finds the class of any snapshot.
        conversation = resolve_topic(self.TOPIC.rpartition(".")[0])
        return conversation.from_state(self.state)


register_topic(ConversationSnapshot.TOPIC, ConversationSnapshot)
