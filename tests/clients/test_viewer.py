"""The audit viewer (SPEC 10) in a real headless Chromium, driven by Playwright.

Events are made through the proxy by boto3 and slack_sdk (an allowed change, a second change,
a change refused by a guardrail, a Slack change a dry-run guardrail would refuse, a Slack call
whose user agent holds markup and script); the page must list them newest first, narrow them
by filters kept in the URL, show one resource's timeline (previous -> new) and one event as
CloudTrail JSON, ask for the admin token in a password field labelled "Admin token", render
everything from the log as text, and come with its strict headers.

Chromium is the distribution's (`/usr/bin/chromium`, or $CHROMIUM); Playwright never downloads
a browser. Without Chromium the tests fail with what to install. With UPDATE_SCREENSHOTS=1 the
tests write the README's screenshots to docs/screenshots/.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
import urllib.parse
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from harness import (
    ACCOUNT, FINAL_OUTCOMES, REPO_ROOT, SLACK_CHANNEL, SLACK_TOKEN, Ctx, http_request,
)

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
SHOTS = REPO_ROOT / "docs" / "screenshots"
# A laptop screen.
VIEWPORT = {"width": 1366, "height": 768}
# The page's own budget per view on a small store (the 1,000,000-event figure is measured by
# bench/viewer_scale.sh).
VIEW_BUDGET_MS = 300

GUARDRAILS = """
[[guardrails]]
id = "room-min-30"
targets = ["chime.room_retention"]
min_days = 30

[[guardrails]]
id = "slack-min-90-dry"
targets = ["slack.channel_retention"]
min_days = 90
mode = "dry_run"
"""

XSS_UA = 'viewer-test <img src=x onerror="window.__xss=1"> <script>window.__xss=2</script>'
ADMIN_TOKEN = "viewer-admin-token-" + "9f3c1a7e5b2d4f60"


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium is required for the viewer tests and is not at {CHROMIUM}: "
                    "install the distribution's package (apt-get install -y chromium) or set "
                    "CHROMIUM to its path", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -r tests/clients/requirements.txt",
                    pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    problems = []
    pg.on("dialog", lambda d: (problems.append(f"a dialog opened: {d.message}"), d.dismiss()))
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.problems = problems
    yield pg
    context.close()
    assert not problems, problems


def open_view(page, proxy, query: str = ""):
    """Loads /ui/ with `query` and waits until the view is drawn."""
    resp = page.goto(proxy.admin_url + "/ui/" + query)
    page.wait_for_selector("body[data-ready]", timeout=10_000)
    assert page.evaluate("document.body.dataset.ready") == "1", page.locator("#status").inner_text()
    return resp


def timings(page) -> list:
    return page.evaluate("window.viewerTimings")


def screenshot(page, name: str):
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        # slack_sdk's user agent names the kernel of the machine that ran the test.
        page.screenshot(path=str(SHOTS / name), mask_color="#d0d7de",
                        mask=[page.locator("#rows .ua", has_text="slackclient")])


# --------------------------------------------------------------------------- the trail


def wait_final(proxy, count: int) -> list:
    """The trail once `count` events all have a final outcome, in seq order."""
    deadline = time.monotonic() + 10
    while True:
        events = proxy.query()
        if len(events) >= count and all(e.get("outcome") in FINAL_OUTCOMES for e in events):
            assert len(events) == count, json.dumps(events, indent=1)[:3000]
            return events
        assert time.monotonic() < deadline, f"events: {json.dumps(events)[:3000]}"
        time.sleep(0.05)


def make_trail(ctx: Ctx) -> list:
    """Five calls through the proxy by real clients; returns their events in seq order."""
    chime, _ = ctx.aws("chime", user_agent="Boto3/1.44.5 md/Botocore#1.44.5 (viewer test)")
    for days in (365, 400):
        chime.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": days}})
    with pytest.raises(chime.exceptions.ForbiddenException):
        chime.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 10}})
    ctx.slack().admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL, duration_days=30)
    marked = WebClient(token=SLACK_TOKEN, base_url=ctx.proxy.url + "/api/", timeout=20,
                       user_agent_suffix=XSS_UA)
    marked.admin_conversations_getCustomRetention(channel_id=SLACK_CHANNEL)
    events = wait_final(ctx.proxy, 5)
    assert "<script>" in events[4]["userAgent"] and "<img src=x" in events[4]["userAgent"], (
        "slack_sdk did not send the marked user agent as is: " + events[4]["userAgent"])
    return events


def wait_chain_verified(proxy, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 10
    while True:
        status, _, body = http_request("GET", proxy.admin_url + "/v1/chain", headers=headers)
        assert status == 200, body
        state = json.loads(body)["instances"][0]
        if state["state"] != "not_verified":
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def with_config(p, section: str, line: str):
    """`line` added at the top of `section` of the proxy's configuration."""
    base = p.config_text
    p.config_text = lambda: base().replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


@pytest.fixture
def trail(proxy_factory, fake_vendor):
    p = proxy_factory(extra_config=GUARDRAILS, start=False)
    with_config(p, "audit", 'proxy_instance = "gateway-eu-1"')
    ctx = Ctx(p.start(), fake_vendor, "reverse")
    events = make_trail(ctx)
    # Started again, the proxy verifies the chain it holds now.
    ctx.proxy.restart()
    wait_chain_verified(ctx.proxy)
    return ctx.proxy, events


# --------------------------------------------------------------------------- tests


def row_texts(page) -> list:
    return page.locator("#rows tr").all_inner_texts()


def test_the_list_shows_events_newest_first_and_refusals_stand_out(page, trail):
    proxy, events = trail
    resp = open_view(page, proxy)
    h = resp.headers
    assert "default-src 'self'" in h["content-security-policy"], h
    assert "frame-ancestors 'none'" in h["content-security-policy"], h
    assert "unsafe-inline" not in h["content-security-policy"], h
    assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "no-referrer", h
    rows = page.locator("#rows tr")
    assert rows.count() == len(events)
    # Newest first: the rows' event links are the events in reverse seq order.
    links = [urllib.parse.parse_qs(urllib.parse.urlsplit(a.get_attribute("href")).query)["event"][0]
             for a in page.locator("#rows tr td:last-child a").all()]
    assert links == [e["eventID"] for e in reversed(events)]
    denied = page.locator("#rows tr.refused")
    assert denied.count() == 1
    assert "refused" in denied.inner_text() and "room-min-30" in denied.inner_text()
    assert "400 d → 10 d" in denied.inner_text(), denied.inner_text()
    dry = page.locator("#rows tr.dry-refused")
    assert dry.count() == 1 and "would refuse" in dry.inner_text() and "slack-min-90-dry" in dry.inner_text()
    # Refusals look different from allowed rows.
    bg = lambda loc: loc.evaluate("e => getComputedStyle(e).backgroundColor")
    allowed = page.locator("#rows tr:not(.refused):not(.dry-refused)").first
    assert len({bg(denied), bg(dry), bg(allowed)}) == 3
    # Times in UTC, the local time on hover.
    first_time = page.locator("#rows tr time").first
    assert first_time.inner_text().endswith("Z")
    assert first_time.get_attribute("title").startswith("Local: ")
    chain = page.locator("#chain").inner_text()
    assert f"intact up to seq {proxy_records(proxy)}" in chain, chain
    assert all(t["ms"] < VIEW_BUDGET_MS for t in timings(page)), timings(page)
    screenshot(page, "list.png")


def proxy_records(proxy) -> int:
    """The number of records in the chain (request and outcome links)."""
    r = proxy.cli("audit", "verify", "--db", str(proxy.db))
    assert r.returncode == 0, r.stderr
    out = (r.stdout + r.stderr).decode()
    m = re.search(r"(\d+) records", out)
    assert m, out
    return int(m.group(1))


def test_filters_live_in_the_url_and_deep_links_narrow(page, trail):
    proxy, events = trail
    open_view(page, proxy)
    page.select_option("#f-decision", "deny")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/ui/?decision=deny")
    page.wait_for_selector("body[data-ready]")
    assert page.locator("#rows tr").count() == 1
    assert page.locator("#f-decision").input_value() == "deny"
    # A pasted link gives the same view.
    for query, want in [
        ("?event_name=admin.conversations.setCustomRetention",
         [e for e in events if e["eventName"] == "admin.conversations.setCustomRetention"]),
        ("?outcome=denied", [e for e in events if e["outcome"] == "denied"]),
        ("?decision=dry_run_deny", [e for e in events if e["guardrail"]["decision"] == "dry_run_deny"]),
        ("?actor=" + urllib.parse.quote(events[0]["userIdentity"]["accessKeyId"]),
         [e for e in events if e["userIdentity"].get("accessKeyId") == events[0]["userIdentity"]["accessKeyId"]]),
        ("?instance=nobody-else", []),
        ("?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z", []),
    ]:
        open_view(page, proxy, query)
        assert page.locator("#rows tr").count() == len(want), (query, row_texts(page))
        if not want:
            assert "No events match" in page.locator("#status").inner_text()
    # The download is the current filter, as `audit export --format csv` writes it.
    open_view(page, proxy, "?decision=deny")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert [r["eventID"] for r in rows] == [e["eventID"] for e in events if e["guardrail"]["decision"] == "deny"]
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download JSON").click()
    doc = json.loads(Path(dl.value.path()).read_text())
    assert [r["eventID"] for r in doc["Records"]] == [rows[0]["eventID"]]


def test_resource_timeline_shows_previous_to_new(page, trail):
    proxy, events = trail
    open_view(page, proxy, "?resource=" + urllib.parse.quote(ACCOUNT))
    top = page.locator("#last-known").inner_text()
    assert "chime.room_retention" in top and "400 d" in top, top
    items = page.locator("#timeline li")
    chime = [e for e in events if e["eventSource"] == "chime.amazonaws.com"]
    assert items.count() == len(chime)
    texts = items.all_inner_texts()
    # Newest first: the refusal, then 365 -> 400, then ? -> 365.
    assert "400 d → 10 d" in texts[0] and "deny" in texts[0], texts[0]
    assert "365 d → 400 d" in texts[1] and "allow" in texts[1], texts[1]
    assert "? → 365 d" in texts[2], texts[2]
    assert "forwarded" in texts[1] and "denied" in texts[0]
    assert "gateway-eu-1" in texts[0]
    assert items.nth(0).evaluate("e => e.classList.contains('refused')")
    screenshot(page, "resource.png")


def test_event_view_shows_the_cloudtrail_json_with_its_own_link(page, trail):
    proxy, events = trail
    ev = events[2]
    open_view(page, proxy, "?event=" + ev["eventID"])
    shown = json.loads(page.locator("#event-json").inner_text())
    assert shown["eventID"] == ev["eventID"] and shown["eventName"] == "PutRetentionSettings"
    assert shown["additionalEventData"]["guardrail"]["decision"] == "deny"
    assert shown["additionalEventData"]["changes"][0]["new"] == 10
    assert "refused" in page.locator("#status").inner_text()
    href = page.locator("#event-link").get_attribute("href")
    assert href == "?event=" + ev["eventID"]
    page.locator("#event-link").click()
    page.wait_for_selector("body[data-ready]")
    assert json.loads(page.locator("#event-json").inner_text())["eventID"] == ev["eventID"]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy JSON").click()
    # (wait_for_function would eval a string, which the page's CSP rightly refuses.)
    page.wait_for_selector("#copied:not(:empty)")
    assert json.loads(page.evaluate("navigator.clipboard.readText()"))["eventID"] == ev["eventID"]
    screenshot(page, "event.png")
    open_view(page, proxy, "?event=no-such-event")
    assert "No event" in page.locator("#status").inner_text()


def test_markup_in_an_event_is_shown_as_text_and_never_runs(page, trail):
    proxy, events = trail
    marked = events[4]
    for query in ["", "?event=" + marked["eventID"], "?resource=" + SLACK_CHANNEL]:
        open_view(page, proxy, query)
        assert page.evaluate("window.__xss") is None, query
        assert page.locator("main img, main script").count() == 0, query
    open_view(page, proxy)
    ua = page.locator("#rows tr .ua").first.inner_text()
    assert ua == marked["userAgent"], ua
    open_view(page, proxy, "?event=" + marked["eventID"])
    assert json.loads(page.locator("#event-json").inner_text())["userAgent"] == marked["userAgent"]
    assert page.evaluate("window.__xss") is None


def test_the_token_form_guards_the_data(page, proxy_factory, fake_vendor):
    p = proxy_factory(extra_config=GUARDRAILS, start=False)
    with_config(p, "server", f'admin_token = "{ADMIN_TOKEN}"')
    p.start()
    ctx = Ctx(p, fake_vendor, "reverse")
    make_trail(ctx)
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    # The page itself holds no data and loads without the token; its data calls are refused.
    status, _, body = http_request("GET", p.admin_url + "/v1/events")
    assert status == 401, body
    page.goto(p.admin_url + "/ui/")
    field = page.get_by_label("Admin token")
    field.wait_for()
    assert field.get_attribute("type") == "password"
    assert page.locator("#main").is_hidden()
    field.fill("not-the-token")
    field.press("Enter")
    page.wait_for_selector("#login-error:has-text('refused')")
    assert page.locator("#main").is_hidden()
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Open the audit log").click()
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#rows tr").count() == 5
    # Sent as a bearer header on data calls only, never in a URL or a cookie.
    assert all(ADMIN_TOKEN not in url for url, _ in sent)
    assert (p.admin_url + "/v1/events", None) not in sent
    data_calls = [(u, a) for u, a in sent if "/v1/" in u]
    # Before the form: no token yet (refused); then the wrong one (refused); then the token.
    assert data_calls[0][1] is None and data_calls[1][1] == "Bearer not-the-token", data_calls
    assert data_calls[2:] and all(a == f"Bearer {ADMIN_TOKEN}" for _, a in data_calls[2:]), data_calls
    assert page.context.cookies() == []
    assert ADMIN_TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('retention-proxy.admin-token')") == ADMIN_TOKEN


def test_ui_assets_and_headers(proxy):
    for path, ctype in [("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")]:
        status, headers, body = http_request("GET", proxy.admin_url + path)
        h = {k.lower(): v for k, v in headers.items()}
        assert status == 200 and h["content-type"].startswith(ctype), (path, h)
        assert "default-src 'self'" in h["content-security-policy"] and h["x-content-type-options"] == "nosniff"
    status, headers, _ = http_request("GET", proxy.admin_url + "/ui/../metrics")
    assert status in (400, 404)
    status, headers, _ = http_request("GET", proxy.admin_url + "/ui/secret.txt")
    assert status == 404 and "content-security-policy" in {k.lower() for k in headers}
