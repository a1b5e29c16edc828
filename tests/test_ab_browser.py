"""The rating page in a real headless Chromium: rate with clicks and keys, export, and `ab results` reads it back.

Needs Debian's chromium and chromium-driver (`scripts/install_browser.sh`) and selenium; without them the test is
skipped locally, but fails when CI is set (CI must really run it).
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from test_ab_make import make_shapes_ab  # noqa: E402  (tests/ is on sys.path under pytest)

from richfeedback.cli import main
from richfeedback.eval.ab import read_ab

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing: run scripts/install_browser.sh (Debian's chromium and chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path):
    reason = _browser_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    profile = tempfile.mkdtemp(prefix="ab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Offline machines: nothing may try the network (no component updates, no sync, no QUIC probes).
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    # An explicit chromedriver path: Selenium Manager (which downloads drivers) never runs.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_for_download(folder: Path, suffix: str, timeout: float = 10.0) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [p for p in folder.iterdir() if p.suffix == suffix]
        if done:
            return done[0]
        time.sleep(0.05)
    raise AssertionError(f"no {suffix} download in {folder} after {timeout} s: {list(folder.iterdir())}")


def test_rate_with_clicks_and_keys_export_and_read_back(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ab = make_shapes_ab(tmp_path, questions="overall,plausibility")
    meta, pairs = read_ab(ab)
    browser.get((ab / "index.html").resolve().as_uri())
    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
    assert text("progress-text") == "0 of 6 pairs rated"

    rater = browser.find_element(By.ID, "rater")
    rater.send_keys("alice", Keys.ENTER)  # Enter leaves the field, so digits rate again
    def press(key: str) -> None:  # a fresh chain each time: a reused ActionChains replays its earlier keys
        ActionChains(browser).send_keys(key).perform()

    # The plan, in B's terms: overall, A much better on every pair; plausibility, about the same on the first two
    # pairs shown and B slightly better on the others. Even pairs are rated with the keyboard, odd ones by clicks.
    for position, pair in enumerate(pairs):
        assert pairs[position]["prompt"] in text("prompt")
        b_is_right = pair["left"] == "a"
        overall_value = 2 if not b_is_right else -2  # A much better = towards A's side
        plausibility_value = 0 if position < 2 else (1 if b_is_right else -1)
        if position % 2 == 0:
            for value in (overall_value, plausibility_value):
                press(str(value + 3))  # keys 1..5 are values -2..2
        else:
            for question, value in (("overall", overall_value), ("plausibility", plausibility_value)):
                browser.find_element(
                    By.CSS_SELECTOR, f'#q-{question} button[data-value="{value}"]').click()
        # Once both questions have an answer the page moves on by itself.
        assert text("progress-text") == f"{position + 1} of 6 pairs rated"
    assert "Every pair is rated" in text("message")

    # Ratings survive a reload (localStorage under the comparison's id); the arrow keys go back to a rated pair.
    # Chrome hands a page's localStorage writes to its browser process asynchronously, and a reload starts a new
    # renderer that reads from there: an immediate reload can race the last writes (seen in CI, and locally under
    # load even after a 1 s pause). So reload until the ratings are back, for at most 20 s: lost writes still fail.
    deadline = time.monotonic() + 20.0
    while True:
        time.sleep(0.5)
        browser.refresh()
        if text("progress-text") == "6 of 6 pairs rated" or time.monotonic() > deadline:
            break
    assert text("progress-text") == "6 of 6 pairs rated"
    press(Keys.ARROW_LEFT)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".choices button.chosen")) == 2

    browser.find_element(By.ID, "export-json").click()
    exported = _wait_for_download(browser.downloads, ".json")
    assert exported.name == f"ratings-alice-{meta['id']}.json"
    browser.find_element(By.ID, "export-csv").click()
    exported_csv = _wait_for_download(browser.downloads, ".csv")
    doc = json.loads(exported.read_text())
    assert doc["rater"] == "alice" and len(doc["ratings"]) == 12

    for source, out in ((exported, "results"), (exported_csv, "results-csv")):
        assert main(["ab", "results", str(ab), "--ratings", str(source), "--out", str(ab / out)]) == 0
        results = json.loads((ab / out / "results.json").read_text())["questions"]
        assert results["overall"]["win_rate_b"] == 0.0
        assert results["overall"]["a_better"] == 6
        # Two ties (half a win each) and four wins of B over six pairs: (2 * 0.5 + 4) / 6.
        assert results["plausibility"]["win_rate_b"] == pytest.approx(5 / 6)
        assert (results["plausibility"]["same"], results["plausibility"]["b_better"]) == (2, 4)
        assert (ab / out / "chart.png").is_file() and (ab / out / "report.md").is_file()
    preferences = [json.loads(line) for line in (ab / "results" / "preferences.jsonl").read_text().splitlines()]
    assert {(p["question"], p["choice"], p["strength"]) for p in preferences if p["question"] == "overall"} == {
        ("overall", "a", 2)}
