"""Memory and the domain alone: commands per second on one conversation with no store, and
the resident memory of a process holding many idle conversations."""

from __future__ import annotations

import os
import time

from ...domain.conversation import Conversation
from .harness import NOW, Bench, Figure, Result


def in_memory(bench: Bench) -> Result:
    """Commands per second on one conversation with no store at all."""
    n = bench.setting.in_memory_commands

    def ours() -> dict[str, float]:
        conversation = Conversation.start("bench", at=NOW)
        started = time.perf_counter()
        for i in range(n):
            if i % 5 == 0:
                conversation.add_message(str(i), "user", "hello", at=NOW)
            else:
                conversation.record_levels(-20.0, -12.0, 40.0, at=NOW)
        return {"commands_per_s": n / (time.perf_counter() - started)}

    mine = bench.repeat(ours)
    claim = Figure(50_000, 50_000, 50_000, 1)
    ratio = mine["commands_per_s"].median / claim.median
    return Result(
        "in-memory commands on one conversation",
        "commands/s",
        mine,
        {"the in-memory reference's claim": claim},
        {"ours / claim": ratio},
        ">= 100,000 commands/s",
        mine["commands_per_s"].median >= 100_000,
        notes="mix: 1 message per 4 level readings",
    )


def memory(bench: Bench) -> Result:
    """Resident memory of a process holding many idle conversations."""
    n = bench.setting.memory_conversations
    before = rss_mb()
    for _ in range(n):
        cid = bench.engine.start_conversation("bench")
        bench.engine.add_message(cid, "user", "hello")
    after = rss_mb()
    figure = Figure(after, after, after, 1)
    return Result(
        f"memory with {n:,} idle conversations",
        "MB resident",
        {"rss_mb": figure},
        {"before": Figure(before, before, before, 1)},
        {},
        "< 500 MB",
        after < 500,
        notes=f"aggregate cache bound: {bench.engine.store.cache_size} conversations",
    )


def rss_mb() -> float:
    """This process's resident memory in MB."""
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
