"""The operator console on a real `voxledger serve`, through HTTP: signing in and out, the
redirect without a session, every page against the CLI's own answers, bad input, erased
content, the live tail, and a server that stops while tails are open."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import httpx
import pytest
from conftest import StepClock
from debug_scenario import InProcess, Scenario, build_scenario
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    TOKEN,
    Server,
    events_stored,
    server_env_fixture,
    server_fixture,
    server_schema_fixture,
)

from voxledger.adapters.bootstrap import catch_up, open_engine, open_projections, open_services
from voxledger.adapters.console import console_router
from voxledger.domain.engine import Engine

CONSOLE = "/console"


# -- reading pages ------------------------------------------------------------------------------


class Leaves(HTMLParser):
    """The values a page shows, by the path each names (``data-path``), inside the element
    marked ``data-state`` (or ``data-diff``) given; and every change row."""

    VOID = {"br", "img", "input", "meta", "link", "hr", "col", "area", "source", "wbr"}

    def __init__(self, within: str) -> None:
        super().__init__(convert_charrefs=True)
        self.within = within  # an attribute, like data-state="conversation"
        self.depth = 0  # inside the wanted element: how deep
        self.leaf: dict[str, Any] | None = None
        self.leaf_depth = 0
        self.found: dict[str, dict[str, Any]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        a = dict(attrs)
        name, _, value = self.within.partition("=")
        if self.depth == 0 and a.get(name) == value.strip('"'):
            self.depth = 1
            return
        if self.depth:
            self.depth += 1
            if self.leaf is None and "data-path" in a:
                self.leaf = {"class": a.get("class", ""), "text": "", **a}
                self.leaf_depth = self.depth
            elif self.leaf is not None and tag == "time":
                self.leaf["datetime"] = a.get("datetime")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID or not self.depth:
            return
        if self.leaf is not None and self.depth == self.leaf_depth:
            self.found[self.leaf["data-path"]] = self.leaf
            self.leaf = None
        self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.leaf is not None:
            self.leaf["text"] += data


def shown_values(html: str, within: str) -> dict[str, Any]:
    """Path -> value, as the page shows each (JSON for numbers, booleans and empty or
    nested collections; a dash for null; text as it is)."""
    parser = Leaves(within)
    parser.feed(html)
    values = {}
    for path, leaf in parser.found.items():
        kind = leaf["class"].split()[-1]
        text = leaf["text"]
        if kind == "null":
            assert text == "—"
            values[path] = None
        elif kind in ("num", "bool", "json"):
            values[path] = json.loads(text)
        elif kind == "time":
            values[path] = leaf["data-value"]
            assert leaf["datetime"].endswith("Z")
        else:
            values[path] = text
    return values


def flattened(document: Any, path: str = "") -> dict[str, Any]:
    """A JSON document's values by dotted path, as the page lays them out (records in a
    list become table rows; empty collections are one value)."""
    if isinstance(document, dict) and document:
        items = document.items()
    elif isinstance(document, list) and document:
        items = enumerate(document)
    else:
        return {path: document}
    found: dict[str, Any] = {}
    for key, value in items:
        found.update(flattened(value, f"{path}.{key}" if path else str(key)))
    return found


def changes_shown(page: str) -> list[dict[str, Any]]:
    """The rows of the page's chosen diff: path, kind, old and new (parsed as JSON)."""
    diff = page[page.index("data-diff") :]
    rows = re.findall(r'data-change-path="([^"]*)" data-kind="(\w+)">(.*?)</tr>', diff, flags=re.S)
    found = []
    for path, kind, cells in rows:
        old = re.search(r"<code class=\"old\" data-old>(.*?)</code>", cells, flags=re.S)
        new = re.search(r"<code class=\"new\" data-new>(.*?)</code>", cells, flags=re.S)
        found.append(
            {
                "path": unescape(path),
                "kind": kind,
                "old": json.loads(_text(old[1])) if old else None,
                "new": json.loads(_text(new[1])) if new else None,
            }
        )
    return found


def _text(fragment: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", fragment))


# -- the server and what it shows -----------------------------------------------------------------


@pytest.fixture(scope="module")
def built(
    database_url: str, server_schema: str, server: Server
) -> Iterator[tuple[Engine, Scenario]]:
    """The debugging scenario (a conversation with a completed flow) in the server's
    schema, and the projections caught up with it."""
    with open_engine(database_url, schema=server_schema, clock=StepClock()) as engine:
        scenario = build_scenario(engine)
        catch_up(engine.store)
        yield engine, scenario


@pytest.fixture
def browser(server: Server) -> Iterator[httpx.Client]:
    """A client that signed in through the form, as a browser would."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        signed = client.post(
            f"{CONSOLE}/login",
            data={"token": TOKEN, "next": f"{CONSOLE}/flows"},
            headers={"Origin": server.url},
        )
        assert signed.status_code == 303 and signed.headers["location"] == f"{CONSOLE}/flows"
        yield client


class Command:
    """The voxledger command run in this process on the server's schema: its JSON, or its
    exit code and output (``raw``)."""

    def __init__(self, run: InProcess, schema: str) -> None:
        self.run, self.schema = run, schema

    def __call__(self, *args: str) -> Any:
        return self.run.json(self.schema, *args)

    def raw(self, *args: str) -> tuple[int, Any]:
        code, out = self.run(self.schema, *args, "--json")
        return code, json.loads(out)


@pytest.fixture
def run(run: InProcess, server_schema: str) -> Command:
    """The voxledger command in this process, on the server's schema."""
    return Command(run, server_schema)


def page_of(client: httpx.Client, path: str, **params: Any) -> str:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text[-500:]
    assert response.headers["content-type"].startswith("text/html")
    return response.text


# -- signing in ----------------------------------------------------------------------------------


def test_every_console_page_without_a_session_redirects_to_the_sign_in_page(
    server: Server, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    pages = [
        CONSOLE,
        f"{CONSOLE}/conversations?q=alice",
        f"{CONSOLE}/conversations/{s.conversation_id}?v=3",
        f"{CONSOLE}/conversations/{s.conversation_id}/tail?after={s.conversation_id}:1",
        f"{CONSOLE}/flows",
        f"{CONSOLE}/flows/intake",
        f"{CONSOLE}/metrics",
    ]
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for path in pages:
            for cookie in (None, "1.2.3.forged", "garbage"):
                anonymous.cookies.clear()
                if cookie:
                    anonymous.cookies.set("voxledger_console", cookie, path="/console")
                response = anonymous.get(path)
                assert response.status_code == 303, path
                assert (
                    response.headers["location"] == f"{CONSOLE}/login?next={quote(path, safe='')}"
                )
        login = anonymous.get(f"{CONSOLE}/login")
        assert login.status_code == 200
        assert 'type="password"' in login.text and 'name="token"' in login.text


def test_signing_in_sets_an_http_only_strict_cookie_for_the_console_that_is_not_the_token(
    server: Server,
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(
            f"{CONSOLE}/login", data={"token": TOKEN}, headers={"Origin": server.url}
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"{CONSOLE}/conversations"
        cookie = response.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "samesite", "max-age"} <= attributes
        assert "Path=/console" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "secure" not in attributes  # served over plain http here
        assert TOKEN not in cookie
        assert client.get(f"{CONSOLE}/metrics").status_code == 200


def test_behind_an_https_proxy_the_session_cookie_travels_over_https_only(
    server: Server,
) -> None:
    # uvicorn takes the scheme from a proxy on this machine (X-Forwarded-Proto).
    https = server.url.replace("http://", "https://")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(
            f"{CONSOLE}/login",
            data={"token": TOKEN},
            headers={"Origin": https, "X-Forwarded-Proto": "https"},
        )
        assert response.status_code == 303
        attributes = [part.strip().lower() for part in response.headers["set-cookie"].split(";")]
        assert "secure" in attributes and "httponly" in attributes
        plain = client.post(
            f"{CONSOLE}/login",
            data={"token": TOKEN},
            headers={"Origin": server.url, "X-Forwarded-Proto": "https"},
        )
        assert plain.status_code == 403  # an http page's form is not the https console's


def test_a_wrong_token_is_refused_and_starts_no_session(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(
            f"{CONSOLE}/login", data={"token": "guess"}, headers={"Origin": server.url}
        )
        assert response.status_code == 401
        assert "That is not the API token." in response.text
        assert "set-cookie" not in response.headers
        assert client.get(f"{CONSOLE}/flows").status_code == 303


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "http://evil.example"}, {"Referer": "http://evil.example/console/login"}],
)
def test_a_sign_in_sent_from_another_site_or_from_nowhere_is_refused(
    server: Server, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(f"{CONSOLE}/login", data={"token": TOKEN}, headers=headers)
        assert response.status_code == 403
        assert "set-cookie" not in response.headers
        assert "not sent from this console" in response.text


def test_signing_out_clears_the_session_cookie(server: Server, browser: httpx.Client) -> None:
    assert browser.get(f"{CONSOLE}/flows").status_code == 200
    refused = browser.post(f"{CONSOLE}/logout", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert browser.get(f"{CONSOLE}/flows").status_code == 200  # still signed in
    out = browser.post(f"{CONSOLE}/logout", headers={"Origin": server.url})
    assert out.status_code == 303 and out.headers["location"] == f"{CONSOLE}/login"
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert browser.get(f"{CONSOLE}/flows").status_code == 303


def test_after_signing_in_the_browser_returns_to_the_page_it_asked_for(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        asked = client.get(f"{CONSOLE}/metrics?span=7d")
        login = client.get(asked.headers["location"])
        target = re.search(r'name="next" value="([^"]+)"', login.text)
        assert target and unescape(target[1]) == f"{CONSOLE}/metrics?span=7d"
        signed = client.post(
            f"{CONSOLE}/login",
            data={"token": TOKEN, "next": unescape(target[1])},
            headers={"Origin": server.url},
        )
        assert signed.headers["location"] == f"{CONSOLE}/metrics?span=7d"
        away = client.post(
            f"{CONSOLE}/login",
            data={"token": TOKEN, "next": "https://evil.example/"},
            headers={"Origin": server.url},
        )
        assert away.headers["location"] == f"{CONSOLE}/conversations"


# -- the console only reads -----------------------------------------------------------------------


def test_no_console_route_changes_state_except_signing_in_and_out(engine: Engine) -> None:
    router = console_router(open_services(store=engine.store, clock=engine.clock), "token")
    writes = {
        (route.path, method)
        for route in router.routes
        for method in route.methods
        if method not in ("GET", "HEAD", "OPTIONS")
    }
    assert writes == {("/console/login", "POST"), ("/console/logout", "POST")}


def test_looking_at_every_page_records_nothing(
    browser: httpx.Client, built: tuple[Engine, Scenario], database_url: str, server_schema: str
) -> None:
    _, s = built
    before = events_stored(database_url, server_schema)
    for path, params in [
        (f"{CONSOLE}/conversations", {"q": "alice", "status": "ended"}),
        (f"{CONSOLE}/conversations/{s.conversation_id}", {"v": 4, "a": 2, "b": 9}),
        (f"{CONSOLE}/conversations/{s.conversation_id}", {"flow": s.flow_id, "fv": 3}),
        (f"{CONSOLE}/flows", {}),
        (f"{CONSOLE}/flows/intake", {"version": 1}),
        (f"{CONSOLE}/metrics", {"span": "7d"}),
    ]:
        page = page_of(browser, path, **params)
        assert "Traceback" not in page
    assert events_stored(database_url, server_schema) == before


# -- what the pages show ------------------------------------------------------------------------


def test_each_version_shows_the_state_that_voxledger_at_prints_for_it(
    browser: httpx.Client, built: tuple[Engine, Scenario], run: Any
) -> None:
    _, s = built
    cid = str(s.conversation_id)
    for version in sorted(s.conversations):
        html = page_of(browser, f"{CONSOLE}/conversations/{cid}", v=version)
        expected = flattened(run("at", cid, "--version", str(version)))
        assert shown_values(html, 'data-state="conversation"') == expected, version
        # ...and the flow as it stood at that moment, as `at` prints the flow.
        flow = re.search(r'id="flow"[^>]*data-stream="([^"]+)" data-version="(\d+)"', html)
        if flow:
            expected_flow = flattened(run("at", flow[1], "--version", flow[2]))
            assert shown_values(html, 'data-state="flow"') == expected_flow, version


def test_travelling_to_a_flow_event_shows_the_flow_at_that_version(
    browser: httpx.Client, built: tuple[Engine, Scenario], run: Any
) -> None:
    _, s = built
    for version in sorted(s.flows):
        html = page_of(
            browser, f"{CONSOLE}/conversations/{s.conversation_id}", flow=s.flow_id, fv=version
        )
        expected = flattened(run("at", str(s.flow_id), "--version", str(version)))
        assert shown_values(html, 'data-state="flow"') == expected
        row = re.search(rf'<tr id="e-{s.flow_id}-{version}" class="([^"]*)"', html)
        assert row and "selected" in row[1].split()


@pytest.mark.parametrize(
    "condition",
    [
        'flow.step == "place"',
        "usage.messages >= 7",
        'status == "ended"',
        'flow.answers.city == "Berlin"',
        'status == "error"',  # never
    ],
)
def test_finding_the_first_version_where_a_condition_holds_travels_where_bisect_says(
    browser: httpx.Client, built: tuple[Engine, Scenario], run: Any, condition: str
) -> None:
    _, s = built
    cid = str(s.conversation_id)
    page = page_of(browser, f"{CONSOLE}/conversations/{cid}", where=condition)
    _, bisected = run.raw("bisect", cid, "--where", condition, "--linear")
    if bisected["version"] is None:
        assert 'data-found="none"' in page
        assert f'data-version="{max(s.conversations)}"' in page  # stays at the latest
    else:
        assert f'data-found="{bisected["version"]}"' in page
        version = re.search(r'id="conversation"[^>]*data-version="(\d+)"', page)
        assert version and int(version[1]) == bisected["version"]


def test_a_condition_that_cannot_be_read_says_why(
    browser: httpx.Client, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    for condition, says in [
        ("status ==", "bad condition at column"),
        ("usage.nothing > 1", "unknown field"),
    ]:
        response = browser.get(
            f"{CONSOLE}/conversations/{s.conversation_id}", params={"where": condition}
        )
        assert response.status_code == 400
        assert says in unescape(response.text)


def test_a_flow_id_leads_to_its_conversation_with_the_flow_chosen(
    browser: httpx.Client, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    by_path = browser.get(f"{CONSOLE}/conversations/{s.flow_id}")
    assert by_path.status_code == 303
    assert by_path.headers["location"] == (
        f"{CONSOLE}/conversations/{s.conversation_id}?flow={s.flow_id}"
    )
    by_search = browser.get(f"{CONSOLE}/conversations", params={"q": str(s.flow_id)})
    assert by_search.headers["location"] == by_path.headers["location"]
    whole_id = browser.get(f"{CONSOLE}/conversations", params={"q": str(s.conversation_id)})
    assert whole_id.headers["location"] == f"{CONSOLE}/conversations/{s.conversation_id}"


def test_the_diff_between_two_chosen_versions_is_what_voxledger_diff_prints(
    browser: httpx.Client, built: tuple[Engine, Scenario], run: Any
) -> None:
    _, s = built
    for stream, a, b in [
        (s.conversation_id, 1, max(s.conversations)),
        (s.conversation_id, 5, 6),
        (s.conversation_id, 9, 3),
        (s.flow_id, 2, 9),
        (s.flow_id, 4, 4),
    ]:
        html = page_of(browser, f"{CONSOLE}/conversations/{s.conversation_id}", ds=stream, a=a, b=b)
        expected = run("diff", str(stream), str(a), str(b))["changes"]
        assert changes_shown(html) == expected, (stream, a, b)


def test_the_timeline_holds_the_conversations_events_and_its_flows_in_log_order(
    browser: httpx.Client, built: tuple[Engine, Scenario], run: Any
) -> None:
    _, s = built
    html = page_of(browser, f"{CONSOLE}/conversations/{s.conversation_id}")
    rows = re.findall(r'<tr id="e-([0-9a-f-]{36})-(\d+)" class="ev (\w+)', html)
    logged = run("log", str(s.conversation_id))
    assert [(UUID(r[0]), int(r[1]), r[2]) for r in rows] == [
        (UUID(e["stream"]), e["version"], e["stream_type"]) for e in logged
    ]
    assert "AnswerRejected" in html and "tone-warn" in html


def test_the_list_finds_conversations_and_says_how_far_the_projections_trail(
    browser: httpx.Client, built: tuple[Engine, Scenario]
) -> None:
    engine, s = built
    catch_up(engine.store)
    listed = page_of(browser, f"{CONSOLE}/conversations", q="ALI")
    assert f'href="/console/conversations/{s.conversation_id}"' in listed
    assert "projections up to date" in listed
    none = page_of(browser, f"{CONSOLE}/conversations", q="nobody-by-this-name")
    assert "No conversation matches." in none
    other = engine.start_conversation("whatsapp", "latecomer")
    engine.add_message(other, "user", "hi")
    behind = page_of(browser, f"{CONSOLE}/conversations")
    assert "projections 2 events behind the log" in behind
    catch_up(engine.store)
    found = page_of(browser, f"{CONSOLE}/conversations", channel="whatsapp", status="idle")
    assert f"/console/conversations/{other}" in found
    assert f"/console/conversations/{s.conversation_id}" not in found


def test_the_flow_page_draws_every_step_with_the_funnel_of_its_version(
    browser: httpx.Client, built: tuple[Engine, Scenario]
) -> None:
    engine, _ = built
    catch_up(engine.store)
    html = page_of(browser, f"{CONSOLE}/flows/intake")
    (funnel,) = open_projections(engine.store).funnel_by_version("intake")
    for step in engine.flows.get("intake").steps:
        assert f'data-node="{step.name}"' in html
    for s in funnel.steps:
        row = re.search(rf'<tr data-step="{s.step}">(.*?)</tr>', html, flags=re.S)
        assert row, s.step
        numbers = re.findall(r"data-(reached|rejected|abandoned)>([\d,]+)<", row[1])
        assert dict(numbers) == {
            "reached": str(s.reached),
            "rejected": str(s.rejected),
            "abandoned": str(s.abandoned),
        }
    assert "<svg" in html and 'role="img"' in html
    missing = browser.get(f"{CONSOLE}/flows/nothing-like-it")
    assert missing.status_code == 404
    assert "no flow definition 'nothing-like-it'" in unescape(missing.text)


def test_the_metrics_page_charts_the_hours_of_the_range_from_the_projection(
    browser: httpx.Client, built: tuple[Engine, Scenario]
) -> None:
    engine, _ = built
    catch_up(engine.store)
    html = page_of(
        browser, f"{CONSOLE}/metrics", **{"from": "2026-11-21T00:00Z", "to": "2026-11-22T00:00Z"}
    )
    projections = open_projections(engine.store)
    series = projections.hourly(
        datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)
    )
    shown = dict(re.findall(r'data-hour="([^"]+)">.*?data-messages>([\d,]+)<', html, flags=re.S))
    assert shown == {h.hour.isoformat(): f"{h.messages:,}" for h in series}
    assert html.count('class="chart-svg"') == 3
    bad = browser.get(f"{CONSOLE}/metrics", params={"from": "soon"})
    assert bad.status_code == 400 and "from: &#39;soon&#39; is not a time" in bad.text


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("{cid}", {"v": "0"}, 400, "v"),
        ("{cid}", {"v": "9999"}, 400, "there is no version 9999; versions run from 1 to"),
        ("{cid}", {"v": "three"}, 400, "v"),
        ("{cid}", {"flow": "{cid}"}, 400, "is not a flow of conversation"),
        ("{cid}", {"a": "1", "b": "99999"}, 400, "b: there is no version 99999"),
        ("{unknown}", {}, 404, "no conversation or flow"),
        ("", {"tz": "Mars/Olympus"}, 400, "unknown time zone"),
        ("", {"status": "sleeping"}, 400, "status &#39;sleeping&#39; is not one of"),
        ("", {"after": "yesterday~x"}, 400, "not a page of this list"),
        ("", {"from": "2026-13-45"}, 400, "is not a time like"),
        ("{cid}/tail", {"after": "nonsense"}, 400, "expected id:version pairs"),
        ("{cid}/tail", {"after": "{unknown}:1"}, 400, "name the conversation and only its flows"),
    ],
)
def test_bad_input_gets_a_page_that_says_what_is_wrong_and_no_traceback(
    browser: httpx.Client,
    built: tuple[Engine, Scenario],
    path: str,
    params: dict[str, str],
    status: int,
    says: str,
) -> None:
    _, s = built
    names = {"cid": s.conversation_id, "unknown": uuid4()}
    url = f"{CONSOLE}/conversations" + (f"/{path.format(**names)}" if path else "")
    response = browser.get(url, params={k: v.format(**names) for k, v in params.items()})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert says in response.text
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_pages_forbid_inline_script_and_are_not_stored_by_the_browser(
    browser: httpx.Client,
) -> None:
    response = browser.get(f"{CONSOLE}/flows")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text and "style=" not in response.text
    script = browser.get(f"{CONSOLE}/static/console.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    style = browser.get(f"{CONSOLE}/static/console.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_a_zone_chosen_by_name_is_applied_on_the_server_and_remembered(
    browser: httpx.Client, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    chosen = browser.get(f"{CONSOLE}/conversations/{s.conversation_id}?tz=Asia/Kolkata")
    assert 'data-zone="Asia/Kolkata"' in chosen.text
    # 14:00:01 UTC, the scenario's first event, is 19:30:01 in Kolkata.
    assert ">2026-11-21 19:30:01</time>" in chosen.text
    assert "voxledger_console_tz=Asia/Kolkata" in chosen.headers["set-cookie"]
    later = browser.get(f"{CONSOLE}/conversations/{s.conversation_id}")
    assert 'data-zone="Asia/Kolkata"' in later.text
    forgot = browser.get(f"{CONSOLE}/flows?tz=browser")
    assert "Max-Age=0" in forgot.headers["set-cookie"]
    assert 'data-zone="' not in browser.get(f"{CONSOLE}/flows").text


# -- erased content -----------------------------------------------------------------------------


def test_an_erased_conversation_shows_erased_where_voxledger_show_does(
    browser: httpx.Client, built: tuple[Engine, Scenario], run: Any, server_schema: str
) -> None:
    engine, _ = built
    cid = engine.start_conversation("telegram", "Mallory Secret", {"phone": "+49 30 1234"})
    engine.add_message(cid, "user", "my card is 4111 1111")
    run("erase", str(cid), "--yes")  # and rebuilds the projections that copy content
    shown = run("show", str(cid))
    assert shown["participant"] == "[erased]"
    html = page_of(browser, f"{CONSOLE}/conversations/{cid}")
    assert shown_values(html, 'data-state="conversation"') == flattened(shown)
    assert "Mallory" not in html and "4111" not in html
    assert '<span class="erased">[erased]</span>' in html
    listed = page_of(browser, f"{CONSOLE}/conversations", q=str(cid)[:8])
    assert '<span class="erased">[erased]</span>' in listed and "Mallory" not in listed


# -- the live tail ------------------------------------------------------------------------------


def test_the_live_tail_sends_each_new_event_and_ends_when_the_client_leaves(
    server: Server, browser: httpx.Client, built: tuple[Engine, Scenario]
) -> None:
    engine, _ = built
    cid = engine.start_conversation("voice", "tailed")
    url = f"{CONSOLE}/conversations/{cid}/tail"
    with browser.stream("GET", url, params={"after": f"{cid}:1"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        engine.add_message(cid, "user", "are you there?")
        flow = engine.start_flow(cid, "intake", "design").flow_id
        seen: list[tuple[str, int]] = []
        for line in stream.iter_lines():
            if line.startswith("data: "):
                entry = json.loads(line.removeprefix("data: "))
                seen.append((entry["stream"], entry["version"]))
                assert entry["html"].startswith(f'<tr id="{entry["id"]}"')
            if len(seen) == 3:
                break
    # The message first; then the flow's start and its beginning on the conversation.
    assert seen[0] == (str(cid), 2)
    assert set(seen[1:3]) == {(str(cid), 3), (str(flow), 1)}
    assert _logged(server.log, "console.tail_ended", str(cid), "client gone")


def test_stopping_the_server_ends_its_open_tails_and_the_server_exits(
    server_env: dict[str, str], built: tuple[Engine, Scenario], tmp_path: Path
) -> None:
    _, s = built
    own = Server(server_env, tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=own.url, timeout=30) as client:
            client.post(f"{CONSOLE}/login", data={"token": TOKEN}, headers={"Origin": own.url})
            url = f"{CONSOLE}/conversations/{s.conversation_id}/tail"
            with client.stream("GET", url, params={"after": f"{s.conversation_id}:1"}) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                next(lines)  # the stream is open and has begun
                assert own.process is not None
                own.process.send_signal(signal.SIGTERM)
                own.process.wait(30)  # would wait for ever if the tail held it up
                list(lines)  # returns: the server closed the stream
        # uvicorn ends by raising the signal it caught again, once it has shut down.
        assert own.process.returncode in (0, -signal.SIGTERM)
        assert _logged(own.log, "console.tail_ended", str(s.conversation_id), "server stopping")
    finally:
        own.stop()


def _logged(log: Path, event: str, conversation_id: str, reason: str) -> bool:
    """Whether the server's log says so (waiting a little: the line follows the close)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if (entry.get("event"), entry.get("conversation_id"), entry.get("reason")) == (
                    event,
                    conversation_id,
                    reason,
                ):
                    return True
        time.sleep(0.1)
    return False
