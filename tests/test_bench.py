"""`voxledger bench --quick` runs every benchmark and reports figures in the agreed shape.
(Speed itself is never asserted in tests: the machine is shared and noisy.)"""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_reports_each_benchmark_with_figures_ratios_and_targets(
    cli_env: dict[str, str],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "bench", "--quick", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    names = [r["name"] for r in results]
    assert len(names) == len(set(names)) >= 6
    for r in results:
        assert set(r) >= {"name", "unit", "ours", "references", "ratios", "target", "met"}
        for figure in [*r["ours"].values(), *r["references"].values()]:
            assert set(figure) == {"median", "min", "max", "runs"}
            assert figure["min"] <= figure["median"] <= figure["max"]
        assert all(isinstance(v, float) for v in r["ratios"].values())
        assert isinstance(r["met"], bool)
