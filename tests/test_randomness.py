"""The random bytes of nonces and command ids (`domain.randomness`): drawn a block at a time,
they must still never repeat, across block boundaries, threads and forks."""

from __future__ import annotations

import os
import threading

import pytest

from voxledger.domain.randomness import BLOCK_BYTES, random_bytes


@pytest.mark.parametrize("size", [12, 16, 7, BLOCK_BYTES, BLOCK_BYTES + 1])
def test_values_have_the_size_asked_and_never_repeat_across_blocks(size: int) -> None:
    count = max(3, 30 * BLOCK_BYTES // size)  # thirty blocks' worth, or a few big values
    drawn = [random_bytes(size) for _ in range(count)]
    assert {len(value) for value in drawn} == {size}
    assert len(set(drawn)) == count


def test_values_vary_in_every_bit() -> None:
    """No byte of a slice is fixed: every bit of a 12-byte value is seen both ways."""
    seen_set, seen_clear = 0, 0
    full = (1 << 96) - 1
    for _ in range(2000):
        value = int.from_bytes(random_bytes(12))
        seen_set |= value
        seen_clear |= ~value & full
    assert seen_set == full and seen_clear == full


def test_threads_drawing_at_once_never_get_the_same_bytes() -> None:
    per_thread, threads = 20_000, 8
    results: list[list[bytes]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def draw(into: list[bytes]) -> None:
        start.wait()
        into.extend(random_bytes(12) for _ in range(per_thread))

    workers = [threading.Thread(target=draw, args=(r,)) for r in results]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    everything = [value for drawn in results for value in drawn]
    assert len(everything) == per_thread * threads
    assert len(set(everything)) == len(everything)


def test_a_forked_child_never_hands_out_what_its_parent_does() -> None:
    random_bytes(12)  # a block is waiting in this process: the child must not use it
    count = 2 * BLOCK_BYTES // 12
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        try:
            os.close(reader)
            with os.fdopen(writer, "wb") as out:
                out.write(b"".join(random_bytes(12) for _ in range(count)))
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as given:
        from_child = given.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child_values = {from_child[at : at + 12] for at in range(0, len(from_child), 12)}
    parent_values = {random_bytes(12) for _ in range(count)}
    assert len(child_values) == count
    assert not child_values & parent_values
