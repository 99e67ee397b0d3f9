"""Times the audit viewer in headless Chromium against a running admin listener: each view
from the start of its data call to the rendered rows (the page's own `viewerTimings`), cold
(first load) and warm (best of five).

    python bench/viewer_scale.py http://127.0.0.1:PORT
"""

import sys

from playwright.sync_api import sync_playwright

VIEWS = [
    ("first page (newest 50, last 7 days)", ""),
    ("filtered: event name", "?event_name=PutRetentionSettings"),
    ("filtered: actor", "?actor=AKIASEED000000000007"),
    ("filtered: refusals (decision=deny)", "?decision=deny"),
    ("filtered: event name + 1-day window", "?event_name=PutChannelExpirationSettings&since=10d&until=9d"),
    ("resource history", "?resource=res-42"),
]

base = sys.argv[1].rstrip("/")
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                          args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                "--disable-component-update"])
    page = b.new_page(viewport={"width": 1366, "height": 768})
    for label, q in VIEWS:
        runs = []
        for _ in range(6):
            page.goto(base + "/ui/" + q)
            page.wait_for_selector("body[data-ready]", timeout=60_000)
            t = page.evaluate("window.viewerTimings")
            runs.append(t[0]["ms"])
            rows = page.evaluate("document.querySelectorAll('#rows tr, #timeline li').length")
        print(f"{label:45s} cold {runs[0]:7.1f} ms   warm {min(runs[1:]):7.1f} ms   ({rows} rows)")
    b.close()
