"""A server killed outright while 32 clients send it messages: every message it acknowledged
is in its conversation exactly once when it is started again, whatever was in flight (the
messages are committed in shared commits on the event loop's own connection)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    AUTH,
    Server,
    server_env_fixture,
    server_schema_fixture,
)

CLIENTS = 32


def test_every_message_acknowledged_before_a_kill_is_kept_exactly_once(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    first = Server(server_env, log).start()
    with httpx.Client(base_url=first.url, timeout=30) as client:
        cids = [
            client.post("/v1/conversations", json={}, headers=AUTH).json()["conversation_id"]
            for _ in range(16)
        ]
    acknowledged: list[tuple[str, str]] = []
    stop = threading.Event()

    def send(k: int) -> None:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            n = 0
            while not stop.is_set():
                cid, message_id = cids[(k + n) % len(cids)], f"c{k}-{n}"
                n += 1
                body = {"text": f"note {message_id}", "message_id": message_id}
                path = f"/v1/conversations/{cid}/messages"
                try:
                    answer = client.post(path, json=body, headers=AUTH)
                except httpx.TransportError:
                    return  # the server is gone: this one's outcome is unknown
                if answer.status_code == 200:
                    acknowledged.append((cid, message_id))

    senders = [threading.Thread(target=send, args=(k,)) for k in range(CLIENTS)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill()  # SIGKILL, with requests in flight
    stop.set()
    for sender in senders:
        sender.join(30)
    assert len(acknowledged) >= 400

    second = Server(server_env, log).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            kept: Counter[tuple[str, str]] = Counter()
            for cid in cids:
                view = client.get(f"/v1/conversations/{cid}", headers=AUTH).json()
                for message in view["conversation"]["messages"]:
                    kept[(cid, message["id"])] += 1
    finally:
        second.stop()
    assert [m for m in acknowledged if kept[m] != 1] == []  # none lost, none twice
    assert max(kept.values()) == 1  # nothing in flight was recorded twice either
