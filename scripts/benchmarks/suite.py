"""Every benchmark of `voxledger bench`, by name, in the order they run."""

from __future__ import annotations

from collections.abc import Callable

from .audio import audio
from .harness import Bench, Result, Setting
from .memory import in_memory, memory
from .projections import projection
from .replay import replay
from .voice import voice_socket
from .writes import concurrent, single_writer

BENCHMARKS: dict[str, Callable[[Bench], Result]] = {
    "single_writer": single_writer,
    "concurrent": concurrent,
    "replay": replay,
    "projection": projection,
    "audio": audio,
    "voice_socket": voice_socket,
    "in_memory": in_memory,
    "memory": memory,
}


def run_all(database_url: str, setting: Setting, only: set[str] | None = None) -> list[Result]:
    """Every benchmark (or those named in ``only``), in one run against one database."""
    results = []
    with Bench(database_url, setting) as bench:
        for name, benchmark in BENCHMARKS.items():
            if only and name not in only:
                continue
            results.append(benchmark(bench))
    return results
