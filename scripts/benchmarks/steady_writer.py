"""The writer process of the live-lag benchmark: appends at a steady rate from several
threads (group commit) and prints, per event, its log position and the wall time its commit
returned. A process of its own, so that neither the projection runner nor the watcher
shares its interpreter.

Run as ``python -m voxledger.scripts.benchmarks.steady_writer RATE WRITERS SECONDS`` with
the database in $VOXLEDGER_DATABASE_URL and $VOXLEDGER_SCHEMA.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence

from ...adapters.bootstrap import open_engine, system_clock


def write_steadily(rate: int, writers: int, seconds: float) -> list[tuple[int | None, float]]:
    """Append ``rate`` events a second for ``seconds`` from ``writers`` threads, each to a
    conversation of its own; every event's log position and when its commit returned."""
    out: list[tuple[int | None, float]] = []
    clock = system_clock()
    with open_engine() as engine:
        ids = [engine.start_conversation("bench") for _ in range(writers)]
        started = time.perf_counter()

        def write(k: int) -> None:
            for i in range(int(rate * seconds / writers)):
                wait = started + (i * writers + k) / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                conversation = engine.store.load(ids[k], cached=True)  # type: ignore[attr-defined]
                conversation.record_levels(-20.0, -12.0, 40.0, at=clock())
                out.append((engine.store.save(conversation), time.time()))

        threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write, then print one `position time` line per event."""
    rate, writers, seconds = (argv or sys.argv[1:])[:3]
    written = write_steadily(int(rate), int(writers), float(seconds))
    print("\n".join(f"{p} {t}" for p, t in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
