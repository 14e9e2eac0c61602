"""`voxledger deliver` as a process of its own, killed (SIGKILL) or stopped (SIGTERM) in the
middle of its work and started again: nothing recorded is lost; after a kill what it repeats
is at most the message that was in flight, after a stop nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from conftest import Spawn, StepClock
from fake_telegram import FakeTelegram
from test_telegram_bot import AUDIO, DATE, MENU, wait_for

from voxledger.adapters.bootstrap import open_services
from voxledger.adapters.chat.bot import Incoming
from voxledger.adapters.chat.channels import ChannelSettings
from voxledger.adapters.services import Services

CHATS = range(9101, 9113)  # twelve chats, three replies each


@pytest.fixture
def bot_api() -> Iterator[FakeTelegram]:
    server = FakeTelegram(clock=time.time).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def services(
    database_url: str, schema: str, clock: StepClock, bot_api: FakeTelegram
) -> Iterator[Services]:
    channels = ChannelSettings(telegram_token=bot_api.token, telegram_api_url=bot_api.url)
    with open_services(database_url, schema=schema, clock=clock, channels=channels) as s:
        yield s


def deliverer(spawn: Spawn, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return spawn(
        [sys.executable, "-m", "voxledger.scripts.main", "deliver", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("a"),
        text=True,
    )


@pytest.mark.parametrize(
    ("stop", "repeats"),
    [
        (signal.SIGKILL, 1),  # a crash: at most the one in flight when it died
        (signal.SIGTERM, 0),  # a stop: the sends under way finish and are recorded
    ],
)
def test_a_delivery_worker_stopped_mid_way_loses_nothing_and_repeats_at_most_what_was_in_flight(
    stop: signal.Signals,
    repeats: int,
    services: Services,
    bot_api: FakeTelegram,
    cli_env: dict[str, str],
    spawn: Spawn,
    tmp_path: Path,
) -> None:
    bot = services.bot("intake")
    ids = count(1)
    conversations = []
    for chat in CHATS:
        bot_api.add_chat(chat, first_name="Ada")
        for text in ("/start", "interview", "1042"):
            reply = bot.handle_chat(
                Incoming(
                    channel="telegram", chat_id=str(chat), message_id=str(next(ids)), text=text
                )
            )
        conversations.append(reply.conversation_id)
    assert bot_api.calls_to("sendMessage") == []
    env = {
        **cli_env,
        "VOXLEDGER_TELEGRAM_TOKEN": bot_api.token,
        "VOXLEDGER_TELEGRAM_API_URL": bot_api.url,
        "VOXLEDGER_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "deliver.log"

    def sent() -> int:
        return sum(1 for c in bot_api.calls_to("sendMessage") if c.status == 200)

    first = deliverer(spawn, env, log)
    wait_for(lambda: sent() >= 12, "a third of the messages to go out", timeout=60)
    first.send_signal(stop)
    code = first.wait(30)
    assert stop == signal.SIGKILL or code == 0, log.read_text()[-3000:]
    assert 12 <= sent() < 36  # stopped in the middle of its work

    second = deliverer(spawn, env, log)
    engine = services.engine

    def all_recorded() -> bool:
        return all(not engine.pending_outbound(cid).items for cid in conversations)

    wait_for(all_recorded, "every delivery's outcome to be recorded", timeout=120)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, log.read_text()[-3000:]

    repeated = 0
    for chat in CHATS:
        said = [m["text"] for m in bot_api.messages(chat) if m["from"]["is_bot"]]
        once = [text for i, text in enumerate(said) if i == 0 or text != said[i - 1]]
        assert [once[0].split("\n")[0], *once[1:]] == [MENU, AUDIO, DATE]  # nothing lost
        repeated += len(said) - len(once)
    assert repeated <= repeats
    for cid in conversations:
        outcomes = [e for e in engine.history(cid) if e.type == "OutboundDelivered"]
        assert len(outcomes) == 3  # one recorded outcome each
