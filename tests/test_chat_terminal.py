"""`voxledger chat`: a terminal conversation that survives a kill and a Ctrl-C."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

from conftest import Spawn

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]
DATE_PROMPT = "bot: When was the visit? For example 21.11.2026."
EMPLOYEE_PROMPT = "bot: Who made the visit? Please send the employee's name."


class Terminal:
    """`voxledger chat` with a pipe for stdin and its stdout read line by line."""

    def __init__(self, spawn: Spawn, env: dict[str, str], *args: str) -> None:
        self.process = spawn(
            [*VOXLEDGER, "chat", *args],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def expect(self, prefix: str, timeout: float = 30) -> str:
        """The next line that starts with ``prefix`` (earlier lines are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(line)
            if line.startswith(prefix):
                return line


def test_a_terminal_chat_killed_and_started_again_continues_the_flow(
    cli_env: dict[str, str], spawn: Spawn
) -> None:
    first = Terminal(spawn, cli_env, "--chat-id", "alice")
    conversation = first.expect("conversation ")
    assert first.expect("bot: ") == "bot: Audio visit report: choose interview or design."
    assert first.expect("     choices:") == "     choices: interview | design"
    first.type("interview")
    assert first.expect("bot: ") == "bot: What is the number of the audio recording?"
    first.type("1042")
    assert first.expect("bot: ") == DATE_PROMPT
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)

    second = Terminal(spawn, cli_env, "--chat-id", "alice")
    assert second.expect("conversation ") == conversation  # the same one, found by chat id
    assert second.expect("bot: ") == DATE_PROMPT  # where it stands, before anything is typed
    second.type("21.11.2026")
    assert second.expect("bot: ") == EMPLOYEE_PROMPT
    second.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert second.process.wait(60) == 130  # a generous bound: a loaded machine is slow to stop
    assert second.process.stderr is not None
    assert "Traceback" not in second.process.stderr.read()

    third = subprocess.run(
        [*VOXLEDGER, "chat", "--chat-id", "alice"],
        env=cli_env,
        input="Ivan Petrov\n/status\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert third.returncode == 0, third.stderr
    out = third.stdout
    assert EMPLOYEE_PROMPT in out and "bot: Which place was visited?" in out
    assert "audio_number: 1042, date: 2026-11-21, employee: Ivan Petrov" in out


def test_another_chat_id_is_another_conversation(cli_env: dict[str, str]) -> None:
    def chat(chat_id: str, lines: str) -> str:
        result = subprocess.run(
            [*VOXLEDGER, "chat", "--chat-id", chat_id],
            env=cli_env,
            input=lines,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "bot: What is the number" in chat("bob", "design\n")
    assert "choose interview or design" in chat("carol", "")  # carol has nothing started
