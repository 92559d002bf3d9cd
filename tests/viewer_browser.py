"""Drives Debian's headless chromium (through Debian's chromedriver, nothing downloaded) on the
station screen for tests/it/ham10000/viewer.rs, and reports what the page showed, read from the DOM.

    viewer_browser.py URL SCREENSHOT_DIR TIMEOUT_SECS

Prints one JSON line once it has seen, live, the state go idle -> hold steady / assessing ->
assessed and a new assessment with an answer shown (with a screenshot of each of the three),
then waits for the station to go away (the test stops the daemon) and prints a second JSON
line saying whether the "Station offline" banner came up, and a third once the page is back
(the test starts the daemon again) or after 30 s.
"""
import json
import os
import signal
import sys
import time

# selenium-manager must never fetch a browser or a driver: both are Debian's.
os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = os.environ.get("LESIOND_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LESIOND_CHROMEDRIVER", "/usr/bin/chromedriver")

# What the test reads from the page: the state as shown, and the latest assessment.
READ_PAGE = """
const latest = document.getElementById('latest');
const top = document.querySelector('#top li');
return {
  connection: document.body.dataset.connection,
  state: document.body.dataset.state,
  text: document.getElementById('state-text').textContent,
  detail: document.getElementById('state-detail').textContent,
  progress: document.getElementById('progress').hidden ? null : document.getElementById('progress-text').textContent,
  assessment_id: latest.dataset.assessmentId || null,
  top_code: top ? top.dataset.code : null,
  top_text: top ? top.querySelector('.name').textContent : null,
  abstain_shown: !document.getElementById('abstain').hidden,
  refer_text: document.getElementById('refer').textContent,
  model: document.getElementById('model').textContent,
  disclaimer: document.getElementById('disclaimer').textContent,
  history: document.querySelectorAll('#history-list li').length,
  offline_banner: !document.getElementById('offline').hidden,
};
"""


def main():
    # A test that fails early stops us with SIGTERM: quit the browser on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    url, shots, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    os.makedirs(shots, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1024,700", "--hide-scrollbars", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(url)
        end = time.monotonic() + timeout
        page = driver.execute_script(READ_PAGE)
        while page["connection"] != "open" and time.monotonic() < end:
            time.sleep(0.1)
            page = driver.execute_script(READ_PAGE)
        # Assessments the page got on connect (the recent history) do not count as seen live.
        initial_id = page["assessment_id"]
        transitions = []
        phase = "idle"  # waiting for: idle, then hold steady/assessing, then assessed
        shown = None
        taken = []
        while time.monotonic() < end:
            page = driver.execute_script(READ_PAGE)
            if not transitions or (transitions[-1]["state"], transitions[-1]["text"]) != (page["state"], page["text"]):
                transitions.append({"t": round(time.monotonic(), 2), "state": page["state"], "text": page["text"],
                                    "progress": page["progress"]})
            if phase == "idle" and page["state"] == "idle":
                driver.save_screenshot(os.path.join(shots, "viewer-idle.png"))
                taken.append("viewer-idle.png")
                phase = "examining"
            elif phase == "examining" and page["state"] in ("hold_steady", "assessing"):
                # Kept up to date until the assessment: the last one shows the most progress.
                # Kept only if the page still shows that state after the picture (an assessment
                # may land while it is taken).
                candidate = os.path.join(shots, "viewer-assessing.next.png")
                driver.save_screenshot(candidate)
                if driver.execute_script(READ_PAGE)["state"] in ("hold_steady", "assessing"):
                    os.replace(candidate, os.path.join(shots, "viewer-assessing.png"))
                else:
                    os.remove(candidate)
                    continue
                if "viewer-assessing.png" not in taken:
                    taken.append("viewer-assessing.png")
            elif phase == "examining" and page["state"] == "assessed" and "viewer-assessing.png" in taken:
                phase = "assessed"
            if phase == "assessed" and page["assessment_id"] not in (None, initial_id) and page["top_code"]:
                time.sleep(0.3)  # let the bars settle for the picture
                driver.save_screenshot(os.path.join(shots, "viewer-assessed.png"))
                taken.append("viewer-assessed.png")
                shown = driver.execute_script(READ_PAGE)
                break
            if phase == "assessed" and page["state"] == "idle":
                phase = "examining"  # an abstaining visit: wait for the next lesion
            time.sleep(0.1)
        print(json.dumps({"transitions": transitions, "initial_assessment_id": initial_id, "shown": shown,
                          "screenshots": taken}), flush=True)
        if shown is None:
            return 1
        # The test stops the daemon now: the page must say the station is offline.
        end = time.monotonic() + 20
        page = driver.execute_script(READ_PAGE)
        while not page["offline_banner"] and time.monotonic() < end:
            time.sleep(0.1)
            page = driver.execute_script(READ_PAGE)
        if page["offline_banner"]:
            driver.save_screenshot(os.path.join(shots, "viewer-offline.png"))
        print(json.dumps({"offline": page}), flush=True)
        # The test starts the daemon again on the same address: EventSource reconnects by itself.
        end = time.monotonic() + 30
        while (page["offline_banner"] or page["connection"] != "open") and time.monotonic() < end:
            time.sleep(0.1)
            page = driver.execute_script(READ_PAGE)
        print(json.dumps({"reconnected": page}), flush=True)
        return 0
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
