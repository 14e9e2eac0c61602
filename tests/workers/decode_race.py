"""A fresh process in which eight threads decode every kind of stored event at once, each
event class for the first time (plans cleared), with the GIL switching as often as it can:
the way a served process meets its first burst of traffic. Exits 0 if nothing crashed."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

from eventsourcing.persistence import JSONTranscoder

from voxledger.adapters.store import mapper as mapping
from voxledger.domain.conversation import Conversation

sys.setswitchinterval(1e-6)
at = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
codec = mapping.MsgspecMapper(transcoder=JSONTranscoder())
conversation = Conversation.start("voice", "ann", {"k": 1}, at=at)
conversation.connect("audio", "c1", 12.5, at=at)
conversation.listen(at=at)
conversation.add_message("m1", "user", "hello", at=at)
conversation.start_turn("t1", "m1", at=at)
conversation.record_levels(-20.0, -12.0, 40.0, at=at)
conversation.update_context({"a": [1, 2]}, at=at)
stored = [codec.to_stored_event(e) for e in conversation.collect_events()]
stored.append(codec.to_stored_event(Conversation.Snapshot.take(conversation)))
if sys.argv[1:] == ["cold"]:
    mapping._PLANS.clear()  # as if these classes were met for the first time in threads
start = threading.Barrier(8)


def decode_all() -> None:
    start.wait()
    for event in stored:
        codec.to_domain_event(event)


threads = [threading.Thread(target=decode_all) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
