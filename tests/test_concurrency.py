"""Many threads in several processes write to the same conversations and flows, and some
processes are killed with SIGKILL at random points. Afterwards every acknowledged command is
in the log exactly once, versions have no gaps, and every flow finishes correctly.

Run on their own with `pytest -m concurrency`; VOXLEDGER_TORTURE_SCALE (default 1) makes the
runs longer by hand (CI runs the short setting).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Spawn
from test_projections import dump, running  # the projection suite's own helpers

from voxledger.adapters.bootstrap import open_projections
from voxledger.domain.engine import Engine
from voxledger.domain.flow import FlowStatus

pytestmark = pytest.mark.concurrency
WORKER = str(Path(__file__).parent / "workers" / "hammer.py")
SCALE = int(os.environ.get("VOXLEDGER_TORTURE_SCALE", "1"))


def start(spawn, env, name: str, threads: int, commands: int, conversations, flows=()):
    return spawn(
        [
            sys.executable,
            WORKER,
            name,
            str(threads),
            str(commands),
            ",".join(map(str, conversations)),
            *([",".join(map(str, flows))] if flows else []),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def logged_messages(engine: Engine, conversations) -> Counter:
    engine.store.forget_cached()
    found: Counter = Counter()
    for cid in conversations:
        history = engine.history(cid)
        assert [h.version for h in history] == list(range(1, len(history) + 1))
        found.update(h.data["message_id"] for h in history if h.type == "MessageAdded")
    return found


def test_many_threads_in_several_processes_lose_and_duplicate_nothing(
    engine: Engine, cli_env: dict[str, str], spawn: Spawn
) -> None:
    conversations = [engine.start_conversation("chat") for _ in range(4)]
    flows = [
        engine.start_flow(engine.start_conversation("chat"), "intake", "design").flow_id
        for _ in range(3)
    ]
    processes = [
        start(spawn, cli_env, f"p{i}", 6, 25 * SCALE, conversations, flows) for i in range(3)
    ]
    acked = []
    with running(engine):  # the projections tail the log while the writers race
        for process in processes:
            out, _ = process.communicate(timeout=300)
            assert process.returncode == 0
            acked += [line.split()[2] for line in out.splitlines() if line.startswith("message")]
        open_projections(engine.store).wait_for(engine.store.head(), timeout=60)
    found = logged_messages(engine, conversations)
    assert sum(found.values()) == len(found), "a message was recorded twice"
    assert set(found) == set(acked), "acknowledged and recorded messages differ"
    assert len(acked) >= 3 * 6 * 25 * SCALE * 0.9  # most commands got through their retries
    print(
        f"concurrency: sent {3 * 6 * 25 * SCALE}, acknowledged {len(acked)}, "
        f"recorded {len(found)}, lost 0, duplicated 0"
    )
    for flow_id in flows:
        state = engine.get_flow(flow_id)
        assert state.status is FlowStatus.COMPLETED and state.answers["city"] == "Kazan"
    assert dump(engine) == dump(engine, rebuild=True)  # live projections equal a rebuild


def test_processes_killed_at_random_points_lose_nothing_acknowledged(
    engine: Engine, cli_env: dict[str, str], spawn: Spawn
) -> None:
    rng = random.Random(1)
    conversations = [engine.start_conversation("chat") for _ in range(3)]
    flows = [
        engine.start_flow(engine.start_conversation("chat"), "intake", "interview").flow_id
        for _ in range(2)
    ]
    kills = 12 * SCALE
    acked: list[str] = []
    for round_ in range(kills):
        process = start(spawn, cli_env, f"k{round_}", 4, 40, conversations, flows)
        # Killed while it writes, however long a busy machine takes to start it: after its
        # first acknowledged command, at a random point of the work that follows.
        first = process.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
        out, _ = process.communicate(timeout=60)
        lines = [first, *out.splitlines()]
        acked += [line.split()[2] for line in lines if line.startswith("message")]
    finisher = start(spawn, cli_env, "final", 1, 1, conversations, flows)
    out, _ = finisher.communicate(timeout=120)
    assert finisher.returncode == 0 and out.splitlines()[-1] == "done"
    acked += [line.split()[2] for line in out.splitlines() if line.startswith("message")]
    found = logged_messages(engine, conversations)
    assert sum(found.values()) == len(found), "a message was recorded twice"
    assert set(acked) <= set(found), "an acknowledged message was lost"
    assert len(acked) > kills  # the kills really came in the middle of work
    print(
        f"crashes: {kills} kills, acknowledged {len(acked)}, recorded {len(found)}, "
        f"lost {len(set(acked) - set(found))}, duplicated {sum(found.values()) - len(found)}"
    )
    for flow_id in flows:  # every flow resumed where it was and finished
        state = engine.get_flow(flow_id)
        assert state.status is FlowStatus.COMPLETED
        assert state.answers["client_name"] == "Acme" and "city" not in state.answers
