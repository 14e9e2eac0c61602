"""A server killed outright between two messages of a flow loses nothing: started again,
it continues the flow, and a retried update still gets its original reply."""

from __future__ import annotations

from pathlib import Path

import httpx
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    Server,
    button_update,
    post_update,
    server_env_fixture,
    server_schema_fixture,
    text_update,
)


def test_a_server_killed_between_two_messages_continues_the_flow_when_started_again(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    first = Server(server_env, log).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            post_update(client, text_update(3001, 1, "/start"))
            post_update(client, button_update(3001, "q2", "design"))
            answered = post_update(client, text_update(3001, 3, "1042")).json()
        assert answered["text"] == "When was the visit? For example 21.11.2026."
    finally:
        first.kill()
    assert first.process is not None and first.process.returncode == -9

    second = Server(server_env, log).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            # Telegram retries an update it got no answer to: the original reply comes back.
            assert post_update(client, text_update(3001, 3, "1042")).json() == answered
            reply = post_update(client, text_update(3001, 4, "21.11.2026")).json()
            assert reply["text"] == "Who made the visit? Please send the employee's name."
            status = post_update(client, text_update(3001, 5, "/status")).json()
        assert status["text"].startswith("Audio visit report (design mode), at step employee.")
        assert "audio_number: 1042, date: 2026-11-21" in status["text"]
    finally:
        second.stop()
