"""The operator console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) signs in through the form, visits every page,
travels through a conversation from the keyboard and checks that what each page shows is
what `voxledger at` and `voxledger diff` give for the same versions, that times read in the
browser's zone, and that a new event appears without a reload. On a failure it saves a
screenshot to the test's temporary folder and prints where."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import StepClock
from debug_scenario import InProcess, Scenario, build_scenario
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    TOKEN,
    Server,
    server_env_fixture,
    server_fixture,
    server_schema_fixture,
)

from voxledger.adapters.bootstrap import catch_up, open_engine
from voxledger.adapters.console.rendering import format_time
from voxledger.domain.engine import Engine

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "headless Chromium is not installed (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402  (only once the browser is known to be there)
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The browser's zone: half an hour off UTC, so a time left in UTC cannot pass for local.
ZONE = "Asia/Kolkata"
WAIT_S = 20  # the longest wait for a page or an event: a bound, not a measure


@pytest.fixture(scope="module")
def built(
    database_url: str, server_schema: str, server: Server
) -> Iterator[tuple[Engine, Scenario]]:
    """A conversation with a completed flow in the server's schema, projections current."""
    with open_engine(database_url, schema=server_schema, clock=StepClock()) as engine:
        scenario = build_scenario(engine)
        catch_up(engine.store)
        yield engine, scenario


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the module, with a profile of its own, in ``ZONE``."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1500,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The browser is the user's, not under test: it keeps the machine's true clock even when
    # .ci/on-another-date moves ours (libfaketime in Chromium stalls its renderer).
    faked = ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC")
    env = {name: value for name, value in os.environ.items() if name not in faked}
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), env=env), options=options)
    try:
        driver.set_page_load_timeout(WAIT_S)
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
        yield driver
    finally:
        driver.quit()  # ends the browser and its driver, whatever happened


@pytest.fixture
def anonymous(
    chromium: WebDriver, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[WebDriver]:
    """The module's browser; a screenshot of it when this test fails."""
    failed_before = request.session.testsfailed
    yield chromium
    if request.session.testsfailed > failed_before:
        shot = tmp_path / f"{request.node.name}.png"
        chromium.save_screenshot(str(shot))
        sys.stderr.write(f"\nscreenshot of the failure: {shot}\n")
        print(f"screenshot of the failure: {shot}")


@pytest.fixture
def browser(anonymous: WebDriver, server: Server) -> WebDriver:
    """The browser with a console session (signing in through the form if it has none)."""
    if not any(c["name"] == "voxledger_console" for c in anonymous.get_cookies()):
        anonymous.get(f"{server.url}/console/login")
        anonymous.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
        wait(anonymous, lambda d: d.current_url.endswith("/console/conversations"))
    return anonymous


@pytest.fixture
def run(run: InProcess, server_schema: str) -> Any:
    """The voxledger command in this process, on the server's schema."""
    return lambda *args: run.json(server_schema, *args)


def wait(driver: WebDriver, condition: Any) -> Any:
    """Until the condition holds on the page, through the moment a navigation replaces
    the elements it looked at."""
    ignored = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=ignored).until(condition)


def shown(driver: WebDriver, which: str) -> dict[str, Any]:
    """Every value the state section shows, by path: its text as displayed, read back as
    a value (times: checked to read in the browser's zone, given as stored)."""
    leaves = driver.execute_script(
        """
        return Array.from(document.querySelectorAll(arguments[0] + ' [data-path]')).map(el => {
          const time = el.querySelector('time');
          return {path: el.dataset.path, kind: el.className.split(' ').pop(),
                  text: el.textContent, value: el.dataset.value || null,
                  title: time ? time.title : null,
                  visible: el.getClientRects().length > 0};
        });
        """,
        f'[data-state="{which}"]',
    )
    values: dict[str, Any] = {}
    for leaf in leaves:
        assert leaf["visible"], leaf["path"]
        kind, text = leaf["kind"], leaf["text"]
        if kind == "null":
            values[leaf["path"]] = None
        elif kind in ("num", "bool", "json"):
            values[leaf["path"]] = json.loads(text)
        elif kind == "time":
            moment = datetime.fromisoformat(leaf["value"].replace("Z", "+00:00"))
            assert text == format_time(moment, ZoneInfo(ZONE), "precise"), leaf
            assert leaf["title"].endswith("UTC")
            values[leaf["path"]] = leaf["value"]
        else:
            values[leaf["path"]] = text
    return values


def flattened(document: Any, path: str = "") -> dict[str, Any]:
    """A JSON document's values by dotted path (records of a list as table rows, empty
    collections as one value), as the page lays them out."""
    if isinstance(document, dict) and document:
        items: Any = document.items()
    elif isinstance(document, list) and document:
        items = enumerate(document)
    else:
        return {path: document}
    found: dict[str, Any] = {}
    for key, value in items:
        found.update(flattened(value, f"{path}.{key}" if path else str(key)))
    return found


def shown_version(driver: WebDriver) -> int:
    section = driver.find_element(By.CSS_SELECTOR, "#conversation")
    return int(section.get_attribute("data-version"))


# -- the tests, in the order an operator would go ------------------------------------------------


def test_without_a_session_the_browser_is_sent_to_sign_in(
    anonymous: WebDriver, server: Server, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    anonymous.delete_all_cookies()
    anonymous.get(f"{server.url}/console/conversations/{s.conversation_id}")
    assert anonymous.current_url.startswith(f"{server.url}/console/login?next=")
    token = anonymous.switch_to.active_element  # the token field has the focus
    assert token.get_attribute("id") == "token" and token.get_attribute("type") == "password"


def test_signing_in_from_the_keyboard_leads_to_the_page_asked_for(
    anonymous: WebDriver, server: Server, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    anonymous.delete_all_cookies()
    anonymous.get(f"{server.url}/console/conversations/{s.conversation_id}")
    anonymous.switch_to.active_element.send_keys("not the token" + Keys.ENTER)
    wait(anonymous, lambda d: "That is not the API token." in d.page_source)
    field = anonymous.find_element(By.ID, "token")
    field.clear()
    field.send_keys(TOKEN + Keys.ENTER)
    wait(anonymous, lambda d: d.current_url.endswith(f"/console/conversations/{s.conversation_id}"))
    (cookie,) = [c for c in anonymous.get_cookies() if c["name"] == "voxledger_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert TOKEN not in cookie["value"]
    assert anonymous.execute_script("return document.cookie").find("voxledger_console") < 0


def test_every_page_loads_without_a_script_error(
    browser: WebDriver, server: Server, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    browser.get_log("browser")  # what came before
    for path, title in [
        ("/console/conversations", "Conversations"),
        (f"/console/conversations/{s.conversation_id}", "Conversation"),
        ("/console/flows", "Flows"),
        ("/console/flows/intake", "Flow intake"),
        ("/console/metrics", "Metrics"),
    ]:
        browser.get(server.url + path)
        assert browser.title.startswith(title), path
        assert browser.find_elements(By.CSS_SELECTOR, "main h1")
    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == []


def test_the_list_finds_a_conversation_typed_into_the_search(
    browser: WebDriver, server: Server, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    browser.get(f"{server.url}/console/conversations")
    browser.find_element(By.TAG_NAME, "body").send_keys("/")  # the key that jumps to search
    search = browser.switch_to.active_element
    assert search.get_attribute("id") == "q"
    search.send_keys("ALIC" + Keys.ENTER)
    wait(browser, lambda d: "q=ALIC" in d.current_url)
    links = browser.find_elements(By.CSS_SELECTOR, "table.conversations td.id a")
    assert [a.get_attribute("title") for a in links] == [str(s.conversation_id)]
    assert "projections up to date" in browser.find_element(By.CSS_SELECTOR, ".lag").text


def test_travelling_through_the_conversation_shows_what_voxledger_at_gives(
    browser: WebDriver, server: Server, built: tuple[Engine, Scenario], run: Any
) -> None:
    _, s = built
    cid = str(s.conversation_id)
    last = max(s.conversations)
    browser.get(f"{server.url}/console/conversations/{cid}")
    assert shown_version(browser) == last
    assert shown(browser, "conversation") == flattened(run("at", cid, "--version", str(last)))

    # Type a version into the travel control.
    field = browser.find_element(By.ID, "v")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("5" + Keys.ENTER)
    wait(browser, lambda d: shown_version(d) == 5)
    assert shown(browser, "conversation") == flattened(run("at", cid, "--version", "5"))

    # Move through the timeline with j and k, and travel with Enter.
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("j")
    focused = browser.switch_to.active_element
    assert "travel" in focused.get_attribute("class")
    row = focused.find_element(By.XPATH, "./ancestor::tr")
    for _ in range(3):
        focused.send_keys("j")
        focused = browser.switch_to.active_element
    focused.send_keys("k")
    focused = browser.switch_to.active_element
    target = focused.find_element(By.XPATH, "./ancestor::tr").get_attribute("id")
    assert target != row.get_attribute("id")
    focused.send_keys(Keys.ENTER)
    wait(
        browser, lambda d: d.find_element(By.ID, target).get_attribute("class").endswith("selected")
    )
    stream, version = target.removeprefix("e-")[:36], int(target.rsplit("-", 1)[1])
    if stream == cid:
        assert shown_version(browser) == version
        expected = run("at", cid, "--version", str(version))
        assert shown(browser, "conversation") == flattened(expected)
    else:
        flow = browser.find_element(By.ID, "flow")
        assert flow.get_attribute("data-version") == str(version)
        assert shown(browser, "flow") == flattened(run("at", stream, "--version", str(version)))
    # The event travelled to gets the focus once the page has loaded: keys go on from there.
    wait(browser, lambda d: d.switch_to.active_element.get_attribute("class") == "travel")
    focused_row = browser.switch_to.active_element.find_element(By.XPATH, "./ancestor::tr")
    assert focused_row.get_attribute("id") == target

    # [ and ] step back and forth one version.
    before = shown_version(browser)
    browser.find_element(By.TAG_NAME, "body").send_keys("]")
    wait(browser, lambda d: shown_version(d) == min(before + 1, last))
    after = shown_version(browser)
    assert shown(browser, "conversation") == flattened(run("at", cid, "--version", str(after)))
    flow_now = browser.find_elements(By.ID, "flow")
    if flow_now:
        flow_id = flow_now[0].get_attribute("data-stream")
        flow_version = flow_now[0].get_attribute("data-version")
        assert shown(browser, "flow") == flattened(run("at", flow_id, "--version", flow_version))


def test_comparing_two_versions_shows_what_voxledger_diff_prints(
    browser: WebDriver, server: Server, built: tuple[Engine, Scenario], run: Any
) -> None:
    _, s = built
    browser.get(f"{server.url}/console/conversations/{s.conversation_id}?v=10")
    form = browser.find_element(By.CSS_SELECTOR, "form.compare-form")
    form.find_element(By.CSS_SELECTOR, f'#ds option[value="{s.flow_id}"]').click()
    for name, value in (("a", "2"), ("b", "9")):
        field = form.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-diff]"))
    rows = browser.execute_script(
        """
        return Array.from(document.querySelectorAll('[data-diff] [data-change-path]')).map(r => ({
          path: r.dataset.changePath, kind: r.dataset.kind,
          old: (r.querySelector('[data-old]') || {}).textContent || null,
          new: (r.querySelector('[data-new]') || {}).textContent || null}));
        """
    )
    shown_changes = [
        {
            "path": r["path"],
            "kind": r["kind"],
            "old": None if r["old"] is None else json.loads(r["old"]),
            "new": None if r["new"] is None else json.loads(r["new"]),
        }
        for r in rows
    ]
    assert shown_changes == run("diff", str(s.flow_id), "2", "9")["changes"]
    assert shown_version(browser) == 10  # the state travelled to stays where it was


def test_a_new_event_appears_in_the_timeline_without_a_reload(
    browser: WebDriver, server: Server, built: tuple[Engine, Scenario]
) -> None:
    engine, _ = built
    cid = engine.start_conversation("voice", "live caller")
    browser.get(f"{server.url}/console/conversations/{cid}")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-live-status]").text == "● live")
    browser.execute_script("window.stillTheSamePage = true")
    engine.add_message(cid, "user", "hello, is anyone there?")
    row = wait(browser, lambda d: d.find_elements(By.ID, f"e-{cid}-2"))[0]
    assert "user said hello, is anyone there?" in row.text
    assert browser.execute_script("return window.stillTheSamePage === true")
    assert browser.find_element(By.CSS_SELECTOR, "[data-new-count]").text == "1"
    moment = engine.get_conversation(cid).updated_at
    time_text = row.find_element(By.TAG_NAME, "time").text
    assert time_text == format_time(moment, ZoneInfo(ZONE), "stamp")


def test_times_read_in_the_browsers_zone_with_utc_on_hover(
    browser: WebDriver, server: Server, built: tuple[Engine, Scenario]
) -> None:
    _, s = built
    browser.get(f"{server.url}/console/conversations/{s.conversation_id}?v=1")
    stamps = browser.find_elements(By.CSS_SELECTOR, "table.events time")
    assert stamps
    for stamp in stamps[:10]:
        moment = datetime.fromisoformat(stamp.get_attribute("datetime").replace("Z", "+00:00"))
        assert stamp.text == format_time(moment, ZoneInfo(ZONE), "stamp")
        assert stamp.get_attribute("title").endswith(" UTC")
    placeholder = browser.find_element(By.ID, "tz").get_attribute("placeholder")
    assert placeholder in (f"{ZONE} (browser)", "Asia/Calcutta (browser)")  # ICU's old name


def test_the_flow_graph_and_the_metrics_charts_are_drawn(
    browser: WebDriver, server: Server, built: tuple[Engine, Scenario]
) -> None:
    engine, _ = built
    catch_up(engine.store)
    browser.get(f"{server.url}/console/flows/intake")
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.flow-graph [data-node]")
    assert {n.get_attribute("data-node") for n in nodes} >= {
        s.name for s in engine.flows.get("intake").steps
    }
    assert all(n.is_displayed() for n in nodes)
    browser.get(f"{server.url}/console/metrics?from=2026-11-21T00:00Z&to=2026-11-22T00:00Z")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart-svg")
    assert len(charts) == 3 and all(c.size["height"] > 50 for c in charts)
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart-svg rect.bar")
    for label in browser.find_elements(By.CSS_SELECTOR, "svg.chart-svg text[data-time]")[:6]:
        moment = datetime.fromisoformat(label.get_attribute("data-time").replace("Z", "+00:00"))
        assert label.text == format_time(moment, ZoneInfo(ZONE), label.get_attribute("data-fmt"))


def test_the_keyboard_reaches_the_skip_link_first_and_focus_is_visible(
    browser: WebDriver, server: Server
) -> None:
    browser.get(f"{server.url}/console/conversations")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content" and skip.is_displayed()
    outline = browser.execute_script(
        "const s = getComputedStyle(document.activeElement);return [s.outlineStyle, s.outlineWidth]"
    )
    assert outline[0] != "none" and outline[1] != "0px"
    skip.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"


def test_signing_out_ends_the_session_in_this_browser(browser: WebDriver, server: Server) -> None:
    browser.get(f"{server.url}/console/flows")
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait(browser, lambda d: d.current_url == f"{server.url}/console/login")
    browser.get(f"{server.url}/console/metrics")
    assert browser.current_url.startswith(f"{server.url}/console/login?next=")
