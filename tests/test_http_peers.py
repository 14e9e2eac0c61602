"""Serving workers hand each chat's messages to the worker that owns the chat (`Peers`): on
Unix sockets in a folder of the supervisor's. Each answer reaches the request it answers; an
owner that cannot be reached leaves the request to the worker that took it; one lost before
it answered is an outage (503), not a hang; closing answers what was asked first."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import anyio
import pytest

from voxledger.adapters.http.peers import (
    MESSAGES_ROUTE,
    SPEECH_ROUTE,
    WEBHOOK_ROUTE,
    PeerAnswer,
    PeerLost,
    PeerRequest,
    Peers,
)
from voxledger.domain.errors import Unavailable


def echo_after(pause_s: float = 0.0, *, seed: int = 7) -> object:
    """An owner's answerer: the body back, with the conversation it names, after a pause
    (random up to ``pause_s``, so that answers come back out of order)."""
    rng = random.Random(seed)

    async def answer(request: PeerRequest) -> PeerAnswer:
        await asyncio.sleep(rng.uniform(0, pause_s))
        return PeerAnswer(200, [(b"x-route", str(request.route).encode())], request.body, "c")

    return answer


def test_each_answer_reaches_the_request_it_answers(tmp_path: Path) -> None:
    asker, owner = Peers(0, 2, str(tmp_path)), Peers(1, 2, str(tmp_path))
    owner.answer_with(echo_after(0.02), WEBHOOK_ROUTE, MESSAGES_ROUTE)

    async def main() -> list[PeerAnswer | None]:
        await owner.start()
        try:
            requests = [PeerRequest(k % 2, f"body {k}".encode()) for k in range(60)]
            return await asyncio.gather(*(asker.ask(1, r) for r in requests))
        finally:
            await asker.close()
            await owner.close()

    answers = anyio.run(main)
    for k, answer in enumerate(answers):
        assert answer is not None
        assert answer.body == f"body {k}".encode() and answer.status == 200
        assert answer.headers == [(b"x-route", str(k % 2).encode())]
        assert answer.conversation_id == "c"
    assert (WEBHOOK_ROUTE, MESSAGES_ROUTE) == (0, 1)


def test_an_owner_that_cannot_be_reached_leaves_the_request_where_it_arrived(
    tmp_path: Path,
) -> None:
    asker = Peers(0, 2, str(tmp_path))  # worker 1 never started: no socket

    async def main() -> tuple[PeerAnswer | None, PeerAnswer | None]:
        first = await asker.ask(1, PeerRequest(WEBHOOK_ROUTE, b"{}"))
        again = await asker.ask(1, PeerRequest(WEBHOOK_ROUTE, b"{}"))  # not tried for a while
        return first, again

    assert anyio.run(main) == (None, None)


def test_an_owner_lost_before_it_answered_is_an_outage_not_a_hang(tmp_path: Path) -> None:
    asker, owner = Peers(0, 2, str(tmp_path)), Peers(1, 2, str(tmp_path))

    async def main() -> None:
        arrived = asyncio.Event()

        async def never(_: PeerRequest) -> PeerAnswer:
            arrived.set()
            await asyncio.Event().wait()
            raise AssertionError("not reached")

        owner.answer_with(never, WEBHOOK_ROUTE)
        await owner.start()
        waiting = asyncio.ensure_future(asker.ask(1, PeerRequest(WEBHOOK_ROUTE, b"{}")))
        await arrived.wait()
        for connection in list(owner._answering):  # the owner's process dies
            connection.transport.abort()
        with pytest.raises(PeerLost) as lost:
            await asyncio.wait_for(waiting, 10)
        assert isinstance(lost.value, Unavailable)  # answered 503
        for connection in list(owner._answering):
            connection.abort()
        await owner.close()

    anyio.run(main)


def test_closing_answers_what_was_asked_and_then_takes_no_more(tmp_path: Path) -> None:
    asker, owner = Peers(0, 2, str(tmp_path)), Peers(1, 2, str(tmp_path))
    arrived: list[bytes] = []

    async def slow(request: PeerRequest) -> PeerAnswer:
        arrived.append(request.body)
        await asyncio.sleep(0.2)
        return PeerAnswer(200, [], request.body)

    owner.answer_with(slow, WEBHOOK_ROUTE)

    async def main() -> tuple[PeerAnswer | None, PeerAnswer | None]:
        await owner.start()
        waiting = asyncio.ensure_future(asker.ask(1, PeerRequest(WEBHOOK_ROUTE, b"first")))
        while not arrived:
            await asyncio.sleep(0.01)
        await owner.close()  # waits for the answer in progress
        first = await asyncio.wait_for(waiting, 10)
        later = await asker.ask(1, PeerRequest(WEBHOOK_ROUTE, b"later"))
        await asker.close()
        return first, later

    first, later = anyio.run(main)
    assert first is not None and first.body == b"first"
    assert later is None and arrived == [b"first"]  # answered where it arrived
    assert not (tmp_path / "worker-1.sock").exists()


def test_every_worker_names_the_same_owner_and_chats_spread_over_them(tmp_path: Path) -> None:
    workers = [Peers(k, 3, str(tmp_path)) for k in range(3)]
    chats = [str(1_000_000 + k).encode() for k in range(3000)]
    owners = [[w.owner(chat) for chat in chats] for w in workers]
    assert owners[0] == owners[1] == owners[2]
    shares = [owners[0].count(k) / len(chats) for k in range(3)]
    assert all(0.3 < share < 0.37 for share in shares), shares


def test_asking_the_others_hears_from_those_that_answer_the_route(tmp_path: Path) -> None:
    """A worker asks every other at once (a live call is held by whichever worker took it):
    the answers come back by worker; one that declines, or answers no such route, is left
    out; one lost before it answered counts only when nobody answered."""
    asker, holder, other = (Peers(k, 3, str(tmp_path)) for k in range(3))

    arrived = asyncio.Event()

    async def holds(request: PeerRequest) -> PeerAnswer:
        if request.body == b"call-3":  # its worker dies as it plays it
            arrived.set()
            await asyncio.Event().wait()
        held = request.body == b"call-1"
        return PeerAnswer(202, [], b"spoken") if held else PeerAnswer(0, [], b"")

    holder.answer_with(holds, SPEECH_ROUTE)

    async def main() -> None:
        await holder.start()
        await other.start()  # answers no voice route: declines
        try:
            answered = await asker.ask_others(PeerRequest(SPEECH_ROUTE, b"call-1"))
            assert {k: a.body for k, a in answered.items()} == {1: b"spoken"}
            assert await asker.ask_others(PeerRequest(SPEECH_ROUTE, b"call-2")) == {}
            assert await asker.ask_others(PeerRequest(WEBHOOK_ROUTE, b"{}")) == {}
            lost = asyncio.ensure_future(asker.ask_others(PeerRequest(SPEECH_ROUTE, b"call-3")))
            await arrived.wait()
            for connection in list(holder._answering):
                connection.transport.abort()
            with pytest.raises(PeerLost):
                await asyncio.wait_for(lost, 10)
            for connection in list(holder._answering):
                connection.abort()
        finally:
            await holder.close()
            await other.close()
        # Both gone: nothing to ask (their sockets are removed), nobody answers.
        await asker.close()
        assert await asker.ask_others(PeerRequest(SPEECH_ROUTE, b"call-1")) == {}

    anyio.run(main)


class Session:
    """A call's session as `LiveStreams.speak_here` uses it: it turns audio into messages,
    or fails as its database write would."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.marks_waiting: list[str] = []

    async def speak(self, pcm: bytes, mark: str | None) -> list[str]:
        if self.failure is not None:
            raise self.failure
        self.marks_waiting.append(mark or "voxledger-1")
        return [f"media {len(pcm)}", "mark"]


def test_speech_for_a_call_another_worker_holds_is_played_there_and_its_failure_answered(
    tmp_path: Path,
) -> None:
    """The worker holding the call plays what another took; a refusal comes back as the
    same error, the database's failure as an outage, and neither closes the link the
    chats handed over share."""
    import psycopg

    from voxledger.adapters.audio.live import LiveStream, LiveStreams
    from voxledger.adapters.http.voice_workers import OtherWorkers
    from voxledger.domain.errors import BadInput, NotFound

    asking, holding = LiveStreams(), LiveStreams()
    peers = [Peers(k, 2, str(tmp_path)) for k in range(2)]
    OtherWorkers(peers[0], asking)
    OtherWorkers(peers[1], holding)
    peers[1].answer_with(echo_after(), WEBHOOK_ROUTE)
    calls = {name: uuid.uuid4() for name in ("fine", "down", "broken")}
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    async def main() -> None:
        await peers[1].start()
        try:
            failures = {"down": psycopg.OperationalError("server closed"), "broken": KeyError("x")}
            for name, cid in calls.items():
                session = Session(failures.get(name))
                await holding.claim(cid, LiveStream(session, send))  # type: ignore[arg-type]
            spoken = await asking.speak(calls["fine"], bytes(320), mark="hello")
            assert (spoken.mark, spoken.duration_s, spoken.messages) == ("hello", 0.02, 2)
            assert sent == ["media 320", "mark"]
            with pytest.raises(BadInput, match="inside a sample"):
                await asking.speak(calls["fine"], bytes(3))
            with pytest.raises(Unavailable, match="the database is unavailable"):
                await asking.speak(calls["down"], bytes(320))
            with pytest.raises(RuntimeError, match="failed to play it"):
                await asking.speak(calls["broken"], bytes(320))
            with pytest.raises(NotFound, match="has no live call"):
                await asking.speak(uuid.uuid4(), bytes(320))
            # The link is whole: a chat's message handed over on it is answered.
            answer = await peers[0].ask(1, PeerRequest(WEBHOOK_ROUTE, b"update"))
            assert answer is not None and answer.body == b"update"
        finally:
            await peers[0].close()
            await peers[1].close()

    anyio.run(main)
