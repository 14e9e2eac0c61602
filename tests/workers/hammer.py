"""A worker process for the concurrency and crash suites.

Threads send messages to shared conversations and walk their own flows, and print one line
per acknowledged command (flushed at once), so a parent that kills this process knows
exactly what was acknowledged before the kill.
"""

from __future__ import annotations

import random
import sys
import threading
import uuid

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.errors import Conflict, InvalidTransition, VoxledgerError

ANSWERS = {
    "audio_number": "1042",
    "date": "21.11.2026",
    "employee": "Ivan",
    "place": "Depot",
    "building_type": "warehouse",
    "zone": "B",
    "city": "Kazan",
    "client_name": "Acme",
    "confirm": "yes",
}


def main() -> None:
    name, threads, commands = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conversations = [uuid.UUID(c) for c in sys.argv[4].split(",")]
    flows = [uuid.UUID(f) for f in sys.argv[5].split(",")] if len(sys.argv) > 5 else []
    lock = threading.Lock()

    def ack(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    with open_engine() as engine:

        def talk(t: int) -> None:
            rng = random.Random(f"{name}-{t}")
            for k in range(commands):
                message_id = f"{name}-{t}-{k}"
                cid = rng.choice(conversations)
                try:
                    engine.add_message(cid, "user", message_id, message_id=message_id)
                except Conflict:
                    continue  # refused cleanly after its retries: not acknowledged
                ack(f"message {cid} {message_id}")

        def walk(flow_id: uuid.UUID) -> None:
            while True:
                reply = engine.flow_prompt(flow_id)
                if reply.step is None:
                    return
                try:
                    reply = engine.answer(flow_id, ANSWERS[reply.step], expected_step=reply.step)
                except (Conflict, InvalidTransition):
                    continue
                except VoxledgerError:
                    return
                ack(f"answer {flow_id} {reply.step}")

        workers = [threading.Thread(target=talk, args=(t,)) for t in range(threads)]
        workers += [threading.Thread(target=walk, args=(f,)) for f in flows]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    ack("done")


if __name__ == "__main__":
    main()
