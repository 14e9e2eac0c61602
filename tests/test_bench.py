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


def bench_http(cli_env: dict[str, str], *options: str) -> list[dict]:
    bench = [sys.executable, "-m", "voxledger.scripts.main", "bench", "--http", "--quick"]
    result = subprocess.run(
        [*bench, "--json", *options],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_served_shape(result: dict) -> None:
    assert set(result) >= {"name", "unit", "ours", "references", "ratios", "target", "met"}
    latency = {"updates_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors"}
    cpu = {"server_cpu_cores", "generator_cpu_cores", "machine_busy_cores"}
    assert set(result["ours"]) >= latency | cpu
    assert set(result["references"]) >= {f"no-op: {key}" for key in latency}
    for figure in [*result["ours"].values(), *result["references"].values()]:
        assert set(figure) == {"median", "min", "max", "runs"}
        assert figure["min"] <= figure["median"] <= figure["max"]
    assert list(result["ratios"]) == ["ours / no-op (updates/s)"]
    assert isinstance(result["ratios"]["ours / no-op (updates/s)"], float)
    assert isinstance(result["met"], bool)


def test_bench_http_quick_reports_both_routes_next_to_the_no_op_and_memory_per_worker(
    cli_env: dict[str, str],
) -> None:
    results = bench_http(cli_env)
    served, memory = results[:-1], results[-1]
    assert [r["name"].split(",")[0] for r in served] == [
        "served POST /telegram/webhook",
        "served POST /v1/conversations/{id}/messages",
    ]
    for result in served:
        assert_served_shape(result)
    assert memory["unit"] == "MB resident"
    assert "worker 0: rss_mb" in memory["ours"]
    assert isinstance(memory["met"], bool)


def test_bench_http_runs_its_own_load_generator_where_wrk_is_not_wanted(
    cli_env: dict[str, str],
) -> None:
    (result,) = bench_http(cli_env, "--only", "webhook", "--generator", "python")
    assert_served_shape(result)


def test_the_in_process_benchmark_reports_cpu_per_message_and_the_collectors_pauses(
    cli_env: dict[str, str],
) -> None:
    module = [sys.executable, "-m", "voxledger.scripts.benchmarks.inprocess"]
    for route in ("webhook", "api"):
        done = subprocess.run(
            [*module, "--route", route, "--messages", "256", "--callers", "8", "--runs", "2"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"in-process {route}, 8 callers, 256 messages a run" in done.stdout
        assert "CPU ms/message" in done.stdout and "longest pause ms" in done.stdout
        assert "CPU per message: median" in done.stdout
