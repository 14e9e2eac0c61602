"""The OpenAPI document says what the server does: schemathesis generates requests from it
(valid ones and invalid ones, every operation, with auth) against a real `voxledger serve`,
and runs all of its checks: no 5xx, every status and body as documented, schema-valid
requests accepted and schema-violating ones refused, OPTIONS and Allow in step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    AUTH,
    SECRET,
    TOKEN,
    Server,
    server_env_fixture,
    server_schema_fixture,
)

EXAMPLES = int(os.environ.get("VOXLEDGER_SCHEMATHESIS_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def projected_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose read models exist (else listing would be a 503 by design), kept up to
    date by a projection worker."""
    worker = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "project", "run", "--once"],
        env=server_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    # And they keep up: a read that waits for a position the log has gets its answer, not
    # the 503 a read whose projections stay behind gets by design.
    projecting = subprocess.Popen(
        [sys.executable, "-m", "voxledger.scripts.main", "project", "run"],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        running = Server(server_env, tmp_path_factory.mktemp("server") / "server.log").start()
        try:
            yield running
        finally:
            running.stop()
    finally:
        os.killpg(projecting.pid, signal.SIGKILL)
        projecting.wait(30)


def test_the_document_lists_every_refusal_with_the_body_the_server_sends(
    projected_server: Server,
) -> None:
    document = httpx.get(f"{projected_server.url}/schema/openapi.json", timeout=30).json()
    message = document["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]
    assert set(message["responses"]) >= {"200", "400", "401", "403", "404", "409", "413"}
    assert set(message["responses"]) >= {"422", "503"}
    for status in ("400", "404", "503"):
        schema = message["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert "Retry-After" in message["responses"]["503"]["headers"]
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]) == {"error", "detail"} and error["required"] == ["error"]
    new_message = document["components"]["schemas"]["NewMessage"]
    assert new_message["additionalProperties"] is False
    history = document["paths"]["/v1/conversations/{conversation_id}/history"]["get"]
    since = next(p for p in history["parameters"] if p["name"] == "since_version")
    assert since["schema"]["minimum"] == 0
    # The API refuses NUL in text; Telegram's webhook acknowledges such an update (200) and
    # records nothing, so its documented body lets NUL through.
    assert new_message["properties"]["text"]["pattern"] == "^[^\\x00]*$"
    webhook = document["paths"]["/telegram/webhook"]["post"]["requestBody"]
    assert "x00" not in json.dumps(reachable(document, webhook))


def reachable(document: dict, node: object, seen: set[str] | None = None) -> list[object]:
    """A part of the document and every component schema it refers to, however deep."""
    seen = set() if seen is None else seen
    found: list[object] = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found += reachable(document, child, seen)
    ref = node.get("$ref") if isinstance(node, dict) else None
    if isinstance(ref, str) and ref not in seen:
        seen.add(ref)
        found += reachable(document, document["components"]["schemas"][ref.split("/")[-1]], seen)
    return found


def test_schemathesis_finds_nothing_with_all_its_checks(
    projected_server: Server, tmp_path: Path
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st is not None, "schemathesis is in the test extra"
    report = tmp_path / "report"
    result = subprocess.run(
        [
            st, "run", f"{projected_server.url}/schema/openapi.json",
            "--checks", "all",
            "--max-examples", str(EXAMPLES),
            "--workers", "2",
            "--header", f"Authorization: {AUTH['Authorization']}",
            "--header", f"X-Telegram-Bot-Api-Secret-Token: {SECRET}",
            "--request-timeout", "30",
            "--report", "ndjson", "--report-dir", str(report),
            "--no-color",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert "passed" in summary and " 0 passed" not in summary
    assert TOKEN not in json.dumps(summary)  # the token is filtered from what it prints
