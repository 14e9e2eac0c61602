"""The log set-up: the request line written straight is the line structlog's chain writes."""

from __future__ import annotations

import asyncio
import io
import json
import select
import sys
from collections.abc import Iterator

import pytest
import structlog

from voxledger.adapters.logs import bound_logger, configure_logging, info_line


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """What is written to stderr; structlog's configuration put back afterwards."""
    before = structlog.get_config()
    yield capsys
    structlog.configure(**before)
    structlog.contextvars.clear_contextvars()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_the_line_written_straight_is_the_chains_line(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True, fields={"worker": 3})
    structlog.contextvars.bind_contextvars(conversation_id="c-1", served_by=1, status="bound")
    values = {"method": "POST", "path": "/telegram/webhook", "status": 200, "duration_ms": 1.5}
    bound_logger("voxledger.http").info("http.request", **values)
    info_line("voxledger.http", "http.request", **values)

    written = stderr.readouterr().err
    chain, straight = lines(written)
    assert list(chain) == list(straight)  # the same keys, in the same order
    assert chain.pop("timestamp") <= straight.pop("timestamp")
    assert (
        chain
        == straight
        == {
            **values,  # a value given wins over one bound to the context
            "event": "http.request",
            "worker": 3,
            "conversation_id": "c-1",
            "served_by": 1,
            "level": "info",
        }
    )
    assert written.count("\n") == 2


def test_another_configuration_is_followed(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    with structlog.testing.capture_logs() as captured:  # changes the processors in place
        info_line("voxledger.http", "http.request", status=200)
    assert captured == [{"event": "http.request", "status": 200, "log_level": "info"}]

    structlog.configure(processors=[structlog.processors.JSONRenderer()])  # a new chain
    info_line("voxledger.http", "http.request", status=201)
    assert lines(stderr.readouterr().err) == [{"status": 201, "event": "http.request"}]


def test_nothing_is_written_below_the_configured_level(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", json=True)
    info_line("voxledger.http", "http.request", status=200)
    configure_logging("INFO", json=False)
    info_line("voxledger.http", "http.request", status=200)
    written = stderr.readouterr().err
    assert written.count("http.request") == 1  # the console line only
    assert not written.startswith("{")


def test_a_line_with_an_exception_has_it_rendered(stderr: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    try:
        raise ValueError("the reason")
    except ValueError as error:
        info_line("voxledger.http", "http.request", status=500, exc_info=error)
    (line,) = lines(stderr.readouterr().err)
    assert "exc_info" not in line
    assert "ValueError: the reason" in str(line["exception"])


class _Writes(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def out(stderr: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> _Writes:
    """stderr as a stream that remembers each write, JSON lines configured to it."""
    writes = _Writes()
    monkeypatch.setattr(sys, "stderr", writes)
    configure_logging("INFO", json=True)
    return writes


def test_the_lines_of_one_turn_of_the_event_loop_are_written_together_as_it_ends(
    out: _Writes,
) -> None:

    async def serve() -> None:
        for k in range(60):
            info_line("voxledger.http", "http.request", k=k, path="/é" * 20)
        assert out.writes == []  # the turn has not ended
        await asyncio.sleep(0)
        assert out.writes
        info_line("voxledger.http", "http.request", k=60)

    asyncio.run(serve())
    # Whole lines, in order, in as few writes as a pipe keeps whole (PIPE_BUF bytes each).
    assert all(text.endswith("\n") for text in out.writes)
    assert all(len(text.encode()) <= select.PIPE_BUF for text in out.writes)
    assert 2 < len(out.writes) < 20
    assert [line["k"] for line in lines(out.getvalue())] == list(range(61))

    info_line("voxledger.http", "http.request", k=61)  # outside a loop: at once
    assert [line["k"] for line in lines(out.writes[-1])] == [61]


def test_lines_held_by_a_loop_that_stopped_go_out_with_the_next_loops(out: _Writes) -> None:
    first = asyncio.new_event_loop()

    async def log_and_stop() -> None:
        info_line("voxledger.http", "http.request", k=1)
        asyncio.get_running_loop().stop()  # before the turn's end runs

    task = first.create_task(log_and_stop())
    first.run_forever()
    first.close()  # the flush it held is dropped with it
    assert task.done()

    async def log(k: int) -> None:
        info_line("voxledger.http", "http.request", k=k)
        await asyncio.sleep(0)

    asyncio.run(log(2))
    assert [line["k"] for line in lines(out.getvalue())] == [1, 2]
